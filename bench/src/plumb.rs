//! plumb's own figures: first apply, no-op pass (and the no-op poll's traffic), and the idle RSS of
//! `plumb run` between passes.

use crate::fixture::{self, HOST};
use crate::measure::{self, proc_status_kib, Run, Stats};
use crate::proxy::{Conn, Proxy, Traffic};
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A host under test: a root to apply under, a state dir and an agent.toml.
pub struct Host {
    pub dir: PathBuf,
}

/// Where hosts push their status (a separate repository, as docs/status.md recommends).
pub struct StatusTo<'a> {
    pub url: &'a str,
    pub heartbeat: &'a str,
}

impl Host {
    pub fn new(dir: &Path, repo_url: &str, interval: &str, status: &StatusTo) -> Result<Host> {
        std::fs::create_dir_all(dir.join("root"))?;
        // Its own status branch: the host name is the directory's name; the files are bench's.
        let name = dir
            .file_name()
            .context("a host dir has a name")?
            .to_string_lossy();
        let h = Host {
            dir: dir.to_path_buf(),
        };
        std::fs::write(
            h.config(),
            format!(
                "repo = \"{repo_url}\"\nhost = \"{name}\"\npath = \"hosts/{HOST}\"\nroot = \"{}\"\nstate_dir = \"{}\"\n\
                 interval = \"{interval}\"\n[status]\nrepo = \"{}\"\nheartbeat = \"{}\"\n",
                h.root().display(),
                h.dir.join("state").display(),
                status.url,
                status.heartbeat
            ),
        )?;
        Ok(h)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    fn command(&self, plumb: &Path, verb: &str) -> Command {
        let mut c = Command::new(plumb);
        c.arg(verb)
            .arg("--config")
            .arg(self.config())
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        c
    }

    /// `plumb apply` (info log on stderr), measured; fails unless it converged (exit 0).
    pub fn apply(&self, plumb: &Path) -> Result<Run> {
        let mut c = self.command(plumb, "apply");
        c.env("PLUMB_LOG", "info");
        measure::run(&mut c)?.expect_code("plumb apply", &[0])
    }
}

/// Checks that the first `n` files are under `root` with their content.
pub fn check_files(root: &Path, n: usize) -> Result<()> {
    for i in [0, n / 2, n - 1] {
        let p = root.join(fixture::file_path(i));
        let got =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        if got != fixture::file_content(i) {
            bail!("{} has the wrong content", p.display());
        }
    }
    Ok(())
}

pub struct ApplyFigures {
    pub wall_ms: Stats,
    pub cpu_ms: Stats,
    pub max_rss_mib: Stats,
    /// Fetch traffic of each measured run.
    pub traffic: Vec<Traffic>,
    /// Status push traffic of each measured run.
    pub pushes: Vec<Traffic>,
}

impl ApplyFigures {
    fn new() -> ApplyFigures {
        ApplyFigures {
            wall_ms: Stats::default(),
            cpu_ms: Stats::default(),
            max_rss_mib: Stats::default(),
            traffic: vec![],
            pushes: vec![],
        }
    }

    fn add(&mut self, r: &Run, conns: &[Conn]) {
        self.traffic.push(Traffic::of(conns, "git-upload-pack"));
        self.pushes.push(Traffic::of(conns, "git-receive-pack"));
        self.wall_ms.push(r.wall.as_secs_f64() * 1e3);
        self.cpu_ms.push(r.cpu.as_secs_f64() * 1e3);
        self.max_rss_mib.push(r.max_rss_kib as f64 / 1024.0);
    }
}

/// `runs` first applies, each on a fresh host (empty root and state); returns the figures and the
/// last host, converged.
pub fn first_apply(
    plumb: &Path,
    proxy: &Proxy,
    work: &Path,
    files: usize,
    runs: usize,
    status: &StatusTo,
) -> Result<(ApplyFigures, Host)> {
    let mut f = ApplyFigures::new();
    let mut last = None;
    for i in 0..runs {
        let h = Host::new(
            &work.join(format!("plumb-first-{i}")),
            &proxy.url("fleet.git"),
            "1h",
            status,
        )?;
        proxy.take()?;
        let r = h.apply(plumb)?;
        f.add(&r, &proxy.take()?);
        check_files(&h.root(), files)?;
        last = Some(h);
    }
    Ok((f, last.context("at least one run")?))
}

/// `runs` no-op passes (`plumb apply` with nothing new in Git and no drift) on a converged host.
pub fn noop_pass(plumb: &Path, proxy: &Proxy, host: &Host, runs: usize) -> Result<ApplyFigures> {
    // Warms the page cache, and pushes the converged report: not counted.
    host.apply(plumb)?;
    let mut f = ApplyFigures::new();
    for _ in 0..runs {
        proxy.take()?;
        let r = host.apply(plumb)?;
        if !r.stderr.contains("converged") {
            bail!("a no-op pass did not say converged: {}", r.stderr);
        }
        f.add(&r, &proxy.take()?);
    }
    Ok(f)
}

/// No-op passes of two converged hosts, one with plain files and one with the same files as
/// templates, taken in turn (so both see the same machine load): (plain, templated).
pub fn templated_noop(
    plumb: &Path,
    proxy: &Proxy,
    work: &Path,
    files: usize,
    runs: usize,
    status: &StatusTo,
) -> Result<(ApplyFigures, ApplyFigures)> {
    let plain = Host::new(
        &work.join("plumb-plain"),
        &proxy.url("fleet.git"),
        "1h",
        status,
    )?;
    let tmpl = Host::new(
        &work.join("plumb-tmpl"),
        &proxy.url("fleet-tmpl.git"),
        "1h",
        status,
    )?;
    for h in [&plain, &tmpl] {
        h.apply(plumb)?; // first apply
        check_files(&h.root(), files)?;
        h.apply(plumb)?; // warm: the render cache and the page cache
    }
    let (mut a, mut b) = (ApplyFigures::new(), ApplyFigures::new());
    for _ in 0..runs {
        for (h, f) in [(&plain, &mut a), (&tmpl, &mut b)] {
            proxy.take()?;
            let r = h.apply(plumb)?;
            if !r.stderr.contains("converged") {
                bail!("a no-op pass did not say converged: {}", r.stderr);
            }
            f.add(&r, &proxy.take()?);
        }
    }
    Ok((a, b))
}

pub struct IdleFigures {
    /// VmRSS in the idle window after each pass (MiB; the window's median per pass).
    pub idle_after_pass_mib: Vec<f64>,
    /// VmHWM at the end: the peak RSS, reached during a pass.
    pub peak_mib: f64,
    /// Fetch traffic of the no-op polls (every pass after the first).
    pub noop_polls: Vec<Traffic>,
    /// Status pushes made over all passes (the first report, then converged).
    pub pushes: u32,
}

impl IdleFigures {
    /// Idle RSS once warm: every idle window after the second pass.
    pub fn steady(&self) -> Stats {
        Stats {
            samples: self.idle_after_pass_mib.iter().skip(1).copied().collect(),
        }
    }
}

/// Starts `plumb run` on a fresh host (interval `interval_s`), lets it make `passes` passes (the
/// first applies every file, the others are no-op), and samples VmRSS while it is idle.
pub fn idle_rss(
    plumb: &Path,
    proxy: &Proxy,
    work: &Path,
    files: usize,
    passes: usize,
    interval_s: u64,
    status: &StatusTo,
) -> Result<IdleFigures> {
    let h = Host::new(
        &work.join("plumb-run"),
        &proxy.url("fleet.git"),
        &format!("{interval_s}s"),
        status,
    )?;
    proxy.take()?;
    let mut child = h
        .command(plumb, "run")
        .env("PLUMB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting plumb run")?;
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel::<Instant>();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            if line.contains("pass done") {
                let _ = tx.send(Instant::now());
            }
            lines.push(line);
        }
        lines
    });
    let result = (|| -> Result<IdleFigures> {
        let interval = Duration::from_secs(interval_s);
        // The next pass starts no earlier than 0.9 x interval (jitter): sample well inside that.
        let window = interval.mul_f64(0.8);
        let mut idle = Vec::new();
        let mut polls = Vec::new();
        let mut pushes = 0;
        for pass in 0..passes {
            let done = rx
                .recv_timeout(Duration::from_secs(120) + interval)
                .with_context(|| format!("waiting for pass {} of plumb run", pass + 1))?;
            let conns = proxy.take()?;
            pushes += Traffic::of(&conns, "git-receive-pack").connections;
            if pass > 0 {
                polls.push(Traffic::of(&conns, "git-upload-pack"));
            }
            let mut samples = Stats::default();
            let start = done + Duration::from_millis(100);
            while Instant::now() < done + window {
                if Instant::now() >= start {
                    samples.push(proc_status_kib(pid, "VmRSS")? as f64 / 1024.0);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if samples.samples.is_empty() {
                // A slow (loaded) machine may get here late: one sample, still before the next pass.
                samples.push(proc_status_kib(pid, "VmRSS")? as f64 / 1024.0);
            }
            idle.push(samples.median());
        }
        Ok(IdleFigures {
            idle_after_pass_mib: idle,
            peak_mib: proc_status_kib(pid, "VmHWM")? as f64 / 1024.0,
            noop_polls: polls,
            pushes,
        })
    })();
    // SAFETY: plain kill(2) of our own child, by its pid.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM)
    };
    let status = child.wait()?;
    let lines = log.join().unwrap_or_default();
    let figures = result.with_context(|| format!("plumb run log:\n{}", lines.join("\n")))?;
    if !status.success() {
        bail!("plumb run exited with {status}:\n{}", lines.join("\n"));
    }
    check_files(&h.root(), files)?;
    Ok(figures)
}
