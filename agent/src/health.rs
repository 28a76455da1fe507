//! `[[health]]` checks, run after a pass that changed the host: a unit must reach `active` and stay
//! there for a settle time; a command must exit 0. Each within its timeout.
//!
//! Two outcomes that never mix: a [`Verdict`] on the commit (the first failed check, with what it
//! saw: the engine rolls back) and a [`Fault`] (the check could not be run: a D-Bus error while
//! reading a unit's state, no bus at all. Nothing is judged; the next pass retries).

use crate::host::command;
use crate::host::Fault as HostFault;
use crate::spec::{HealthCheck, HealthProbe};
use std::time::{Duration, Instant};

/// How long a unit must stay active once it got there.
pub const UNIT_SETTLE: Duration = Duration::from_secs(3);
/// Most bytes of a command's output kept for the report (the tail: errors come last).
pub const MAX_OUTPUT: usize = 2048;
const POLL: Duration = Duration::from_millis(100);

/// Reads a unit's ActiveState ("active", "activating", "failed", ...). Implemented over D-Bus by
/// the systemd layer. An error is a fault (the state could not be read), never a failed check.
pub trait UnitStates {
    fn active_state(&mut self, unit: &str) -> anyhow::Result<String>;
}

/// The checks' judgement of the applied commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(Failure),
}

/// A failed check: which one, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "unit app.service", "command /usr/bin/curl -fsS ..."
    pub check: String,
    pub output: String,
    /// A unit that was active went down cleanly (stopped, not crashed) during its check: most
    /// likely another hand (an operator's `systemctl stop`), not the commit.
    pub stopped: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "health check `{}` failed: {}", self.check, self.output)
    }
}

/// A check that could not be run: no verdict on the commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check `{check}` could not be run: {message}")]
pub struct Fault {
    pub check: String,
    pub message: String,
}

/// One check's finding: `Ok(())` passed, `Err(output)` failed; a fault travels apart.
type Finding = std::result::Result<(), String>;

pub fn describe(probe: &HealthProbe) -> String {
    match probe {
        HealthProbe::Unit(u) => format!("unit {u}"),
        HealthProbe::Command(argv) => format!("command {}", argv.join(" ")),
    }
}

/// Runs the checks in order; stops at the first failure or fault. `units` is the pass's
/// connection to systemd, or why there is none.
pub fn run(
    checks: &[HealthCheck],
    mut units: std::result::Result<&mut dyn UnitStates, HostFault>,
) -> std::result::Result<Verdict, Fault> {
    for c in checks {
        let check = describe(&c.probe);
        let fault = |e: HostFault| Fault {
            check: check.clone(),
            message: e.0,
        };
        let finding = match &c.probe {
            HealthProbe::Command(argv) => run_command(argv, c.timeout)
                .map_err(fault)?
                .map_err(|e| (e, false)),
            HealthProbe::Unit(u) => {
                let s = units.as_deref_mut().map_err(|e| fault(e.clone()))?;
                wait_active(s, u, c.timeout, UNIT_SETTLE)
                    .map_err(fault)?
                    .map_err(|(e, stopped)| {
                        let e = match crate::host::systemd::journal_tail(u, 10) {
                            Ok(j) if !j.trim().is_empty() => {
                                format!("{e}; journal: {}", tail(j.trim(), MAX_OUTPUT))
                            }
                            _ => e,
                        };
                        (e, stopped)
                    })
            }
        };
        if let Err((output, stopped)) = finding {
            tracing::warn!(check = %check, output = %output, stopped, "health check `{check}` failed: {output}");
            return Ok(Verdict::Unhealthy(Failure {
                check,
                output,
                stopped,
            }));
        }
        tracing::info!(check = %check, "health check passed: {check}");
    }
    Ok(Verdict::Healthy)
}

/// Waits until `unit` is active, then requires it to stay active for `settle`. The outer error
/// is a fault: the state could not be read. A failure says whether the unit went down cleanly
/// (stopped: inactive or deactivating) after it was active, rather than crashing.
pub fn wait_active(
    s: &mut dyn UnitStates,
    unit: &str,
    timeout: Duration,
    settle: Duration,
) -> std::result::Result<std::result::Result<(), (String, bool)>, HostFault> {
    let start = Instant::now();
    let mut active_since: Option<Instant> = None;
    loop {
        let state = s
            .active_state(unit)
            .map_err(|e| HostFault(format!("reading the state of {unit}: {e:#}")))?;
        match (state.as_str(), active_since) {
            ("active", None) => active_since = Some(Instant::now()),
            ("active", Some(t)) if t.elapsed() >= settle => return Ok(Ok(())),
            ("active", Some(_)) => {}
            (other @ ("inactive" | "deactivating"), Some(_)) => {
                return Ok(Err((
                    format!("{unit} was active, then was stopped ({other}; not crashed: by hand, or it exited by itself)"),
                    true,
                )));
            }
            (other, Some(_)) => {
                return Ok(Err((
                    format!("{unit} was active, then became {other}"),
                    false,
                )));
            }
            ("failed", None) => return Ok(Err((format!("{unit} is failed"), false))),
            (_, None) if start.elapsed() >= timeout => {
                return Ok(Err((
                    format!(
                        "{unit} is {state}, not active after {}",
                        humantime::format_duration(timeout)
                    ),
                    false,
                )))
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `argv` without a shell, stdin from /dev/null, stdout and stderr captured together; exit 0
/// within `timeout` passes. On timeout the command's whole process group is killed. A program
/// that is not there (or not executable) fails the check; the outer error (a fault) is plumb
/// failing to run it at all.
pub fn run_command(argv: &[String], timeout: Duration) -> std::result::Result<Finding, HostFault> {
    let (program, args) = argv.split_first().ok_or(HostFault::from("empty command"))?;
    if !std::path::Path::new(program).is_file() {
        return Ok(Err(format!("cannot run {program}: it is not installed")));
    }
    // With the host's privileges, as the service it checks would run: not in plumb's sandbox.
    let mut cmd = command::outside_sandbox(program, timeout, &[]);
    cmd.args(args);
    let ran = match command::run_merged(cmd, timeout, MAX_OUTPUT) {
        Ok(ran) => ran,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(Err(format!("cannot run {program}: {e}")))
        }
        Err(e) => return Err(HostFault(format!("running {program}: {e}"))),
    };
    let output = ran.output.trim_end();
    let shown = if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    };
    Ok(match ran.status {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(format!("{st}{shown}")),
        None => Err(format!(
            "timed out after {}{shown}",
            humantime::format_duration(timeout)
        )),
    })
}

/// The last `max` bytes of `s` (on a char boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl UnitStates for &crate::host::bus::Bus {
    fn active_state(&mut self, unit: &str) -> anyhow::Result<String> {
        self.live(unit).map(|l| l.active_state)
    }
}

/// How long a unit check keeps trying to reach systemd again after the bus went away.
const RECONNECT_FOR: Duration = Duration::from_secs(20);

/// Unit states over D-Bus that survive a restart of the bus (`systemctl restart dbus`): a failed
/// read opens a new connection and reads again, for up to `RECONNECT_FOR`. A D-Bus restart during
/// a check then costs a moment, not a verdict; only a bus that stays away is a fault.
pub struct ReconnectingUnits<'a> {
    first: Option<&'a crate::host::bus::Bus>,
    own: Option<crate::host::bus::Bus>,
}

impl<'a> ReconnectingUnits<'a> {
    pub fn new(first: Option<&'a crate::host::bus::Bus>) -> ReconnectingUnits<'a> {
        ReconnectingUnits { first, own: None }
    }
}

impl UnitStates for ReconnectingUnits<'_> {
    fn active_state(&mut self, unit: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            let read = match (&self.own, self.first) {
                (Some(b), _) | (None, Some(b)) => b.live(unit).map(|l| l.active_state),
                // Never connected: nothing to reconnect (tests, image builds).
                (None, None) => anyhow::bail!("no connection to the system bus"),
            };
            match read {
                Ok(state) => return Ok(state),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading the state of {unit} failed; connecting to D-Bus again");
                    std::thread::sleep(Duration::from_millis(250));
                    match crate::host::bus::Bus::open() {
                        Ok(b) => self.own = Some(b),
                        Err(e) => tracing::debug!(error = %format!("{e:#}"), "D-Bus not back yet"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands() {
        let t = Duration::from_secs(5);
        assert_eq!(run_command(&argv(&["/bin/true"]), t), Ok(Ok(())));
        let e = run_command(
            &argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            t,
        )
        .unwrap()
        .unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("out") && e.contains("err"),
            "{e}"
        );
        // No shell: metacharacters are plain arguments.
        let e = run_command(&argv(&["/bin/echo", "a;", "exit", "1"]), t);
        assert_eq!(e, Ok(Ok(())));
        // A program that is not there fails the check (a verdict), it is not a fault.
        assert!(run_command(&argv(&["/nonexistent"]), t)
            .unwrap()
            .unwrap_err()
            .contains("cannot run"));
    }

    #[test]
    fn timeout_kills_the_group_and_output_is_cut() {
        let start = Instant::now();
        let e = run_command(
            &argv(&["/bin/sh", "-c", "sleep 30 & echo started; sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap()
        .unwrap_err();
        assert!(e.contains("timed out") && e.contains("started"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let e = run_command(
            &argv(&[
                "/bin/sh",
                "-c",
                "head -c 100000 /dev/zero | tr '\\0' x; exit 1",
            ]),
            Duration::from_secs(5),
        )
        .unwrap()
        .unwrap_err();
        assert!(
            e.len() < MAX_OUTPUT + 100 && e.contains("[...]"),
            "{}",
            e.len()
        );
    }

    struct Script(Vec<&'static str>);
    impl UnitStates for Script {
        fn active_state(&mut self, _: &str) -> anyhow::Result<String> {
            Ok(if self.0.len() > 1 {
                self.0.remove(0)
            } else {
                self.0[0]
            }
            .to_string())
        }
    }

    #[test]
    fn unit_must_reach_and_stay_active() {
        let (t, settle) = (Duration::from_secs(2), Duration::from_millis(250));
        let mut ok = Script(vec!["activating", "active"]);
        assert_eq!(wait_active(&mut ok, "a.service", t, settle), Ok(Ok(())));
        let miss = |s: &mut Script, t: Duration| {
            wait_active(s, "a.service", t, settle).unwrap().unwrap_err()
        };
        let (e, stopped) = miss(&mut Script(vec!["active", "failed"]), t);
        assert!(
            e.contains("was active, then became failed") && !stopped,
            "{e}"
        );
        let (e, stopped) = miss(&mut Script(vec!["failed"]), t);
        assert!(e.contains("is failed") && !stopped, "{e}");
        let (e, stopped) = miss(&mut Script(vec!["activating"]), Duration::from_millis(300));
        assert!(e.contains("not active after") && !stopped, "{e}");
        // Stopped cleanly while it settled: most likely another hand, not the commit (issue 20).
        let (e, stopped) = miss(&mut Script(vec!["active", "deactivating"]), t);
        assert!(e.contains("was stopped") && stopped, "{e}");
        let (e, stopped) = miss(&mut Script(vec!["active", "inactive"]), t);
        assert!(e.contains("not crashed") && stopped, "{e}");
    }

    /// The bus breaks while a unit's state is read.
    struct Broken;
    impl UnitStates for Broken {
        fn active_state(&mut self, _: &str) -> anyhow::Result<String> {
            Err(anyhow::anyhow!("Broken pipe"))
        }
    }

    fn unit_check(unit: &str) -> HealthCheck {
        HealthCheck {
            probe: HealthProbe::Unit(unit.into()),
            timeout: Duration::from_secs(2),
        }
    }

    /// Issue 12: a D-Bus error while reading a unit's state is a fault, never a failed check
    /// (which would mark the commit bad and roll it back).
    #[test]
    fn a_broken_bus_is_a_fault_not_a_verdict_issue_12() {
        let checks = [unit_check("app.service")];
        let mut broken = Broken;
        let got = run(&checks, Ok(&mut broken));
        let fault = got.unwrap_err();
        assert_eq!(fault.check, "unit app.service");
        assert!(
            fault
                .message
                .contains("reading the state of app.service: Broken pipe"),
            "{fault}"
        );
        // No bus at all: a fault as well.
        let no_bus = crate::host::Fault("could not talk to systemd over D-Bus".into());
        let got = run(&checks, Err(no_bus));
        assert!(got
            .unwrap_err()
            .message
            .contains("could not talk to systemd"));
        // A unit that fails is a verdict.
        let mut failed = Script(vec!["failed"]);
        match run(&checks, Ok(&mut failed)) {
            Ok(Verdict::Unhealthy(f)) => assert!(f.output.contains("is failed"), "{f}"),
            other => panic!("{other:?}"),
        }
        // A command check passes without any bus.
        let ok = [HealthCheck {
            probe: HealthProbe::Command(argv(&["/bin/true"])),
            timeout: Duration::from_secs(5),
        }];
        let no_bus = crate::host::Fault("no bus".into());
        assert_eq!(run(&ok, Err(no_bus)), Ok(Verdict::Healthy));
    }
}
