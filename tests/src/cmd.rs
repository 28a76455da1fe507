//! Running host commands with their output captured and their argv in every error.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

/// What a finished command printed.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Ok(stdout) on exit 0, else an error with the exit status and the stderr tail.
    pub fn check(self, what: &str) -> Result<String> {
        if self.success() {
            return Ok(self.stdout);
        }
        bail!(
            "{what}: {}\nstdout: {}\nstderr: {}",
            self.status,
            tail(&self.stdout, 2000),
            tail(&self.stderr, 2000)
        )
    }
}

/// Runs `cmd` to completion, feeding it `stdin`. A non-zero exit is not an error here.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Result<CmdOutput> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    // A writer thread, so a child that fills its stdout before reading all stdin cannot deadlock.
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {cmd:?}"))?;
    // A child may exit without reading its input (EPIPE): its exit status tells what happened.
    let _ = writer.join();
    Ok(CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` with empty stdin. A non-zero exit is not an error here.
pub fn run(cmd: &mut Command) -> Result<CmdOutput> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    Ok(CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd`; its stdout on exit 0, else an error naming the command.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    run(cmd)?.check(&what)
}

pub(crate) fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
