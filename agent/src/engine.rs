//! One reconcile pass, phase by phase: fetch -> verify -> load -> observe -> plan -> apply ->
//! health -> record. Observe, plan and apply run per resource kind (see `resource::Kind`).

use crate::config::{Mode, Settings};
use crate::health::Verdict;
use crate::host::Host;
use crate::reason::Reason;
use crate::resource;
use crate::source::backoff::FetchBackoff;
use crate::source::git::{redact_url, LocalRepo, Remote};
use crate::spec::{self, Desired};
use crate::state::{State, StateDir};
use crate::status::report::{now_rfc3339, Outcome, Report, ResourceReport, ResourceState};
use anyhow::{Context, Result};
use gix::ObjectId;

mod admit;
mod container_updates;
mod judge;
mod maintenance;
mod reboot;
mod rollout;
mod upgrades;

pub use reboot::REBOOT_QUIET;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How a pass may act.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// `plan`: compute and describe the changes, touch nothing.
    pub dry_run: bool,
    /// `apply --allow-rewind`: accept a head that does not descend from the applied commit (and
    /// retry a commit marked bad).
    pub allow_rewind: bool,
    /// Fetch even while failed fetches hold the fetch back (an operator's SIGHUP/SIGUSR1).
    pub fetch_now: bool,
    /// `apply --ignore-rollout`: move to the new commit now, whatever fleet.toml's waves,
    /// windows and slots say (signatures and fast-forward checks still hold).
    pub ignore_rollout: bool,
}

/// What converging the host to one commit did.
#[derive(Debug, Default)]
struct Converged {
    /// One line per applied or pending change (with diffs in detect mode).
    lines: Vec<String>,
    resources: Vec<ResourceReport>,
    failed: usize,
    drifted: usize,
    changed: usize,
    /// Resources changed, or in detect mode that would change: the pass's one count of changes.
    changes: usize,
    /// Units left masked on the host (reported as drift, not unmasked).
    masked: usize,
    /// SIGTERM arrived: the pass stopped between two changes.
    stopped: bool,
    /// The pass stopped before its units: a `validate` or a unit's `check` refused the commit.
    gate: Option<Gate>,
}

/// What stopped a pass between files and units.
#[derive(Debug)]
enum Gate {
    /// A file's `validate` refused it (its program came with this commit's packages): nothing of
    /// the files was written.
    Rejected(spec::SpecError),
    /// A unit's `check` refused the written files.
    CheckFailed(resource::checks::CheckFailed),
}

/// The checks a converge runs between its kinds.
#[derive(Debug, Clone, Copy, Default)]
struct Gates {
    /// Run `validate` before files are written (validators that were not installed at load).
    validate: bool,
    /// Run the units' `check` after files changed, before units restart or reload.
    check_units: bool,
}

impl Converged {
    fn add(&mut self, outcomes: Vec<resource::Outcome>) {
        for o in outcomes {
            if o.masked && o.report.state == ResourceState::Drifted {
                self.masked += 1;
            } else {
                self.count(o.report.state, o.drift);
            }
            self.changes += usize::from(!o.lines.is_empty());
            self.lines.extend(o.lines);
            self.resources.push(o.report);
        }
    }

    fn count(&mut self, st: ResourceState, drift: bool) {
        match st {
            ResourceState::Failed => self.failed += 1,
            ResourceState::DriftCorrected => self.drifted += 1,
            ResourceState::Drifted if drift => self.drifted += 1,
            ResourceState::Changed | ResourceState::Pruned | ResourceState::Drifted => {
                self.changed += 1
            }
            ResourceState::Ok => {}
        }
    }

    /// Something on the host was changed (health checks are due).
    fn touched_host(&self) -> bool {
        !self.lines.is_empty()
    }
}

/// The report of a pass as its phases fill it in.
struct Draft {
    report: Report,
    notes: Vec<String>,
    fetch_failed: bool,
    /// Resources changed (or that would change): `Converged::changes`.
    changes: usize,
    /// `plan`: the line says what would change ("plan done"), nothing did.
    dry_run: bool,
}

impl Draft {
    /// The pass's one info line (with its reason) and its result.
    fn finish(mut self, changes: Vec<String>) -> PassResult {
        self.report.message = self.notes.join("; ");
        let failed = self
            .report
            .resources
            .iter()
            .filter(|r| r.state == ResourceState::Failed)
            .count();
        tracing::info!(
            message_id = crate::logging::id::PASS_DONE,
            commit = %self.report.desired_commit,
            outcome = self.report.outcome.as_str(),
            reason = self.report.reason.map(|r| r.as_str()).unwrap_or(""),
            changes = self.changes,
            failed,
            "{}: {}",
            if self.dry_run { "plan done" } else { "pass done" },
            pass_summary(&self.report, self.changes, failed, self.dry_run)
        );
        PassResult {
            report: self.report,
            changes,
            changed: self.changes,
            fetch_failed: self.fetch_failed,
            rebooting: false,
        }
    }
}

/// Everything a pass found out.
pub struct PassResult {
    pub report: Report,
    /// One line per pending or applied change, with diffs for `plan`.
    pub changes: Vec<String>,
    /// How many resources changed (apply) or would change (plan): the count the log and the
    /// summary both give.
    pub changed: usize,
    /// Git could not be reached: the daemon backs off.
    pub fetch_failed: bool,
    /// The pass asked systemd to reboot the host (`[reboot]`): the daemon runs no further pass.
    pub rebooting: bool,
}

impl PassResult {
    /// Changes that were pending (plan) or made (apply).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }
}

pub struct Agent {
    pub settings: Settings,
    pub state_dir: StateDir,
    repo: LocalRepo,
    /// Set by the daemon on SIGTERM: the pass stops between two changes, state saved.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Failed fetches hold the next fetch back, never the pass.
    fetch_backoff: FetchBackoff,
    /// The last fetch error, repeated in the report while the fetch is held back.
    fetch_error: String,
    /// This pass's host facts (read once per pass, before load).
    facts: spec::facts::Facts,
    /// Rendered templates, kept across passes and saved in state_dir (`None` until first used).
    render_cache: std::sync::Mutex<Option<spec::RenderCache>>,
    /// This pass's identity for `.age` files and the hash key of secrets (read once per pass).
    keys: Option<spec::Keys>,
    /// `[notify] webhook`: changes of outcome posted off the pass.
    notifier: Option<crate::notify::Notifier>,
}

impl Agent {
    pub fn new(settings: Settings) -> Result<Agent> {
        let settings_notify = settings.notify.clone();
        let state_dir = StateDir::open(&settings.state_dir)?;
        let repo = LocalRepo::open_or_init(&state_dir.repo_dir())?
            .with_file_limit(settings.limits.max_file_size);
        Ok(Agent {
            settings,
            state_dir,
            repo,
            stop: Default::default(),
            fetch_backoff: FetchBackoff::default(),
            fetch_error: String::new(),
            facts: Default::default(),
            render_cache: Default::default(),
            keys: None,
            notifier: match &settings_notify {
                Some(n) => Some(crate::notify::Notifier::start(n.clone())?),
                None => None,
            },
        })
    }

    fn remote(&self) -> Remote {
        Remote {
            url: self.settings.repo.clone(),
            branch: self.settings.branch.clone(),
            ssh_key: self.settings.ssh_key.clone(),
            token_file: self.settings.token_file.clone(),
            known_hosts: Some(self.state_dir.path().join("known_hosts")),
        }
    }

    /// Fetches, then reconciles. Never fails on bad input or an unreachable server: those are
    /// reported. An `Err` means plumb's own state could not be read or written.
    /// One pass at a time per state_dir: a second `plumb apply` waits for the running one.
    pub fn pass(&mut self, opts: PassOptions) -> Result<PassResult> {
        let _lock = self.state_dir.lock()?;
        let started = std::time::Instant::now();
        self.repo.clear_stale_locks();
        if !opts.dry_run {
            crate::host::self_upgrade::settle(
                &self.state_dir,
                self.settings.package_manager.database(),
            );
        }
        let mut result = self.reconcile(opts)?;
        if !opts.dry_run {
            self.record(&result.report)?;
            self.outputs(&result, started.elapsed());
            result.rebooting = self.reboot_if_due();
            // Only now that the report is out: the install of plumb's own package restarts it
            // (not while the host reboots: the next boot's pass starts it).
            let now = crate::judged::now_secs() as i64;
            if !result.rebooting {
                if let Err(e) = crate::host::self_upgrade::start_pending(
                    &self.state_dir,
                    now,
                    self.settings.package_manager.database(),
                ) {
                    tracing::warn!(error = %format!("{e:#}"), "could not upgrade plumb's own package: {e:#}");
                }
            }
        }
        release_freed_memory();
        Ok(result)
    }

    /// Keeps the report for `plumb status` and publishes it to the status branch. A failed push
    /// is logged and shown by `plumb status`, never an error of the pass.
    fn record(&self, report: &Report) -> Result<()> {
        self.state_dir
            .write_doc_unsynced("report.toml", &report.to_toml())?;
        crate::status::publish::publish(&self.settings, &self.state_dir, report);
        Ok(())
    }

    /// The outputs of the report: the metrics textfile and, on a change of outcome, the webhook
    /// (queued, never waited for). Their failures are logged, never a failure of the pass.
    fn outputs(&self, result: &PassResult, duration: std::time::Duration) {
        let facts = crate::status::metrics::PassFacts {
            finished: std::time::SystemTime::now(),
            duration,
            fetch_failed: result.fetch_failed,
            rollout_waiting: !result.report.waiting.is_empty(),
        };
        if let Err(e) = crate::status::metrics::record(
            &self.settings.metrics,
            &self.state_dir,
            &result.report,
            &facts,
        ) {
            tracing::warn!(error = %format!("{e:#}"), "could not write the metrics: {e:#}");
        }
        if let Some(n) = &self.notifier {
            if let Err(e) = n.observe(&self.state_dir, &result.report) {
                tracing::warn!(error = %format!("{e:#}"), "could not queue the webhook: {e:#}");
            }
        }
    }

    /// `plumb apply` before it exits: lets a webhook in flight finish, up to `limit`.
    pub fn flush_notifications(&self, limit: std::time::Duration) {
        if let Some(n) = &self.notifier {
            if !n.flush(limit) {
                tracing::warn!("the webhook is still being retried; exiting without it");
            }
        }
    }

    /// fetch -> verify -> load -> observe -> plan -> apply -> health -> record.
    fn reconcile(&mut self, opts: PassOptions) -> Result<PassResult> {
        let mut state = self.state_dir.load()?;
        let mut draft = Draft {
            report: self.blank_report(&state),
            notes: vec![],
            fetch_failed: false,
            changes: 0,
            dry_run: opts.dry_run,
        };
        self.reboot_report(&mut draft);
        // Every pass: a rotated host key shows in the report (and decrypts) at once.
        let keys = crate::host::secrets::read_keys(&self.settings.identity, self.state_dir.path())?;
        draft.report.age_recipient = keys.identity.as_ref().ok().map(|i| i.recipient.clone());
        self.keys = Some(keys);
        let Some(fetched) = self.fetch_phase(opts, &mut draft)? else {
            return Ok(draft.finish(vec![]));
        };
        draft.report.desired_commit = fetched.to_string();
        if self.settings.mode == Mode::Suspend {
            self.suspended(&mut draft);
            return Ok(draft.finish(vec![]));
        }
        self.facts = crate::host::facts::read(&self.settings.root);
        draft.report.facts = Some(self.facts.clone());
        let Some((target, desired)) = self.verify_and_load(fetched, &state, opts, &mut draft)
        else {
            return Ok(draft.finish(vec![]));
        };
        let Some((target, desired)) = self.rollout_phase(target, desired, &state, opts, &mut draft)
        else {
            return Ok(draft.finish(vec![]));
        };
        let mut host = Host::open(&self.settings.root)?;
        host.package_manager = self.settings.package_manager;
        let detect = self.settings.mode == Mode::Detect || opts.dry_run;
        if !detect {
            self.mark_unjudged(target, &desired, &mut state)?;
        }
        let gates = Gates {
            validate: !resource::checks::validators_present(&desired.files),
            check_units: true,
        };
        let mut run =
            self.converge(&host, &desired, &mut state, detect, gates, &resource::ORDER)?;
        if !detect {
            match run.gate.take() {
                Some(gate) => {
                    self.gate_phase(&host, target, gate, &mut state, &mut run, &mut draft)?
                }
                None => {
                    self.health_phase(&host, target, &desired, &mut state, &mut run, &mut draft)?
                }
            }
            self.note_applied_at(&mut state)?;
            self.release_slot(&state);
            if !run.stopped && run.failed == 0 && state.unjudged_commit.is_none() {
                self.maintenance_phase(&host, target, &desired, &mut state, &mut run, &mut draft)?;
            }
            // Packages this pass installed may have asked for a reboot.
            self.reboot_report(&mut draft);
        }
        if !opts.dry_run {
            self.report_upgrades(&host, &desired, &mut draft);
        }
        Ok(self.summarize(draft, run, &state, detect, opts.dry_run))
    }

    /// Fetch: the commit to consider (the last fetched one when the fetch fails), or `None`
    /// when nothing was ever fetched.
    fn fetch_phase(&mut self, opts: PassOptions, draft: &mut Draft) -> Result<Option<ObjectId>> {
        match self.fetch_if_due(opts.fetch_now) {
            Ok(commit) => Ok(Some(commit)),
            Err(e) => {
                draft.notes.push(format!("could not fetch: {e}"));
                draft.fetch_failed = true;
                draft.report.reason = Some(Reason::FetchFailed);
                let last = self.repo.fetched(&self.settings.branch)?;
                if last.is_none() {
                    draft.report.outcome = Outcome::Failed;
                }
                Ok(last)
            }
        }
    }

    /// `mode = suspend`: report whether the host is on the fetched commit; check nothing.
    fn suspended(&self, draft: &mut Draft) {
        let r = &mut draft.report;
        r.outcome = if r.applied_commit == r.desired_commit {
            Outcome::Converged
        } else {
            Outcome::Drifted
        };
        draft
            .notes
            .push("mode = suspend: nothing checked or applied".into());
    }

    /// Verify and load: the fetched commit if it is trusted and valid, else (the refusal
    /// reported) the one applied before; `None` when there is none to converge to.
    fn verify_and_load(
        &self,
        fetched: ObjectId,
        state: &State,
        opts: PassOptions,
        draft: &mut Draft,
    ) -> Option<(ObjectId, Desired)> {
        match self.admit(fetched, state, opts) {
            Ok(d) => return Some((fetched, d)),
            Err(r) => {
                tracing::warn!(message_id = crate::logging::id::COMMIT_REJECTED, commit = %fetched, reason = %r.reason, "not applying commit: {r}");
                draft.report.outcome = r.outcome;
                draft.report.reason = Some(r.reason);
                draft.notes.insert(0, r.message);
            }
        }
        self.applied_desired(state, draft)
    }

    /// The rollout gate (DESIGN section 11): the new commit if the host may move to it now, else
    /// (`waiting` says why) the one applied before, still enforced.
    fn rollout_phase(
        &self,
        target: ObjectId,
        desired: Desired,
        state: &State,
        opts: PassOptions,
        draft: &mut Draft,
    ) -> Option<(ObjectId, Desired)> {
        match self.rollout_gate(target, state, opts) {
            Ok(rollout::Verdict::Move) => return Some((target, desired)),
            Ok(rollout::Verdict::Wait(why)) => {
                tracing::info!(message_id = crate::logging::id::WAITING, commit = %target, "not moving to {} yet: {why}", short(&target));
                draft.report.waiting = why;
            }
            Err(r) => {
                tracing::warn!(commit = %target, reason = %r.reason, "not applying commit: {r}");
                draft.report.outcome = r.outcome;
                draft.report.reason = Some(r.reason);
                draft.notes.insert(0, r.message);
            }
        }
        self.applied_desired(state, draft)
    }

    /// The commit applied before and its desired state, to keep enforcing it; `None` when there
    /// is none (or it cannot be read: said in the notes).
    fn applied_desired(&self, state: &State, draft: &mut Draft) -> Option<(ObjectId, Desired)> {
        let prev = state
            .applied_commit
            .as_deref()
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())?;
        match self.load(prev) {
            Ok(d) => Some((prev, d)),
            Err(e) => {
                draft.notes.push(format!(
                    "the applied commit cannot be read either: {}",
                    e.message
                ));
                None
            }
        }
    }

    /// Observe, plan and apply every kind, in `resource::ORDER` (or, with `detect`, only say how
    /// the host differs), updating the inventory in `state`.
    fn converge(
        &self,
        host: &Host,
        desired: &Desired,
        state: &mut State,
        detect: bool,
        gates: Gates,
        kinds: &[resource::KindId],
    ) -> Result<Converged> {
        let mut run = Converged::default();
        let mut ctx = resource::Context::default();
        let mut apply = resource::Apply {
            state,
            state_dir: &self.state_dir,
            stop: &self.stop,
            stopped: false,
        };
        // The whole pass (not a rollback's or a put-back's partial one) owns the hold.
        let whole = kinds == resource::ORDER.as_slice();
        if !detect && whole {
            resource::package::clear_stale_hold(host);
        }
        for &kind in kinds {
            if apply.stopping() {
                apply.stopped = true;
                break;
            }
            if kind == resource::KindId::Files && gates.validate && !detect {
                let staging = self.state_dir.path().join("staging");
                if let Err(e) =
                    resource::checks::validate_files(&host.fs, &desired.files, &staging, true)
                {
                    run.gate = Some(Gate::Rejected(e));
                    break;
                }
            }
            let outcomes = if kind == resource::KindId::Services && !host.is_system_root() {
                // Another root (an image build): the D-Bus systemd is the host's; drive none of it.
                crate::offline::files_only(&host.fs, desired, detect, &mut apply)?
            } else {
                kind.converge(host, desired, &ctx, detect, &mut apply)?
            };
            ctx.learn(&outcomes, desired);
            run.add(outcomes);
            if kind == resource::KindId::Files && gates.check_units && !detect {
                // Before any unit restarts or reloads on them: are the new files acceptable?
                if let Err(f) = resource::checks::check_units(&desired.units, &ctx.changed_paths) {
                    run.gate = Some(Gate::CheckFailed(f));
                    break;
                }
            }
        }
        if !detect && whole && !apply.stopped && run.gate.is_none() {
            // Services of packages installed with their starts held, now their files are in place
            // (after a refused check, the next pass starts them on the files put back).
            run.add(resource::package::start_held(host, desired, apply.state));
        }
        if apply.stopped {
            run.stopped = true;
            run.failed += 1;
        }
        run.resources
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(run)
    }

    /// Record: the outcome, its reason and the message of a pass that converged (or tried).
    fn summarize(
        &self,
        mut draft: Draft,
        run: Converged,
        state: &State,
        detect: bool,
        dry_run: bool,
    ) -> PassResult {
        let report = &mut draft.report;
        report.applied_commit = state.applied_commit.clone().unwrap_or_default();
        report.last_good_commit = state.last_good_commit.clone().unwrap_or_default();
        report.applied_at = applied_at(state);
        if !matches!(report.outcome, Outcome::Rejected | Outcome::Failed) {
            report.outcome = if run.failed > 0 {
                report.reason = Some(Reason::ApplyFailed);
                Outcome::Failed
            } else if run.drifted + run.masked > 0 {
                Outcome::Drifted
            } else if run.changed > 0 {
                Outcome::Changed
            } else {
                Outcome::Converged
            };
        }
        draft.notes.extend(run_notes(&run, detect, dry_run));
        draft.changes = run.changes;
        let Converged {
            lines, resources, ..
        } = run;
        draft.report.resources = resources;
        draft.finish(lines)
    }

    /// Fetches the branch unless failed fetches hold it back; the error is the last fetch error
    /// (the same words while held back, so the report does not change with every pass).
    fn fetch_if_due(&mut self, force: bool) -> std::result::Result<ObjectId, String> {
        let now = std::time::Instant::now();
        if !force && !self.fetch_backoff.due(now) {
            tracing::debug!(
                failures = self.fetch_backoff.failures(),
                "fetch held back after failures; applying the last fetched commit"
            );
            return Err(self.fetch_error.clone());
        }
        match self.repo.fetch(&self.remote()) {
            Ok(f) => {
                self.fetch_backoff.succeeded();
                self.fetch_error.clear();
                Ok(f.commit)
            }
            Err(e) => {
                let e = format!("{e:#}");
                self.fetch_backoff.failed(now, self.settings.interval);
                tracing::warn!(error = %e, failures = self.fetch_backoff.failures(), "fetch failed, keeping the last fetched commit: {e}");
                self.fetch_error = e.clone();
                Err(e)
            }
        }
    }

    /// Remembers when the applied commit was first applied (`applied_at`; a rollout's soak
    /// counts from it).
    fn note_applied_at(&self, state: &mut State) -> Result<()> {
        let Some(applied) = &state.applied_commit else {
            return Ok(());
        };
        if state.applied_since.as_ref().map(|(c, _)| c) != Some(applied) {
            state.applied_since = Some((applied.clone(), now_rfc3339()));
            self.state_dir.save(state)?;
        }
        Ok(())
    }

    /// The daemon asked to stop: finish the current change, then return.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn blank_report(&self, state: &State) -> Report {
        Report {
            host: self.settings.host.clone(),
            agent_version: AGENT_VERSION.into(),
            outcome: Outcome::Converged,
            desired_commit: String::new(),
            applied_commit: state.applied_commit.clone().unwrap_or_default(),
            last_good_commit: state.last_good_commit.clone().unwrap_or_default(),
            applied_at: applied_at(state),
            waiting: String::new(),
            reboot_required: None,
            last_reboot: None,
            checked_at: now_rfc3339(),
            message: String::new(),
            reason: None,
            age_recipient: None,
            facts: None,
            upgrades: None,
            container_updates: container_updates::last_updates(&self.state_dir),
            resources: vec![],
        }
    }

    /// Where this agent fetches from, for log lines.
    pub fn describe_source(&self) -> String {
        format!(
            "{} branch {} path {}",
            redact_url(&self.settings.repo),
            self.settings.branch,
            self.settings.path
        )
    }

    /// The last report written by a pass.
    pub fn last_report(state_dir: &std::path::Path) -> Result<Option<Report>> {
        let sd = StateDir::open(state_dir)?;
        match sd.read_doc("report.toml")? {
            Some(t) => Ok(Some(
                Report::from_toml(&t).context("parsing the last report")?,
            )),
            None => Ok(None),
        }
    }
}

/// Runs `[[health]]` on the pass's bus (connected now if the pass had no need of it before).
fn health_checks(
    host: &Host,
    desired: &Desired,
) -> std::result::Result<Verdict, crate::health::Fault> {
    let needs_bus = desired
        .health
        .iter()
        .any(|h| matches!(h.probe, spec::HealthProbe::Unit(_)));
    if !needs_bus {
        return crate::health::run(
            &desired.health,
            Err(crate::host::Fault("no unit checks".into())),
        );
    }
    match host.bus() {
        Ok(bus) => {
            let mut units = crate::health::ReconnectingUnits::new(Some(bus));
            crate::health::run(&desired.health, Ok(&mut units))
        }
        Err(e) => crate::health::run(&desired.health, Err(e)),
    }
}

/// Hands the memory a pass freed back to the OS. glibc keeps it in the arena of the thread that
/// ran the pass (~2 MiB after 1,000 files), which `plumb run` would carry while idle.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is involved.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// "changed at 3f2a9c1, 2 changes", "failed at 3f2a9c1 (check-failed), 1 change, 1 failed":
/// the essentials of the pass's one info line; a plan's reads "would change at 3f2a9c1, 2 changes".
fn pass_summary(report: &Report, changes: usize, failed: usize, dry_run: bool) -> String {
    let mut s = match report.outcome {
        Outcome::Changed if dry_run => "would change".to_string(),
        o => o.as_str().to_string(),
    };
    let commit = &report.desired_commit;
    if !commit.is_empty() {
        s.push_str(&format!(" at {}", commit.get(..7).unwrap_or(commit)));
    }
    if let Some(r) = report.reason {
        s.push_str(&format!(" ({})", r.as_str()));
    }
    let plural = if changes == 1 { "" } else { "s" };
    s.push_str(&format!(", {changes} change{plural}"));
    if failed > 0 {
        s.push_str(&format!(", {failed} failed"));
    }
    s
}

/// `applied_at` of the report: when the applied commit was first applied, if known.
fn applied_at(state: &State) -> String {
    match (&state.applied_since, &state.applied_commit) {
        (Some((c, at)), Some(applied)) if c == applied => at.clone(),
        _ => String::new(),
    }
}

fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

/// What the message says about the resources.
fn run_notes(run: &Converged, detect: bool, dry_run: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if run.stopped {
        notes.push("stopped (SIGTERM) before all changes were applied".into());
    }
    if run.failed > 0 {
        notes.push(format!("{} resource(s) failed", run.failed));
    }
    if run.drifted > 0 {
        notes.push(if detect {
            format!(
                "{} resource(s) drifted from Git ({})",
                run.drifted,
                if dry_run {
                    "plan: nothing changed"
                } else {
                    "not corrected: mode = detect"
                }
            )
        } else {
            format!("drift corrected on {} resource(s)", run.drifted)
        });
    }
    if run.masked > 0 {
        notes.push(format!(
            "{} unit(s) masked on the host: reported, not unmasked",
            run.masked
        ));
    }
    // `plan` prints its own count; a detect-mode daemon says it in its report.
    if detect && !dry_run && run.changes > 0 {
        notes.push(format!("{} change(s) pending", run.changes));
    }
    notes
}
