//! One reconcile pass: fetch -> verify -> load -> observe -> plan -> apply -> record.

use crate::config::{Mode, Settings};
use crate::host::fs::HostFs;
use crate::resource::activate;
use crate::resource::file::{self, FileAction, FileChange};
use crate::resource::{container, package, unit};
use crate::source::git::{redact_url, LocalRepo, Remote};
use crate::spec::{self, Desired};
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

        let (desired_commit, fetch_failed) = match self.repo.fetch(&self.remote()) {
            Ok(f) => (Some(f.commit), false),
            Err(e) => {
                let e = format!("{e:#}");
                tracing::warn!(error = %e, "fetch failed, keeping the last fetched commit");
                notes.push(format!("could not fetch: {e}"));
                (self.repo.fetched(&self.settings.branch)?, true)
            }
        };
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

        // Which commit to apply: the new one if it is valid, else stay on the one applied before.
        let (target, desired) = match self.load(desired_commit) {
            Ok(d) => (desired_commit, d),
            Err(reason) => {
                tracing::warn!(commit = %desired_commit, reason = %reason, "rejected commit");
                report.outcome = Outcome::Rejected;
                notes.insert(0, format!("rejected {}: {reason}", short(&desired_commit)));
                match state
                    .applied_commit
                    .as_deref()
                    .map(|h| ObjectId::from_hex(h.as_bytes()))
                {
                    Some(Ok(prev)) => match self.load(prev) {
                        Ok(d) => (prev, d),
                        Err(e) => {
                            notes.push(format!("the applied commit cannot be read either: {e}"));
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
                }
            }
        };

        let fs = HostFs::open(&self.settings.root)?;
        let detect = self.settings.mode == Mode::Detect || opts.dry_run;
        let mut lines = Vec::new();
        let mut failed = 0;
        let mut drifted = 0;
        let mut changed = 0;

        // Packages first: files and units may need what they install, and files are observed
        // after the packages that may ship them.
        for p in self.packages_step(&desired, &mut state, detect, &mut lines) {
            match p.state {
                ResourceState::Failed => failed += 1,
                ResourceState::DriftCorrected => drifted += 1,
                ResourceState::Drifted if p.drift => drifted += 1,
                ResourceState::Changed | ResourceState::Pruned | ResourceState::Drifted => {
                    changed += 1
                }
                ResourceState::Ok => {}
            }
            report.resources.push(ResourceReport {
                kind: Kind::Package,
                name: p.name,
                state: p.state,
                detail: p.detail,
            });
        }

        let observed = file::observe(&fs, &desired.files, &state.files);
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
            self.state_dir.save(&state)?;
        }
        let mut reported = std::collections::BTreeSet::new();
        // File writes are synced together after the loop (see `HostFs::begin_batch`).
        fs.begin_batch();
        let mut changed_paths = std::collections::BTreeSet::new();
        for c in &planned {
            if self.stopping() {
                notes.push("stopped (SIGTERM) before all changes were applied".into());
                failed += 1;
                break;
            }
            let spec = desired.files.get(&c.path);
            let ids = observed[&c.path].ids.clone().unwrap_or((0, 0));
            let (state_after, detail) = if let FileAction::Fail(e) = &c.action {
                (ResourceState::Failed, e.clone())
            } else if detect {
                if c.touches_host() {
                    lines.push(describe(c));
                    if let (Some(s), Ok(o)) = (spec, &observed[&c.path].observed) {
                        if let Some(d) = file::diff(s, o) {
                            lines.push(d);
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
                match file::apply(&fs, &self.state_dir, c, spec, ids, &mut state.files) {
                    Ok(()) => {
                        if c.touches_host() {
                            tracing::info!(kind = "file", name = %c.path, action = action_name(c), drift = c.drift, "applied");
                            lines.push(describe(c));
                        }
                        (resource_state(c), c.detail.clone())
                    }
                    Err(e) => {
                        tracing::error!(kind = "file", name = %c.path, error = %format!("{e:#}"), "failed");
                        (ResourceState::Failed, format!("{e:#}"))
                    }
                }
            };
            if c.touches_host() && state_after != ResourceState::Failed {
                changed_paths.insert(c.path.clone());
            }
            match state_after {
                ResourceState::Failed => failed += 1,
                ResourceState::DriftCorrected => drifted += 1,
                ResourceState::Drifted if c.drift => drifted += 1,
                ResourceState::Changed | ResourceState::Pruned | ResourceState::Drifted => {
                    changed += 1
                }
                ResourceState::Ok => {}
            }
            reported.insert(c.path.clone());
            report.resources.push(ResourceReport {
                kind: Kind::File,
                name: c.path.clone(),
                state: state_after,
                detail,
            });
        }
        for path in desired.files.keys().filter(|p| !reported.contains(*p)) {
            report.resources.push(ResourceReport {
                kind: Kind::File,
                name: path.clone(),
                state: ResourceState::Ok,
                detail: String::new(),
            });
        }
        if !detect {
            // The files are in place, durably, before units restart on them and before the state
            // says the commit is applied.
            fs.commit_batch()?;
        }
        let mut masked = 0;
        for activate::Outcome {
            report: r,
            drift,
            masked: left_masked,
            line,
        } in self.systemd_step(&fs, &desired, &mut state, &changed_paths, detect)?
        {
            match r.state {
                ResourceState::Failed => failed += 1,
                ResourceState::Drifted if left_masked => masked += 1,
                ResourceState::DriftCorrected => drifted += 1,
                ResourceState::Drifted if drift => drifted += 1,
                ResourceState::Changed | ResourceState::Pruned | ResourceState::Drifted => {
                    changed += 1
                }
                ResourceState::Ok => {}
            }
            lines.extend(line);
            report.resources.push(r);
        }
        report
            .resources
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));

        if !detect {
            state.applied_commit = Some(target.to_string());
            if failed == 0 {
                state.last_good_commit = Some(target.to_string());
            }
            self.state_dir.save(&state)?;
        }
        report.applied_commit = state.applied_commit.clone().unwrap_or_default();
        report.last_good_commit = state.last_good_commit.clone().unwrap_or_default();
        if report.outcome != Outcome::Rejected {
            report.outcome = if failed > 0 {
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

    /// The daemon asked to stop: finish the current change, then return.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Observes, plans and (unless `detect`) applies `[packages]`, updating the inventory.
    fn packages_step(
        &self,
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
        let results = package::apply(&desired.packages, &changes, state, &self.state_dir);
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
    fn load(&self, commit: ObjectId) -> std::result::Result<Desired, String> {
        let tree = self.repo.tree(commit).map_err(|e| format!("{e:#}"))?;
        let desired =
            spec::load(&tree, &self.settings.path, &self.settings.limits).map_err(|e| e.0)?;
        if !desired.units.is_empty() || !desired.containers.is_empty() {
            let fs = HostFs::open(&self.settings.root).map_err(|e| format!("{e:#}"))?;
            let staging = self.state_dir.path().join("staging");
            unit::validate(&fs, &desired.units, &staging)?;
            container::validate(&fs, &desired.containers, &staging)?;
        }
        Ok(desired)
    }

    /// Units and Quadlet containers (see `resource::activate::reconcile`).
    fn systemd_step(
        &self,
        fs: &HostFs,
        desired: &Desired,
        state: &mut State,
        changed_files: &std::collections::BTreeSet<String>,
        detect: bool,
    ) -> Result<Vec<activate::Outcome>> {
        if self.stopping() {
            return Ok(vec![]);
        }
        activate::reconcile(fs, desired, state, changed_files, detect, &mut |s| {
            self.state_dir.save(s)
        })
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
