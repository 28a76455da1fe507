//! plumb upgrading its own package (DESIGN section 13). Installing it restarts plumb.service
//! (the package's maintainer script), which would stop the pass half-way, before its report: so
//! the pass that sees a new pin of `plumb` does not install it with the other packages. It
//! notes the upgrade here, finishes, records and pushes its report, and only then starts the
//! install as a transient systemd unit of its own, outside plumb.service, which the restart
//! does not stop. The new version reports on its first pass.

use super::command::{self, find_program};
use super::pkgcmd::Native;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::process::Command;
use std::time::Duration;

/// The name of plumb's own package (.deb and .rpm).
pub const OWN_PACKAGE: &str = "plumb";
/// The transient unit that installs it: `journalctl -u plumb-self-upgrade` shows how it went.
pub const UNIT: &str = "plumb-self-upgrade";
/// In state_dir: the upgrade this pass defers, then the one started.
const DOC: &str = "self-upgrade.json";
/// An upgrade that did not take is tried again after this (not on every pass).
const RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The install may download; it is stopped after this.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the new version's first pass waits for the install that restarted it to end.
const INSTALL_SETTLE_WAIT: Duration = Duration::from_secs(120);

/// An upgrade of plumb's own package, deferred to the end of the pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The package tool's argument: `plumb` or `plumb=<version>`.
    pub id: String,
    /// The version it installs, when pinned.
    pub version: Option<String>,
    /// When the install was started (unix seconds); `None` until the pass's report is out.
    pub started_at: Option<i64>,
}

/// Defers the install of `id` (`plumb=<version>`) to the end of the pass. `Ok`: the words for
/// the report; `Err`: why not (the same upgrade was started less than an hour ago and did not
/// take, or no package tool can run it). `tool`: the one agent.toml's `package_manager` names
/// (else the system's).
pub fn defer(
    state_dir: &StateDir,
    id: &str,
    version: Option<&str>,
    now: i64,
    tool: Option<Native>,
) -> Result<String, String> {
    if tool.or_else(Native::detect).is_none() {
        return Err(format!(
            "plumb installs its own package with apt-get or dnf after its report, and neither is installed: install {id} by hand"
        ));
    }
    if let Some(p) = read(state_dir) {
        if let Some(at) = p.started_at.filter(|_| p.id == id) {
            if now - at < RETRY_AFTER.as_secs() as i64 {
                return Err(format!(
                    "the install of {id} started at {} did not take: see `journalctl -u {UNIT}`; it is tried again an hour after it started",
                    crate::rollout::gate::format_time(at)
                ));
            }
        }
    }
    let pending = Pending {
        id: id.to_string(),
        version: version.map(String::from),
        started_at: None,
    };
    write(state_dir, &pending).map_err(|e| format!("{e:#}"))?;
    Ok(match version {
        Some(v) => format!(
            "installing {v} after this pass's report (the package restarts plumb; the new version reports next)"
        ),
        None => "installing after this pass's report (the package restarts plumb)".to_string(),
    })
}

/// After the pass's report is out: starts the deferred install, if there is one, with `tool`
/// (agent.toml's `package_manager`), else the system's.
pub fn start_pending(state_dir: &StateDir, now: i64, tool: Option<Native>) -> Result<()> {
    let Some(mut p) = read(state_dir) else {
        return Ok(());
    };
    if p.started_at.is_some() {
        return Ok(());
    }
    let native = tool
        .or_else(Native::detect)
        .context("neither apt-get nor dnf is installed")?;
    let (argv, env) = native.install_argv(std::slice::from_ref(&p.id))?;
    // Noted first: a start that kills this process (it should not) is not repeated at once.
    p.started_at = Some(now);
    write(state_dir, &p)?;
    let mut cmd = detached(&argv, &env);
    tracing::info!(package = %p.id, unit = UNIT, "upgrading plumb's own package: {}", p.id);
    let out = command::run(&mut cmd, INSTALL_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "starting the install of {} failed{}",
            p.id,
            command::tail(&out.stderr)
        );
    }
    Ok(())
}

/// Forgets a started upgrade once plumb's package is installed in the version it installs
/// (the new version's first pass), and says so. `tool`: whose database to read (see
/// `pkgcmd::installed_versions_from`).
pub fn settle(state_dir: &StateDir, tool: Option<Native>) {
    let Some(p) = read(state_dir) else {
        return;
    };
    if p.started_at.is_none() {
        return;
    }
    // The new version's first pass starts while the package is still being configured (its
    // maintainer script restarted plumb): wait for the install to end before reading it.
    wait_for_install(INSTALL_SETTLE_WAIT);
    let installed = super::pkgcmd::installed_versions_from(tool)
        .ok()
        .and_then(|i| i.versions.get(OWN_PACKAGE).cloned());
    if let Some(now) = settled(&p, installed.as_deref()) {
        tracing::info!(version = %now, "plumb's own package is now {now}");
        let _ = std::fs::remove_file(state_dir.path().join(DOC));
    }
}

/// Waits, up to `limit`, while the install's unit is still running.
fn wait_for_install(limit: Duration) {
    if find_program("systemctl").is_none() {
        return;
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut c = Command::new("systemctl");
        c.args(["is-active", "--quiet", &format!("{UNIT}.service")]);
        let running = command::run(&mut c, Duration::from_secs(10))
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !running || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The version installed, when it is the one `p` installs.
fn settled<'a>(p: &Pending, installed: Option<&'a str>) -> Option<&'a str> {
    match (&p.version, installed) {
        (Some(v), Some(i)) if v == i => Some(i),
        (None, Some(i)) => Some(i),
        _ => None,
    }
}

/// The install as a unit of systemd that this process does not wait for (and whose end the
/// restart of plumb.service does not cause); run by hand (no systemd service), it runs here
/// and is waited for: the restart then concerns the daemon, not this process.
fn detached(argv: &[String], env: &[(&str, &str)]) -> Command {
    if !command::runs_as_service() {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).envs(env.iter().copied());
        return c;
    }
    let mut c = Command::new("systemd-run");
    c.args([
        "--quiet",
        "--no-block",
        "--collect",
        "--service-type=oneshot",
    ])
    .arg(format!("--unit={UNIT}"))
    .arg("--description=plumb: upgrading its own package")
    .arg(format!(
        "--property=RuntimeMaxSec={}",
        INSTALL_TIMEOUT.as_secs()
    ));
    for (k, v) in env {
        c.arg(format!("--setenv={k}={v}"));
    }
    c.arg("--").args(argv);
    c
}

fn read(state_dir: &StateDir) -> Option<Pending> {
    let text = state_dir.read_doc(DOC).ok().flatten()?;
    serde_json::from_str(&text).ok()
}

fn write(state_dir: &StateDir, p: &Pending) -> Result<()> {
    state_dir.write_doc(DOC, &serde_json::to_string(p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_then_started_then_settled() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        if Native::detect().is_none() {
            let e = defer(&sd, "plumb=2.0-1", Some("2.0-1"), 100, None).unwrap_err();
            assert!(e.contains("apt-get or dnf"), "{e}");
            return;
        }
        let words = defer(&sd, "plumb=2.0-1", Some("2.0-1"), 100, None).unwrap();
        assert!(
            words.contains("2.0-1") && words.contains("after this pass's report"),
            "{words}"
        );
        // Started (as if the report went out): the same upgrade is not started again within
        // the hour, and says where to look.
        let mut p = read(&sd).unwrap();
        p.started_at = Some(100);
        write(&sd, &p).unwrap();
        let e = defer(&sd, "plumb=2.0-1", Some("2.0-1"), 200, None).unwrap_err();
        assert!(e.contains("did not take") && e.contains(UNIT), "{e}");
        // An hour later, or another version: deferred again.
        assert!(defer(&sd, "plumb=2.0-1", Some("2.0-1"), 100 + 3600, None).is_ok());
        let mut p = read(&sd).unwrap();
        p.started_at = Some(5000);
        write(&sd, &p).unwrap();
        assert!(defer(&sd, "plumb=2.1-1", Some("2.1-1"), 5001, None).is_ok());
        // The old version still installed: not settled; the new one: settled.
        let p = read(&sd).unwrap();
        assert_eq!(settled(&p, Some("2.0-1")), None);
        assert_eq!(settled(&p, None), None);
        assert_eq!(settled(&p, Some("2.1-1")), Some("2.1-1"));
    }
}
