//! What `plumb diff` costs on a large fleet (issue 19), measured and checked against the target
//! (1,000 hosts sharing roles, one role changed, in at most 5 s). Run it with
//!
//! ```sh
//! cargo build --release -p plumb
//! PLUMB_BIN=target/release/plumb cargo test -p plumb --test diff_scale -- --ignored --nocapture
//! ```
//!
//! The fleet: 10 roles of 20 files, 2 templates (using the host's facts and vars) and a unit, a
//! base role every host includes; 800 hosts with a directory and 200 assigned by a fleet.toml
//! pattern; 1,000 status branches with facts (one fast-import). `PLUMB_DIFF_HOSTS` changes the
//! host count.

mod common;

use common::git;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROLES: usize = 10;

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn name(i: usize, hosts: usize) -> String {
    if i < hosts * 4 / 5 {
        format!("app-{i:04}")
    } else {
        format!("edge-{i:04}")
    }
}

/// The status branches, one commit each, through `git fast-import`.
fn status_branches(repo: &Path, hosts: usize) {
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = String::new();
    for i in 0..hosts {
        let h = name(i, hosts);
        let status = format!(
            "host = \"{h}\"\nagent_version = \"0\"\noutcome = \"converged\"\n\
             checked_at = \"2026-01-01T00:00:00Z\"\n\n[facts]\nhostname = \"{h}.example\"\ncpus = {}\n",
            1 + i % 8
        );
        s.push_str(&format!(
            "commit refs/heads/status/{h}\ncommitter ops <ops@example.org> 1700000000 +0000\n\
             data 6\nstatus\nM 100644 inline status.toml\ndata {}\n{status}\n",
            status.len()
        ));
    }
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn thousand_hosts_one_role_changed() {
    let hosts: usize = std::env::var("PLUMB_DIFF_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bin = std::env::var("PLUMB_BIN").unwrap_or_else(|_| common::PLUMB.to_string());
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("fleet");
    std::fs::create_dir_all(&w).unwrap();
    git(&w, &["init", "-q", "-b", "main"]);
    write(
        &w,
        "fleet.toml",
        "[[assign]]\nhosts = [\"edge-*\"]\ninclude = [\"roles/base\", \"roles/r9\"]\n",
    );
    let role = |r: &str, extra: &str| {
        for f in 0..20 {
            write(
                &w,
                &format!("roles/{r}/files/etc/{r}/f{f}.conf"),
                &format!("# {r} file {f}\nvalue = {f}\n{extra}"),
            );
        }
        write(
            &w,
            &format!("roles/{r}/files/etc/{r}/site.conf.tmpl"),
            &format!("server_name {{{{ facts.hostname }}}};\nworkers {{{{ facts.cpus }}}};\n# {r}\n{extra}"),
        );
        write(
            &w,
            &format!("roles/{r}/files/etc/{r}/vars.conf.tmpl"),
            &format!("port = {{{{ vars.port }}}}\nrole = {r}\n"),
        );
        write(
            &w,
            &format!("roles/{r}/units/{r}.service"),
            "[Service]\nExecStart=/usr/bin/sleep infinity\n",
        );
        write(
            &w,
            &format!("roles/{r}/host.toml"),
            &format!(
                "[vars]\nport = 8080\n\n[units.\"{r}.service\"]\nrestart_on = [\"/etc/{r}/site.conf\"]\n"
            ),
        );
    };
    role("base", "");
    for r in 0..ROLES {
        role(&format!("r{r}"), "");
    }
    for i in 0..hosts * 4 / 5 {
        write(
            &w,
            &format!("hosts/{}/host.toml", name(i, hosts)),
            &format!(
                "include = [\"roles/base\", \"roles/r{}\"]\n",
                i % (ROLES - 1)
            ),
        );
    }
    git(&w, &["add", "-A"]);
    git(&w, &["commit", "-q", "-m", "base"]);
    let base = git(&w, &["rev-parse", "HEAD"]);
    status_branches(&w, hosts);
    // One role changed: its template and one file.
    write(
        &w,
        "roles/r3/files/etc/r3/site.conf.tmpl",
        "server_name {{ facts.hostname }};\nworkers {{ facts.cpus }};\n# r3\ngzip on;\n",
    );
    write(
        &w,
        "roles/r3/files/etc/r3/f0.conf",
        "# r3 file 0\nvalue = 1\n",
    );
    git(&w, &["commit", "-q", "-am", "r3: gzip"]);
    let head = git(&w, &["rev-parse", "HEAD"]);

    let mut best = Duration::MAX;
    let mut last = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(&bin)
            .args(["diff", "--config", "/nonexistent", "--dir"])
            .arg(&w)
            .args([&base, &head])
            .output()
            .unwrap();
        best = best.min(t.elapsed());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let summary = last.lines().last().unwrap_or("").to_string();
    let r3 = (0..hosts * 4 / 5).filter(|i| i % (ROLES - 1) == 3).count();
    assert!(
        summary.contains(&format!(
            ": {r3} hosts changed, 0 rejected, 0 not rendered (no facts), {} unchanged",
            hosts - r3
        )),
        "{summary}"
    );
    // Every host sees its own facts, so each of its 4 templates renders once for both commits
    // (the cache serves the unchanged ones at HEAD); the changed one renders again.
    let out = Command::new(&bin)
        .args(["diff", "--json", "--config", "/nonexistent", "--dir"])
        .arg(&w)
        .args([&base, &head])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let renders = v["renders"].as_u64().unwrap();
    assert_eq!(renders, (4 * hosts + r3) as u64);
    println!(
        "plumb diff, {hosts} hosts, {r3} changed: best of 3 {best:?}, {renders} renders ({bin})"
    );
    if bin.contains("release") {
        assert!(
            best <= Duration::from_secs(5),
            "over the 5 s target: {best:?}"
        );
    }
}
