//! `plumb run` as systemd runs it: the watchdog is fed whatever the interval (issue 20, item 1),
//! and a fleet server that is down backs off the fetch, not the pass (issue 20, item 11).

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A `plumb run` child, killed when the test ends however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `plumb run`; WATCHDOG_PID is the agent's own PID, as systemd sets it (a shell that
/// execs the agent knows the PID before the agent starts).
fn start(h: &Host, env: &[(&str, String)]) -> Daemon {
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"",
    ])
    .arg(PLUMB)
    .args(["run", "--config"])
    .arg(h.config())
    .env("PLUMB_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon(cmd.spawn().expect("starting plumb run"))
}

fn set_interval(h: &Host, interval: &str) {
    let cfg = std::fs::read_to_string(h.config())
        .unwrap()
        .replace("interval = \"1s\"", &format!("interval = \"{interval}\""));
    std::fs::write(h.config(), cfg).unwrap();
}

/// systemd pings at WatchdogSec; the agent must send WATCHDOG=1 within every period. Passes here
/// are far shorter than the ping period and the interval (1 s) is shorter than it too: the shape
/// of the shipped unit (WatchdogSec=2min, interval 60 s) that got plumb killed every few minutes.
#[test]
fn issue_20_watchdog_is_fed_when_waits_are_shorter_than_the_ping_period() {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/motd", "hello\n");
    f.commit("one");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let watchdog = Duration::from_secs(3);
    let _daemon = start(
        &h,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", watchdog.as_micros().to_string()),
        ],
    );

    let mut ready_at = None;
    let mut pings: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while pings.len() < 8 {
        assert!(
            Instant::now() < deadline,
            "only {} watchdog pings in 60 s",
            pings.len()
        );
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading the notify socket: {e}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        let now = Instant::now();
        if msg.lines().any(|l| l == "READY=1") {
            ready_at = Some(now);
        }
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            pings.push(now);
        }
    }
    let ready_at = ready_at.expect("READY=1 before the pings");
    let mut last = ready_at;
    for p in &pings {
        let gap = p.duration_since(last);
        assert!(
            gap < watchdog,
            "a watchdog ping came {gap:?} after the previous one: systemd kills at {watchdog:?}"
        );
        last = *p;
    }
    // The agent did its work meanwhile.
    assert_eq!(h.read("/etc/motd").as_deref(), Some("hello\n"));
}

/// With the fleet server down, hand edits are still corrected every interval; the report says the
/// fetch fails; SIGHUP fetches at once when the server is back.
#[test]
fn issue_20_fetch_backoff_does_not_slow_drift_correction() {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/motd", "hello\n");
    f.commit("one");
    let server = GitDaemon::start(f.dir.path());
    let h = Host::new("h1", &server.url("fleet.git"), "");
    set_interval(&h, "1s");
    let daemon = start(&h, &[]);
    wait_until("the first pass", Duration::from_secs(30), || {
        h.read("/etc/motd").as_deref() == Some("hello\n")
    });
    let (base, port) = server.stop();

    // Ten rounds of drift with the server down: with the pass backing off (1, 2, 4, 8 ... s) the
    // later rounds would wait far longer than a few intervals.
    for round in 0..10 {
        let edited = format!("edited by hand {round}\n");
        std::fs::write(h.path("/etc/motd"), &edited).unwrap();
        let t = Instant::now();
        wait_until(
            &format!("drift round {round} corrected with the server down"),
            Duration::from_secs(30),
            || h.read("/etc/motd").as_deref() == Some("hello\n"),
        );
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "round {round}: drift corrected only after {:?} (interval 1 s)",
            t.elapsed()
        );
    }
    let report = h.status();
    let message = report["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not fetch"), "{message}");

    // Back up, a new commit, SIGHUP: fetched and applied now, not after the backoff.
    let _server = GitDaemon::start_on(&base, port);
    f.write("hosts/h1/files/etc/motd", "after the outage\n");
    f.commit("two");
    let pid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until(
        "the new commit after SIGHUP",
        Duration::from_secs(20),
        || h.read("/etc/motd").as_deref() == Some("after the outage\n"),
    );
}
