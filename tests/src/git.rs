//! A `git daemon` on the test bridge (and loopback) serving bare repos that tests create.

use crate::cmd::{self, run_ok};
use crate::network::{NetInner, Network};
use crate::wait::wait_until;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// `git daemon` with receive-pack enabled, listening on the bridge address and 127.0.0.1 on
/// one free port. Killed (our own PID only) on Drop.
pub struct GitServer {
    base: TempDir,
    gateway: Ipv4Addr,
    port: u16,
    child: Child,
    _net: Arc<NetInner>,
}

impl GitServer {
    pub fn start(net: &Network) -> Result<GitServer> {
        let base = tempfile::Builder::new()
            .prefix("plumb-systest-git-")
            .tempdir()
            .context("creating the git server's base dir")?;
        let gateway = net.gateway();
        // A port can be taken between our probe and the daemon's bind: retry with another.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port(gateway)?;
            let mut child = spawn_daemon(base.path(), gateway, port)?;
            match wait_listening(&mut child, gateway, port) {
                Ok(()) => {
                    return Ok(GitServer {
                        base,
                        gateway,
                        port,
                        child,
                        _net: net.inner.clone(),
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some(e);
                }
            }
        }
        Err(last
            .expect("tried at least once")
            .context("starting git daemon"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `repo` as nodes reach it: `git://<bridge address>:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("git://{}:{}/{repo}", self.gateway, self.port)
    }

    /// URL of `repo` from the host: `git://127.0.0.1:<port>/<repo>`.
    pub fn local_url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// The bare repo's directory on the host.
    pub fn path(&self, repo: &str) -> PathBuf {
        self.base.path().join(repo)
    }

    /// Creates a bare repo `name` (e.g. "fleet.git") with default branch main, and a work tree
    /// on the host to commit into it.
    pub fn create_repo(&self, name: &str) -> Result<FleetRepo> {
        let bare = self.path(name);
        if bare.exists() {
            bail!("repo {} already exists", bare.display());
        }
        run_ok(
            git()
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(&bare),
        )?;
        let work = tempfile::Builder::new()
            .prefix("plumb-systest-work-")
            .tempdir()?;
        run_ok(git().args(["init", "-q", "-b", "main"]).arg(work.path()))?;
        let repo = FleetRepo { bare, work };
        repo.git(&["remote", "add", "origin", &repo.bare.to_string_lossy()])?;
        Ok(repo)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A fleet repository: a bare repo served by the `GitServer` and a host work tree that tests
/// edit and commit (fixed author, no host git config), pushing to main.
pub struct FleetRepo {
    bare: PathBuf,
    work: TempDir,
}

impl FleetRepo {
    /// Writes a file in the work tree (parents created); `commit` publishes it.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> Result<&Self> {
        let p = self.work_path(path)?;
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        Ok(self)
    }

    /// Removes a file or directory from the work tree.
    pub fn remove(&self, path: &str) -> Result<&Self> {
        let p = self.work_path(path)?;
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .with_context(|| format!("removing {}", p.display()))?;
        Ok(self)
    }

    /// Commits everything in the work tree and pushes it to main; the new commit's SHA.
    pub fn commit(&self, message: &str) -> Result<String> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", message])?;
        self.git(&["push", "-q", "origin", "HEAD:refs/heads/main"])?;
        self.head()
    }

    /// Replaces the whole tree with `files` (path, contents), commits and pushes; the SHA.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> Result<String> {
        for entry in std::fs::read_dir(self.work.path())? {
            let p = entry?.path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        for (path, contents) in files {
            self.write(path, contents)?;
        }
        self.commit(message)
    }

    /// SHA of the work tree's HEAD.
    pub fn head(&self) -> Result<String> {
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// A file at a ref of the served repo, e.g. `show("status/web-01", "status.toml")`.
    pub fn show(&self, rev: &str, path: &str) -> Result<String> {
        run_ok(
            git()
                .arg("--git-dir")
                .arg(&self.bare)
                .args(["show", &format!("{rev}:{path}")]),
        )
    }

    /// SHA of a ref in the served repo, or None if it does not exist.
    pub fn rev(&self, rev: &str) -> Result<Option<String>> {
        let out = cmd::run(git().arg("--git-dir").arg(&self.bare).args([
            "rev-parse",
            "--verify",
            "-q",
            rev,
        ]))?;
        Ok(out.success().then(|| out.stdout.trim().to_owned()))
    }

    /// Runs git in the work tree; its stdout.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        run_ok(git().arg("-C").arg(self.work.path()).args(args))
    }

    /// The bare repo's directory.
    pub fn bare_path(&self) -> &Path {
        &self.bare
    }

    fn work_path(&self, path: &str) -> Result<PathBuf> {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!("bad repo path {path:?}");
        }
        Ok(self.work.path().join(rel))
    }
}

/// git with no host or user config and a fixed identity, so commits do not depend on the machine.
fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "plumb test")
        .env("GIT_AUTHOR_EMAIL", "test@plumb.invalid")
        .env("GIT_COMMITTER_NAME", "plumb test")
        .env("GIT_COMMITTER_EMAIL", "test@plumb.invalid");
    c
}

fn free_port(gateway: Ipv4Addr) -> Result<u16> {
    for _ in 0..20 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
        let port = l.local_addr()?.port();
        if TcpListener::bind((gateway, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both 127.0.0.1 and {gateway}")
}

fn spawn_daemon(base: &Path, gateway: Ipv4Addr, port: u16) -> Result<Child> {
    let mut c = git();
    c.arg("daemon")
        .arg(format!("--listen={gateway}"))
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .args(["--export-all", "--enable=receive-pack", "--reuseaddr"])
        .arg("--informative-errors")
        .arg(format!("--base-path={}", base.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe. The daemon dies with the test that started it.
    #[allow(unsafe_code)]
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn().context("spawning git daemon")
}

fn wait_listening(child: &mut Child, gateway: Ipv4Addr, port: u16) -> Result<()> {
    wait_until(
        &format!("git daemon on port {port}"),
        Duration::from_secs(10),
        || {
            if let Some(status) = child.try_wait()? {
                bail!("git daemon exited: {status}");
            }
            for ip in [gateway, Ipv4Addr::LOCALHOST] {
                let addr = SocketAddr::from((ip, port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
}
