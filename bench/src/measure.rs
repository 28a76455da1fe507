//! Running a command and measuring it (wall time, CPU time and peak RSS from wait4), reading a
//! live process's RSS from /proc, and summarizing samples as median and spread.

use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One finished run of a command.
#[derive(Debug, Clone)]
pub struct Run {
    pub wall: Duration,
    /// User + system CPU time of the process and the children it waited for.
    pub cpu: Duration,
    /// Peak RSS of the largest single process in the tree (KiB), as `/usr/bin/time -v` reports it.
    pub max_rss_kib: u64,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails with the command's output unless it exited with one of `codes`.
    pub fn expect_code(self, what: &str, codes: &[i32]) -> Result<Run> {
        match self.status.code() {
            Some(c) if codes.contains(&c) => Ok(self),
            _ => bail!(
                "{what}: {}\nstdout: {}\nstderr: {}",
                self.status,
                tail(&self.stdout),
                tail(&self.stderr)
            ),
        }
    }
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(3000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` to completion with stdout/stderr captured (to files, so a chatty child never blocks),
/// measured with wait4(2).
pub fn run(cmd: &mut Command) -> Result<Run> {
    let out = tempfile::tempfile().context("creating a temp file for stdout")?;
    let err = tempfile::tempfile().context("creating a temp file for stderr")?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let (status, usage) = wait4(child.id() as libc::pid_t)?;
    let wall = start.elapsed();
    Ok(Run {
        wall,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        status,
        stdout: read_all(out)?,
        stderr: read_all(err)?,
    })
}

fn read_all(mut f: std::fs::File) -> Result<String> {
    use std::io::{Read, Seek};
    f.rewind()?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// Waits for `pid` (our own child) and returns its exit status and rusage.
pub fn wait4(pid: libc::pid_t) -> Result<(ExitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is a child of this process.
        #[allow(unsafe_code)]
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("waiting for process {pid}"));
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// A line of /proc/PID/status in KiB ("VmRSS", "VmHWM").
pub fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("{path} has no {key} line"))
}

/// Samples of one figure, summarized as median and spread (min..max).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn push(&mut self, v: f64) {
        self.samples.push(v);
    }

    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        if s.is_empty() {
            return f64::NAN;
        }
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NAN, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NAN, f64::max)
    }

    /// "12.3 (11.9–14.0, n=5)" with `digits` decimals; a single sample shows "(n=1)".
    pub fn show(&self, digits: usize) -> String {
        if self.samples.is_empty() {
            return "-".into();
        }
        if self.samples.len() == 1 {
            return format!("{:.digits$} (n=1)", self.median());
        }
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$}, n={})",
            self.median(),
            self.min(),
            self.max(),
            self.samples.len()
        )
    }
}

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    while Instant::now() < end {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    bail!("timed out after {deadline:?} waiting for {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Stats {
            samples: vec![3.0, 1.0, 2.0, 10.0],
        };
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.max(), 10.0);
        assert_eq!(s.show(1), "2.5 (1.0–10.0, n=4)");
    }

    #[test]
    fn measures_a_child() {
        let r = run(Command::new("sh").args(["-c", "echo hi; exit 3"])).unwrap();
        assert_eq!(r.status.code(), Some(3));
        assert_eq!(r.stdout, "hi\n");
        assert!(r.max_rss_kib > 0);
        assert!(proc_status_kib(std::process::id(), "VmRSS").unwrap() > 0);
    }
}
