//! Verify and load: may the host move to a commit, and what does it want there.

use super::{short, Agent, PassOptions};
use crate::host::fs::HostFs;
use crate::judged::Held;
use crate::reason::Reason;
use crate::resource::{container, unit};
use crate::source::git::Remote;
use crate::source::verify;
use crate::spec::{self, Desired, SpecError};
use crate::state::State;
use crate::status::report::{Outcome, Report};
use anyhow::{Context, Result};
use gix::ObjectId;

/// The render cache in state_dir (spec::template).
const RENDER_CACHE: &str = "render-cache";

/// Why the fetched commit is not applied: the outcome to report, a stable reason, and a message
/// naming the commit.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct Refusal {
    pub outcome: Outcome,
    pub reason: Reason,
    pub message: String,
}

impl Agent {
    /// May the host move to `commit`? Checks trust (fast-forward from the applied commit,
    /// signatures), the bad-commit list, then loads the spec. The error is the outcome to report
    /// and a message naming the commit and the reason.
    pub(super) fn admit(
        &self,
        commit: ObjectId,
        state: &State,
        opts: PassOptions,
    ) -> std::result::Result<Desired, Refusal> {
        let rejected = |reason: Reason, why: String| Refusal {
            outcome: Outcome::Rejected,
            reason,
            message: format!("rejected {}: {why}", short(&commit)),
        };
        let applied = match &state.applied_commit {
            Some(h) => Some(
                ObjectId::from_hex(h.as_bytes())
                    .map_err(|_| rejected(Reason::InvalidSpec, format!("state.json names an invalid applied commit {h:?}")))?,
            ),
            None => self.applied_from_status().map_err(|e| Refusal {
                outcome: Outcome::Failed,
                reason: Reason::FetchFailed,
                message: format!("not applying {}: could not read the last applied commit from the status branch: {e:#}", short(&commit)),
            })?,
        };
        let policy = verify::Policy {
            applied,
            allowed_signers: self.settings.allowed_signers.as_deref(),
            allow_rewind: opts.allow_rewind,
        };
        verify::check(&self.repo, &self.remote(), commit, &policy)
            .map_err(|e| rejected(e.reason, e.message))?;
        if !opts.allow_rewind {
            if let Some(held) = held(state, commit) {
                return Err(held);
            }
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

    /// The spec of the tree for this host, its templates rendered through the render cache
    /// (loaded from state_dir the first time, saved after each load that changed it).
    fn load_tree(
        &self,
        tree: &dyn spec::tree::FleetTree,
    ) -> std::result::Result<Desired, SpecError> {
        let mut slot = self.render_cache.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.state_dir.path().join(RENDER_CACHE);
        let cache = slot.get_or_insert_with(|| spec::RenderCache::load(&path));
        let inputs = spec::Inputs {
            host: &self.settings.host,
            facts: &self.facts,
            cache: Some(cache),
            keys: self.keys.as_ref(),
        };
        let desired = spec::load_with(tree, &self.settings.path, &self.settings.limits, inputs);
        if let Err(e) = cache.save(&path) {
            tracing::warn!("could not save the render cache: {e:#}");
        }
        desired
    }

    /// Reads the host's desired state at `commit`; the error says why the commit is unusable.
    /// Unit and Quadlet files it would change are validated here, before anything is installed.
    pub(super) fn load(&self, commit: ObjectId) -> std::result::Result<Desired, SpecError> {
        let tree = self
            .repo
            .tree(commit)
            .map_err(|e| SpecError::invalid(format!("{e:#}")))?;
        let desired = self.load_tree(&tree)?;
        spec::guard::check(&desired, &spec::guard::Guard::of(&self.settings))?;
        if desired.files.values().any(|f| f.validate.is_some()) {
            // Validators not installed yet (their package comes with this commit) run again
            // after the packages step, before any file is written.
            let fs = HostFs::open(&self.settings.root)
                .map_err(|e| SpecError::invalid(format!("{e:#}")))?;
            let staging = self.state_dir.path().join("staging");
            crate::resource::checks::validate_files(&fs, &desired.files, &staging, false)?;
        }
        if !desired.units.is_empty() || !desired.containers.is_empty() {
            let fs = HostFs::open(&self.settings.root)
                .map_err(|e| SpecError::new(Reason::InvalidUnit, format!("{e:#}")))?;
            let staging = self.state_dir.path().join("staging");
            unit::validate(&fs, &desired.units, &staging)?;
            container::validate(&fs, &desired.containers, &staging)?;
        }
        Ok(desired)
    }
}

/// A commit the checks judged before: bad (until a newer commit), or cooling down before it is
/// tried again. The message keeps the original cause, word for word, so that the report says
/// why until a good commit lands and does not change from pass to pass.
fn held(state: &State, commit: ObjectId) -> Option<Refusal> {
    let hex = commit.to_string();
    match state
        .judged
        .held(&hex, &state.bad_commits, crate::judged::now_secs())?
    {
        Held::Bad(cause) => Some(Refusal {
            outcome: Outcome::Failed,
            reason: Reason::BadCommit,
            message: format!(
                "not applying {}: {}; it stays rolled back: push a fix (a newer commit) or run `plumb apply --allow-rewind` to retry it",
                short(&commit),
                cause.map_or_else(|| "its checks failed before".to_string(), |c| c.message),
            ),
        }),
        Held::CoolingDown { cause, .. } => {
            let at = state.judged.retry[&hex].not_before;
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
            Some(Refusal {
                outcome: Outcome::Failed,
                reason: cause.reason,
                message: format!(
                    "not applying {} yet: {}; tried again after {}",
                    short(&commit),
                    cause.message,
                    humantime::format_rfc3339_seconds(at)
                ),
            })
        }
    }
}
