//! Applies the planned changes of units and containers together, in the order systemd needs:
//! stop what is pruned, write unit and Quadlet files, one daemon-reload, enable/disable, then
//! stop/start/restart, every job awaited.

use crate::host::bus::Bus;
use crate::host::fs::{HostFs, Meta};
use crate::host::systemd::{journal_tail, FileStates, JobResult};
use crate::host::Host;
use crate::resource::service::{FileOp, Live, RunAction, SystemdChange};
use crate::resource::{container, unit};
use crate::spec::Desired;
use crate::state::{ManagedUnit, State, StateDir};
use crate::status::report::{Kind, ResourceReport, ResourceState};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// Lines of a failed unit's journal put into its report.
const JOURNAL_LINES: u32 = 10;

/// One unit's or container's line in the report, whether it had drifted, and the line for plan
/// and logs when something was (or would be) done.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: ResourceReport,
    pub drift: bool,
    /// Masked on the host and left alone.
    pub masked: bool,
    pub line: Option<String>,
}

/// The units-and-containers step of a pass: observe, plan, and apply unless `detect`. Talks to
/// systemd (one connection for the pass) only when Git or the inventory names a unit or
/// container, so file-only hosts never need D-Bus. The inventory's intent is saved in
/// `state_dir` before the host is touched.
pub fn reconcile(
    host: &Host,
    desired: &Desired,
    state: &mut State,
    state_dir: &StateDir,
    changed_files: &BTreeSet<String>,
    detect: bool,
) -> Result<Vec<Outcome>> {
    let names = || {
        let units = desired.units.keys().chain(state.units.keys());
        let ctrs = desired.containers.keys().chain(state.containers.keys());
        let mut v: Vec<(Kind, String)> = units
            .map(|n| (Kind::Unit, n.clone()))
            .chain(ctrs.map(|n| (Kind::Container, n.clone())))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if names().is_empty() {
        return Ok(vec![]);
    }
    let fs = &host.fs;
    let bus = match host.bus() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e);
            return Ok(names()
                .into_iter()
                .map(|(kind, name)| Outcome {
                    report: ResourceReport {
                        kind,
                        name,
                        state: ResourceState::Failed,
                        detail: e.clone(),
                    },
                    drift: false,
                    masked: false,
                    line: None,
                })
                .collect());
        }
    };
    // Every unit's state in one or two calls, not a few per unit.
    let wanted: Vec<String> = names()
        .into_iter()
        .map(|(kind, name)| match kind {
            Kind::Container => container::service_of(&name),
            _ => name,
        })
        .collect();
    let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let kept = load_file_states(state_dir);
    let mut file_states = kept.clone();
    let asked = bus.block_on(bus.systemd.unit_states(&refs, fs.root(), &mut file_states));
    if file_states != kept {
        keep_file_states(state_dir, &file_states);
    }
    let mut known: BTreeMap<String, Live> = match asked {
        Ok(states) => wanted.iter().cloned().zip(states).collect(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "batch state query failed, asking unit by unit");
            BTreeMap::new()
        }
    };
    let mut live = |u: &str| match known.remove(u) {
        Some(s) => Ok(s),
        None => bus.live(u).map_err(|e| format!("{e:#}")),
    };
    let uobs = unit::observe(fs, &desired.units, &state.units, &mut live);
    let cobs = container::observe(fs, &desired.containers, &state.containers, &mut live);
    let mut changes = unit::plan(&desired.units, &uobs, &state.units, changed_files);
    changes.extend(container::plan(
        &desired.containers,
        &cobs,
        &state.containers,
    ));
    tracing::debug!(?changes, "unit and container plan");

    let applied: Vec<Applied> = if detect {
        changes.iter().map(detected).collect()
    } else {
        if changes.iter().any(|c| c.touches_host()) {
            record_intent(&changes, &mut state.units, &mut state.containers);
            state_dir.save(state)?;
        }
        apply(bus, fs, &changes, &mut state.units, &mut state.containers)
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (c, a) in changes.iter().zip(applied) {
        let line = c.touches_host().then(|| c.describe());
        if let (Some(l), false) = (&line, detect) {
            tracing::info!(kind = ?c.kind, name = %c.name, state = ?a.state, detail = %a.detail, "applied: {l}");
        }
        seen.insert((c.kind, c.name.clone()));
        out.push(Outcome {
            report: ResourceReport {
                kind: c.kind,
                name: c.name.clone(),
                state: a.state,
                detail: a.detail,
            },
            drift: c.drift,
            masked: c.masked,
            line,
        });
    }
    let in_git = desired
        .units
        .keys()
        .map(|n| (Kind::Unit, n))
        .chain(desired.containers.keys().map(|n| (Kind::Container, n)));
    for (kind, name) in in_git {
        if !seen.contains(&(kind, name.clone())) {
            out.push(Outcome {
                report: ResourceReport {
                    kind,
                    name: name.clone(),
                    state: ResourceState::Ok,
                    detail: String::new(),
                },
                drift: false,
                masked: false,
                line: None,
            });
        }
    }
    Ok(out)
}

/// Where the unit-file states of the last pass are kept (see `FileStates`).
const FILE_STATES_DOC: &str = "unit-file-states.json";

/// A cache, not state: when it is missing or unreadable, systemd is asked again.
fn load_file_states(state_dir: &StateDir) -> FileStates {
    state_dir
        .read_doc(FILE_STATES_DOC)
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Unsynced: losing it costs one slower query.
fn keep_file_states(state_dir: &StateDir, states: &FileStates) {
    let written = serde_json::to_string(states)
        .map_err(anyhow::Error::from)
        .and_then(|t| state_dir.write_doc_unsynced(FILE_STATES_DOC, &t));
    if let Err(e) = written {
        tracing::debug!(error = %format!("{e:#}"), "could not keep the unit file states");
    }
}

/// What `detect` mode (and `plan`) reports for a change it does not make.
fn detected(c: &SystemdChange) -> Applied {
    Applied {
        state: match &c.blocked {
            Some(_) if c.masked => ResourceState::Drifted,
            Some(_) => ResourceState::Failed,
            None if c.touches_host() => ResourceState::Drifted,
            None => ResourceState::Ok,
        },
        detail: c.blocked.clone().unwrap_or_else(|| c.why.join(", ")),
    }
}

/// How one change ended.
#[derive(Debug, Clone)]
pub struct Applied {
    pub state: ResourceState,
    pub detail: String,
}

/// Notes in the inventory, before anything is written, every unit and Quadlet file this pass may
/// create: a pass killed half-way still prunes them later.
pub fn record_intent(
    changes: &[SystemdChange],
    units: &mut BTreeMap<String, ManagedUnit>,
    containers: &mut BTreeMap<String, ManagedUnit>,
) {
    for c in changes.iter().filter(|c| c.touches_host() && !c.prune) {
        let inv = inventory_of(c.kind, units, containers);
        let rec = c.record.clone().unwrap_or_default();
        let e = inv.entry(c.name.clone()).or_default();
        e.has_file |= rec.has_file;
        for d in rec.dropins {
            if !e.dropins.contains(&d) {
                e.dropins.push(d);
            }
        }
    }
}

fn inventory_of<'a>(
    kind: Kind,
    units: &'a mut BTreeMap<String, ManagedUnit>,
    containers: &'a mut BTreeMap<String, ManagedUnit>,
) -> &'a mut BTreeMap<String, ManagedUnit> {
    if kind == Kind::Container {
        containers
    } else {
        units
    }
}

/// Applies `changes` (those that touch the host) and updates the inventories. Returns one
/// outcome per change, in order.
pub fn apply(
    bus: &Bus,
    fs: &HostFs,
    changes: &[SystemdChange],
    units: &mut BTreeMap<String, ManagedUnit>,
    containers: &mut BTreeMap<String, ManagedUnit>,
) -> Vec<Applied> {
    let sd = &bus.systemd;
    let mut errors: Vec<Option<String>> = changes.iter().map(|c| c.blocked.clone()).collect();
    let mut done: Vec<Vec<String>> = vec![vec![]; changes.len()];
    let active = |c: &SystemdChange| c.touches_host();

    // 1. What leaves Git stops and is disabled while its files still say what it is.
    let pruned: Vec<usize> = (0..changes.len())
        .filter(|&i| changes[i].prune && active(&changes[i]))
        .collect();
    let stops: Vec<usize> = pruned
        .iter()
        .copied()
        .filter(|&i| changes[i].run == Some(RunAction::Stop))
        .collect();
    let jobs: Vec<(&str, RunAction)> = stops
        .iter()
        .map(|&i| (changes[i].unit.as_str(), RunAction::Stop))
        .collect();
    for (&i, r) in stops.iter().zip(run_jobs(bus, &jobs)) {
        if let Err(e) = r {
            errors[i] = Some(e);
        }
    }
    for &i in &pruned {
        let c = &changes[i];
        if c.enable == Some(false) {
            if let Err(e) = bus.block_on(sd.disable(&[&c.unit])) {
                errors[i] = Some(format!("{e:#}"));
            }
        }
    }

    // 2. Unit files, drop-ins and Quadlet files.
    let mut reload = false;
    for (i, c) in changes.iter().enumerate().filter(|(_, c)| active(c)) {
        if c.files.is_empty() {
            continue;
        }
        match write_files(fs, c) {
            Ok(()) => {
                reload = true;
                let inv = inventory_of(c.kind, units, containers);
                match &c.record {
                    Some(r) if !c.prune => {
                        inv.insert(c.name.clone(), r.clone());
                    }
                    _ => {
                        inv.remove(&c.name);
                    }
                }
            }
            Err(e) => {
                reload = true; // some may have landed
                errors[i] = Some(format!("{e:#}"));
            }
        }
    }
    // Changes with nothing to write still teach the inventory: the digest they match, or that
    // a unit plumb only set the state of is no longer managed.
    for c in changes
        .iter()
        .filter(|c| c.files.is_empty() && c.blocked.is_none())
    {
        let inv = inventory_of(c.kind, units, containers);
        match &c.record {
            Some(r) if !c.prune => {
                inv.insert(c.name.clone(), r.clone());
            }
            _ => {
                inv.remove(&c.name);
            }
        }
    }

    // 3. One daemon-reload, only when a file changed.
    if reload {
        if let Err(e) = bus.block_on(sd.reload()) {
            let e = format!("systemd daemon-reload failed: {e:#}");
            tracing::error!(error = %e);
            for (i, c) in changes.iter().enumerate() {
                if active(c) && errors[i].is_none() {
                    errors[i] = Some(e.clone());
                }
            }
        }
    }

    // 4. Enablement (Quadlet units have none: the generator applies their [Install]).
    for want in [true, false] {
        let idx: Vec<usize> = (0..changes.len())
            .filter(|&i| {
                let c = &changes[i];
                active(c) && !c.prune && errors[i].is_none() && c.enable == Some(want)
            })
            .collect();
        let names: Vec<&str> = idx.iter().map(|&i| changes[i].unit.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        let call = |names: &[&str]| {
            if want {
                bus.block_on(sd.enable(names)).map(|_| ())
            } else {
                bus.block_on(sd.disable(names)).map(|_| ())
            }
        };
        // One call for all; if it fails, one per unit, to say which.
        let all_ok = call(&names).is_ok();
        for &i in &idx {
            let r = if all_ok {
                Ok(())
            } else {
                call(&[&changes[i].unit])
            };
            match r {
                Ok(()) => done[i].push(if want { "enabled" } else { "disabled" }.into()),
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }

    // 5. Stops first, then starts and restarts; the jobs of each group run together, each
    //    awaited.
    for stops in [true, false] {
        let idx: Vec<usize> = (0..changes.len())
            .filter(|&i| {
                let c = &changes[i];
                active(c)
                    && !c.prune
                    && errors[i].is_none()
                    && c.run.is_some_and(|a| (a == RunAction::Stop) == stops)
            })
            .collect();
        let mut idx = idx;
        let mut jobs: Vec<(&str, RunAction)> = idx
            .iter()
            .map(|&i| (changes[i].unit.as_str(), changes[i].run.expect("filtered")))
            .collect();
        if stops {
            let first: Vec<usize> = (0..changes.len())
                .filter(|&i| active(&changes[i]) && errors[i].is_none())
                .filter(|&i| changes[i].stop_first.is_some())
                .collect();
            for &i in &first {
                let unit = changes[i].stop_first.as_deref().expect("filtered");
                jobs.push((unit, RunAction::Stop));
            }
            idx.extend(first);
        }
        for (k, (&i, r)) in idx.iter().zip(run_jobs(bus, &jobs)).enumerate() {
            if jobs[k].0 != changes[i].unit {
                // A stop ahead of this change's own job: only its failure is worth saying.
                if let Err(e) = r {
                    errors[i] = Some(e);
                }
                continue;
            }
            match r {
                Ok(()) => done[i].push(
                    match changes[i].run {
                        Some(RunAction::Start) => "started",
                        Some(RunAction::Stop) => "stopped",
                        _ => "restarted",
                    }
                    .into(),
                ),
                Err(e) => errors[i] = Some(e),
            }
        }
    }

    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut detail = c.why.join(", ");
            if !done[i].is_empty() {
                detail = format!("{detail}: {}", done[i].join(", "));
            }
            let state = match &errors[i] {
                Some(_) if c.masked => ResourceState::Drifted,
                Some(e) => {
                    detail = if detail.is_empty() {
                        e.clone()
                    } else {
                        format!("{detail}: {e}")
                    };
                    ResourceState::Failed
                }
                None if c.prune => ResourceState::Pruned,
                None if !c.touches_host() => ResourceState::Ok,
                None if c.drift => ResourceState::DriftCorrected,
                None => ResourceState::Changed,
            };
            if c.masked {
                detail = c.blocked.clone().unwrap_or_default();
            }
            Applied { state, detail }
        })
        .collect()
}

fn write_files(fs: &HostFs, c: &SystemdChange) -> Result<()> {
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    for op in &c.files {
        match op {
            FileOp::Write { path, data } => {
                fs.write_file(path, data, meta)?;
            }
            FileOp::Remove { path } => {
                fs.remove(path)?;
                // An emptied drop-in directory goes too.
                if let Some((dir, _)) = path.rsplit_once('/') {
                    if dir.ends_with(".d") {
                        fs.remove_empty_dir(dir)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs jobs together and waits for each. A start that does not end `done`, or leaves its unit
/// failed, is an error quoting the unit's Result and the end of its journal.
fn run_jobs(bus: &Bus, jobs: &[(&str, RunAction)]) -> Vec<Result<(), String>> {
    if jobs.is_empty() {
        return vec![];
    }
    let sd = &bus.systemd;
    let results = bus.block_on(futures_util::future::join_all(jobs.iter().map(
        |&(unit, action)| async move {
            match action {
                RunAction::Start => sd.start(unit).await,
                RunAction::Stop => sd.stop(unit).await,
                RunAction::Restart => sd.restart(unit).await,
            }
        },
    )));
    // A start job ends `done` as soon as a simple service forked: look once more at the units.
    let units: Vec<&str> = jobs.iter().map(|j| j.0).collect();
    let after = bus.block_on(sd.run_states(&units)).ok();
    jobs.iter()
        .zip(results)
        .enumerate()
        .map(|(k, (&(unit, action), result))| {
            let verb = match action {
                RunAction::Start => "start",
                RunAction::Stop => "stop",
                RunAction::Restart => "restart",
            };
            let result = result.map_err(|e| format!("{e:#}"))?;
            let failed_after = action != RunAction::Stop
                && after
                    .as_ref()
                    .is_some_and(|a| a[k].active_state == "failed");
            if result == JobResult::Done && !failed_after {
                tracing::info!(unit, action = verb, "job done");
                return Ok(());
            }
            let mut result = result;
            let mut unit_result = bus.live(unit).ok().and_then(|s| s.result);
            if unit_result.as_deref() == Some("start-limit-hit") {
                // systemd's limit is for crash loops; plumb's own starts are deliberate and a
                // pass apart. Clear it and try once more.
                tracing::info!(unit, "start limit hit: reset-failed and one more try");
                let retry = async {
                    sd.reset_failed(unit).await?;
                    match action {
                        RunAction::Restart => sd.restart(unit).await,
                        _ => sd.start(unit).await,
                    }
                };
                result = bus.block_on(retry).map_err(|e| format!("{e:#}"))?;
                let now = bus.live(unit).ok();
                if result == JobResult::Done
                    && now.as_ref().is_some_and(|s| s.active_state != "failed")
                {
                    tracing::info!(unit, action = verb, "job done");
                    return Ok(());
                }
                unit_result = now.and_then(|s| s.result);
            }
            let why = unit_result
                .map(|r| format!(", Result={r}"))
                .unwrap_or_default();
            let log = journal_tail(unit, JOURNAL_LINES)
                .map(|t| t.trim().replace('\n', " | "))
                .unwrap_or_else(|e| format!("(no journal: {e:#})"));
            let msg = format!("{verb} failed (job {result}{why}); last log lines: {log}");
            tracing::error!(unit, action = verb, error = %msg, "job failed");
            Err(msg)
        })
        .collect()
}
