//! `plumb run`: a pass every interval (jittered; while Git is unreachable the engine backs off the
//! fetch, not the pass, so drift is still corrected on time), a pass now on SIGHUP or SIGUSR1, a
//! clean stop on SIGTERM or SIGINT, and sd_notify READY/STATUS/WATCHDOG.

use crate::config::Settings;
use crate::engine::{Agent, PassOptions};
use anyhow::{Context, Result};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The daemon's states, mirrored to systemd's STATUS line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Reconciling,
    Idle,
    Stopping,
}

pub fn run(settings: Settings) -> Result<i32> {
    // On the process's runtime (`main` runs commands on its blocking pool and drives it).
    crate::host::runtime::handle()?.block_on(run_loop(settings))
}

async fn run_loop(settings: Settings) -> Result<i32> {
    let interval = settings.interval;
    let mut agent = Some(Agent::new(settings)?);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // One ticker for the whole life of the daemon: a timer made anew inside each `select!` would
    // restart whenever another branch fired first, and never ping while waits are shorter than the
    // ping period (issue 20: killed by systemd at the shipped WatchdogSec=2min, interval 60s).
    let mut watchdog = watchdog_interval().map(|period| {
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut phase = Phase::Starting;
    let stop = agent.as_ref().expect("set").stop.clone();
    tracing::info!(source = %agent.as_ref().expect("set").describe_source(), "plumb started");
    notify(&["READY=1", "STATUS=starting"]);
    // Passes that failed outright (plumb's own state unreadable or unwritable): those back off.
    let mut failures: u32 = 0;
    // A pass asked for by a signal fetches even while fetches are backing off.
    let mut signalled = false;
    loop {
        phase = transition(phase, Phase::Reconciling);
        let mut a = agent.take().expect("agent is home between passes");
        let opts = PassOptions {
            fetch_now: std::mem::take(&mut signalled),
            ..PassOptions::default()
        };
        let job = tokio::task::spawn_blocking(move || {
            let r = a.pass(opts);
            (a, r)
        });
        tokio::pin!(job);
        // Keep feeding the watchdog while the pass runs; signals wait for the pass to end.
        let (a, result) = loop {
            tokio::select! {
                done = &mut job => break done.context("the pass panicked")?,
                _ = term.recv() => stop.store(true, std::sync::atomic::Ordering::Relaxed),
                _ = int.recv() => stop.store(true, std::sync::atomic::Ordering::Relaxed),
                _ = tick(&mut watchdog) => notify(&["WATCHDOG=1"]),
            }
        };
        agent = Some(a);
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(stop_now(transition(phase, Phase::Idle)));
        }
        let delay = match result {
            Ok(r) => {
                failures = 0;
                let status = format!(
                    "STATUS={} at {}{}",
                    r.report.outcome.as_str(),
                    r.report.desired_commit.get(..12).unwrap_or("-"),
                    if r.report.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.report.message)
                    }
                );
                notify(&[&status]);
                if r.rebooting {
                    // No pass while the host shuts down: its SIGTERM ends the wait.
                    notify(&["STATUS=rebooting"]);
                    crate::engine::REBOOT_QUIET
                } else {
                    next_delay(interval, failures)
                }
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %format!("{e:#}"), "pass failed");
                notify(&[&format!("STATUS=pass failed: {e:#}")]);
                next_delay(interval, failures)
            }
        };
        phase = transition(phase, Phase::Idle);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = hup.recv() => { tracing::info!("SIGHUP: pass now"); signalled = true; break }
                _ = usr1.recv() => { tracing::info!("SIGUSR1: pass now"); signalled = true; break }
                _ = term.recv() => return Ok(stop_now(phase)),
                _ = int.recv() => return Ok(stop_now(phase)),
                _ = tick(&mut watchdog) => notify(&["WATCHDOG=1"]),
            }
        }
    }
}

/// The next watchdog tick; never, without a watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn stop_now(phase: Phase) -> i32 {
    transition(phase, Phase::Stopping);
    notify(&["STOPPING=1", "STATUS=stopping"]);
    tracing::info!("plumb stopping");
    0
}

fn transition(from: Phase, to: Phase) -> Phase {
    let ok = matches!(
        (from, to),
        (Phase::Starting | Phase::Idle, Phase::Reconciling)
            | (Phase::Reconciling, Phase::Idle)
            | (Phase::Idle, Phase::Stopping)
    );
    debug_assert!(ok, "bad daemon transition {from:?} -> {to:?}");
    tracing::debug!(?from, ?to, "daemon state");
    to
}

/// The interval, jittered +-10 %; after failed passes, doubled per failure up to max(interval, 10 min).
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(600));
    let base = if failures == 0 {
        interval
    } else {
        interval.saturating_mul(1 << failures.min(16)).min(cap)
    };
    base.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Half of systemd's WatchdogSec, when it set one for us.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
fn notify(lines: &[&str]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = lines.join("\n");
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        let i = Duration::from_secs(60);
        for _ in 0..100 {
            let d = next_delay(i, 0);
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
        assert!(next_delay(i, 3) >= Duration::from_secs(432));
        assert!(next_delay(i, 30) <= Duration::from_secs(660));
    }
}
