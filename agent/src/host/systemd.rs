//! systemd over D-Bus (org.freedesktop.systemd1): unit files, jobs and unit state.
//!
//! The `zbus::Connection` is always passed in, never opened here, so tests can aim this layer at
//! a node's system bus. Every query reads properties fresh (`CacheProperties::No`): systemd
//! marks some of them (LoadState) const, and a cached proxy would never see them change.

use crate::host::{command, unit_dirs};
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::sync::OnceCell;
use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus::OwnedObjectPath;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

/// How a job ended: the `result` of systemd's JobRemoved signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    /// A unit this one requires failed.
    Dependency,
    /// Nothing to do (e.g. a reload of an inactive unit).
    Skipped,
    /// A result this version does not know.
    Other(String),
}

impl JobResult {
    fn parse(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_owned()),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == JobResult::Done
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        })
    }
}

/// One symlink change from EnableUnitFiles / DisableUnitFiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFileChange {
    /// "symlink" or "unlink".
    pub kind: String,
    pub file: String,
    pub dest: String,
}

/// A unit as systemd sees it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// loaded | not-found | bad-setting | error | masked
    pub load_state: String,
    /// active | reloading | inactive | failed | activating | deactivating
    pub active_state: String,
    /// Type-specific: running, exited, dead, failed, ...
    pub sub_state: String,
    /// enabled | disabled | static | masked | masked-runtime | generated | transient | "" ...
    pub unit_file_state: String,
    /// Services only: the main process, if running.
    pub main_pid: Option<u32>,
    /// Services only: why it last stopped (success, exit-code, signal, timeout, ...).
    pub result: Option<String>,
    /// Services only: the argv of each ExecStart= line.
    pub exec_start: Option<Vec<Vec<String>>>,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }

    pub fn is_failed(&self) -> bool {
        self.active_state == "failed"
    }

    pub fn is_masked(&self) -> bool {
        self.load_state == "masked" || self.unit_file_state.starts_with("masked")
    }

    pub fn is_enabled(&self) -> bool {
        matches!(
            self.unit_file_state.as_str(),
            "enabled" | "enabled-runtime" | "linked" | "linked-runtime" | "alias"
        )
    }
}

/// Unit-file states as systemd last reported them, under the key (`Systemd::file_states_key`)
/// of what they depended on then. Asking systemd costs it ~0.5 ms of CPU per unit, most of a
/// no-op pass with 50 units; while the key holds, the answer cannot have changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileStates {
    pub key: String,
    pub states: BTreeMap<String, String>,
}

/// The systemd manager on one bus connection.
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    subscribed: OnceCell<()>,
}

impl Systemd {
    pub async fn new(conn: &Connection) -> Result<Systemd> {
        let manager = ManagerProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .context("connecting to systemd's manager object")?;
        Ok(Systemd {
            conn: conn.clone(),
            manager,
            subscribed: OnceCell::new(),
        })
    }

    /// `systemctl daemon-reload`: needed after unit files change, and after enable/disable.
    pub async fn reload(&self) -> Result<()> {
        self.manager.reload().await.context("systemd daemon-reload")
    }

    /// Enables unit files (persistent, replacing conflicting symlinks). Call `reload` after.
    pub async fn enable(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let (_has_install_info, changes) = self
            .manager
            .enable_unit_files(owned(names), false, true)
            .await
            .with_context(|| format!("enabling {}", names.join(", ")))?;
        Ok(changes.into_iter().map(change).collect())
    }

    /// Disables unit files. Call `reload` after.
    pub async fn disable(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let changes = self
            .manager
            .disable_unit_files(owned(names), false)
            .await
            .with_context(|| format!("disabling {}", names.join(", ")))?;
        Ok(changes.into_iter().map(change).collect())
    }

    /// Starts a unit and waits for its job to finish.
    pub async fn start(&self, name: &str) -> Result<JobResult> {
        self.job("starting", name).await
    }

    /// Stops a unit and waits for its job to finish.
    pub async fn stop(&self, name: &str) -> Result<JobResult> {
        self.job("stopping", name).await
    }

    /// Restarts a unit (starting it if inactive) and waits for its job to finish.
    pub async fn restart(&self, name: &str) -> Result<JobResult> {
        self.job("restarting", name).await
    }

    /// Reloads a running unit (`ExecReload=`, ReloadUnit) and waits for its job to finish.
    pub async fn reload_unit(&self, name: &str) -> Result<JobResult> {
        self.job("reloading", name).await
    }

    /// Clears a failed unit's failed state (`systemctl reset-failed`).
    pub async fn reset_failed(&self, name: &str) -> Result<()> {
        self.manager
            .reset_failed_unit(name.to_owned())
            .await
            .with_context(|| format!("reset-failed {name}"))
    }

    /// The unit's state now. A unit that does not exist has load_state "not-found".
    pub async fn unit_state(&self, name: &str) -> Result<UnitState> {
        let ctx = || format!("reading the state of {name}");
        // LoadUnit, unlike GetUnit, also answers for units that are not loaded.
        let path = self
            .manager
            .load_unit(name.to_owned())
            .await
            .with_context(ctx)?;
        let unit = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .with_context(ctx)?;
        // Concurrent calls on one connection: one round trip's latency, not seven.
        let (load_state, active_state, sub_state, unit_file_state) = tokio::try_join!(
            unit.load_state(),
            unit.active_state(),
            unit.sub_state(),
            unit.unit_file_state()
        )
        .with_context(ctx)?;
        let mut state = UnitState {
            load_state,
            active_state,
            sub_state,
            unit_file_state,
            main_pid: None,
            result: None,
            exec_start: None,
        };
        if name.ends_with(".service") && state.load_state == "loaded" {
            let (pid, result, exec) = self.service_props(path).await.with_context(ctx)?;
            state.main_pid = (pid != 0).then_some(pid);
            state.result = Some(result);
            state.exec_start = Some(exec);
        }
        Ok(state)
    }

    /// The load, active, sub and unit-file states of many units, in one or two round trips
    /// whatever their number (the service-only fields are left empty: `unit_state` has them for
    /// one unit). The unit-file states come from `cache` while nothing they depend on changed
    /// (see `FileStates`); else they are asked for and `cache` is replaced.
    pub async fn unit_states(
        &self,
        names: &[&str],
        root: &Path,
        cache: &mut FileStates,
    ) -> Result<Vec<UnitState>> {
        // The key is taken before the states are asked for: a change in between then shows as
        // a different key on the next pass, never as a stale state under a current key.
        let (states, key) = tokio::join!(self.run_states(names), self.file_states_key(root, names));
        let mut states = states?;
        let fresh = key
            .as_deref()
            .is_some_and(|k| k == cache.key && names.iter().all(|n| cache.states.contains_key(*n)));
        if !fresh {
            *cache = FileStates {
                key: key.unwrap_or_default(),
                states: self.unit_file_states(names).await?,
            };
        }
        for (state, name) in states.iter_mut().zip(names) {
            if state.unit_file_state.is_empty() {
                state.unit_file_state = cache.states.get(*name).cloned().unwrap_or_default();
            }
        }
        Ok(states)
    }

    /// The load, active and sub states of many units in one call (`unit_file_state` is left
    /// empty, but for a unit asked for by an alias).
    pub async fn run_states(&self, names: &[&str]) -> Result<Vec<UnitState>> {
        let units = self
            .manager
            .list_units_by_names(owned(names))
            .await
            .with_context(|| format!("reading the state of {} units", names.len()))?;
        let mut by_name: HashMap<String, UnitState> = units
            .into_iter()
            .map(|u| {
                let state = UnitState {
                    load_state: u.2,
                    active_state: u.3,
                    sub_state: u.4,
                    ..Default::default()
                };
                (u.0, state)
            })
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(match by_name.remove(*n) {
                Some(s) => s,
                // Asked by an alias: systemd answered with the unit's own name.
                None => self.unit_state(n).await?,
            });
        }
        Ok(out)
    }

    /// The unit-file state (enabled, disabled, static, masked, ...) of many units in one call,
    /// by name ("" for a unit without a file). systemd computes these from disk each time,
    /// looking through every unit directory for each unit: ~0.5 ms of its CPU per unit.
    async fn unit_file_states(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        let files = self
            .manager
            .list_unit_files_by_patterns(vec![], owned(names))
            .await
            .with_context(|| format!("reading the unit file state of {} units", names.len()))?;
        let mut by_name: BTreeMap<String, String> = names
            .iter()
            .map(|n| ((*n).to_owned(), String::new()))
            .collect();
        // File paths -> name; the first listed wins, as systemd lists by priority.
        let mut seen = std::collections::HashSet::new();
        for (path, state) in files {
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            if seen.insert(name.clone()) {
                by_name.insert(name, state);
            }
        }
        Ok(by_name)
    }

    /// What the unit-file states of `names` depend on: see `unit_dirs::fingerprint`. None when
    /// systemd does not say when it last loaded units (older versions): the states are then asked
    /// for on every pass.
    async fn file_states_key(&self, root: &Path, names: &[&str]) -> Option<String> {
        let (loaded_at, dirs) = tokio::join!(
            self.manager.units_load_timestamp(),
            self.manager.unit_path()
        );
        Some(unit_dirs::fingerprint(
            root,
            loaded_at.ok()?,
            &dirs.ok()?,
            names,
        ))
    }

    /// Whether the unit is masked (in /etc or /run).
    pub async fn is_masked(&self, name: &str) -> Result<bool> {
        Ok(self.unit_state(name).await?.is_masked())
    }

    async fn service_props(
        &self,
        path: OwnedObjectPath,
    ) -> Result<(u32, String, Vec<Vec<String>>)> {
        let svc = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let (pid, result, exec) = tokio::try_join!(svc.main_pid(), svc.result(), svc.exec_start())?;
        let argvs = exec.into_iter().map(|line| line.1).collect();
        Ok((pid, result, argvs))
    }

    /// Subscribe once per connection: systemd only sends job signals to subscribed clients.
    async fn subscribe(&self) -> Result<()> {
        self.subscribed
            .get_or_try_init(|| async {
                self.manager
                    .subscribe()
                    .await
                    .context("subscribing to systemd signals")
            })
            .await?;
        Ok(())
    }

    /// `systemctl reboot`: queues reboot.target (replace-irreversibly, as systemctl does) and
    /// returns once systemd accepted the job; the reboot itself stops this process.
    pub async fn reboot(&self) -> Result<()> {
        self.manager
            .start_unit("reboot.target".into(), "replace-irreversibly".into())
            .await
            .context("asking systemd to start reboot.target")?;
        Ok(())
    }

    async fn job(&self, verb: &str, name: &str) -> Result<JobResult> {
        let ctx = || format!("{verb} {name}");
        self.subscribe().await?;
        // Listen before asking: a short job can finish before the method call returns.
        let mut removed = self.manager.receive_job_removed().await.with_context(ctx)?;
        let (unit, mode) = (name.to_owned(), "replace".to_owned());
        let job = match verb {
            "starting" => self.manager.start_unit(unit, mode).await,
            "stopping" => self.manager.stop_unit(unit, mode).await,
            "reloading" => self.manager.reload_unit(unit, mode).await,
            _ => self.manager.restart_unit(unit, mode).await,
        }
        .with_context(ctx)?;
        while let Some(signal) = removed.next().await {
            let args = signal.args().with_context(ctx)?;
            if *args.job() == job {
                return Ok(JobResult::parse(args.result()));
            }
        }
        bail!("{verb} {name}: the bus connection closed before job {job} finished")
    }
}

/// The last `lines` journal lines of a unit, message text only. Runs `journalctl`, so it reads
/// the journal of the host plumb runs on, whatever bus the `Systemd` it goes with is on.
/// Blocking: call it from a blocking context (the pass runs in `spawn_blocking`).
pub fn journal_tail(name: &str, lines: u32) -> Result<String> {
    let n = lines.to_string();
    let mut cmd = Command::new("journalctl");
    cmd.args(["-u", name, "-n", &n, "--no-pager", "-o", "cat"]);
    let out = command::run(&mut cmd, Duration::from_secs(10))?;
    command::check(&cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn change((kind, file, dest): (String, String, String)) -> UnitFileChange {
    UnitFileChange { kind, file, dest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_results_parse_and_print_back() {
        for s in [
            "done",
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "skipped",
            "odd",
        ] {
            assert_eq!(JobResult::parse(s).to_string(), s);
        }
        assert!(JobResult::parse("done").is_done());
        assert_eq!(JobResult::parse("odd"), JobResult::Other("odd".into()));
    }

    #[test]
    fn masked_and_enabled_states() {
        let mut s = UnitState {
            load_state: "loaded".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            unit_file_state: "enabled".into(),
            main_pid: None,
            result: None,
            exec_start: None,
        };
        assert!(s.is_enabled() && !s.is_masked() && !s.is_active());
        s.unit_file_state = "masked-runtime".into();
        assert!(s.is_masked() && !s.is_enabled());
        s.unit_file_state = String::new();
        s.load_state = "masked".into();
        assert!(s.is_masked());
    }
}
