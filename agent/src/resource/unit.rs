//! systemd units: unit files and drop-ins under /etc/systemd/system, enablement and run state.
//!
//! `observe` reads the files under root and asks systemd (through a callback, so planning stays
//! pure and testable); `plan` turns desired x observed x inventory into one `SystemdChange` per
//! unit; `apply` (in `activate`) runs the changes of units and containers together in phases.

use crate::host::fs::{HostFs, Observed};
use crate::host::Fault;
use crate::reason::Reason;
use crate::resource::service::{FileOp, Live, RunAction, SystemdChange};
use crate::spec::SpecError;
use crate::spec::{RunState, UnitSpec};
use crate::state::ManagedUnit;
use crate::status::report::Kind;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const UNIT_DIR: &str = "/etc/systemd/system";

pub fn unit_path(name: &str) -> String {
    format!("{UNIT_DIR}/{name}")
}

pub fn dropin_path(name: &str, conf: &str) -> String {
    format!("{UNIT_DIR}/{name}.d/{conf}")
}

/// What the host has for one unit.
#[derive(Debug, Clone)]
pub struct UnitObs {
    /// The unit file under /etc/systemd/system.
    pub file: Result<Observed, Fault>,
    /// Drop-ins Git names or plumb wrote before, by file name.
    pub dropins: BTreeMap<String, Result<Observed, Fault>>,
    /// What systemd says about the unit.
    pub live: Result<Live, Fault>,
}

/// Reads the files of every desired and inventoried unit, and asks `live` for systemd's view.
pub fn observe(
    fs: &HostFs,
    desired: &BTreeMap<String, UnitSpec>,
    inventory: &BTreeMap<String, ManagedUnit>,
    live: &mut dyn FnMut(&str) -> Result<Live, Fault>,
) -> BTreeMap<String, UnitObs> {
    let names: BTreeSet<&String> = desired.keys().chain(inventory.keys()).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let mut confs: BTreeSet<&String> = BTreeSet::new();
        if let Some(s) = desired.get(name) {
            confs.extend(s.dropins.keys());
        }
        if let Some(m) = inventory.get(name) {
            confs.extend(m.dropins.iter());
        }
        let dropins = confs
            .into_iter()
            .map(|c| (c.clone(), observe_path(fs, &dropin_path(name, c))))
            .collect();
        out.insert(
            name.clone(),
            UnitObs {
                file: observe_path(fs, &unit_path(name)),
                dropins,
                live: live(name),
            },
        );
    }
    out
}

pub fn observe_path(fs: &HostFs, path: &str) -> Result<Observed, Fault> {
    fs.observe(path).map_err(Fault::from)
}

/// Identifies what Git asks of a unit; equal to the inventory's means Git did not change it.
pub fn digest(spec: &UnitSpec) -> String {
    let mut h = Sha256::new();
    h.update(spec.name.as_bytes());
    if let Some(f) = &spec.file {
        h.update(b"\0file\0");
        h.update(f);
    }
    for (conf, data) in &spec.dropins {
        h.update(format!("\0dropin {conf}\0").as_bytes());
        h.update(data);
    }
    h.update(format!("\0{:?}\0{:?}", spec.enabled, spec.state).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether the unit file or a drop-in has an [Install] section (what `enabled` defaults to).
pub fn has_install(spec: &UnitSpec) -> bool {
    let has = |d: &[u8]| {
        String::from_utf8_lossy(d)
            .lines()
            .any(|l| l.trim() == "[Install]")
    };
    spec.file.as_deref().is_some_and(has) || spec.dropins.values().any(|d| has(d))
}

/// The unit a timer, socket or path activates (`Unit=`/`Service=`, else the same-named service).
pub fn trigger_of(spec: &UnitSpec) -> Option<String> {
    let (stem, kind) = spec.name.rsplit_once('.')?;
    let key = match kind {
        "timer" | "path" => "Unit",
        "socket" => "Service",
        _ => return None,
    };
    let mut target = format!("{stem}.service");
    for d in spec.file.iter().chain(spec.dropins.values()) {
        for line in String::from_utf8_lossy(d).lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key && !v.trim().is_empty() {
                    target = v.trim().to_string();
                }
            }
        }
    }
    Some(target)
}

/// The units that timers, sockets and paths in Git trigger: left to their trigger by default.
pub fn triggered(desired: &BTreeMap<String, UnitSpec>) -> BTreeSet<String> {
    desired.values().filter_map(trigger_of).collect()
}

/// Unit types a restart makes sense for; the others are only started.
pub fn restartable(name: &str) -> bool {
    !matches!(
        name.rsplit_once('.').map(|(_, k)| k),
        Some("target" | "slice" | "device")
    )
}

pub fn is_template(name: &str) -> bool {
    name.contains("@.")
}

/// Desired x observed x inventory -> one change per unit that needs anything, in name order.
/// `changed_files` are the managed files this pass writes (for `restart_on` and `reload_on`).
/// Pure.
pub fn plan(
    desired: &BTreeMap<String, UnitSpec>,
    obs: &BTreeMap<String, UnitObs>,
    inventory: &BTreeMap<String, ManagedUnit>,
    changed_files: &BTreeSet<String>,
) -> Vec<SystemdChange> {
    let triggered = triggered(desired);
    let mut out = Vec::new();
    for (name, spec) in desired {
        let managed = inventory.get(name);
        let git_unchanged =
            managed.and_then(|m| m.digest.as_deref()) == Some(digest(spec).as_str());
        let c = plan_one(name, spec, &obs[name], managed, &triggered, changed_files);
        if c.blocked.is_some() || c.touches_host() || !git_unchanged {
            out.push(c);
        }
    }
    for (name, m) in inventory.iter().filter(|(n, _)| !desired.contains_key(*n)) {
        out.push(plan_prune(name, m, &obs[name]));
    }
    out
}

/// One unit Git names: its files, then (unless blocked) enablement and run state.
fn plan_one(
    name: &str,
    spec: &UnitSpec,
    o: &UnitObs,
    managed: Option<&ManagedUnit>,
    triggered: &BTreeSet<String>,
    changed_files: &BTreeSet<String>,
) -> SystemdChange {
    let digest = digest(spec);
    let git_unchanged = managed.and_then(|m| m.digest.as_deref()) == Some(digest.as_str());
    let mut c = SystemdChange::new(Kind::Unit, name, name);
    c.record = Some(ManagedUnit {
        digest: Some(digest.clone()),
        has_file: spec.file.is_some(),
        dropins: spec.dropins.keys().cloned().collect(),
        activation_pending: false,
    });
    if let Err(e) = plan_files(&mut c, spec, o, managed) {
        c.blocked = Some(e);
        return c;
    }
    // The last pass wrote this unit's files and was stopped before it activated them.
    c.resume = managed.is_some_and(|m| m.activation_pending) && c.files.is_empty();
    if c.resume {
        c.why
            .push("the last pass was stopped before it activated the unit".into());
    }
    let files_changed = !c.files.is_empty() || c.resume;
    let writes_unit_file = c
        .files
        .iter()
        .any(|op| matches!(op, FileOp::Write { path, .. } if *path == unit_path(name)));
    if files_changed {
        c.why.push(if managed.is_none() && spec.file.is_some() {
            "unit file installed".to_string()
        } else {
            "unit file or drop-in changed".to_string()
        });
    }
    let live = match &o.live {
        Ok(l) => l,
        Err(e) => {
            c.blocked = Some(format!("could not read its state from systemd: {e}"));
            return c;
        }
    };
    if live.is_masked() && !writes_unit_file {
        c.files.clear();
        c.masked = true;
        c.blocked = Some(format!(
            "masked on the host ({}): plumb does not unmask it; run `systemctl unmask {name}` or let Git ship the unit file",
            if live.unit_file_state.is_empty() { &live.load_state } else { &live.unit_file_state }
        ));
        return c;
    }
    plan_enablement(&mut c, spec, live, files_changed, writes_unit_file);
    let on = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| changed_files.contains(*p))
            .cloned()
            .collect()
    };
    let changed = Triggers {
        restart: on(&spec.restart_on),
        reload: on(&spec.reload_on),
    };
    plan_run(&mut c, spec, live, triggered, files_changed, &changed);
    // Git did not change, yet the host needs work: somebody changed the host.
    c.drift = git_unchanged && (files_changed || c.enable.is_some() || c.run.is_some());
    // A restart or reload for a managed file this pass wrote is that file's doing, not drift.
    let for_files = match c.run {
        Some(RunAction::Restart) => !changed.restart.is_empty(),
        Some(RunAction::Reload) => true,
        _ => false,
    };
    if for_files && !files_changed {
        c.drift = git_unchanged && c.enable.is_some();
    }
    c
}

/// The managed files this pass changed that a unit names in `restart_on` and `reload_on`.
struct Triggers {
    restart: Vec<String>,
    reload: Vec<String>,
}

impl Triggers {
    /// "/etc/a.conf changed", one per file.
    fn why(&self) -> impl Iterator<Item = String> + '_ {
        self.restart
            .iter()
            .chain(&self.reload)
            .map(|p| format!("{p} changed"))
    }
}

/// The unit file, its drop-ins, and drop-ins plumb wrote that left Git. The error: why they
/// cannot be written.
fn plan_files(
    c: &mut SystemdChange,
    spec: &UnitSpec,
    o: &UnitObs,
    managed: Option<&ManagedUnit>,
) -> Result<(), String> {
    let name = c.name.clone();
    let mut wants = Vec::new();
    match &spec.file {
        Some(data) => wants.push((unit_path(&name), Some(data), &o.file)),
        None if managed.is_some_and(|m| m.has_file) => {
            wants.push((unit_path(&name), None, &o.file))
        }
        None => {}
    }
    for (conf, obs) in &o.dropins {
        wants.push((dropin_path(&name, conf), spec.dropins.get(conf), obs));
    }
    let mut file_errors = Vec::new();
    for (path, want, have) in wants {
        match file_op(&path, want.map(|d| d.as_slice()), have) {
            Ok(Some(op)) => c.files.push(op),
            Ok(None) => {}
            Err(e) => file_errors.push(e.to_string()),
        }
    }
    if file_errors.is_empty() {
        Ok(())
    } else {
        Err(file_errors.join("; "))
    }
}

/// Enable or disable, from `enabled` or the unit file's [Install].
fn plan_enablement(
    c: &mut SystemdChange,
    spec: &UnitSpec,
    live: &Live,
    files_changed: bool,
    writes_unit_file: bool,
) {
    let enabled = spec
        .enabled
        .or_else(|| (spec.file.is_some() && !is_template(&c.name)).then(|| has_install(spec)));
    let ufs = live.unit_file_state.as_str();
    match enabled {
        Some(true) if ufs != "enabled" || (writes_unit_file && has_install(spec)) => {
            if ufs != "enabled" && !files_changed {
                c.why.push(format!("was {}", or_unknown(ufs)));
            }
            c.enable = Some(true);
        }
        Some(false) if ufs == "enabled" => {
            c.why.push("disable".into());
            c.enable = Some(false);
        }
        _ => {}
    }
}

/// Start, stop, restart or reload: `state`, else started unless a trigger or template owns it.
/// A restart (its own files, or a `restart_on` file changed) wins over a `reload_on` reload; a
/// unit that is not running is started, not reloaded.
fn plan_run(
    c: &mut SystemdChange,
    spec: &UnitSpec,
    live: &Live,
    triggered: &BTreeSet<String>,
    files_changed: bool,
    changed: &Triggers,
) {
    let name = c.name.clone();
    let want = spec
        .state
        .or(if triggered.contains(&name) || is_template(&name) {
            None
        } else {
            Some(RunState::Started)
        });
    let running = live.running();
    let restart = (files_changed || !changed.restart.is_empty()) && restartable(&name) && running;
    let reload = !changed.reload.is_empty() && running;
    match want {
        Some(RunState::Started) if !running => {
            c.run = Some(RunAction::Start);
            if !files_changed {
                c.why
                    .push(format!("was {}", or_unknown(&live.active_state)));
            }
        }
        Some(RunState::Stopped) if running => {
            c.run = Some(RunAction::Stop);
            c.why.push(format!("was {}", live.active_state));
        }
        Some(RunState::Stopped) => {}
        // Started and running, or left to its trigger: a running one picks up its new files
        // through a restart, or a reload.
        Some(RunState::Started) | None => {
            if restart {
                c.run = Some(RunAction::Restart);
                c.why.extend(changed.why());
            } else if reload {
                c.run = Some(RunAction::Reload);
                c.why.extend(changed.why());
            }
        }
    }
    // systemd refuses to start a socket while its service runs: that service stops first
    // (the next connection starts it again, with the new socket).
    if c.run == Some(RunAction::Restart) && name.ends_with(".socket") {
        c.stop_first = trigger_of(spec);
    }
}

/// A unit that left Git: stopped, disabled and its files removed when plumb installed it; only
/// its drop-ins removed when plumb only added those.
fn plan_prune(name: &str, m: &ManagedUnit, o: &UnitObs) -> SystemdChange {
    let mut c = SystemdChange::new(Kind::Unit, name, name);
    c.prune = true;
    if m.has_file {
        if let Ok(live) = &o.live {
            if live.running() {
                c.run = Some(RunAction::Stop);
            }
            if live.unit_file_state == "enabled" {
                c.enable = Some(false);
            }
        }
        c.files.push(FileOp::Remove {
            path: unit_path(name),
        });
        c.why
            .push("left Git: stopped, disabled, unit file removed".into());
    } else if m.dropins.is_empty() {
        c.why
            .push("left Git: no longer managed, left as it is".into());
    } else {
        c.why
            .push("left Git: drop-ins removed, unit left as it is".into());
    }
    for conf in &m.dropins {
        c.files.push(FileOp::Remove {
            path: dropin_path(name, conf),
        });
    }
    c
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "not loaded"
    } else {
        s
    }
}

/// The write or removal that makes `path` hold `want` (None: absent), or why it cannot.
pub fn file_op(
    path: &str,
    want: Option<&[u8]>,
    have: &Result<Observed, Fault>,
) -> Result<Option<FileOp>, Fault> {
    let have = have.as_ref().map_err(Clone::clone)?;
    match (want, have) {
        (_, Observed::Dir) => Err(Fault(format!(
            "{path} is a directory on the host: plumb does not replace directories"
        ))),
        (_, Observed::Other) => Err(Fault(format!(
            "{path}: a device, socket or fifo is in the way"
        ))),
        (None, Observed::Missing) => Ok(None),
        (None, _) => Ok(Some(FileOp::Remove { path: path.into() })),
        (Some(d), Observed::File { data, meta }) if data == d && meta.mode == 0o644 => Ok(None),
        (Some(d), _) => Ok(Some(FileOp::Write {
            path: path.into(),
            data: d.to_vec(),
        })),
    }
}

/// Checks the unit files and drop-ins this commit would change with `systemd-analyze verify`,
/// staged in `staging` (emptied first). The error names the file and quotes systemd. Missing
/// programs and dependencies are not errors: a package in the same commit may bring them.
pub fn validate(
    fs: &HostFs,
    desired: &BTreeMap<String, UnitSpec>,
    staging: &Path,
) -> Result<(), SpecError> {
    let mut staged = Vec::new();
    for (name, spec) in desired {
        let mut differs = false;
        if let Some(f) = &spec.file {
            differs |= matches!(
                file_op(
                    &unit_path(name),
                    Some(f),
                    &observe_path(fs, &unit_path(name))
                ),
                Ok(Some(_))
            );
        }
        for (conf, d) in &spec.dropins {
            let p = dropin_path(name, conf);
            differs |= matches!(file_op(&p, Some(d), &observe_path(fs, &p)), Ok(Some(_)));
        }
        if differs {
            staged.push(spec);
        }
    }
    if staged.is_empty() {
        return Ok(());
    }
    let program = "systemd-analyze";
    if crate::host::command::find_program(program).is_none() {
        tracing::warn!("systemd-analyze not found: unit files are installed unchecked");
        return Ok(());
    }
    crate::state::reset_dir(staging).map_err(|e| invalid(format!("{e:#}")))?;
    let result = (|| {
        let mut args = Vec::new();
        for spec in &staged {
            if let Some(f) = &spec.file {
                write_staged(&staging.join(&spec.name), f)?;
            }
            for (conf, d) in &spec.dropins {
                write_staged(&staging.join(format!("{}.d", spec.name)).join(conf), d)?;
            }
            if spec.file.is_some() {
                args.push(staging.join(&spec.name).display().to_string());
            } else {
                args.push(spec.name.clone());
            }
        }
        let mut cmd = std::process::Command::new(program);
        cmd.arg("verify")
            .arg("--man=no")
            .args(&args)
            // Staging first, then the usual search path (the trailing colon), so drop-ins for
            // units someone else installed are found beside them.
            .env("SYSTEMD_UNIT_PATH", format!("{}:", staging.display()))
            .env("SYSTEMD_LOG_COLOR", "0");
        let out = crate::host::command::run(&mut cmd, std::time::Duration::from_secs(60))
            .map_err(|e| format!("{e:#}"))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let problems = verify_problems(&text, staging);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid unit file: {}", problems.join(" | ")))
        }
    })();
    let _ = std::fs::remove_dir_all(staging);
    result.map_err(invalid)
}

fn invalid(message: String) -> SpecError {
    SpecError::new(Reason::InvalidUnit, message)
}

fn write_staged(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The lines of `systemd-analyze verify` that make a staged unit invalid: every complaint about a
/// line of a staged file (unknown keys and sections, bad values) and every unit systemd refuses to
/// load. Missing programs and missing dependencies are not among them. Staged paths are shown as
/// the unit's own path ("app.service.d/x.conf:2: ...").
pub fn verify_problems(output: &str, staging: &Path) -> Vec<String> {
    let prefix = format!("{}/", staging.display());
    output
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with(&prefix)
                || l.contains("bad unit file setting")
                || l.contains("has a bad unit file")
                || l.contains("Failed to load configuration")
        })
        .map(|l| l.replace(&prefix, ""))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fs::Meta;

    fn unit(name: &str, file: Option<&str>) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            file: file.map(|f| f.as_bytes().to_vec()),
            dropins: BTreeMap::new(),
            enabled: None,
            state: None,
            restart_on: vec![],
            reload_on: vec![],
            check: None,
        }
    }

    fn on_disk(data: &str) -> Result<Observed, Fault> {
        Ok(Observed::File {
            data: data.as_bytes().to_vec(),
            meta: Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        })
    }

    fn live(active: &str, ufs: &str) -> Result<Live, Fault> {
        Ok(Live {
            load_state: if ufs.is_empty() {
                "not-found"
            } else {
                "loaded"
            }
            .into(),
            active_state: active.into(),
            unit_file_state: ufs.into(),
            ..Default::default()
        })
    }

    fn obs(file: Result<Observed, Fault>, live: Result<Live, Fault>) -> UnitObs {
        UnitObs {
            file,
            dropins: BTreeMap::new(),
            live,
        }
    }

    const SVC: &str =
        "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    const SVC2: &str =
        "[Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n";
    const NOINSTALL: &str = "[Service]\nExecStart=/bin/true\n";

    fn managed(s: &UnitSpec) -> ManagedUnit {
        ManagedUnit {
            digest: Some(digest(s)),
            has_file: s.file.is_some(),
            dropins: s.dropins.keys().cloned().collect(),
            activation_pending: false,
        }
    }

    /// What a plan does with one unit, in short: (writes, enable, run, drift, blocked, prune).
    type Short = (usize, Option<bool>, Option<RunAction>, bool, bool, bool);

    fn short(c: &SystemdChange) -> Short {
        (
            c.files.len(),
            c.enable,
            c.run,
            c.drift,
            c.blocked.is_some(),
            c.prune,
        )
    }

    #[test]
    fn plan_table() {
        use RunAction::*;
        let app = unit("app.service", Some(SVC));
        let app_old = unit("app.service", Some(SVC2));
        let stopped = UnitSpec {
            state: Some(RunState::Stopped),
            ..app.clone()
        };
        let disabled = UnitSpec {
            enabled: Some(false),
            ..app.clone()
        };
        let static_unit = unit("app.service", Some(NOINSTALL));
        type Case = (UnitSpec, UnitObs, Option<ManagedUnit>, Option<Short>);
        let cases: Vec<(&str, Case)> = vec![
            (
                "new unit",
                (
                    app.clone(),
                    obs(Ok(Observed::Missing), live("inactive", "")),
                    None,
                    Some((1, Some(true), Some(Start), false, false, false)),
                ),
            ),
            (
                "in sync",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("active", "enabled")),
                    Some(managed(&app)),
                    None,
                ),
            ),
            (
                "adopt running identical",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("active", "enabled")),
                    None,
                    None,
                ),
            ),
            (
                "new commit edits it",
                (
                    app.clone(),
                    obs(on_disk(SVC2), live("active", "enabled")),
                    Some(managed(&app_old)),
                    Some((1, Some(true), Some(Restart), false, false, false)),
                ),
            ),
            (
                "edited by hand",
                (
                    app.clone(),
                    obs(on_disk(SVC2), live("active", "enabled")),
                    Some(managed(&app)),
                    Some((1, Some(true), Some(Restart), true, false, false)),
                ),
            ),
            (
                "stopped by hand",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("inactive", "enabled")),
                    Some(managed(&app)),
                    Some((0, None, Some(Start), true, false, false)),
                ),
            ),
            (
                "failed unit restarted",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("failed", "enabled")),
                    Some(managed(&app)),
                    Some((0, None, Some(Start), true, false, false)),
                ),
            ),
            (
                "disabled by hand",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("active", "disabled")),
                    Some(managed(&app)),
                    Some((0, Some(true), None, true, false, false)),
                ),
            ),
            (
                "masked: reported only",
                (
                    app.clone(),
                    obs(on_disk(SVC), live("inactive", "masked-runtime")),
                    Some(managed(&app)),
                    Some((0, None, None, false, true, false)),
                ),
            ),
            (
                "mask symlink replaced: Git names the path",
                (
                    app.clone(),
                    obs(
                        Ok(Observed::Symlink {
                            target: "/dev/null".into(),
                            meta: Meta {
                                mode: 0o777,
                                uid: 0,
                                gid: 0,
                            },
                        }),
                        live("inactive", "masked"),
                    ),
                    Some(managed(&app)),
                    Some((1, Some(true), Some(Start), true, false, false)),
                ),
            ),
            (
                "state stopped",
                (
                    stopped.clone(),
                    obs(on_disk(SVC), live("active", "enabled")),
                    Some(managed(&app)),
                    Some((0, None, Some(Stop), false, false, false)),
                ),
            ),
            (
                "stopped stays stopped",
                (
                    stopped.clone(),
                    obs(on_disk(SVC), live("inactive", "enabled")),
                    Some(managed(&stopped)),
                    None,
                ),
            ),
            (
                "enabled = false",
                (
                    disabled.clone(),
                    obs(on_disk(SVC), live("active", "enabled")),
                    Some(managed(&app)),
                    Some((0, Some(false), None, false, false, false)),
                ),
            ),
            (
                "no [Install]: not enabled",
                (
                    static_unit.clone(),
                    obs(Ok(Observed::Missing), live("inactive", "")),
                    None,
                    Some((1, None, Some(Start), false, false, false)),
                ),
            ),
            (
                "directory in the way",
                (
                    app.clone(),
                    obs(Ok(Observed::Dir), live("inactive", "")),
                    None,
                    Some((0, None, None, false, true, false)),
                ),
            ),
            (
                "systemd unreachable",
                (
                    app.clone(),
                    obs(on_disk(SVC), Err("no bus".into())),
                    Some(managed(&app)),
                    Some((0, None, None, false, true, false)),
                ),
            ),
        ];
        for (name, (spec, o, inv, want)) in cases {
            let n = spec.name.clone();
            let desired: BTreeMap<_, _> = [(n.clone(), spec)].into();
            let inventory: BTreeMap<_, _> = inv.into_iter().map(|m| (n.clone(), m)).collect();
            let obs: BTreeMap<_, _> = [(n.clone(), o)].into();
            let got = plan(&desired, &obs, &inventory, &BTreeSet::new());
            let got = got
                .first()
                .filter(|c| c.touches_host() || c.blocked.is_some())
                .map(short);
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn timers_restart_themselves_not_their_service() {
        let timer = unit(
            "job.timer",
            Some("[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n"),
        );
        let svc = unit(
            "job.service",
            Some("[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        );
        let desired: BTreeMap<_, _> = [
            ("job.timer".to_string(), timer.clone()),
            ("job.service".to_string(), svc.clone()),
        ]
        .into();
        let observed: BTreeMap<_, _> = [
            (
                "job.timer".to_string(),
                obs(on_disk("old"), live("active", "enabled")),
            ),
            (
                "job.service".to_string(),
                obs(on_disk("old"), live("inactive", "static")),
            ),
        ]
        .into();
        let inv: BTreeMap<_, _> = [
            (
                "job.timer".to_string(),
                ManagedUnit {
                    digest: Some("old".into()),
                    has_file: true,
                    dropins: vec![],
                    activation_pending: false,
                },
            ),
            (
                "job.service".to_string(),
                ManagedUnit {
                    digest: Some("old".into()),
                    has_file: true,
                    dropins: vec![],
                    activation_pending: false,
                },
            ),
        ]
        .into();
        let p = plan(&desired, &observed, &inv, &BTreeSet::new());
        let by: BTreeMap<_, _> = p.iter().map(|c| (c.name.as_str(), c)).collect();
        assert_eq!(by["job.timer"].run, Some(RunAction::Restart));
        assert_eq!(
            by["job.service"].run, None,
            "the timer's service is not started"
        );
        assert_eq!(by["job.service"].files.len(), 1);
        // A changed socket restarts after its running service stops.
        let sock = unit(
            "echo.socket",
            Some("[Socket]\nListenStream=/run/e.sock\nSocketMode=0660\n"),
        );
        let d: BTreeMap<_, _> = [("echo.socket".to_string(), sock)].into();
        let o: BTreeMap<_, _> = [(
            "echo.socket".to_string(),
            obs(on_disk("old"), live("active", "enabled")),
        )]
        .into();
        let p = plan(&d, &o, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(p[0].run, Some(RunAction::Restart));
        assert_eq!(p[0].stop_first.as_deref(), Some("echo.service"));
        // A socket naming its service explicitly.
        let sock = unit(
            "x.socket",
            Some("[Socket]\nListenStream=1\nService=other.service\n"),
        );
        let t = triggered(&[("x.socket".to_string(), sock)].into());
        assert!(t.contains("other.service") && !t.contains("x.service"));
    }

    #[test]
    fn restart_on_and_dropins_and_prune() {
        let mut app = unit("app.service", Some(SVC));
        app.restart_on = vec!["/etc/app.conf".into()];
        app.dropins
            .insert("x.conf".into(), b"[Service]\nNice=5\n".to_vec());
        let m = managed(&app);
        let mut o = obs(on_disk(SVC), live("active", "enabled"));
        o.dropins
            .insert("x.conf".into(), on_disk("[Service]\nNice=5\n"));
        let desired: BTreeMap<_, _> = [("app.service".to_string(), app.clone())].into();
        let obsm: BTreeMap<_, _> = [("app.service".to_string(), o.clone())].into();
        let inv: BTreeMap<_, _> = [("app.service".to_string(), m.clone())].into();
        assert!(plan(&desired, &obsm, &inv, &BTreeSet::new()).is_empty());
        let changed: BTreeSet<String> = ["/etc/app.conf".to_string()].into();
        let p = plan(&desired, &obsm, &inv, &changed);
        assert_eq!(
            short(&p[0]),
            (0, None, Some(RunAction::Restart), false, false, false)
        );

        // A drop-in edited by hand is rewritten and the unit restarted.
        let mut o2 = o.clone();
        o2.dropins
            .insert("x.conf".into(), on_disk("[Service]\nNice=9\n"));
        let p = plan(
            &desired,
            &[("app.service".to_string(), o2)].into(),
            &inv,
            &BTreeSet::new(),
        );
        assert_eq!(
            short(&p[0]),
            (1, None, Some(RunAction::Restart), true, false, false)
        );

        // Left Git: stop, disable, remove file and drop-in.
        let p = plan(&BTreeMap::new(), &obsm, &inv, &BTreeSet::new());
        assert_eq!(
            short(&p[0]),
            (2, Some(false), Some(RunAction::Stop), false, false, true)
        );
    }

    /// `reload_on` (issue 20): a reload for a changed file; a restart wins over it; a unit that
    /// is not running is started, not reloaded.
    #[test]
    fn reload_on_plan_table() {
        use RunAction::*;
        const SITE: &str = "/etc/site.conf";
        const APP_CONF: &str = "/etc/app.conf";
        let mut app = unit("app.service", Some(SVC));
        app.reload_on = vec![SITE.into()];
        app.restart_on = vec![APP_CONF.into()];
        let app_old = unit("app.service", Some(SVC2));
        let stopped = UnitSpec {
            state: Some(RunState::Stopped),
            ..app.clone()
        };
        // A unit only host.toml names (a package's), with only reload_on.
        let mut pkg = unit("app.service", None);
        pkg.reload_on = vec![SITE.into()];
        let running = || obs(on_disk(SVC), live("active", "enabled"));
        type Case<'a> = (
            UnitSpec,
            UnitObs,
            ManagedUnit,
            &'a [&'a str],
            Option<Short>,
            &'a str,
        );
        let cases: Vec<(&str, Case)> = vec![
            (
                "site changed: reload",
                (app.clone(), running(), managed(&app), &[SITE], Some((0, None, Some(Reload), false, false, false)),
                 "reload unit app.service (/etc/site.conf changed)"),
            ),
            (
                "site changed, package's unit: reload",
                (pkg.clone(), obs(Ok(Observed::Missing), live("active", "enabled")), managed(&pkg), &[SITE],
                 Some((0, None, Some(Reload), false, false, false)),
                 "reload unit app.service (/etc/site.conf changed)"),
            ),
            (
                "site and restart_on file changed: restart wins",
                (app.clone(), running(), managed(&app), &[SITE, APP_CONF], Some((0, None, Some(Restart), false, false, false)),
                 "restart unit app.service (/etc/app.conf changed, /etc/site.conf changed)"),
            ),
            (
                "site and the unit file changed: restart wins",
                (app.clone(), obs(on_disk(SVC2), live("active", "enabled")), managed(&app_old), &[SITE],
                 Some((1, Some(true), Some(Restart), false, false, false)),
                 "restart unit app.service (unit file or drop-in changed, /etc/site.conf changed)"),
            ),
            (
                "site changed, unit file edited by hand: restart wins",
                (app.clone(), obs(on_disk(SVC2), live("active", "enabled")), managed(&app), &[SITE],
                 Some((1, Some(true), Some(Restart), true, false, false)),
                 "restart unit app.service (unit file or drop-in changed, /etc/site.conf changed, drift)"),
            ),
            (
                "site changed, not running: started",
                (app.clone(), obs(on_disk(SVC), live("inactive", "enabled")), managed(&app), &[SITE],
                 Some((0, None, Some(Start), true, false, false)),
                 "start unit app.service (was inactive, drift)"),
            ),
            (
                "site changed, failed: started",
                (app.clone(), obs(on_disk(SVC), live("failed", "enabled")), managed(&app), &[SITE],
                 Some((0, None, Some(Start), true, false, false)),
                 "start unit app.service (was failed, drift)"),
            ),
            (
                "site changed, state stopped: left stopped",
                (stopped.clone(), obs(on_disk(SVC), live("inactive", "enabled")), managed(&stopped), &[SITE], None, ""),
            ),
            (
                "another file changed: nothing",
                (app.clone(), running(), managed(&app), &["/etc/other"], None, ""),
            ),
        ];
        for (name, (spec, o, m, changed, want, line)) in cases {
            let n = spec.name.clone();
            let desired: BTreeMap<_, _> = [(n.clone(), spec)].into();
            let inventory: BTreeMap<_, _> = [(n.clone(), m)].into();
            let obs: BTreeMap<_, _> = [(n.clone(), o)].into();
            let changed: BTreeSet<String> = changed.iter().map(|p| p.to_string()).collect();
            let got = plan(&desired, &obs, &inventory, &changed);
            let got = got
                .first()
                .filter(|c| c.touches_host() || c.blocked.is_some());
            assert_eq!(got.map(short), want, "case {name}");
            if let Some(c) = got {
                assert_eq!(c.describe(), line, "case {name}");
            }
        }
    }

    /// The real `systemd-analyze` of this machine, when it has one.
    #[test]
    fn validate_with_systemd_analyze() {
        if crate::host::command::find_program("systemd-analyze").is_none() {
            eprintln!("skipped: no systemd-analyze here (the node system tests cover it)");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let fs = HostFs::open(root.path()).unwrap();
        let staging = state.path().join("staging");
        let one = |name: &str, text: &str| -> BTreeMap<String, UnitSpec> {
            [(name.to_string(), unit(name, Some(text)))].into()
        };
        // A missing program or dependency is not the commit's fault: a package may bring it.
        let ok = one(
            "ok.service",
            "[Unit]\nRequires=nothere.service\n[Service]\nExecStart=/usr/bin/not-installed\n",
        );
        validate(&fs, &ok, &staging).unwrap();
        let typo = one(
            "typo.service",
            "[Service]\nExecStart=/bin/true\nRestrat=always\n",
        );
        let e = validate(&fs, &typo, &staging).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidUnit);
        let e = e.message;
        assert!(e.contains("typo.service:3") && e.contains("Restrat"), "{e}");
        let bad = one("bad.service", "[Service]\nType=bogus\n");
        let e = validate(&fs, &bad, &staging).unwrap_err().message;
        assert!(e.contains("bad.service"), "{e}");
        let mut dropin = unit("d.service", Some("[Service]\nExecStart=/bin/true\n"));
        dropin
            .dropins
            .insert("x.conf".into(), b"[Service]\nNicee=3\n".to_vec());
        let e = validate(&fs, &[("d.service".to_string(), dropin)].into(), &staging)
            .unwrap_err()
            .message;
        assert!(e.contains("d.service.d/x.conf:2"), "{e}");
        assert!(!staging.exists(), "staging left behind");
        // What is already on the host as Git has it is not checked again.
        let text = "[Service]\nType=bogus\n";
        fs.write_file(
            &unit_path("bad.service"),
            text.as_bytes(),
            Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        validate(&fs, &bad, &staging).unwrap();
    }

    #[test]
    fn verify_output_classified() {
        let staging = Path::new("/var/lib/plumb/staging");
        let out = "good.service: Failed to create good.service/start: Unit missing.service not found.\n\
            good.service: Command /usr/bin/nonexistent-bin is not executable: No such file or directory\n\
            /var/lib/plumb/staging/typo.service:3: Unknown key 'FooBar' in section [Service], ignoring.\n\
            bad.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.\n\
            Unit bad.service has a bad unit file setting.\n";
        let p = verify_problems(out, staging);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("typo.service:3: Unknown key"), "{p:?}");
        assert!(p[1].contains("bad.service"), "{p:?}");
    }

    /// Issue 20, item 9: a pass killed after writing a unit file and before restarting the unit
    /// leaves the file in place; the next pass restarts it still (and reloads systemd first).
    #[test]
    fn an_interrupted_activation_is_resumed() {
        let spec = unit("app.service", Some(SVC));
        let desired: BTreeMap<_, _> = [("app.service".to_string(), spec.clone())].into();
        let observed: BTreeMap<_, _> = [(
            "app.service".to_string(),
            obs(on_disk(SVC), live("active", "enabled")),
        )]
        .into();
        let mut m = managed(&spec);
        let plan_with = |m: &ManagedUnit| {
            let inv: BTreeMap<_, _> = [("app.service".to_string(), m.clone())].into();
            plan(&desired, &observed, &inv, &BTreeSet::new())
        };
        assert!(
            plan_with(&m).is_empty(),
            "in place and activated: nothing to do"
        );
        m.activation_pending = true;
        let p = plan_with(&m);
        assert_eq!(p.len(), 1);
        assert!(p[0].resume && p[0].files.is_empty());
        assert_eq!(p[0].run, Some(RunAction::Restart));
        assert!(
            p[0].describe().contains("stopped before it activated"),
            "{}",
            p[0].describe()
        );
    }
}
