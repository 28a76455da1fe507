//! `plumb fleet --html FILE`: one self-contained static page (inline CSS, no script, no external
//! resource), to open from disk or serve from any web server: a summary (hosts per outcome,
//! stale), per recent commit the rollout progress by wave, and a table of hosts.
//!
//! With `[rollout]` in fleet.toml the progress is rollout/progress.rs's, per wave (applied,
//! healthy, failed, waiting; quarantined commits marked); without, every host is in wave "all"
//! and the progress of a commit is how many hosts report it as applied.

use super::fleet::{HostLine, NEVER_REPORTED};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Commits shown in the rollout section: the fleet head, then the most-run others.
const RECENT_COMMITS: usize = 5;

/// The outcomes in the order the summary shows them, with the colour class of each.
const OUTCOMES: [(&str, &str); 7] = [
    ("converged", "ok"),
    ("changed", "ok"),
    ("drifted", "warn"),
    ("failed", "bad"),
    ("rejected", "bad"),
    ("unreadable", "bad"),
    (NEVER_REPORTED, "none"),
];

const CSS: &str = "
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--mute:#59636e;--line:#d1d9e0;--card:#f6f8fa;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--none:#6e7781}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--mute:#9198a1;--line:#3d444d;
--card:#151b23;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--none:#9198a1}}
*{box-sizing:border-box}
body{margin:0;padding:24px;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.sub{color:var(--mute);margin:0 0 18px}
code,.mono{font-family:ui-monospace,'SFMono-Regular',Menlo,Consolas,monospace;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:120px}
.card .n{font-size:26px;font-weight:600}.card .l{color:var(--mute)}
.card.ok .n{color:var(--ok)}.card.warn .n{color:var(--warn)}.card.bad .n{color:var(--bad)}.card.none .n{color:var(--none)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--card);font-weight:600}
.badge{white-space:nowrap;display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}.badge.none{background:var(--none)}
.stale{color:var(--bad);font-weight:600}
td.mono,td.nw{white-space:nowrap}
.msg{color:var(--mute);max-width:48em;overflow-wrap:anywhere}
.bar{background:var(--card);border:1px solid var(--line);border-radius:4px;height:14px;width:260px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--ok)}
.roll td{vertical-align:middle}
footer{margin-top:28px;color:var(--mute);font-size:12px}
";

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn class_of(outcome: &str) -> &'static str {
    OUTCOMES
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or("bad", |(_, c)| c)
}

fn short(c: &str) -> &str {
    c.get(..7).unwrap_or(c)
}

/// Pure: the page. `generated` is shown as the time the page was made (RFC 3339).
pub fn render(
    head: Option<&str>,
    lines: &[HostLine],
    rollout: Option<&crate::rollout::progress::Rollout>,
    generated: &str,
) -> String {
    let mut o = String::new();
    let total = lines.len();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>plumb fleet: {total} hosts</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>plumb fleet</h1>\n<p class=\"sub\">{total} hosts &middot; fleet head <code>{}</code> \
         &middot; generated {}</p>\n",
        esc(head.map(short).unwrap_or("(branch not found)")),
        esc(generated)
    );

    // Summary.
    let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines {
        *by_outcome.entry(l.outcome.as_str()).or_default() += 1;
    }
    let stale = lines
        .iter()
        .filter(|l| l.stale && l.outcome != NEVER_REPORTED)
        .count();
    let current = lines.iter().filter(|l| l.commit == "current").count();
    o.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    let card = |o: &mut String, class: &str, n: usize, label: &str| {
        let _ = writeln!(
            o,
            "<div class=\"card {class}\"><div class=\"n\">{n}</div><div class=\"l\">{}</div></div>",
            esc(label)
        );
    };
    card(&mut o, "", total, "hosts");
    card(&mut o, "ok", current, "on the fleet head");
    for (outcome, class) in OUTCOMES {
        let n = by_outcome.get(outcome).copied().unwrap_or(0);
        card(&mut o, class, n, &outcome.replace('-', " "));
    }
    for (outcome, n) in &by_outcome {
        if !OUTCOMES.iter().any(|(x, _)| x == outcome) {
            card(&mut o, "bad", *n, outcome);
        }
    }
    card(
        &mut o,
        if stale > 0 { "bad" } else { "ok" },
        stale,
        "stale (no report for 2 heartbeats)",
    );
    o.push_str("</div>\n");

    if let Some(r) = rollout {
        rollout_section(&mut o, head, r);
    } else {
        commits_section(&mut o, head, lines);
    }
    hosts_section(&mut o, lines);
    o.push_str("</body>\n</html>\n");
    o
}

/// With `[rollout]` in fleet.toml: per recent commit, how far each wave got.
fn rollout_section(o: &mut String, head: Option<&str>, r: &crate::rollout::progress::Rollout) {
    let _ = writeln!(
        o,
        "<h2>Rollout</h2>\n<p class=\"sub\">status trust: {}</p>\n<table class=\"roll\">\n\
         <thead><tr><th>commit</th><th>wave</th><th>applied</th><th>healthy</th><th>failed</th>\
         <th>waiting</th><th>progress</th></tr></thead>\n<tbody>",
        if r.trust == "signed" {
            "host keys pinned: only signed status counts"
        } else {
            "the status server's access control (no host keys pinned)"
        }
    );
    for c in &r.commits {
        let mut label = String::new();
        if Some(c.commit.as_str()) == head {
            label.push_str(" <span class=\"badge ok\">fleet head</span>");
        }
        if let Some(q) = &c.quarantined {
            let _ = write!(
                label,
                " <span class=\"badge bad\" title=\"{}\">quarantined</span>",
                esc(q)
            );
        }
        for w in &c.waves {
            let pct = (w.applied * 100).checked_div(w.hosts).unwrap_or(0);
            let name = if w.patterns.is_empty() {
                format!("{} (the rest)", w.wave)
            } else {
                format!("{} {}", w.wave, w.patterns.join(" "))
            };
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code>{label}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td><div class=\"bar\" title=\"{pct}%\"><span style=\"width:{pct}%\"></span></div></td></tr>",
                esc(short(&c.commit)),
                esc(&name),
                w.applied,
                w.hosts,
                w.healthy,
                w.failed,
                w.waiting
            );
        }
    }
    o.push_str("</tbody>\n</table>\n");
    if !r.untrusted.is_empty() {
        let _ = writeln!(
            o,
            "<p class=\"sub\">status not counted (unsigned or not signed by the pinned key): {}</p>",
            esc(&r.untrusted.join(", "))
        );
    }
}

/// Without rollouts: per recent commit, how many hosts run it.
fn commits_section(o: &mut String, head: Option<&str>, lines: &[HostLine]) {
    let mut by_commit: BTreeMap<&str, Vec<&HostLine>> = BTreeMap::new();
    for l in lines.iter().filter(|l| !l.applied_commit.is_empty()) {
        by_commit
            .entry(l.applied_commit.as_str())
            .or_default()
            .push(l);
    }
    let mut commits: Vec<(&str, usize)> = by_commit.iter().map(|(c, v)| (*c, v.len())).collect();
    commits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if let Some(h) = head {
        commits.retain(|(c, _)| *c != h);
        commits.insert(0, (h, by_commit.get(h).map_or(0, Vec::len)));
    }
    commits.truncate(RECENT_COMMITS);
    let mut waves: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines {
        *waves.entry(l.wave.as_str()).or_default() += 1;
    }
    o.push_str(
        "<h2>Rollout</h2>\n<table class=\"roll\">\n<thead><tr><th>commit</th><th>wave</th>\
         <th>hosts on it</th><th>progress</th></tr></thead>\n<tbody>\n",
    );
    for (commit, _) in &commits {
        let on = by_commit.get(commit).map(Vec::as_slice).unwrap_or(&[]);
        for (wave, in_wave) in &waves {
            let n = on.iter().filter(|l| l.wave == *wave).count();
            let pct = if *in_wave == 0 { 0 } else { n * 100 / in_wave };
            let label = if Some(*commit) == head {
                " <span class=\"badge ok\">fleet head</span>"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code>{label}</td><td>{}</td><td>{n} / {in_wave}</td>\
                 <td><div class=\"bar\" title=\"{pct}%\"><span style=\"width:{pct}%\"></span></div></td></tr>",
                esc(short(commit)),
                esc(wave)
            );
        }
    }
    o.push_str("</tbody>\n</table>\n");
}

fn hosts_section(o: &mut String, lines: &[HostLine]) {
    o.push_str(
        "<h2>Hosts</h2>\n<table class=\"hosts\">\n<thead><tr><th>host</th><th>outcome</th>\
         <th>wave</th><th>commit</th><th>age</th><th>reason</th><th>message</th></tr></thead>\n<tbody>\n",
    );
    for l in lines {
        let commit = if l.applied_commit.is_empty() {
            "-".to_string()
        } else {
            format!(
                "<code>{}</code> {}",
                esc(short(&l.applied_commit)),
                l.commit
            )
        };
        let age = match l.age_seconds {
            Some(a) => super::fleet::short_age(a),
            None => "-".into(),
        };
        let age = if l.stale && l.outcome != NEVER_REPORTED {
            format!("{age} <span class=\"stale\">stale</span>")
        } else {
            age
        };
        let _ = writeln!(
            o,
            "<tr><td class=\"mono\">{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td>\
             <td class=\"nw\">{commit}</td><td class=\"nw\">{age}</td><td class=\"nw\"><code>{}</code></td><td class=\"msg\">{}</td></tr>",
            esc(&l.host),
            class_of(&l.outcome),
            esc(&l.outcome.replace('-', " ")),
            esc(&l.wave),
            esc(&l.reason),
            esc(&l.message)
        );
    }
    o.push_str("</tbody>\n</table>\n");
    let _ = writeln!(
        o,
        "<footer>Made by <code>plumb fleet --html</code> {} from the hosts' status branches.\
         </footer>",
        esc(env!("CARGO_PKG_VERSION"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: &str, outcome: &str, commit: &str, message: &str) -> HostLine {
        HostLine {
            host: host.into(),
            outcome: outcome.into(),
            reason: String::new(),
            wave: "all".into(),
            applied_commit: commit.into(),
            commit: "current",
            checked_at: String::new(),
            age_seconds: Some(30),
            stale: false,
            reboot_required: false,
            message: message.into(),
        }
    }

    #[test]
    fn summary_progress_and_escaping() {
        let head = "a".repeat(40);
        let lines = vec![
            line("web-01", "converged", &head, ""),
            line(
                "web-02",
                "failed",
                &"b".repeat(40),
                "<script>alert(1)</script>",
            ),
            line("web-03", NEVER_REPORTED, "", "never reported"),
        ];
        let p = render(Some(&head), &lines, None, "2026-11-30T00:00:00Z");
        assert!(p.contains("<title>plumb fleet: 3 hosts</title>"), "{p}");
        assert!(!p.contains("<script"), "unescaped message: {p}");
        assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(p.contains("<code>aaaaaaa</code> <span class=\"badge ok\">fleet head</span></td><td>all</td><td>1 / 3</td>"), "{p}");
        assert!(
            p.contains("<td>1 / 3</td><td><div class=\"bar\" title=\"33%\">"),
            "{p}"
        );
        assert!(
            p.contains("<div class=\"n\">1</div><div class=\"l\">never reported</div>"),
            "{p}"
        );
        // Self-contained: no external resource of any kind.
        for bad in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!p.contains(bad), "{bad} in the page");
        }
    }
}
