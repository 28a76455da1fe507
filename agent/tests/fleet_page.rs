//! Issue 16: `plumb fleet --html FILE` over a 20-host fleet, checked in a real headless browser
//! (Debian's `chromium`): the page loads from disk with no console error and no request for
//! anything outside it, the DOM has every host, and the screenshot is not blank. The screenshot
//! is kept as a test artifact: target/tmp/fleet-page-20-hosts.png (docs/fleet-page.png is one).

mod common;

use common::git;
use plumb::reason::Reason;
use plumb::status::report::{Outcome, Report};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Writes a status branch `status/<host>` holding `report` straight into the bare repository.
fn put_status(repo: &Path, report: &Report) {
    let git_dir = format!("--git-dir={}", repo.display());
    let mut c = Command::new("git")
        .args([&git_dir, "hash-object", "-w", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(report.to_toml().as_bytes())
        .unwrap();
    let blob = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    let mut c = Command::new("git")
        .args([&git_dir, "mktree"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        c.stdin.take().unwrap(),
        "100644 blob {}\tstatus.toml",
        blob.trim()
    )
    .unwrap();
    let tree = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    let commit = git(
        repo,
        &[
            "commit-tree",
            tree.trim(),
            "-m",
            &format!("{}: {}", report.host, report.outcome.as_str()),
        ],
    );
    git(
        repo,
        &[
            "update-ref",
            &format!("refs/heads/status/{}", report.host),
            &commit,
        ],
    );
}

fn ago(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

/// 20 hosts: most on the head, some behind, drifted, failed, rejected, stale, two never reported.
fn twenty_host_fleet() -> (common::Fleet, String) {
    let fleet = common::Fleet::new();
    for i in 1..=20 {
        fleet.write(&format!("hosts/store-{i:02}/files/etc/motd"), "store\n");
    }
    let old = fleet.commit("stores");
    fleet.write("roles/base/files/etc/issue", "v2\n");
    fleet.write(
        "fleet.toml",
        "[rollout]\nwaves = [[\"store-01\"], [\"store-0*\"], [\"*\"]]\nsoak = \"10m\"\n",
    );
    let head = fleet.commit("v2");
    for i in 1..=18 {
        let host = format!("store-{i:02}");
        let (outcome, applied, reason, message, age) = match i {
            1..=11 => (Outcome::Converged, &head, None, "", 40 + i as u64),
            12 => (Outcome::Changed, &head, None, "", 5),
            13 => (
                Outcome::Drifted,
                &head,
                None,
                "drift corrected on 1 resource(s)",
                70,
            ),
            14 => (
                Outcome::Failed,
                &old,
                Some(Reason::HealthCheckFailed),
                "health check `curl -fsS http://127.0.0.1:8080/healthz` failed: connection refused; rolled back",
                90,
            ),
            15 => (
                Outcome::Rejected,
                &old,
                Some(Reason::InvalidSpec),
                "hosts/store-15/host.toml: unknown key `packagez`",
                100,
            ),
            16 | 17 => (Outcome::Converged, &old, None, "", 30),
            _ => (Outcome::Converged, &old, None, "", 5 * 3600),
        };
        put_status(
            &fleet.bare(),
            &Report {
                host: host.clone(),
                agent_version: "0.1.0".into(),
                outcome,
                desired_commit: head.clone(),
                applied_commit: applied.clone(),
                last_good_commit: applied.clone(),
                checked_at: ago(age),
                message: message.into(),
                reason,
                applied_at: ago(age),
                waiting: if applied == &old && i >= 16 {
                    "wave 3 waits for wave 2: 8/9 hosts on (needs 9)".into()
                } else {
                    String::new()
                },
                reboot_required: None,
                last_reboot: None,
                age_recipient: None,
                container_updates: vec![],
                facts: None,
                upgrades: None,
                resources: vec![],
            },
        );
    }
    (fleet, head)
}

/// Where the artifact goes: cargo's per-target scratch directory under target/.
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs headless Chromium on `url` with `args`; returns (stdout, stderr). The browser may not
/// reach anything but the page: every host name resolves to nothing.
fn chromium(profile: &Path, url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium (apt-get install chromium)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Not blank: the PNG's pixels (IDAT inflated by python's zlib) have many distinct values and
/// much of the image differs from the background.
fn png_is_not_blank(png: &Path) -> (bool, String) {
    const SCRIPT: &str = r#"
import struct, sys, zlib
d = open(sys.argv[1], 'rb').read()
assert d[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
i, idat, w, h = 8, b'', 0, 0
while i < len(d):
    n, t = struct.unpack('>I4s', d[i:i+8])
    if t == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', d[i+8:i+18])
        assert depth == 8 and ctype in (2, 6), (depth, ctype)
        bpp = 3 if ctype == 2 else 4
    if t == b'IDAT':
        idat += d[i+8:i+8+n]
    i += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
# Undo the PNG row filters, then count pixels unlike the top-left one.
prev = bytearray(stride)
rows = []
for y in range(h):
    f = raw[y*(stride+1)]
    line = bytearray(raw[y*(stride+1)+1:(y+1)*(stride+1)])
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
bg = rows[0][:3]
colors, other = set(), 0
for r in rows[::4]:
    for x in range(0, stride, bpp * 4):
        px = r[x:x+3]
        colors.add(px)
        other += px != bg
total = len(rows[::4]) * len(range(0, stride, bpp * 4))
print(w, h, len(colors), round(other / total, 4))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(png)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ok = out.status.success() && f.len() == 4 && f[2] >= 20.0 && f[3] >= 0.02;
    (ok, text)
}

#[test]
fn fleet_page_in_headless_chromium_issue_16() {
    let (fleet, head) = twenty_host_fleet();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fleet.html");
    let out = Command::new(common::PLUMB)
        .args(["fleet", "--config"])
        .arg(dir.path().join("none.toml"))
        .arg("--repo")
        .arg(format!("file://{}", fleet.bare().display()))
        .arg("--html")
        .arg(&page)
        .env("PLUMB_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<title>plumb fleet: 20 hosts</title>"),
        "{html}"
    );
    assert!(html.contains(&format!("fleet head <code>{}</code>", &head[..7])));
    // fleet.toml's waves: the rollout per wave, and each host's wave.
    assert!(html.contains("status trust:"), "{html}");

    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");
    let (dom, log) = chromium(&profile, &url, &["--dump-dom"]);
    for i in 1..=20 {
        assert!(
            dom.contains(&format!(">store-{i:02}<")),
            "store-{i:02} not in the DOM"
        );
    }
    assert_eq!(dom.matches("<tr><td class=\"mono\">").count(), 20);
    assert!(dom.contains("never reported"), "{dom}");
    assert!(dom.contains("health-check-failed"));
    // The rollout of the head by fleet.toml's waves (applied / hosts, healthy, failed, waiting):
    // the canary and the first stores are on it; of the rest 4 of 9, one drifted, store-14
    // rolled back (so the head is quarantined) and store-15 rejected it, three wait.
    for row in [
        "<td>1 store-01</td><td>1 / 1</td><td>1</td><td>0</td><td>0</td>",
        "<td>2 store-0*</td><td>8 / 8</td><td>8</td><td>0</td><td>0</td>",
        "<td>3 *</td><td>4 / 9</td><td>3</td><td>2</td><td>3</td>",
    ] {
        assert!(dom.contains(row), "{row}\n{dom}");
    }
    assert!(dom.contains(">quarantined</span>"), "{dom}");
    // Each host's wave in the table.
    for (host, wave) in [("store-01", 1), ("store-05", 2), ("store-12", 3)] {
        let row = dom
            .split("<tr><td class=\"mono\">")
            .find(|r| r.starts_with(&format!("{host}<")))
            .unwrap_or_default();
        assert!(
            row.contains(&format!("</span></td><td>{wave}</td>")),
            "{host}: {row}"
        );
    }
    // Loaded without errors: no console message, no failed load of anything.
    for bad in ["CONSOLE", "Failed to load", "net::ERR_", "Uncaught"] {
        assert!(!log.contains(bad), "{bad} in chromium's log:\n{log}");
    }

    let shot = artifacts().join("fleet-page-20-hosts.png");
    let _ = std::fs::remove_file(&shot);
    let (_, log) = chromium(
        &profile,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--hide-scrollbars",
        ],
    );
    assert!(shot.is_file(), "no screenshot: {log}");
    let (ok, what) = png_is_not_blank(&shot);
    assert!(ok, "the screenshot looks blank: {what}");
    eprintln!("screenshot: {} ({what})", shot.display());
}
