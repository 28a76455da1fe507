//! Subprocesses (`git push`, ...): one helper that logs the argv, bounds the run time, and puts
//! the tail of stderr into the error.

use anyhow::{anyhow, Context, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How much of stderr an error quotes.
const STDERR_TAIL: usize = 2000;

/// Runs `cmd` to completion within `timeout`, stdin closed, stdout and stderr captured. The child
/// runs in its own process group, so a timeout also ends what it started (ssh, remote helpers).
/// A non-zero exit is not an error here: callers look at `Output::status` (use [`check`]).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_capped(cmd, timeout, usize::MAX)
}

/// Like [`run`], for a command whose stdout is parsed: more than `max_stdout` bytes of it is an
/// error (the rest is read and dropped, so the child never blocks on a full pipe), and only the
/// last `max_stdout` bytes of stderr are kept.
pub fn run_capped(cmd: &mut Command, timeout: Duration, max_stdout: usize) -> Result<Output> {
    let argv = describe(cmd);
    tracing::debug!(argv = %argv, "running");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {argv}"))?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || read_capped(out, max_stdout, false));
    let err_reader = std::thread::spawn(move || read_capped(err, max_stdout, true));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {argv}"))?
        {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, cut) = out_reader.join().unwrap_or_default();
    let (stderr, _) = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(anyhow!(
            "{argv} did not finish within {}s and was stopped{}",
            timeout.as_secs(),
            tail(&stderr)
        ));
    };
    if cut {
        return Err(anyhow!(
            "{argv} printed more than {max_stdout} bytes: not read"
        ));
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads until EOF keeping at most `max` bytes (the first ones, or with `keep_tail` the last);
/// whether some were dropped.
fn read_capped(mut r: impl Read, max: usize, keep_tail: bool) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if keep_tail => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > max {
                    kept.drain(..kept.len() - max);
                    cut = true;
                }
            }
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (kept, cut)
}

/// Turns a non-zero exit into an error naming the command and quoting the end of its stderr.
pub fn check(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(anyhow!(
        "{} failed ({}){}",
        describe(cmd),
        out.status,
        tail(&out.stderr)
    ))
}

/// The argv as one line (the environment is left out: it may hold credentials).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// ": <last lines of stderr>", or nothing when it is empty.
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(STDERR_TAIL)
        .map(|(i, _)| i)
        .unwrap_or(0);
    format!(": {}", text[start..].trim().replace('\n', " | "))
}

/// What a command with stdout and stderr merged left: its exit (None: killed at the timeout)
/// and the tail of what it printed.
#[derive(Debug)]
pub struct Merged {
    pub status: Option<std::process::ExitStatus>,
    /// The last `max_output` bytes, "[...] " in front when cut.
    pub output: String,
}

/// Runs `cmd` within `timeout`, stdin from /dev/null, stdout and stderr into one pipe (the order
/// a person reads them in), keeping the last `max_output` bytes. On timeout its whole process
/// group is killed. The error is the one from starting it (`NotFound`: no such program).
pub fn run_merged(
    mut cmd: Command,
    timeout: Duration,
    max_output: usize,
) -> std::io::Result<Merged> {
    tracing::debug!(argv = %describe(&cmd), "running");
    let (reader, writer) = std::io::pipe()?;
    let writer2 = writer.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let mut child = cmd.spawn()?;
    // The parent's copies of the write end go with `cmd`: EOF comes when the group exits.
    drop(cmd);
    let collector = std::thread::spawn(move || read_tail(reader, max_output));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait()? {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.is_none() {
        // Our own child's group, by id: the command and anything it started.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let output = collector.join().unwrap_or_default();
    Ok(Merged { status, output })
}

/// Reads until EOF, keeping the last `max` bytes.
fn read_tail(mut r: std::io::PipeReader, max: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > max {
                    kept.drain(..kept.len() - max);
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

/// Looks a program up in PATH (the usual system directories when PATH is unset): the first
/// executable file of that name.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether plumb runs as a systemd service that can start transient units (`systemd-run`).
pub fn runs_as_service() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
        && std::path::Path::new("/run/systemd/system").is_dir()
        && find_program("systemd-run").is_some()
}

/// A command that must run with the host's full privileges, not inside plumb.service's sandbox
/// (a config check such as `nginx -t` binds the service's ports, which the sandbox's capability
/// set forbids). Under systemd it runs as a transient unit, waited for, its output piped back,
/// and stopped by systemd after `timeout` (killing `systemd-run` would not stop it). Run by hand
/// (no `INVOCATION_ID`), it runs directly.
pub fn outside_sandbox(program: &str, timeout: Duration, env: &[(&str, &str)]) -> Command {
    if !runs_as_service() {
        let mut c = Command::new(program);
        c.envs(env.iter().copied());
        return c;
    }
    let mut c = Command::new("systemd-run");
    c.args([
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        "--service-type=exec",
    ])
    .arg(format!("--description=plumb: {program}"))
    .arg(format!(
        "--property=RuntimeMaxSec={}",
        timeout.as_secs().max(1)
    ));
    for (k, v) in env {
        c.arg(format!("--setenv={k}={v}"));
    }
    c.args(["--", program]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_exit_and_stderr_tail() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let out = run(&mut c, Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"out\n");
        let e = check(&c, &out).unwrap_err().to_string();
        assert!(e.contains("sh -c") && e.contains("oops"), "{e}");
    }

    #[test]
    fn capped_stdout_is_an_error_not_a_hang() {
        let mut c = Command::new("sh");
        c.args(["-c", "head -c 200000 /dev/zero; echo done >&2"]);
        let e = run_capped(&mut c, Duration::from_secs(10), 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 1000 bytes"), "{e}");
        let mut c = Command::new("sh");
        c.args(["-c", "echo '[]'"]);
        let out = run_capped(&mut c, Duration::from_secs(10), 1000).unwrap();
        assert_eq!(out.stdout, b"[]\n");
    }

    #[test]
    fn timeout_stops_the_whole_group() {
        let mut c = Command::new("sh");
        // The grandchild keeps stderr open: the helper must not wait for it.
        c.args(["-c", "sleep 30 & echo started >&2; wait"]);
        let t = Instant::now();
        let e = run(&mut c, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(e.contains("did not finish") && e.contains("started"), "{e}");
    }
}
