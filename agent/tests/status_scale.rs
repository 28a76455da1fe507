//! Status push cost against fleet size, measured (not asserted) with a real `git daemon` on
//! 127.0.0.1 behind a byte-counting TCP proxy. Run it with
//!
//! ```sh
//! cargo test -p plumb --test status_scale -- --ignored --nocapture
//! ```
//!
//! (`PLUMB_SCALE_SIZES=10,1000` changes the branch counts; default 10 and 10,000.) It prints one
//! line per setup: the median wall time and bytes received of a status push made by plumb's own
//! publisher (gix commit + `git push`), of `plumb fleet` reading every status branch, and of the
//! fleet fetches, for status branches kept in the fleet repository vs a separate one.

mod common;

use common::proxy::Proxy;
use common::{git, GitDaemon};
use plumb::status::publish::Publisher;
use plumb::status::remote::Endpoint;
use plumb::status::report::{Outcome, Report};
use std::path::Path;
use std::time::Duration;

/// A bare repo with a fleet commit on main (unless `fleet` is false) and `n` status branches,
/// each its own commit with its own status.toml, written with `git fast-import`.
fn make_repo(dir: &Path, name: &str, fleet: bool, n: usize) {
    git(dir, &["init", "-q", "--bare", "-b", "main", name]);
    let mut stream = String::new();
    if fleet {
        let file = "hello\n";
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter ops <ops@example.org> 1795000000 +0000\ndata 5\nfleet\nM 100644 inline hosts/bench/files/etc/motd\ndata {}\n{file}\n",
            file.len()
        ));
    }
    for i in 0..n {
        let body = report(&format!("host-{i}"), i as u64).to_toml();
        let msg = format!("host-{i}: converged at 0000000");
        stream.push_str(&format!(
            "commit refs/heads/status/host-{i}\ncommitter plumb <plumb@host-{i}> 1795000000 +0000\ndata {}\n{msg}\nM 100644 inline status.toml\ndata {}\n{body}\n",
            msg.len(),
            body.len()
        ));
    }
    common::fast_import(&dir.join(name), &stream, &[]);
    git(&dir.join(name), &["pack-refs", "--all"]);
    git(&dir.join(name), &["gc", "-q"]);
}

fn report(host: &str, n: u64) -> Report {
    Report {
        host: host.into(),
        agent_version: "0.1.0".into(),
        outcome: Outcome::Converged,
        desired_commit: format!("{n:040x}"),
        applied_commit: format!("{n:040x}"),
        last_good_commit: format!("{n:040x}"),
        applied_at: String::new(),
        waiting: String::new(),
        reboot_required: None,
        last_reboot: None,
        checked_at: "2026-11-26T10:00:00Z".into(),
        message: String::new(),
        reason: None,
        age_recipient: None,
        container_updates: vec![],
        facts: None,
        upgrades: None,
        resources: vec![],
    }
}

fn median(mut v: Vec<(u64, Duration)>) -> (u64, Duration) {
    v.sort_by_key(|x| x.1);
    v[v.len() / 2]
}

/// Median of `rounds` status pushes by one host to `url` (each a new report: a real push).
fn pushes(proxy: &Proxy, state: &Path, url: &str, rounds: u64) -> (u64, Duration) {
    let p = Publisher {
        dir: state.join("status.git"),
        endpoint: Endpoint {
            url: url.into(),
            ssh_key: None,
            token_file: None,
            known_hosts: None,
        },
        branch: "status/bench".into(),
        history: 100,
        host: "bench".into(),
        timeout: Duration::from_secs(120),
        signing_key: None,
    };
    // The first push creates the branch; the measured ones are the steady state.
    p.push(&report("bench", 0)).unwrap();
    median(
        (1..=rounds)
            .map(|i| {
                proxy.measure(|| {
                    p.push(&report("bench", i)).unwrap();
                })
            })
            .collect(),
    )
}

fn line(what: &str, n: usize, (bytes, wall): (u64, Duration)) {
    println!(
        "| {what} | {n} | {:.0} ms | {bytes} |",
        wall.as_secs_f64() * 1000.0
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn status_push_cost_by_fleet_size() {
    let sizes: Vec<usize> = std::env::var("PLUMB_SCALE_SIZES")
        .unwrap_or_else(|_| "10,10000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let t = tempfile::tempdir().unwrap();
    let srv = t.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    // The daemon's readiness probe lists fleet.git.
    make_repo(&srv, "fleet.git", true, 0);
    let daemon = GitDaemon::start(&srv);
    let proxy = Proxy::start(daemon.port);
    let rounds = 5;
    println!("| what | status branches | median wall | bytes received |");
    println!("|---|---|---|---|");
    for &n in &sizes {
        make_repo(&srv, &format!("fleet-{n}.git"), true, n);
        make_repo(&srv, &format!("status-{n}.git"), false, n);
        make_repo(&srv, &format!("alone-{n}.git"), true, 0);
        let state = t.path().join(format!("state-{n}"));

        let same = pushes(
            &proxy,
            &state.join("same"),
            &proxy.url(&format!("fleet-{n}.git")),
            rounds,
        );
        line("status push, branches in the fleet repo", n, same);
        let sep = pushes(
            &proxy,
            &state.join("sep"),
            &proxy.url(&format!("status-{n}.git")),
            rounds,
        );
        line("status push, separate status repo", n, sep);
        make_repo(&srv, &format!("own-{n}.git"), false, 0);
        let own = pushes(
            &proxy,
            &state.join("own"),
            &proxy.url(&format!("own-{n}.git")),
            rounds,
        );
        line("status push, a status repo per host", n, own);

        // The fleet side: plumb's fetch (v2, ref-prefix) and a plain `git fetch` of all branches.
        for (label, repo) in [
            (
                "fleet repo holding the status branches",
                format!("fleet-{n}.git"),
            ),
            (
                "fleet repo without status branches",
                format!("alone-{n}.git"),
            ),
        ] {
            let local =
                plumb::source::git::LocalRepo::open_or_init(&state.join(format!("{repo}-agent")))
                    .unwrap();
            let remote = plumb::source::git::Remote {
                url: proxy.url(&repo),
                branch: "main".into(),
                ssh_key: None,
                token_file: None,
                known_hosts: None,
            };
            local.fetch(&remote).unwrap();
            let noop = median(
                (0..rounds)
                    .map(|_| {
                        proxy.measure(|| {
                            local.fetch(&remote).unwrap();
                        })
                    })
                    .collect(),
            );
            line(&format!("plumb no-op fetch of main, {label}"), n, noop);
            let clone = state.join(format!("{repo}-clone"));
            git(
                t.path(),
                &[
                    "clone",
                    "-q",
                    "--bare",
                    &proxy.url(&repo),
                    clone.to_str().unwrap(),
                ],
            );
            let plain = median(
                (0..rounds)
                    .map(|_| {
                        proxy.measure(|| {
                            drop(git(
                                &clone,
                                &["fetch", "-q", "origin", "+refs/heads/*:refs/heads/*"],
                            ))
                        })
                    })
                    .collect(),
            );
            line(
                &format!("plain `git fetch` (all branches), {label}"),
                n,
                plain,
            );
        }

        // The reader: `plumb fleet` over every status branch.
        let q = plumb::status::fleet::FleetQuery {
            status: Endpoint {
                url: proxy.url(&format!("status-{n}.git")),
                ssh_key: None,
                token_file: None,
                known_hosts: None,
            },
            fleet: Endpoint {
                url: proxy.url(&format!("alone-{n}.git")),
                ssh_key: None,
                token_file: None,
                known_hosts: None,
            },
            branch: "main".into(),
            heartbeat: Duration::from_secs(3600),
        };
        let fleet = median(
            (0..3)
                .map(|_| {
                    proxy.measure(|| {
                        let mut cache =
                            plumb::status::tipcache::TipCache::disabled(&q.status.redacted());
                        let lines = plumb::status::fleet::read(&q, &mut cache).unwrap().lines;
                        assert_eq!(lines.len(), n + 1); // + status/bench
                    })
                })
                .collect(),
        );
        line("`plumb fleet` (reads every status branch)", n, fleet);
    }
}
