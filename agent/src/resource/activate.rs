//! Units and Quadlet containers, one kind to the engine: systemd activates them together, in
//! the order it needs: stop what is pruned, write unit and Quadlet files, one daemon-reload,
//! enable/disable, then stop/start/restart/reload, every job awaited. `unit` and `container`
//! plan their own changes (pure); this module observes both and applies the union.

use super::{Apply, Context, Outcome, Step};
use crate::host::bus::Bus;
use crate::host::fs::{HostFs, Meta};
use crate::host::systemd::{journal_tail, FileStates, JobResult};
use crate::host::{Fault, Host};
use crate::resource::service::{FileOp, Live, RunAction, SystemdChange};
use crate::resource::{container, unit};
use crate::spec::Desired;
use crate::state::{ManagedUnit, State, StateDir};
use crate::status::report::{Kind, ResourceReport, ResourceState};
use anyhow::Result;
use std::collections::BTreeMap;

/// Lines of a failed unit's journal put into its report.
const JOURNAL_LINES: u32 = 10;

/// `[units]` and `[containers]`.
pub struct ServiceKind;

/// What the host has for every unit and container Git or the inventory names.
pub enum Seen {
    Observed {
        units: BTreeMap<String, unit::UnitObs>,
        containers: BTreeMap<String, container::ContainerObs>,
    },
    /// No connection to systemd: every unit and container fails with this.
    NoBus(Fault),
}

impl super::Kind for ServiceKind {
    const NAME: &'static str = "service";
    type Want = Desired;
    type Have = Seen;
    type Change = SystemdChange;

    fn want(desired: &Desired) -> &Desired {
        desired
    }

    /// Talks to systemd only when Git or the inventory names a unit or container, so file-only
    /// hosts never need D-Bus.
    fn in_use(want: &Desired, state: &State) -> bool {
        !names(want, state).is_empty()
    }

    fn observe(host: &Host, want: &Desired, state: &State, state_dir: &StateDir) -> Seen {
        let bus = match host.bus() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "units and containers left alone: {e}");
                return Seen::NoBus(e);
            }
        };
        let mut known = batch_states(host, bus, want, state, state_dir);
        let mut live = |u: &str| match known.remove(u) {
            Some(s) => Ok(s),
            None => bus.live(u).map_err(Fault::from),
        };
        Seen::Observed {
            units: unit::observe(&host.fs, &want.units, &state.units, &mut live),
            containers: container::observe(
                &host.fs,
                &want.containers,
                &state.containers,
                &mut live,
            ),
        }
    }

    fn plan(want: &Desired, have: &Seen, state: &State, ctx: &Context) -> Vec<SystemdChange> {
        match have {
            Seen::NoBus(e) => names(want, state)
                .into_iter()
                .map(|(kind, name)| {
                    let mut c = SystemdChange::new(kind, &name, &unit_of(kind, &name));
                    c.blocked = Some(e.to_string());
                    c
                })
                .collect(),
            Seen::Observed { units, containers } => {
                let mut changes = unit::plan(&want.units, units, &state.units, &ctx.changed_paths);
                changes.extend(container::plan(
                    &want.containers,
                    containers,
                    &state.containers,
                ));
                changes
            }
        }
    }

    fn report(want: &Desired, _: &Seen, changes: &[SystemdChange]) -> Vec<Outcome> {
        outcomes(want, changes, changes.iter().map(detected).collect(), false)
    }

    /// The inventory's intent is saved before the host is touched.
    fn apply(
        host: &Host,
        want: &Desired,
        _: &Seen,
        changes: &[SystemdChange],
        run: &mut Apply,
    ) -> Result<Vec<Outcome>> {
        if changes.iter().any(|c| c.touches_host()) {
            record_intent(changes, &mut run.state.units, &mut run.state.containers);
            run.state_dir.save(run.state)?;
        }
        let applied = match host.bus() {
            Ok(bus) => apply(
                bus,
                &host.fs,
                changes,
                &mut run.state.units,
                &mut run.state.containers,
            ),
            // Planned without a bus: every change is blocked and says why.
            Err(_) => changes.iter().map(detected).collect(),
        };
        Ok(outcomes(want, changes, applied, true))
    }
}

impl Step for SystemdChange {
    fn touches_host(&self) -> bool {
        SystemdChange::touches_host(self)
    }

    fn describe(&self) -> String {
        SystemdChange::describe(self)
    }
}

/// Every unit and container Git or the inventory names.
fn names(desired: &Desired, state: &State) -> Vec<(Kind, String)> {
    let units = desired.units.keys().chain(state.units.keys());
    let ctrs = desired.containers.keys().chain(state.containers.keys());
    let mut v: Vec<(Kind, String)> = units
        .map(|n| (Kind::Unit, n.clone()))
        .chain(ctrs.map(|n| (Kind::Container, n.clone())))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The systemd unit of a resource ("web.service" for the Quadlet file "web.container").
fn unit_of(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Container => container::service_of(name),
        _ => name.to_string(),
    }
}

/// Every unit's state in one or two calls, not a few per unit. Empty when the batch query
/// fails: then each unit is asked on its own.
fn batch_states(
    host: &Host,
    bus: &Bus,
    desired: &Desired,
    state: &State,
    state_dir: &StateDir,
) -> BTreeMap<String, Live> {
    let wanted: Vec<String> = names(desired, state)
        .into_iter()
        .map(|(kind, name)| unit_of(kind, &name))
        .collect();
    let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let kept = load_file_states(state_dir);
    let mut file_states = kept.clone();
    let asked = bus.block_on(
        bus.systemd
            .unit_states(&refs, host.fs.root(), &mut file_states),
    );
    if file_states != kept {
        keep_file_states(state_dir, &file_states);
    }
    match asked {
        Ok(states) => wanted.into_iter().zip(states).collect(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "batch state query failed, asking unit by unit: {e:#}");
            BTreeMap::new()
        }
    }
}

/// One outcome per change (logged when `applied`), then `ok` for the rest of Git's.
fn outcomes(
    desired: &Desired,
    changes: &[SystemdChange],
    applied: Vec<Applied>,
    log: bool,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (c, a) in changes.iter().zip(applied) {
        let line = c.touches_host().then(|| c.describe());
        if let (Some(l), true) = (&line, log) {
            tracing::info!(message_id = crate::logging::id::change(a.state == ResourceState::DriftCorrected), kind = ?c.kind, name = %c.name, state = ?a.state, detail = %a.detail, "applied: {l}");
        }
        out.push(Outcome {
            report: ResourceReport {
                kind: c.kind,
                name: c.name.clone(),
                state: a.state,
                detail: a.detail,
            },
            drift: c.drift,
            masked: c.masked,
            lines: line.into_iter().collect(),
        });
    }
    super::fill_ok(&mut out, Kind::Unit, desired.units.keys());
    super::fill_ok(&mut out, Kind::Container, desired.containers.keys());
    out
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
        e.activation_pending |= !c.files.is_empty() || c.resume;
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
    let mut a = Activation {
        bus,
        changes,
        errors: changes.iter().map(|c| c.blocked.clone()).collect(),
        done: vec![vec![]; changes.len()],
    };
    a.stop_pruned();
    let reload = a.write_files(fs, units, containers);
    if reload {
        a.reload();
    }
    a.enablement(true);
    a.enablement(false);
    a.run_jobs(true);
    a.run_jobs(false);
    a.results()
}

/// One activation in progress: per change, its first error and what was done.
struct Activation<'a> {
    bus: &'a Bus,
    changes: &'a [SystemdChange],
    errors: Vec<Option<String>>,
    done: Vec<Vec<String>>,
}

impl Activation<'_> {
    /// Changes still to act on: they touch the host and nothing failed them yet.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.changes.len())
            .filter(|&i| self.changes[i].touches_host() && self.errors[i].is_none())
    }

    /// Step 1: what leaves Git stops and is disabled while its files still say what it is.
    fn stop_pruned(&mut self) {
        let changes = self.changes;
        let pruned: Vec<usize> = (0..changes.len())
            .filter(|&i| changes[i].prune && changes[i].touches_host())
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
        for (&i, r) in stops.iter().zip(run_jobs(self.bus, &jobs)) {
            if let Err(e) = r {
                self.errors[i] = Some(e.to_string());
            }
        }
        let sd = &self.bus.systemd;
        for &i in &pruned {
            let c = &changes[i];
            if c.enable == Some(false) {
                if let Err(e) = self.bus.block_on(sd.disable(&[&c.unit])) {
                    self.errors[i] = Some(format!("{e:#}"));
                }
            }
        }
    }

    /// Step 2: unit files, drop-ins and Quadlet files, and the inventory that follows them.
    /// Returns whether any file (may have) changed: then systemd reloads.
    fn write_files(
        &mut self,
        fs: &HostFs,
        units: &mut BTreeMap<String, ManagedUnit>,
        containers: &mut BTreeMap<String, ManagedUnit>,
    ) -> bool {
        // A unit whose last activation was cut short: its files are in place, systemd may not
        // have read them yet.
        let mut reload = self.changes.iter().any(|c| c.resume && c.touches_host());
        for (i, c) in self.changes.iter().enumerate() {
            if !c.touches_host() || c.files.is_empty() {
                continue;
            }
            reload = true; // on an error too: some may have landed
            match write_files(fs, c) {
                Ok(()) => remember(c, inventory_of(c.kind, units, containers)),
                Err(e) => self.errors[i] = Some(format!("{e:#}")),
            }
        }
        // Changes with nothing to write still teach the inventory: the digest they match, or
        // that a unit plumb only set the state of is no longer managed.
        for c in self
            .changes
            .iter()
            .filter(|c| c.files.is_empty() && c.blocked.is_none())
        {
            remember(c, inventory_of(c.kind, units, containers));
        }
        reload
    }

    /// Step 3: one daemon-reload, only when a file changed.
    fn reload(&mut self) {
        if let Err(e) = self.bus.block_on(self.bus.systemd.reload()) {
            let e = format!("systemd daemon-reload failed: {e:#}");
            tracing::error!(error = %e, "{e}");
            for i in self.live().collect::<Vec<_>>() {
                self.errors[i] = Some(e.clone());
            }
        }
    }

    /// Step 4: enablement (Quadlet units have none: the generator applies their [Install]).
    /// One call for all; if it fails, one per unit, to say which.
    fn enablement(&mut self, want: bool) {
        let changes = self.changes;
        let idx: Vec<usize> = self
            .live()
            .filter(|&i| !changes[i].prune && changes[i].enable == Some(want))
            .collect();
        let names: Vec<&str> = idx.iter().map(|&i| changes[i].unit.as_str()).collect();
        if names.is_empty() {
            return;
        }
        let (bus, sd) = (self.bus, &self.bus.systemd);
        let call = |names: &[&str]| {
            if want {
                bus.block_on(sd.enable(names)).map(|_| ())
            } else {
                bus.block_on(sd.disable(names)).map(|_| ())
            }
        };
        let all_ok = call(&names).is_ok();
        for &i in &idx {
            let r = if all_ok {
                Ok(())
            } else {
                call(&[&changes[i].unit])
            };
            match r {
                Ok(()) => self.done[i].push(if want { "enabled" } else { "disabled" }.into()),
                Err(e) => self.errors[i] = Some(format!("{e:#}")),
            }
        }
    }

    /// Step 5: stops first (with the units stopped ahead of another's job), then starts and
    /// restarts; the jobs of each group run together, each awaited.
    fn run_jobs(&mut self, stops: bool) {
        let changes = self.changes;
        let mut idx: Vec<usize> = self
            .live()
            .filter(|&i| {
                !changes[i].prune
                    && changes[i]
                        .run
                        .is_some_and(|a| (a == RunAction::Stop) == stops)
            })
            .collect();
        let mut jobs: Vec<(&str, RunAction)> = idx
            .iter()
            .map(|&i| (changes[i].unit.as_str(), changes[i].run.expect("filtered")))
            .collect();
        if stops {
            let first: Vec<usize> = self
                .live()
                .filter(|&i| changes[i].stop_first.is_some())
                .collect();
            for &i in &first {
                let unit = changes[i].stop_first.as_deref().expect("filtered");
                jobs.push((unit, RunAction::Stop));
            }
            idx.extend(first);
        }
        for (k, (&i, r)) in idx.iter().zip(run_jobs(self.bus, &jobs)).enumerate() {
            if jobs[k].0 != changes[i].unit {
                // A stop ahead of this change's own job: only its failure is worth saying.
                if let Err(e) = r {
                    self.errors[i] = Some(e.to_string());
                }
                continue;
            }
            match r {
                Ok(()) => self.done[i].push(
                    match changes[i].run {
                        Some(RunAction::Start) => "started",
                        Some(RunAction::Stop) => "stopped",
                        Some(RunAction::Reload) => "reloaded",
                        _ => "restarted",
                    }
                    .into(),
                ),
                Err(e) => self.errors[i] = Some(e.to_string()),
            }
        }
    }

    /// How each change ended, in order.
    fn results(self) -> Vec<Applied> {
        self.changes
            .iter()
            .zip(self.errors)
            .zip(self.done)
            .map(|((c, error), done)| {
                let mut detail = c.why.join(", ");
                if c.run == Some(RunAction::Reload) && done.iter().any(|d| d == "reloaded") {
                    // "reloaded (/etc/nginx/conf.d/site.conf changed)"
                    detail = format!("{} ({detail})", done.join(", "));
                } else if !done.is_empty() {
                    detail = format!("{detail}: {}", done.join(", "));
                }
                let state = match &error {
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
}

/// The inventory entry of a change whose files are in place (gone when pruned).
fn remember(c: &SystemdChange, inv: &mut BTreeMap<String, ManagedUnit>) {
    match &c.record {
        Some(r) if !c.prune => {
            inv.insert(c.name.clone(), r.clone());
        }
        _ => {
            inv.remove(&c.name);
        }
    }
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
fn run_jobs(bus: &Bus, jobs: &[(&str, RunAction)]) -> Vec<Result<(), Fault>> {
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
                RunAction::Reload => sd.reload_unit(unit).await,
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
                RunAction::Reload => "reload",
            };
            let result = result.map_err(Fault::from)?;
            let failed_after = action != RunAction::Stop
                && after
                    .as_ref()
                    .is_some_and(|a| a[k].active_state == "failed");
            if result == JobResult::Done && !failed_after {
                tracing::info!(unit, action = verb, "job done: {verb} {unit}");
                return Ok(());
            }
            let mut result = result;
            let mut unit_result = bus.live(unit).ok().and_then(|s| s.result);
            if unit_result.as_deref() == Some("start-limit-hit") {
                // systemd's limit is for crash loops; plumb's own starts are deliberate and a
                // pass apart. Clear it and try once more.
                tracing::info!(
                    unit,
                    "start limit hit by {unit}: reset-failed and one more try"
                );
                let retry = async {
                    sd.reset_failed(unit).await?;
                    match action {
                        RunAction::Restart => sd.restart(unit).await,
                        RunAction::Reload => sd.reload_unit(unit).await,
                        _ => sd.start(unit).await,
                    }
                };
                result = bus.block_on(retry).map_err(Fault::from)?;
                let now = bus.live(unit).ok();
                if result == JobResult::Done
                    && now.as_ref().is_some_and(|s| s.active_state != "failed")
                {
                    tracing::info!(unit, action = verb, "job done: {verb} {unit}");
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
            tracing::error!(unit, action = verb, error = %msg, "job failed: {unit}: {msg}");
            Err(Fault(msg))
        })
        .collect()
}

/// Starts units plumb does not manage (a package's, held during its install) the way it starts
/// its own: together, each awaited, a failure quoting the unit's Result and journal.
pub(super) fn start_units(bus: &Bus, units: &[&str]) -> Vec<Result<(), Fault>> {
    let jobs: Vec<(&str, RunAction)> = units.iter().map(|u| (*u, RunAction::Start)).collect();
    run_jobs(bus, &jobs)
}
