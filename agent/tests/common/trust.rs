//! Signed fleets: a real fleet repository (bare, served by file:// or git daemon), SSH signing
//! keys made by ssh-keygen, a temp root and state dir, and the real `plumb` binary.
#![allow(dead_code)]

// The shared parts of the kit, for the tests that `use common::trust::*`.
#[allow(unused_imports)]
pub use super::{free_port, wait_until as wait_for, GitDaemon};
use plumb::status::report::Report;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const EMAIL: &str = "ops@example.org";

/// Runs a command, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git` with the machine's own config kept out.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ops")
        .env("GIT_AUTHOR_EMAIL", EMAIL)
        .env("GIT_COMMITTER_NAME", "Ops")
        .env("GIT_COMMITTER_EMAIL", EMAIL)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgSign=false",
        ]);
    c
}

/// An ed25519 key pair made by ssh-keygen; `private` is what git's user.signingkey takes.
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

pub fn keygen(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private));
    let public = std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    Key { private, public }
}

/// The fleet repository: a bare repo (what the agent fetches) and a work clone (what the test edits).
pub struct Fleet {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Fleet {
    pub fn new(dir: &Path) -> Fleet {
        let bare = dir.join("fleet.git");
        let work = dir.join("work");
        run(git(dir).args(["init", "-q", "--bare"]).arg(&bare));
        run(git(dir).args(["init", "-q"]).arg(&work));
        run(git(&work).args(["remote", "add", "origin"]).arg(&bare));
        Fleet { bare, work }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        let p = self.work.join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
        self
    }

    /// Commits everything (signed with `key` if given) and pushes it to main, forced.
    pub fn commit(&self, msg: &str, key: Option<&Key>) -> String {
        run(git(&self.work).args(["add", "-A"]));
        let mut c = git(&self.work);
        if let Some(k) = key {
            c.arg("-c")
                .arg("gpg.format=ssh")
                .arg("-c")
                .arg(format!("user.signingkey={}", k.private.display()));
        }
        c.args(["commit", "-q", "--allow-empty", "-m", msg]);
        if key.is_some() {
            c.arg("-S");
        }
        run(&mut c);
        self.push()
    }

    /// Pushes the work clone's HEAD to main (forced); returns its sha.
    pub fn push(&self) -> String {
        run(git(&self.work).args(["push", "-q", "-f", "origin", "HEAD:refs/heads/main"]));
        self.head()
    }

    pub fn head(&self) -> String {
        run(git(&self.work).args(["rev-parse", "HEAD"]))
    }
}

/// A host: a root directory, a state directory, and an agent.toml pointing at the fleet.
pub struct Host {
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Host {
    /// `extra` is appended to agent.toml (a `[trust]` or `[limits]` section).
    pub fn new(dir: &Path, repo_url: &str, extra: &str) -> Host {
        let root = dir.join("root");
        let state = dir.join("state");
        std::fs::create_dir_all(&root).unwrap();
        let config = dir.join("agent.toml");
        let h = Host {
            root,
            state,
            config,
        };
        h.configure(repo_url, extra);
        h
    }

    pub fn configure(&self, repo_url: &str, extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                "repo = {repo_url:?}\nhost = \"h1\"\nroot = {:?}\nstate_dir = {:?}\ninterval = \"1s\"\n{extra}\n",
                self.root.display().to_string(),
                self.state.display().to_string()
            ),
        )
        .unwrap();
    }

    pub fn plumb(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_plumb"));
        c.arg("--config").arg(&self.config).args(args);
        c.env("PLUMB_LOG", "warn");
        c
    }

    /// `plumb apply`: exit code, the report it wrote, its stderr.
    pub fn apply(&self, args: &[&str]) -> Applied {
        let mut c = self.plumb(&["apply"]);
        c.args(args);
        let out: Output = c.output().unwrap();
        Applied {
            code: out.status.code().unwrap_or(-1),
            report: self.report(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn report(&self) -> Option<Report> {
        let text = std::fs::read_to_string(self.state.join("report.toml")).ok()?;
        Some(Report::from_toml(&text).unwrap())
    }

    /// Applies and requires success (changed or converged).
    pub fn converge(&self) -> Report {
        let a = self.apply(&[]);
        assert_eq!(a.code, 0, "apply failed: {}\n{:?}", a.stderr, a.report);
        a.report.unwrap()
    }
}

#[derive(Debug)]
pub struct Applied {
    pub code: i32,
    pub report: Option<Report>,
    pub stderr: String,
}

/// Every entry under `dir`: type, mode, owner and content (or link target).
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if m.is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", std::fs::read_link(&p).unwrap().display()),
            );
        } else if m.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            walk(base, &p, out);
        } else {
            let data = std::fs::read(&p).unwrap();
            out.insert(
                rel,
                format!("file {mode:o} {}", String::from_utf8_lossy(&data)),
            );
        }
    }
}
