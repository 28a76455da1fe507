//! The Markdown report: the machine, the figures against their targets, the peers as ratios to
//! plumb, and the status push at fleet scale.

use crate::measure::Stats;
use crate::node::NodeFigures;
use crate::peers::PeerFigures;
use crate::plumb::{ApplyFigures, IdleFigures};
use crate::poll::GitPolls;
use crate::proxy::Traffic;
use crate::push::PushFigures;
use crate::Args;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

pub struct Report {
    pub files: usize,
    pub branches: usize,
    pub binary_bytes: u64,
    pub machine: Vec<String>,
    pub command: String,
    pub first: Option<ApplyFigures>,
    pub noop: Option<ApplyFigures>,
    /// No-op passes taken in turn: plain files, the same files as templates.
    pub templated: Option<(ApplyFigures, ApplyFigures)>,
    pub idle: Option<IdleFigures>,
    pub git_polls: Option<GitPolls>,
    pub pushes: Vec<PushFigures>,
    pub puppet: Option<PeerFigures>,
    pub ansible: Option<PeerFigures>,
    pub node: Option<NodeFigures>,
    pub notes: Vec<String>,
    load_before: String,
}

impl Report {
    pub fn new(args: &Args, plumb: &Path) -> Result<Report> {
        let binary_bytes = std::fs::metadata(plumb)?.len();
        let mut machine = vec![
            format!("CPU: {} x {}", nproc(), cpu_model()),
            format!("memory: {}", meminfo_total()),
            format!("OS: {}, kernel {}", os_name(), first_line(&["uname", "-r"])),
            format!(
                "plumb: {}",
                first_line(&[&plumb.display().to_string(), "--version"])
            ),
            format!("git: {}", first_line(&["git", "--version"])),
        ];
        if !args.skip_peers {
            if let Some(a) = &args.ansible_pull {
                machine.push(format!(
                    "ansible-pull: {}",
                    first_line(&[&a.display().to_string(), "--version"])
                ));
            }
            machine.push(format!(
                "puppet: {}",
                first_line(&[&args.puppet.display().to_string(), "--version"])
            ));
        }
        Ok(Report {
            files: args.files,
            branches: args.branches,
            binary_bytes,
            machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            first: None,
            noop: None,
            templated: None,
            idle: None,
            git_polls: None,
            pushes: vec![],
            puppet: None,
            ansible: None,
            node: None,
            notes: vec![],
            load_before: loadavg(),
        })
    }

    pub fn render(&self) -> Result<String> {
        let mut s = String::new();
        let n = self.files;
        writeln!(s, "## Results\n")?;
        for m in &self.machine {
            writeln!(s, "- {m}")?;
        }
        writeln!(
            s,
            "- load average before / after: {} / {}",
            self.load_before,
            loadavg()
        )?;
        writeln!(s, "- command: `{}`", self.command)?;
        writeln!(
            s,
            "- work: host `bench` with {n} files of ~70 bytes in {} directories; files only on the host (units: see the node section, when run). \
             The fleet repository has {} other branches. Served by `git daemon` on 127.0.0.1 behind a counting proxy.",
            crate::fixture::dirs(n).len(),
            self.branches
        )?;
        writeln!(s, "- figures: median (min–max, n=runs)\n")?;

        writeln!(s, "| figure | plumb | target | met |")?;
        writeln!(s, "|---|---|---|---|")?;
        let mb = self.binary_bytes as f64 / 1e6;
        row(
            &mut s,
            "release binary, stripped",
            &format!("{mb:.2} MB ({} bytes)", self.binary_bytes),
            "<= 10 MB",
            mb <= 10.0,
        )?;
        if let Some(i) = &self.idle {
            let st = i.steady();
            row(
                &mut s,
                &format!(
                    "idle RSS of `plumb run` between passes ({} passes, {n} files)",
                    i.idle_after_pass_mib.len()
                ),
                &format!("{} MiB", st.show(2)),
                "<= 10 MiB",
                st.max() <= 10.0,
            )?;
            writeln!(
                s,
                "| peak RSS of `plumb run` during a pass (VmHWM) | {:.2} MiB | | |",
                i.peak_mib
            )?;
            let polls = traffic_stats(&i.noop_polls);
            writeln!(
                s,
                "| no-op poll of `plumb run`: received | {} bytes | | |",
                polls.received.show(0)
            )?;
            writeln!(
                s,
                "| status pushes by `plumb run` over {} passes | {} | | |",
                i.idle_after_pass_mib.len(),
                i.pushes
            )?;
        }
        if let Some(f) = &self.noop {
            let t = traffic_stats(&f.traffic);
            row(
                &mut s,
                &format!(
                    "no-op poll: received from the server ({} other branches)",
                    self.branches
                ),
                &format!("{} bytes", t.received.show(0)),
                "<= 2 KiB",
                t.received.max() <= 2048.0,
            )?;
            row(
                &mut s,
                "no-op poll: round trips (connections)",
                &format!("{} ({})", t.round_trips.show(0), t.connections.show(0)),
                "1",
                t.round_trips.max() <= 1.0,
            )?;
            writeln!(
                s,
                "| no-op poll: sent to the server | {} bytes | | |",
                t.sent.show(0)
            )?;
        }
        if let Some(g) = &self.git_polls {
            let v0 = traffic_stats(&g.v0_fetch);
            let v2 = traffic_stats(&g.v2_fetch);
            writeln!(s, "| same poll by `git fetch`, protocol v0 (go-git agents: fetchit, comin) | {} bytes, {} round trips | | |", v0.received.show(0), v0.round_trips.show(0))?;
            writeln!(
                s,
                "| same poll by `git fetch`, protocol v2 | {} bytes, {} round trips | | |",
                v2.received.show(0),
                v2.round_trips.show(0)
            )?;
        }
        if let Some(f) = &self.noop {
            row(
                &mut s,
                &format!("no-op pass (`plumb apply`, {n} files, no drift): wall"),
                &format!("{} ms", f.wall_ms.show(1)),
                "<= 100 ms",
                f.wall_ms.median() <= 100.0,
            )?;
            writeln!(
                s,
                "| no-op pass: CPU (user+sys) | {} ms | | |",
                f.cpu_ms.show(1)
            )?;
            writeln!(
                s,
                "| no-op pass: peak RSS | {} MiB | | |",
                f.max_rss_mib.show(2)
            )?;
        }
        if let Some((plain, tmpl)) = &self.templated {
            let ratio = tmpl.wall_ms.median() / plain.wall_ms.median();
            writeln!(
                s,
                "| no-op pass, {n} plain files (taken in turn with the next row): wall, CPU | {} ms, CPU {} ms | | |",
                plain.wall_ms.show(1),
                plain.cpu_ms.show(1)
            )?;
            row(
                &mut s,
                &format!("no-op pass, {n} templated files: wall (x plain)"),
                &format!("{} ms ({ratio:.2}x)", tmpl.wall_ms.show(1)),
                "<= 2x plain",
                ratio <= 2.0,
            )?;
            writeln!(
                s,
                "| no-op pass, {n} templated files: CPU (user+sys), peak RSS | {} ms, {} MiB | | |",
                tmpl.cpu_ms.show(1),
                tmpl.max_rss_mib.show(2)
            )?;
        }
        if let Some(f) = &self.first {
            row(
                &mut s,
                &format!("first apply of {n} files (`plumb apply`, empty root): wall"),
                &format!("{} ms", f.wall_ms.show(1)),
                "<= 1000 ms",
                f.wall_ms.median() <= 1000.0,
            )?;
            writeln!(
                s,
                "| first apply: CPU (user+sys) | {} ms | | |",
                f.cpu_ms.show(1)
            )?;
            writeln!(
                s,
                "| first apply: peak RSS | {} MiB | | |",
                f.max_rss_mib.show(2)
            )?;
            writeln!(
                s,
                "| first apply: received (shallow fetch) | {} bytes | | |",
                traffic_stats(&f.traffic).received.show(0)
            )?;
            let push = traffic_stats(&f.pushes);
            writeln!(
                s,
                "| first apply: its status push (first report), connection | {} ms, {} bytes received | | |",
                push.duration_ms.show(1),
                push.received.show(0)
            )?;
        }

        if let Some(n) = &self.node {
            writeln!(s, "\n### With units, in a Debian node\n")?;
            writeln!(s, "plumb in a systemd-nspawn node (Debian trixie, real systemd over D-Bus) managing {} files", n.files)?;
            writeln!(s, "and {} enabled, running services, fetched over the test bridge. `plumb apply` is timed from", n.units)?;
            writeln!(s, "the host around `nsenter`; the idle RSS is sampled from the host's /proc while `plumb run`")?;
            writeln!(s, "runs as a transient service.\n")?;
            writeln!(s, "| figure | plumb | target | met |")?;
            writeln!(s, "|---|---|---|---|")?;
            writeln!(
                s,
                "| first apply, {} files + {} units: wall | {} ms | | |",
                n.files,
                n.units,
                n.first_wall_ms.show(1)
            )?;
            row(
                &mut s,
                "no-op pass: wall",
                &format!("{} ms", n.noop_wall_ms.show(1)),
                "<= 100 ms",
                n.noop_wall_ms.median() <= 100.0,
            )?;
            writeln!(
                s,
                "| no-op pass: CPU (user+sys) | {} ms | | |",
                n.noop_cpu_ms.show(1)
            )?;
            writeln!(
                s,
                "| first apply: peak RSS | {} MiB | | |",
                n.first_rss_mib.show(2)
            )?;
            writeln!(
                s,
                "| no-op pass: peak RSS | {} MiB | | |",
                n.noop_rss_mib.show(2)
            )?;
            row(
                &mut s,
                "idle RSS of `plumb run`",
                &format!("{} MiB", n.idle_rss_mib.show(2)),
                "<= 10 MiB",
                n.idle_rss_mib.median() <= 10.0,
            )?;
            if n.puppet.is_some() || n.ansible.is_some() {
                render_node_peers(&mut s, n)?;
            }
        }
        if self.puppet.is_some() || self.ansible.is_some() {
            self.render_peers(&mut s)?;
        }
        if !self.pushes.is_empty() {
            writeln!(s, "\n### Status push at fleet scale\n")?;
            writeln!(s, "plumb's own status push (a heartbeat: status.toml committed with gix, then `git push")?;
            writeln!(s, "--force-with-lease`) into a status repository that already holds N other hosts' status")?;
            writeln!(s, "branches. \"push\" is the push connection from connect to close; \"pass\" the whole")?;
            writeln!(
                s,
                "`plumb apply` (a no-op pass over {} files, then the push).\n",
                self.files
            )?;
            writeln!(
                s,
                "| status branches | push ms | pass ms | received bytes | sent bytes | round trips |"
            )?;
            writeln!(s, "|---|---|---|---|---|---|")?;
            for p in &self.pushes {
                let t = traffic_stats(&p.traffic);
                let branches = if p.per_host {
                    "own repository per host (`{host}` in `[status] repo`), any fleet size"
                        .to_string()
                } else {
                    p.branches.to_string()
                };
                writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    branches,
                    p.push_ms.show(1),
                    p.apply_ms.show(1),
                    t.received.show(0),
                    t.sent.show(0),
                    t.round_trips.show(0)
                )?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(s)?;
            for note in &self.notes {
                writeln!(s, "- {note}")?;
            }
        }
        Ok(s)
    }

    fn render_peers(&self, s: &mut String) -> Result<()> {
        writeln!(s, "\n### Side by side, same files, same run\n")?;
        writeln!(s, "Ratios are peer / plumb (medians); plumb's no-op includes its git fetch, puppet's does not.\n")?;
        writeln!(s, "| tool | files | first run s | no-op s | peak RSS first / no-op MiB | first run x | no-op x | peak RSS x |")?;
        writeln!(s, "|---|---|---|---|---|---|---|---|")?;
        let (Some(first), Some(noop)) = (&self.first, &self.noop) else {
            return Ok(());
        };
        let p_first = first.wall_ms.median() / 1e3;
        let p_noop = noop.wall_ms.median() / 1e3;
        let p_rss = first.max_rss_mib.median().max(noop.max_rss_mib.median());
        writeln!(
            s,
            "| plumb | {} | {} | {} | {} / {} | 1 | 1 | 1 |",
            self.files,
            secs(&first.wall_ms, 1e-3),
            secs(&noop.wall_ms, 1e-3),
            first.max_rss_mib.show(1),
            noop.max_rss_mib.show(1)
        )?;
        for (name, p) in [
            ("puppet apply", &self.puppet),
            ("ansible-pull", &self.ansible),
        ] {
            let Some(p) = p else { continue };
            // A peer measured on fewer files is compared per file.
            let scale = self.files as f64 / p.files as f64;
            let per = if p.files == self.files {
                ""
            } else {
                " (per file)"
            };
            let rss = p.first_rss_mib.median().max(p.noop_rss_mib.median());
            writeln!(
                s,
                "| {name} | {} | {} | {} | {} / {} | {:.0}{per} | {:.0}{per} | {:.1} |",
                p.files,
                p.first_wall_s.show(2),
                p.noop_wall_s.show(2),
                p.first_rss_mib.show(1),
                p.noop_rss_mib.show(1),
                p.first_wall_s.median() * scale / p_first,
                p.noop_wall_s.median() * scale / p_noop,
                rss / p_rss
            )?;
        }
        Ok(())
    }
}

/// puppet and ansible-pull next to plumb in the node, same units, with ratios peer / plumb
/// (per file when the peer converged fewer files, as on the host).
fn render_node_peers(s: &mut String, n: &NodeFigures) -> Result<()> {
    if n.puppet.is_some() {
        writeln!(
            s,
            "\n`puppet apply` ({}) in the same node on the same {} files and {} units: `file`",
            n.puppet_version, n.files, n.units
        )?;
        writeln!(s, "resources sourced from a clone of the same repository (not timed), the unit files notifying")?;
        writeln!(s, "one `exec` of `systemctl daemon-reload`, and `service` with `ensure => running, enable => true`.")?;
    }
    if let Some(a) = &n.ansible {
        writeln!(
            s,
            "\n`ansible-pull` ({}, Debian's ansible-core) in the same node on the first {} files and the same {} units:",
            n.ansible_version, a.files, n.units
        )?;
        writeln!(s, "it clones the fleet repository from the git server on the bridge (timed: a fresh checkout for a first")?;
        writeln!(s, "run, a pull for a no-op) and runs a playbook from it: `copy` of the files and unit files, the unit")?;
        writeln!(s, "files notifying one `daemon_reload` handler (flushed before the units start), `systemd` with")?;
        writeln!(
            s,
            "`enabled: true, state: started` per unit; the no-op run reports changed=0."
        )?;
    }
    writeln!(s, "\nEach first run on a node cleared of the files and units. Timed from the host around `nsenter`")?;
    writeln!(s, "like plumb; peak RSS is the largest process of the tree (wait4). Ratios are peer / plumb (medians);")?;
    writeln!(s, "a peer measured on fewer files is compared per file (its whole time scaled by files / its files,")?;
    writeln!(
        s,
        "which overstates it: the units are the same) and as whole runs (which understates it).\n"
    )?;
    writeln!(s, "| tool | files | first run s | no-op s | peak RSS first / no-op MiB | first run x | no-op x | peak RSS x |")?;
    writeln!(s, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        s,
        "| plumb | {} | {} | {} | {} / {} | 1 | 1 | 1 |",
        n.files,
        secs(&n.first_wall_ms, 1e-3),
        secs(&n.noop_wall_ms, 1e-3),
        n.first_rss_mib.show(1),
        n.noop_rss_mib.show(1)
    )?;
    let plumb_rss = n.first_rss_mib.median().max(n.noop_rss_mib.median());
    for (name, p) in [("puppet apply", &n.puppet), ("ansible-pull", &n.ansible)] {
        let Some(p) = p else { continue };
        let first = p.first_wall_s.median() * 1e3 / n.first_wall_ms.median();
        let noop = p.noop_wall_s.median() * 1e3 / n.noop_wall_ms.median();
        let rss = p.first_rss_mib.median().max(p.noop_rss_mib.median());
        let ratio = |whole: f64| {
            if p.files == n.files {
                format!("{whole:.0}")
            } else {
                // The units are the same for both: the whole-run ratio is a lower bound.
                let scale = n.files as f64 / p.files as f64;
                format!("{:.0} (per file); {whole:.0} (whole run)", whole * scale)
            }
        };
        writeln!(
            s,
            "| {name} | {} | {} | {} | {} / {} | {} | {} | {:.1} |",
            p.files,
            p.first_wall_s.show(2),
            p.noop_wall_s.show(2),
            p.first_rss_mib.show(1),
            p.noop_rss_mib.show(1),
            ratio(first),
            ratio(noop),
            rss / plumb_rss
        )?;
    }
    Ok(())
}

fn secs(ms: &Stats, f: f64) -> String {
    Stats {
        samples: ms.samples.iter().map(|v| v * f).collect(),
    }
    .show(3)
}

fn row(s: &mut String, what: &str, value: &str, target: &str, met: bool) -> Result<()> {
    writeln!(
        s,
        "| {what} | {value} | {target} | {} |",
        if met { "yes" } else { "**no**" }
    )?;
    Ok(())
}

pub struct TrafficStats {
    pub received: Stats,
    pub sent: Stats,
    pub round_trips: Stats,
    pub connections: Stats,
    pub duration_ms: Stats,
}

pub fn traffic_stats(t: &[Traffic]) -> TrafficStats {
    let pick = |f: fn(&Traffic) -> f64| Stats {
        samples: t.iter().map(f).collect(),
    };
    TrafficStats {
        received: pick(|t| t.received as f64),
        sent: pick(|t| t.sent as f64),
        round_trips: pick(|t| t.round_trips as f64),
        connections: pick(|t| t.connections as f64),
        duration_ms: pick(|t| t.duration.as_secs_f64() * 1e3),
    }
}

fn first_line(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn meminfo_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.trim_start_matches("MemTotal:").trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
