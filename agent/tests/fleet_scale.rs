//! Issue 16: `plumb fleet` over a large fleet, measured (not asserted beyond correctness), served
//! by a real `git daemon` on 127.0.0.1:
//!
//! - one status repository per host (`{host}` in `--repo`): N tiny bare repositories, read by a
//!   bounded pool of connections;
//! - one shared status repository holding N status branches, against a bare `git fetch --depth 1`
//!   of the same refs.
//!
//! On a release build, as docs/status.md reports it:
//!
//! ```sh
//! cargo build --release -p plumb
//! PLUMB_BIN=$PWD/target/release/plumb cargo test -p plumb --test fleet_scale -- --ignored --nocapture
//! ```
//!
//! (`PLUMB_FLEET_HOSTS=1000` for a smaller fleet; default 10,000; `PLUMB_FLEET_RUNS` runs per
//! row, default 3; `PLUMB_FLEET_ONLY=shared` or `=cached` for the shared repository or the cached
//! per-host reads only.) The per-host repositories share
//! one object store (`objects/info/alternates`), so 10,000 of them take a few MB; all are removed
//! at the end.

mod common;

use common::{git, GitDaemon};
use plumb::status::report::{Outcome, Report};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn report(host: &str) -> Report {
    Report {
        host: host.into(),
        agent_version: "0.1.0".into(),
        outcome: Outcome::Converged,
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
}

fn fast_import(repo: &Path, stream: &str) {
    common::fast_import(repo, stream, &[]);
    git(repo, &["pack-refs", "--all"]);
    git(repo, &["gc", "-q"]);
}

/// A fleet repository: `hosts/host-<i>/host.toml` for `n` hosts, one commit on main.
fn make_fleet(srv: &Path, name: &str, n: usize) {
    git(srv, &["init", "-q", "--bare", "-b", "main", name]);
    let mut s = String::from(
        "commit refs/heads/main\ncommitter ops <ops@example.org> 1795000000 +0000\ndata 5\nfleet\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "M 100644 inline hosts/host-{i}/host.toml\ndata 0\n"
        ));
    }
    fast_import(&srv.join(name), &s);
}

/// A bare repository with `status/host-<i>` for every host, each its own commit.
fn make_status(srv: &Path, name: &str, n: usize) {
    git(srv, &["init", "-q", "--bare", "-b", "main", name]);
    let mut s = String::new();
    for i in 0..n {
        let host = format!("host-{i}");
        let body = report(&host).to_toml();
        let msg = format!("{host}: converged");
        s.push_str(&format!(
            "commit refs/heads/status/{host}\ncommitter plumb <plumb@{host}> 1795000000 +0000\ndata {}\n{msg}\nM 100644 inline status.toml\ndata {}\n{body}\n",
            msg.len(),
            body.len()
        ));
    }
    fast_import(&srv.join(name), &s);
}

/// One bare repository per host, `ph/host-<i>.git`, holding only its own status branch; the
/// objects live in `objects.git`, which every one of them borrows from.
fn make_per_host(srv: &Path, n: usize) {
    make_status(srv, "objects.git", n);
    let objects = srv.join("objects.git/objects");
    let refs = git(
        &srv.join("objects.git"),
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    for line in refs.lines() {
        let (name, id) = line.split_once(' ').unwrap();
        let host = name.strip_prefix("refs/heads/status/").unwrap();
        let repo = srv.join("ph").join(format!("{host}.git"));
        std::fs::create_dir_all(repo.join("objects/info")).unwrap();
        std::fs::create_dir_all(repo.join("refs/heads/status")).unwrap();
        std::fs::write(repo.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(
            repo.join("config"),
            "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
        )
        .unwrap();
        std::fs::write(
            repo.join("objects/info/alternates"),
            format!("{}\n", objects.display()),
        )
        .unwrap();
        std::fs::write(repo.join("refs/heads/status").join(host), format!("{id}\n")).unwrap();
    }
}

/// Moves the status branch of every `every`-th host (in its own repository) to a new report,
/// `round` apart from the earlier ones.
fn change_some(srv: &Path, n: usize, every: usize, round: usize) {
    let objects = srv.join("objects.git");
    let mut s = String::new();
    for i in (0..n).step_by(every) {
        let host = format!("host-{i}");
        let body = Report {
            checked_at: format!("2026-11-26T10:{:02}:00Z", round % 60),
            ..report(&host)
        }
        .to_toml();
        let msg = format!("{host}: converged again");
        s.push_str(&format!(
            "commit refs/heads/changed/{host}\ncommitter plumb <plumb@{host}> {} +0000\ndata {}\n{msg}\nM 100644 inline status.toml\ndata {}\n{body}\n",
            1795000000 + round,
            msg.len(),
            body.len()
        ));
    }
    // The changed/ refs move to unrelated commits each round.
    common::fast_import(&objects, &s, &["--force"]);
    for i in (0..n).step_by(every) {
        let host = format!("host-{i}");
        let id = git(
            &objects,
            &["rev-parse", &format!("refs/heads/changed/{host}")],
        );
        let repo = srv.join("ph").join(format!("{host}.git"));
        std::fs::write(
            repo.join("refs/heads/status").join(&host),
            format!("{id}\n"),
        )
        .unwrap();
    }
}

fn plumb_bin() -> PathBuf {
    std::env::var_os("PLUMB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(common::PLUMB))
}

/// `plumb fleet --json --no-cache` with these URLs: (hosts listed, wall).
fn plumb_fleet(status: &str, fleet: &str) -> (usize, Duration) {
    plumb_fleet_expecting(status, fleet, "converged", None)
}

/// With `cache` as `XDG_CACHE_HOME`, else `--no-cache`.
fn plumb_fleet_expecting(
    status: &str,
    fleet: &str,
    outcome: &str,
    cache: Option<&Path>,
) -> (usize, Duration) {
    let mut cmd = Command::new(plumb_bin());
    cmd.args(["fleet", "--config", "/nonexistent/agent.toml", "--json"])
        .args(["--repo", status, "--fleet-repo", fleet])
        .env("PLUMB_LOG", "warn");
    match cache {
        Some(c) => cmd.env("XDG_CACHE_HOME", c),
        None => cmd.arg("--no-cache"),
    };
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for l in lines.iter().filter(|l| l["host"] != "host-0") {
        assert_eq!(l["outcome"], outcome, "{l}");
    }
    (lines.len(), wall)
}

/// A bare `git fetch --depth 1` of every status branch into an empty repository.
fn git_fetch(dir: &Path, url: &str) -> Duration {
    let repo = dir.join(format!("fetch-{}.git", fastrand_suffix()));
    git(dir, &["init", "-q", "--bare", repo.to_str().unwrap()]);
    let t = Instant::now();
    git(
        &repo,
        &[
            "-c",
            "protocol.version=2",
            "fetch",
            "-q",
            "--depth",
            "1",
            url,
            "+refs/heads/status/*:refs/remotes/origin/status/*",
        ],
    );
    let wall = t.elapsed();
    std::fs::remove_dir_all(&repo).unwrap();
    wall
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// CPU seconds (user, system) of the reaped children of process `pid` (/proc/PID/stat).
fn children_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // In clock ticks of USER_HZ, 100 on Linux.
    let secs = |i: usize| f[i].parse::<f64>().unwrap() / 100.0;
    // cutime and cstime are fields 16 and 17 of the line, 14 and 15 after the name.
    (secs(13), secs(14))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "a benchmark: minutes, and 10,000 repositories"]
fn fleet_read_at_scale() {
    let n: usize = std::env::var("PLUMB_FLEET_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let t = Instant::now();
    make_fleet(&srv, "fleet.git", n);
    make_fleet(&srv, "fleet-one.git", 1);
    make_status(&srv, "status.git", n);
    make_per_host(&srv, n);
    println!("setup of {n} hosts: {}", ms(t.elapsed()));
    let daemon = GitDaemon::start(&srv);
    let fleet = daemon.url("fleet.git");
    println!("plumb: {}", plumb_bin().display());
    println!("| what | hosts | median wall |\n|---|---|---|");

    let rounds: usize = std::env::var("PLUMB_FLEET_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only_shared = std::env::var("PLUMB_FLEET_ONLY").is_ok_and(|v| v == "shared");
    // The cached per-host reads only: one cold run, then `rounds` of the others.
    let only_cached = std::env::var("PLUMB_FLEET_ONLY").is_ok_and(|v| v == "cached");
    let per_host = daemon.url("ph/{host}.git");
    let no_cache_runs = if only_shared || only_cached {
        0
    } else {
        rounds
    };
    let runs: Vec<Duration> = (0..no_cache_runs)
        .map(|_| {
            let (hosts, wall) = plumb_fleet(&per_host, &fleet);
            assert_eq!(hosts, n);
            wall
        })
        .collect();
    if !runs.is_empty() {
        println!(
            "| `plumb fleet --no-cache`, one status repository per host ({} connections at a time) | {n} | {} |",
            plumb::status::fleet::PER_HOST_CONNECTIONS,
            ms(median(runs))
        );
    }
    if !only_shared {
        // With the cache: cold (empty), warm (nothing changed), warm with 1% of hosts changed.
        let cache = tmp.path().join("cache");
        // CPU seconds of plumb (user, system) and of the server (git daemon's children) in `f`.
        let cpu = |what: &str, f: &mut dyn FnMut()| {
            let (me, server) = (std::process::id(), daemon.pid());
            let (c0, s0) = (children_cpu(me), children_cpu(server));
            f();
            let (c1, s1) = (children_cpu(me), children_cpu(server));
            println!(
                "{what}: plumb {:.1} s user + {:.1} s system, server {:.1} s user + {:.1} s system",
                c1.0 - c0.0,
                c1.1 - c0.1,
                s1.0 - s0.0,
                s1.1 - s0.1
            );
        };
        let cold: Vec<Duration> = (0..if only_cached { 1 } else { rounds })
            .map(|_| {
                let _ = std::fs::remove_dir_all(&cache);
                let mut wall = Duration::ZERO;
                cpu("cold", &mut || {
                    let (hosts, w) =
                        plumb_fleet_expecting(&per_host, &fleet, "converged", Some(&cache));
                    assert_eq!(hosts, n);
                    wall = w;
                });
                wall
            })
            .collect();
        println!(
            "| `plumb fleet`, one status repository per host, cold cache | {n} | {} |",
            ms(median(cold))
        );
        let warm: Vec<Duration> = (0..rounds)
            .map(|_| {
                let mut wall = Duration::ZERO;
                cpu("warm", &mut || {
                    wall = plumb_fleet_expecting(&per_host, &fleet, "converged", Some(&cache)).1;
                });
                wall
            })
            .collect();
        println!(
            "| `plumb fleet`, one status repository per host, warm cache, nothing changed | {n} | {} |",
            ms(median(warm))
        );
        let changed: Vec<Duration> = (0..rounds)
            .map(|r| {
                change_some(&srv, n, 100, r + 1);
                let mut wall = Duration::ZERO;
                cpu("warm, 1% changed", &mut || {
                    wall = plumb_fleet_expecting(&per_host, &fleet, "converged", Some(&cache)).1;
                });
                wall
            })
            .collect();
        println!(
            "| `plumb fleet`, one status repository per host, warm cache, 1% of hosts changed | {n} | {} |",
            ms(median(changed))
        );
    }

    if only_cached {
        return;
    }
    let shared = daemon.url("status.git");
    let runs: Vec<Duration> = (0..rounds)
        .map(|_| {
            let (hosts, wall) = plumb_fleet(&shared, &fleet);
            assert_eq!(hosts, n);
            wall
        })
        .collect();
    let plumb_shared = median(runs);
    println!(
        "| `plumb fleet`, one shared status repository | {n} | {} |",
        ms(plumb_shared)
    );
    // The same with a fleet repository of one host: the status branches alone.
    let one = daemon.url("fleet-one.git");
    let runs: Vec<Duration> = (0..rounds).map(|_| plumb_fleet(&shared, &one).1).collect();
    println!(
        "| `plumb fleet`, one shared status repository, fleet repository of one host | {n} | {} |",
        ms(median(runs))
    );
    let bare = median(
        (0..rounds)
            .map(|_| git_fetch(tmp.path(), &shared))
            .collect(),
    );
    println!(
        "| bare `git fetch --depth 1` of the same status branches | {n} | {} |",
        ms(bare)
    );
    println!(
        "plumb fleet (shared) / git fetch, medians: {:.2}x",
        plumb_shared.as_secs_f64() / bare.as_secs_f64()
    );
    // The machine's load moves between runs: the ratio of back-to-back pairs is steadier.
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let p = plumb_fleet(&shared, &fleet).1;
            let g = git_fetch(tmp.path(), &shared);
            p.as_secs_f64() / g.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "plumb fleet (shared) / git fetch, back-to-back pairs: median {:.2}x (min {:.2}x, max {:.2}x)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    drop(daemon);
}
