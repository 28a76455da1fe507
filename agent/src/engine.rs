//! One reconcile pass: fetch -> verify -> load -> observe -> plan -> apply -> record.

use crate::config::{Mode, Settings};
use crate::health::Verdict;
use crate::host::fs::HostFs;
use crate::host::Host;
use crate::reason::Reason;
use crate::resource::activate;
use crate::resource::file::{self, FileAction, FileChange};
use crate::resource::{container, package, unit};
use crate::source::backoff::FetchBackoff;
use crate::source::git::{redact_url, LocalRepo, Remote};
use crate::source::verify;
use crate::spec::{self, Desired, SpecError};
use crate::state::{State, StateDir};
use crate::status::report::{now_rfc3339, Kind, Outcome, Report, ResourceReport, ResourceState};
use anyhow::{Context, Result};
use gix::ObjectId;

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
    /// Units left masked on the host (reported as drift, not unmasked).
    masked: usize,
    /// Managed files this pass changed: units with `restart_on` them restart.
    changed_paths: std::collections::BTreeSet<String>,
    /// SIGTERM arrived: the pass stopped between two changes.
    stopped: bool,
}

impl Converged {
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

/// Everything a pass found out.
pub struct PassResult {
    pub report: Report,
    /// One line per pending or applied change, with diffs for `plan`.
    pub changes: Vec<String>,
    /// Git could not be reached: the daemon backs off.
    pub fetch_failed: bool,
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
}

impl Agent {
    pub fn new(settings: Settings) -> Result<Agent> {
        let state_dir = StateDir::open(&settings.state_dir)?;
        let repo = LocalRepo::open_or_init(&state_dir.repo_dir())?;
        Ok(Agent {
            settings,
            state_dir,
            repo,
            stop: Default::default(),
            fetch_backoff: FetchBackoff::default(),
            fetch_error: String::new(),
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
        self.repo.clear_stale_locks();
        let result = self.reconcile(opts)?;
        if !opts.dry_run {
            self.record(&result.report)?;
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

    fn reconcile(&mut self, opts: PassOptions) -> Result<PassResult> {
        let mut state = self.state_dir.load()?;
        let mut report = self.blank_report(&state);
        let mut notes: Vec<String> = Vec::new();

        let (desired_commit, fetch_failed) = match self.fetch_if_due(opts.fetch_now) {
            Ok(commit) => (Some(commit), false),
            Err(e) => {
                notes.push(format!("could not fetch: {e}"));
                (self.repo.fetched(&self.settings.branch)?, true)
            }
        };
        if fetch_failed {
            report.reason = Some(Reason::FetchFailed);
        }
        let Some(desired_commit) = desired_commit else {
            report.outcome = Outcome::Failed;
            report.message = notes.join("; ");
            return Ok(PassResult {
                report,
                changes: vec![],
                fetch_failed,
            });
        };
        report.desired_commit = desired_commit.to_string();

        if self.settings.mode == Mode::Suspend {
            report.outcome = if report.applied_commit == report.desired_commit {
                Outcome::Converged
            } else {
                Outcome::Drifted
            };
            notes.push("mode = suspend: nothing checked or applied".into());
            report.message = notes.join("; ");
            return Ok(PassResult {
                report,
                changes: vec![],
                fetch_failed,
            });
        }

        // Which commit to apply: the new one if it is trusted and valid, else stay on the one
        // applied before.
        let admitted = match self.admit(desired_commit, &state, opts) {
            Ok(d) => Some((desired_commit, d)),
            Err((outcome, reason, why)) => {
                tracing::warn!(commit = %desired_commit, reason = %reason, "not applying commit: {why}");
                report.outcome = outcome;
                report.reason = Some(reason);
                notes.insert(0, why);
                None
            }
        };
        let (target, desired) = match admitted {
            Some(t) => t,
            None => match state
                .applied_commit
                .as_deref()
                .map(|h| ObjectId::from_hex(h.as_bytes()))
            {
                Some(Ok(prev)) => match self.load(prev) {
                    Ok(d) => (prev, d),
                    Err(e) => {
                        notes.push(format!(
                            "the applied commit cannot be read either: {}",
                            e.message
                        ));
                        report.message = notes.join("; ");
                        return Ok(PassResult {
                            report,
                            changes: vec![],
                            fetch_failed,
                        });
                    }
                },
                _ => {
                    report.message = notes.join("; ");
                    return Ok(PassResult {
                        report,
                        changes: vec![],
                        fetch_failed,
                    });
                }
            },
        };

        let host = Host::open(&self.settings.root)?;
        let detect = self.settings.mode == Mode::Detect || opts.dry_run;
        let mut run = self.converge(&host, &desired, &mut state, detect)?;
        let mut healthy = run.failed == 0;
        if !detect {
            state.applied_commit = Some(target.to_string());
            if run.touched_host() && !run.stopped && !desired.health.is_empty() {
                match health_checks(&host, &desired) {
                    Ok(Verdict::Healthy) => {}
                    Ok(Verdict::Unhealthy(failure)) => {
                        healthy = false;
                        report.outcome = Outcome::Failed;
                        report.reason = Some(Reason::HealthCheckFailed);
                        notes.insert(
                            0,
                            self.roll_back(&host, target, &failure, &mut state, &mut run)?,
                        );
                    }
                    Err(fault) => {
                        // Nothing judged: not marked good, not marked bad, not rolled back.
                        tracing::warn!(error = %fault, "health check could not be run; the commit is not judged");
                        healthy = false;
                        report.outcome = Outcome::Failed;
                        report.reason = Some(Reason::CheckFault);
                        notes.insert(
                            0,
                            format!("{fault}; the commit is neither marked good nor rolled back"),
                        );
                    }
                }
            }
            if healthy {
                if state.last_good_commit.as_deref() != Some(&target.to_string()) {
                    state.bad_commits.clear(); // a newer good commit supersedes them
                }
                state.last_good_commit = Some(target.to_string());
            }
            self.state_dir.save(&state)?;
        }
        let Converged {
            lines,
            resources,
            failed,
            drifted,
            changed,
            masked,
            stopped,
            ..
        } = run;
        if stopped {
            notes.push("stopped (SIGTERM) before all changes were applied".into());
        }
        report.resources = resources;
        report.applied_commit = state.applied_commit.clone().unwrap_or_default();
        report.last_good_commit = state.last_good_commit.clone().unwrap_or_default();
        if !matches!(report.outcome, Outcome::Rejected | Outcome::Failed) {
            report.outcome = if failed > 0 {
                report.reason = Some(Reason::ApplyFailed);
                Outcome::Failed
            } else if drifted + masked > 0 {
                Outcome::Drifted
            } else if changed > 0 {
                Outcome::Changed
            } else {
                Outcome::Converged
            };
        }
        if failed > 0 {
            notes.push(format!("{failed} resource(s) failed"));
        }
        if drifted > 0 {
            notes.push(if detect {
                format!(
                    "{drifted} resource(s) drifted from Git ({})",
                    if opts.dry_run {
                        "plan: nothing changed"
                    } else {
                        "not corrected: mode = detect"
                    }
                )
            } else {
                format!("drift corrected on {drifted} resource(s)")
            });
        }
        if masked > 0 {
            notes.push(format!(
                "{masked} unit(s) masked on the host: reported, not unmasked"
            ));
        }
        if detect && changed > 0 {
            notes.push(format!("{changed} change(s) pending"));
        }
        report.message = notes.join("; ");
        tracing::info!(
            commit = %report.desired_commit,
            outcome = report.outcome.as_str(),
            reason = report.reason.map(|r| r.as_str()).unwrap_or(""),
            changes = lines.len(),
            failed,
            "pass done"
        );
        Ok(PassResult {
            report,
            changes: lines,
            fetch_failed,
        })
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
                tracing::warn!(error = %e, failures = self.fetch_backoff.failures(), "fetch failed, keeping the last fetched commit");
                self.fetch_error = e.clone();
                Err(e)
            }
        }
    }

    /// May the host move to `commit`? Checks trust (fast-forward from the applied commit,
    /// signatures), the bad-commit list, then loads the spec. The error is the outcome to report
    /// and a message naming the commit and the reason.
    fn admit(
        &self,
        commit: ObjectId,
        state: &State,
        opts: PassOptions,
    ) -> std::result::Result<Desired, (Outcome, Reason, String)> {
        let rejected = |reason: Reason, why: String| {
            (
                Outcome::Rejected,
                reason,
                format!("rejected {}: {why}", short(&commit)),
            )
        };
        let applied = match &state.applied_commit {
            Some(h) => Some(
                ObjectId::from_hex(h.as_bytes())
                    .map_err(|_| rejected(Reason::InvalidSpec, format!("state.json names an invalid applied commit {h:?}")))?,
            ),
            None => self.applied_from_status().map_err(|e| {
                (
                    Outcome::Failed,
                    Reason::FetchFailed,
                    format!("not applying {}: could not read the last applied commit from the status branch: {e:#}", short(&commit)),
                )
            })?,
        };
        let policy = verify::Policy {
            applied,
            allowed_signers: self.settings.allowed_signers.as_deref(),
            allow_rewind: opts.allow_rewind,
        };
        verify::check(&self.repo, &self.remote(), commit, &policy)
            .map_err(|e| rejected(e.reason, e.message))?;
        if !opts.allow_rewind && state.bad_commits.contains(&commit.to_string()) {
            return Err((
                Outcome::Failed,
                Reason::BadCommit,
                format!(
                    "not applying {}: its health checks failed before, so it stays rolled back; push a fix (a newer commit) or run `plumb apply --allow-rewind` to retry it",
                    short(&commit)
                ),
            ));
        }
        self.load(commit).map_err(|e| rejected(e.reason, e.message))
    }

    /// The `applied_commit` of this host's status branch, for when state.json has none (a wiped
    /// state_dir must not reopen a rewind). `None` when there is no status branch yet.
    fn applied_from_status(&self) -> Result<Option<ObjectId>> {
        let status = Remote {
            url: self.settings.status.repo.clone(),
            ..self.remote()
        };
        let local = "refs/plumb/status";
        self.repo.fetch_ref(
            &status,
            &format!("refs/heads/{}", self.settings.status.branch),
            local,
            std::num::NonZeroU32::MIN,
        )?;
        let Some(tip) = self.repo.resolve(local)? else {
            return Ok(None);
        };
        let Some(text) = self.repo.read_blob(tip, "status.toml")? else {
            return Ok(None);
        };
        let report = Report::from_toml(&String::from_utf8_lossy(&text))
            .context("parsing status.toml of the status branch")?;
        if report.applied_commit.is_empty() {
            return Ok(None);
        }
        ObjectId::from_hex(report.applied_commit.as_bytes())
            .map(Some)
            .with_context(|| {
                format!(
                    "status.toml names an invalid applied_commit {:?}",
                    report.applied_commit
                )
            })
    }

    /// A health check failed after applying `bad`: mark it bad, re-apply the last good commit,
    /// and say what happened.
    fn roll_back(
        &self,
        host: &Host,
        bad: ObjectId,
        failure: &crate::health::Failure,
        state: &mut State,
        run: &mut Converged,
    ) -> Result<String> {
        let good = state
            .last_good_commit
            .as_deref()
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
            .filter(|g| *g != bad);
        let Some(good) = good else {
            return Ok(format!(
                "{failure}; no earlier good commit to roll back to: {} stays applied",
                short(&bad)
            ));
        };
        state.bad_commits.insert(bad.to_string());
        self.state_dir.save(state)?;
        let desired = match self.load(good) {
            Ok(d) => d,
            Err(e) => {
                return Ok(format!(
                    "{failure}; rolling back to {} failed: {e}",
                    short(&good)
                ))
            }
        };
        tracing::warn!(bad = %bad, good = %good, "rolling back to the last good commit");
        let back = self.converge(host, &desired, state, false)?;
        run.lines.extend(back.lines);
        run.resources = back.resources;
        run.failed = back.failed;
        state.applied_commit = Some(good.to_string());
        Ok(format!(
            "{failure}; rolled back from {} to the last good commit {}",
            short(&bad),
            short(&good)
        ))
    }

    /// Makes the host match `desired` (or, with `detect`, only says how it differs), in the
    /// DESIGN order, updating the inventory in `state`.
    fn converge(
        &self,
        host: &Host,
        desired: &Desired,
        state: &mut State,
        detect: bool,
    ) -> Result<Converged> {
        let mut run = Converged::default();
        // Packages first: files and units may need what they install, and files are observed
        // after the packages that may ship them.
        for p in self.packages_step(host, desired, state, detect, &mut run.lines) {
            run.count(p.state, p.drift);
            run.resources.push(ResourceReport {
                kind: Kind::Package,
                name: p.name,
                state: p.state,
                detail: p.detail,
            });
        }
        self.converge_files(&host.fs, desired, state, detect, &mut run)?;
        for activate::Outcome {
            report: r,
            drift,
            masked,
            line,
        } in self.systemd_step(host, desired, state, &run.changed_paths, detect)?
        {
            if masked && r.state == ResourceState::Drifted {
                run.masked += 1;
            } else {
                run.count(r.state, drift);
            }
            run.lines.extend(line);
            run.resources.push(r);
        }
        run.resources
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(run)
    }

    fn converge_files(
        &self,
        fs: &HostFs,
        desired: &Desired,
        state: &mut State,
        detect: bool,
        run: &mut Converged,
    ) -> Result<()> {
        let observed = file::observe(fs, &desired.files, &state.files);
        let planned = file::plan(&desired.files, &observed, &state.files);
        if !detect
            && planned
                .iter()
                .any(|c| c.touches_host() || c.action == FileAction::Record)
        {
            // Record intent first: a pass killed mid-way still knows every path it may have written.
            for c in planned
                .iter()
                .filter(|c| matches!(c.action, FileAction::Write { backup: false }))
            {
                state.files.entry(c.path.clone()).or_default();
            }
            self.state_dir.save(state)?;
        }
        let mut reported = std::collections::BTreeSet::new();
        // File writes are synced together after the loop (see `HostFs::begin_batch`).
        fs.begin_batch();
        for c in &planned {
            if self.stopping() {
                run.stopped = true;
                run.failed += 1;
                break;
            }
            let spec = desired.files.get(&c.path);
            let ids = observed[&c.path].ids.clone().unwrap_or((0, 0));
            let (state_after, detail) = if let FileAction::Fail(e) = &c.action {
                (ResourceState::Failed, e.clone())
            } else if detect {
                if c.touches_host() {
                    run.lines.push(describe(c));
                    if let (Some(s), Ok(o)) = (spec, &observed[&c.path].observed) {
                        if let Some(d) = file::diff(s, o) {
                            run.lines.push(d);
                        }
                    }
                }
                let st = if c.touches_host() {
                    ResourceState::Drifted
                } else {
                    ResourceState::Ok
                };
                (st, c.detail.clone())
            } else {
                match file::apply(fs, &self.state_dir, c, spec, ids, &mut state.files) {
                    Ok(()) => {
                        if c.touches_host() {
                            tracing::info!(kind = "file", name = %c.path, action = action_name(c), drift = c.drift, "applied");
                            run.lines.push(describe(c));
                        }
                        (resource_state(c), c.detail.clone())
                    }
                    Err(e) => {
                        tracing::error!(kind = "file", name = %c.path, error = %format!("{e:#}"), "failed");
                        (ResourceState::Failed, format!("{e:#}"))
                    }
                }
            };
            if c.touches_host() && state_after != ResourceState::Failed && !detect {
                run.changed_paths.insert(c.path.clone());
            }
            run.count(state_after, c.drift);
            reported.insert(c.path.clone());
            run.resources.push(ResourceReport {
                kind: Kind::File,
                name: c.path.clone(),
                state: state_after,
                detail,
            });
        }
        for path in desired.files.keys().filter(|p| !reported.contains(*p)) {
            run.resources.push(ResourceReport {
                kind: Kind::File,
                name: path.clone(),
                state: ResourceState::Ok,
                detail: String::new(),
            });
        }
        // The files are in place, durably, before units restart on them and before the state
        // says the commit is applied. If that
        // fails (a full disk), no staged file was put in place: each written one is reported
        // failed, and the next pass writes it again (its content differs from the inventory's).
        if let Err(e) = fs.commit_batch() {
            let e = format!("{e:#}");
            tracing::error!(kind = "file", error = %e, "failed to put the written files in place");
            for r in run.resources.iter_mut().filter(|r| {
                r.kind == Kind::File
                    && matches!(
                        r.state,
                        ResourceState::Changed | ResourceState::DriftCorrected
                    )
            }) {
                r.state = ResourceState::Failed;
                r.detail = e.clone();
                run.failed += 1;
                run.changed_paths.remove(&r.name);
            }
        }
        Ok(())
    }

    /// The daemon asked to stop: finish the current change, then return.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Observes, plans and (unless `detect`) applies `[packages]`, updating the inventory.
    fn packages_step(
        &self,
        host: &Host,
        desired: &Desired,
        state: &mut State,
        detect: bool,
        lines: &mut Vec<String>,
    ) -> Vec<package::PackageResult> {
        let Some(installed) =
            package::observe(&self.settings.root, &desired.packages, &state.packages)
        else {
            return vec![];
        };
        let changes = package::plan(&desired.packages, &installed, &state.packages);
        if detect {
            lines.extend(
                changes
                    .iter()
                    .filter(|c| c.touches_host())
                    .map(|c| c.describe()),
            );
            return package::report_only(&desired.packages, &changes);
        }
        // The inventory changes are saved with the rest of the state at the end of the pass.
        let results = package::apply(host, &desired.packages, &changes, state, &self.state_dir);
        lines.extend(
            results
                .iter()
                .filter(|r| !matches!(r.state, ResourceState::Ok | ResourceState::Failed))
                .map(|r| format!("package {}: {}", r.name, r.detail)),
        );
        results
    }

    /// Reads the host's desired state at `commit`; the error says why the commit is unusable.
    /// Unit and Quadlet files it would change are validated here, before anything is installed.
    fn load(&self, commit: ObjectId) -> std::result::Result<Desired, SpecError> {
        let tree = self
            .repo
            .tree(commit)
            .map_err(|e| SpecError::invalid(format!("{e:#}")))?;
        let desired = spec::load(&tree, &self.settings.path, &self.settings.limits)?;
        if !desired.units.is_empty() || !desired.containers.is_empty() {
            let invalid_unit = |e: String| SpecError::new(Reason::InvalidUnit, e);
            let fs =
                HostFs::open(&self.settings.root).map_err(|e| invalid_unit(format!("{e:#}")))?;
            let staging = self.state_dir.path().join("staging");
            unit::validate(&fs, &desired.units, &staging).map_err(invalid_unit)?;
            container::validate(&fs, &desired.containers, &staging).map_err(invalid_unit)?;
        }
        Ok(desired)
    }

    /// Units and Quadlet containers (see `resource::activate::reconcile`).
    fn systemd_step(
        &self,
        host: &Host,
        desired: &Desired,
        state: &mut State,
        changed_files: &std::collections::BTreeSet<String>,
        detect: bool,
    ) -> Result<Vec<activate::Outcome>> {
        if self.stopping() {
            return Ok(vec![]);
        }
        activate::reconcile(host, desired, state, &self.state_dir, changed_files, detect)
    }

    fn blank_report(&self, state: &State) -> Report {
        Report {
            host: self.settings.host.clone(),
            agent_version: AGENT_VERSION.into(),
            outcome: Outcome::Converged,
            desired_commit: String::new(),
            applied_commit: state.applied_commit.clone().unwrap_or_default(),
            last_good_commit: state.last_good_commit.clone().unwrap_or_default(),
            checked_at: now_rfc3339(),
            message: String::new(),
            reason: None,
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
    let mut bus = if needs_bus {
        host.bus().map_err(|e| e.to_string())
    } else {
        Err("no unit checks".to_string())
    };
    crate::health::run(
        &desired.health,
        bus.as_mut()
            .map(|b| b as &mut dyn crate::health::UnitStates)
            .map_err(|e| e.clone()),
    )
}

/// Hands the memory a pass freed back to the OS. glibc keeps it in the arena of the thread that
/// ran the pass (~2 MiB after 1,000 files), which `plumb run` would carry while idle.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is involved.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

fn action_name(c: &FileChange) -> &'static str {
    match c.action {
        FileAction::Record => "record",
        FileAction::Write { .. } => "write",
        FileAction::SetMeta => "set-meta",
        FileAction::Remove { restore: Some(_) } => "restore",
        FileAction::Remove { restore: None } => "delete",
        FileAction::Fail(_) => "fail",
    }
}

fn resource_state(c: &FileChange) -> ResourceState {
    match c.action {
        FileAction::Remove { .. } => ResourceState::Pruned,
        FileAction::Record | FileAction::Fail(_) => ResourceState::Ok,
        _ if c.drift => ResourceState::DriftCorrected,
        _ => ResourceState::Changed,
    }
}

/// "update /etc/motd (content differs)" for plan and logs.
fn describe(c: &FileChange) -> String {
    let verb = match c.action {
        FileAction::Write { .. } if c.detail == "created" => "create",
        FileAction::Write { .. } | FileAction::SetMeta => "update",
        FileAction::Remove { restore: Some(_) } => "restore",
        FileAction::Remove { restore: None } => "delete",
        FileAction::Record | FileAction::Fail(_) => "keep",
    };
    let drift = if c.drift { ", drift" } else { "" };
    format!("{verb} file {} ({}{drift})", c.path, c.detail)
}
