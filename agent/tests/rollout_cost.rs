//! What the rollout gate costs per poll (issue 15), measured (not asserted) with a real
//! `git daemon` on 127.0.0.1 behind a byte-counting TCP proxy. Run it with
//!
//! ```sh
//! cargo test -p plumb --test rollout_cost -- --ignored --nocapture
//! ```
//!
//! A status repository holds the branches of a wave of 100 hosts (`PLUMB_WAVE_HOSTS` changes
//! it). The gate's read (`rollout::read::read`, into a kept `rollout.git`) is timed and its
//! received bytes counted: the first poll, a poll when nothing changed, after one host pushed a
//! new report, and after every host did (a heartbeat round).

mod common;

use common::proxy::Proxy;
use common::{git, GitDaemon};
use plumb::status::remote::Endpoint;
use plumb::status::report::{Outcome, Report};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn report(host: &str, round: u64) -> Report {
    Report {
        host: host.into(),
        agent_version: "0.1.0".into(),
        outcome: Outcome::Converged,
        desired_commit: "c".repeat(40),
        applied_commit: "c".repeat(40),
        last_good_commit: "c".repeat(40),
        applied_at: "2026-11-30T01:00:00Z".into(),
        waiting: String::new(),
        reboot_required: None,
        last_reboot: None,
        checked_at: format!("2026-11-30T02:{:02}:00Z", round % 60),
        message: String::new(),
        reason: None,
        facts: None,
        upgrades: None,
        age_recipient: None,
        container_updates: vec![],
        resources: vec![],
    }
}

/// Writes (or rewrites, on top of the old tip) the status branches of `hosts` with `git fast-import`.
fn reports(repo: &Path, hosts: &[String], round: u64) {
    let mut stream = String::new();
    for h in hosts {
        let body = report(h, round).to_toml();
        let msg = format!("{h}: converged at ccccccc");
        let from = if round > 0 {
            format!("from refs/heads/status/{h}^0\n")
        } else {
            String::new()
        };
        stream.push_str(&format!(
            "commit refs/heads/status/{h}\ncommitter plumb <plumb@{h}> {} +0000\ndata {}\n{msg}\n{from}M 100644 inline status.toml\ndata {}\n{body}\n",
            1_795_000_000 + round,
            msg.len(),
            body.len()
        ));
    }
    common::fast_import(repo, &stream, &["--force"]);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn gate_read_cost_for_a_wave_of_100_hosts() {
    let n: usize = std::env::var("PLUMB_WAVE_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let t = tempfile::tempdir().unwrap();
    let srv = t.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    git(&srv, &["init", "-q", "--bare", "-b", "main", "fleet.git"]);
    let repo = srv.join("fleet.git");
    let hosts: Vec<String> = (0..n).map(|i| format!("store-{i:03}")).collect();
    reports(&repo, &hosts, 0);
    let daemon = GitDaemon::start(&srv);
    let proxy = Proxy::start(daemon.port);
    let ep = Endpoint {
        url: format!("git://127.0.0.1:{}/fleet.git", proxy.port),
        ssh_key: None,
        token_file: None,
        known_hosts: None,
    };
    let state = t.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let read = || {
        let r = plumb::rollout::read::open(&state, &ep).unwrap();
        let f =
            plumb::rollout::read::read(&r, &ep, &ep.url, "web-1", &[], &HashMap::new()).unwrap();
        assert_eq!(f.peers.len(), n);
    };
    println!("| gate read, {n} status branches | wall | bytes received |");
    println!("|---|---|---|");
    let line = |what: &str, (bytes, wall): (u64, Duration)| {
        println!(
            "| {what} | {:.1} ms | {bytes} |",
            wall.as_secs_f64() * 1000.0
        )
    };
    line("first poll (empty rollout.git)", proxy.measure(read));
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(proxy.measure(read));
    }
    idle.sort_by_key(|x| x.1);
    line("no report changed (median of 5)", idle[2]);
    reports(&repo, &hosts[..1], 1);
    line("one host pushed a new report", proxy.measure(read));
    reports(&repo, &hosts, 2);
    line(&format!("all {n} pushed a new report"), proxy.measure(read));
}
