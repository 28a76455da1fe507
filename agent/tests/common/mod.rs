//! The integration tests' one fixture kit: real git repositories, a real `git daemon` on
//! 127.0.0.1, and the real `plumb` binary applying under a temp root. `trust` adds SSH signing
//! keys and signed commits (with its own `Fleet` and `Host`, which report what a pass did).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod https;
pub mod proxy;
pub mod trust;

pub const PLUMB: &str = env!("CARGO_BIN_EXE_plumb");

/// Runs git with a fixed identity and no host or user config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.org")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.org")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}

/// A fleet repository: a bare repo (what servers serve) plus a work tree operators commit in.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "fleet.git"],
        );
        git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        let f = Fleet { dir };
        git(
            &f.work(),
            &["remote", "add", "origin", f.bare().to_str().unwrap()],
        );
        f
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("fleet.git")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Writes `path` (relative to the work tree) with `content`.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let p = self.work().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn write_bytes(&self, path: &str, content: &[u8]) -> &Self {
        let p = self.work().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        let p = self.work().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        let p = self.work().join(path);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
        self
    }

    /// Commits everything and pushes to the bare repo; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}

/// `git daemon` serving a directory on 127.0.0.1 at a free port; killed (by its pid) on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    base: PathBuf,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        Self::start_on(base, free_port())
    }

    pub fn start_on(base: &Path, port: u16) -> GitDaemon {
        // git-daemon itself, not `git daemon`: the wrapper would not pass our kill on to it.
        let exec_path = git(Path::new("/"), &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting git daemon");
        let d = GitDaemon {
            child,
            port,
            base: base.to_path_buf(),
        };
        wait_until("git daemon to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// The daemon's process id (for measurements: its children's CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server; `start_on(base, port)` brings it back on the same address.
    pub fn stop(mut self) -> (PathBuf, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.base.clone(), self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A host under test: a temp root, a state dir and an agent.toml.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Host {
    pub fn new(name: &str, repo: &str, extra: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let h = Host {
            dir,
            name: name.to_string(),
        };
        h.configure(repo, extra);
        h
    }

    pub fn configure(&self, repo: &str, extra: &str) {
        let cfg = format!(
            "repo = \"{repo}\"\nhost = \"{}\"\nroot = \"{}\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n{extra}\n",
            self.name,
            self.root().display(),
            self.state().display()
        );
        std::fs::write(self.config(), cfg).unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }

    /// Runs `plumb <args> --config <this host's config>`.
    pub fn plumb(&self, args: &[&str]) -> Output {
        Command::new(PLUMB)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("PLUMB_LOG", "warn")
            .output()
            .expect("running plumb")
    }

    /// `plumb apply`, asserting its exit code; returns stdout + stderr.
    pub fn apply_expect(&self, code: i32) -> String {
        let out = self.plumb(&["apply"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "plumb apply: {text}");
        text
    }

    /// The last report, as TOML text.
    pub fn status(&self) -> toml::Table {
        let out = self.plumb(&["status"]);
        assert!(
            out.status.success(),
            "plumb status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    /// Every file under the root with its content or link target and mode: to assert "unchanged".
    pub fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        snap(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn snap(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_symlink() {
            out.push((
                rel,
                format!("-> {}", std::fs::read_link(&p).unwrap().display()),
            ));
        } else if m.is_dir() {
            out.push((rel, "dir".into()));
            snap(base, &p, out);
        } else {
            let data = std::fs::read(&p).unwrap();
            out.push((
                rel,
                format!(
                    "{:o} {}",
                    m.permissions().mode() & 0o7777,
                    String::from_utf8_lossy(&data)
                ),
            ));
        }
    }
}

/// Streams `stream` into the bare repository `repo` with `git fast-import --quiet` (plus `args`):
/// thousands of branches in one process, where commits one by one would take minutes.
pub fn fast_import(repo: &Path, stream: &str, args: &[&str]) {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg(format!("--git-dir={}", repo.display()))
        .args(["fast-import", "--quiet"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}
