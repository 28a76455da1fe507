//! `plumb fleet` with one status repository per host remembers each host's tip: a second run
//! lists the refs of every host but fetches a pack only for a host whose status branch moved
//! (counted by a proxy in front of a real `git daemon`), and still shows that host's new report.

mod common;

use common::proxy::Proxy;
use common::{git, GitDaemon};
use plumb::status::report::{Outcome, Report};
use std::path::Path;
use std::process::Command;

const HOSTS: [&str; 3] = ["canary-1", "web-1", "web-2"];

fn report(host: &str, outcome: Outcome) -> String {
    Report {
        host: host.into(),
        agent_version: "0.1.0".into(),
        outcome,
        desired_commit: "0".repeat(40),
        applied_commit: "0".repeat(40),
        last_good_commit: "0".repeat(40),
        checked_at: "2026-11-26T10:00:00Z".into(),
        message: String::new(),
        reason: None,
        applied_at: String::new(),
        waiting: String::new(),
        reboot_required: None,
        last_reboot: None,
        age_recipient: None,
        container_updates: vec![],
        facts: None,
        upgrades: None,
        resources: vec![],
    }
    .to_toml()
}

/// A new commit on `status/<host>` of `status-<host>.git` holding `body` as status.toml.
fn publish(srv: &Path, host: &str, body: &str, time: u64) {
    let repo = srv.join(format!("status-{host}.git"));
    if !repo.exists() {
        git(
            srv,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &format!("status-{host}.git"),
            ],
        );
    }
    let branch = format!("refs/heads/status/{host}");
    let from = if time > 1 {
        format!("from {branch}^0\n")
    } else {
        String::new()
    };
    let msg = format!("{host}: report {time}");
    common::fast_import(
        &repo,
        &format!(
            "commit {branch}\ncommitter plumb <plumb@{host}> {} +0000\ndata {}\n{msg}\n{from}M 100644 inline status.toml\ndata {}\n{body}\n",
            1_795_000_000 + time,
            msg.len(),
            body.len()
        ),
        &[],
    );
}

/// `plumb fleet --json` plus the rollout text: (host, outcome) per line, rollout text.
fn fleet(proxy: &Proxy, cache: &Path, extra: &[&str]) -> (Vec<(String, String)>, String) {
    let run = |json: bool| {
        let out = Command::new(common::PLUMB)
            .args(["fleet", "--config", "/nonexistent/agent.toml"])
            .args(["--repo", &proxy.url("status-{host}.git")])
            .args(["--fleet-repo", &proxy.url("fleet.git")])
            .args(if json {
                &["--json"][..]
            } else {
                &["--rollout"][..]
            })
            .args(extra)
            .env("XDG_CACHE_HOME", cache)
            .env("PLUMB_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines: Vec<serde_json::Value> = serde_json::from_str(&run(true)).unwrap();
    let lines = lines
        .iter()
        .map(|l| {
            (
                l["host"].as_str().unwrap().to_string(),
                l["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (lines, run(false))
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_warm_fleet_read_fetches_only_the_hosts_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&srv).unwrap();
    git(&srv, &["init", "-q", "--bare", "-b", "main", "fleet.git"]);
    let mut s = String::from(
        "commit refs/heads/main\ncommitter ops <ops@example.org> 1795000000 +0000\ndata 5\nfleet\n",
    );
    let toml = "[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\n";
    s.push_str(&format!(
        "M 100644 inline fleet.toml\ndata {}\n{toml}\n",
        toml.len()
    ));
    for h in HOSTS {
        s.push_str(&format!("M 100644 inline hosts/{h}/host.toml\ndata 0\n"));
    }
    common::fast_import(&srv.join("fleet.git"), &s, &[]);
    for h in HOSTS {
        publish(&srv, h, &report(h, Outcome::Converged), 1);
    }
    let daemon = GitDaemon::start(&srv);
    let proxy = Proxy::start(daemon.port);
    let all_converged = pairs(&[
        ("canary-1", "converged"),
        ("web-1", "converged"),
        ("web-2", "converged"),
    ]);

    // Cold: every host's pack and the fleet branch's; the second run (--rollout) finds them all
    // in the cache and fetches the fleet branch only.
    let before = proxy.packs();
    let (lines, rollout) = fleet(&proxy, &cache, &[]);
    assert_eq!(lines, all_converged);
    assert!(rollout.contains("wave 2 *: 2/2 applied"), "{rollout}");
    assert_eq!(proxy.packs() - before, 1 + HOSTS.len() as u64 + 1);
    let cached = std::fs::read_dir(cache.join("plumb")).unwrap().count();
    assert_eq!(cached, 1, "one cache file for the status URL");

    // Warm, nothing changed: only the fleet branch is fetched.
    let before = proxy.packs();
    let (lines, rollout) = fleet(&proxy, &cache, &[]);
    assert_eq!(lines, all_converged);
    assert!(
        rollout.contains("wave 1 canary-*: 1/1 applied, 1 healthy"),
        "{rollout}"
    );
    assert_eq!(
        proxy.packs() - before,
        2,
        "the fleet branch, twice; no status pack"
    );

    // web-2 reports a failure: fetched by the first run only (which caches it), and seen.
    publish(&srv, "web-2", &report("web-2", Outcome::Failed), 2);
    let before = proxy.packs();
    let (lines, rollout) = fleet(&proxy, &cache, &[]);
    assert_eq!(
        lines,
        pairs(&[
            ("canary-1", "converged"),
            ("web-1", "converged"),
            ("web-2", "failed"),
        ])
    );
    assert!(
        rollout.contains("wave 2 *: 2/2 applied, 1 healthy"),
        "{rollout}"
    );
    assert_eq!(proxy.packs() - before, 2 + 1, "web-2's new status only");

    // --no-cache reads every host afresh.
    let before = proxy.packs();
    let (lines, _) = fleet(&proxy, &cache, &["--no-cache"]);
    assert_eq!(lines[2], ("web-2".to_string(), "failed".to_string()));
    assert_eq!(proxy.packs() - before, 2 * (1 + HOSTS.len() as u64));

    // A corrupt cache is ignored (everything fetched again) and rewritten.
    let file = std::fs::read_dir(cache.join("plumb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, "{not json").unwrap();
    let before = proxy.packs();
    let (lines, _) = fleet(&proxy, &cache, &[]);
    assert_eq!(lines[2], ("web-2".to_string(), "failed".to_string()));
    // The first run finds the corrupt file and fetches all three; the second reads its rewrite.
    assert_eq!(proxy.packs() - before, 2 + HOSTS.len() as u64);
}
