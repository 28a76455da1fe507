//! `[[health]]` checks, run after a pass that changed the host: a unit must reach `active` and stay
//! there for a settle time; a command must exit 0. Each within its timeout. The first failure is
//! returned with what the check saw, and the engine rolls back to the last good commit.

use crate::spec::{HealthCheck, HealthProbe};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a unit must stay active once it got there.
pub const UNIT_SETTLE: Duration = Duration::from_secs(3);
/// Most bytes of a command's output kept for the report (the tail: errors come last).
pub const MAX_OUTPUT: usize = 2048;
const POLL: Duration = Duration::from_millis(100);

/// Reads a unit's ActiveState ("active", "activating", "failed", ...). Implemented over D-Bus by
/// the systemd layer; a pass without a bus (tests, image builds) has none.
pub trait UnitStates {
    fn active_state(&mut self, unit: &str) -> anyhow::Result<String>;
}

/// A failed check: which one, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "unit app.service", "command /usr/bin/curl -fsS ..."
    pub check: String,
    pub output: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "health check `{}` failed: {}", self.check, self.output)
    }
}

pub fn describe(probe: &HealthProbe) -> String {
    match probe {
        HealthProbe::Unit(u) => format!("unit {u}"),
        HealthProbe::Command(argv) => format!("command {}", argv.join(" ")),
    }
}

/// Runs the checks in order; stops at the first failure.
pub fn run(
    checks: &[HealthCheck],
    units: Option<&mut dyn UnitStates>,
) -> std::result::Result<(), Failure> {
    let mut units = units;
    for c in checks {
        let check = describe(&c.probe);
        let res = match &c.probe {
            HealthProbe::Command(argv) => run_command(argv, c.timeout),
            HealthProbe::Unit(u) => match units.as_deref_mut() {
                Some(s) => wait_active(s, u, c.timeout, UNIT_SETTLE).map_err(|e| {
                    match crate::host::systemd::journal_tail(u, 10) {
                        Ok(j) if !j.trim().is_empty() => {
                            format!("{e}; journal: {}", tail(j.trim(), MAX_OUTPUT))
                        }
                        _ => e,
                    }
                }),
                None => Err("no connection to systemd: unit checks need plumb to run on the host's systemd (root = \"/\")".into()),
            },
        };
        if let Err(output) = res {
            tracing::warn!(check = %check, output = %output, "health check failed");
            return Err(Failure { check, output });
        }
        tracing::info!(check = %check, "health check passed");
    }
    Ok(())
}

/// Waits until `unit` is active, then requires it to stay active for `settle`.
pub fn wait_active(
    s: &mut dyn UnitStates,
    unit: &str,
    timeout: Duration,
    settle: Duration,
) -> std::result::Result<(), String> {
    let start = Instant::now();
    let mut active_since: Option<Instant> = None;
    loop {
        let state = s
            .active_state(unit)
            .map_err(|e| format!("reading the state of {unit}: {e:#}"))?;
        match (state.as_str(), active_since) {
            ("active", None) => active_since = Some(Instant::now()),
            ("active", Some(t)) if t.elapsed() >= settle => return Ok(()),
            ("active", Some(_)) => {}
            (other, Some(_)) => {
                return Err(format!("{unit} was active, then became {other}"));
            }
            ("failed", None) => return Err(format!("{unit} is failed")),
            (_, None) if start.elapsed() >= timeout => {
                return Err(format!(
                    "{unit} is {state}, not active after {}",
                    humantime::format_duration(timeout)
                ))
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `argv` without a shell, stdin from /dev/null, stdout and stderr captured together; exit 0
/// within `timeout` passes. On timeout the command's whole process group is killed.
pub fn run_command(argv: &[String], timeout: Duration) -> std::result::Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let (reader, writer) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| format!("creating a pipe: {e}"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let collector = std::thread::spawn(move || read_tail(reader));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(POLL.min(Duration::from_millis(20))),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    if status.is_none() {
        // Our own child's group, by id: the command and anything it started.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let output = collector.join().unwrap_or_default();
    let output = output.trim_end();
    let shown = if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    };
    match status {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(format!("{st}{shown}")),
        None => Err(format!(
            "timed out after {}{shown}",
            humantime::format_duration(timeout)
        )),
    }
}

/// The last `max` bytes of `s` (on a char boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl UnitStates for crate::resource::activate::Bus {
    fn active_state(&mut self, unit: &str) -> anyhow::Result<String> {
        self.live(unit)
            .map(|l| l.active_state)
            .map_err(anyhow::Error::msg)
    }
}

/// Reads until EOF, keeping the last `MAX_OUTPUT` bytes.
fn read_tail(mut r: std::io::PipeReader) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                    cut = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if cut {
        format!("[...] {text}")
    } else {
        text
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
        assert_eq!(run_command(&argv(&["/bin/true"]), t), Ok(()));
        let e = run_command(
            &argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            t,
        )
        .unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("out") && e.contains("err"),
            "{e}"
        );
        // No shell: metacharacters are plain arguments.
        let e = run_command(&argv(&["/bin/echo", "a;", "exit", "1"]), t);
        assert_eq!(e, Ok(()));
        assert!(run_command(&argv(&["/nonexistent"]), t)
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
        assert_eq!(wait_active(&mut ok, "a.service", t, settle), Ok(()));
        let mut flap = Script(vec!["active", "failed"]);
        assert!(wait_active(&mut flap, "a.service", t, settle)
            .unwrap_err()
            .contains("was active, then became failed"));
        let mut failed = Script(vec!["failed"]);
        assert!(wait_active(&mut failed, "a.service", t, settle)
            .unwrap_err()
            .contains("is failed"));
        let mut slow = Script(vec!["activating"]);
        assert!(
            wait_active(&mut slow, "a.service", Duration::from_millis(300), settle)
                .unwrap_err()
                .contains("not active after")
        );
    }
}
