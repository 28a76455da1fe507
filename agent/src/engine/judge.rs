//! Judging the applied commit: a unit's `check` before restarts, `[[health]]` after the apply,
//! and what follows from a verdict: roll back, mark bad, or (when the failure was not the
//! commit's own) try again after a cool-down. A fault judges nothing.

use super::{health_checks, short, Agent, Converged, Draft, Gate, Gates};
use crate::health::{Failure, Verdict};
use crate::host::Host;
use crate::judged::{cool_down, now_secs, Cause};
use crate::reason::Reason;
use crate::resource::{self, checks::CheckFailed, KindId};
use crate::spec::Desired;
use crate::state::State;
use crate::status::report::{Outcome, ResourceState};
use anyhow::Result;
use gix::ObjectId;

/// The verdict on a commit, for the bookkeeping in `State::judged`.
enum Blame {
    /// The commit's own fault: bad until a newer commit.
    Commit,
    /// Something outside it (a unit stopped by hand, the last good commit failing too): retried.
    Host,
}

impl Agent {
    /// Before the first write of a commit that has checks to pass: recorded as applied but not
    /// judged, so a pass killed between write and check still checks it next time, changes or
    /// not, and it never becomes the last good commit unchecked.
    pub(super) fn mark_unjudged(
        &self,
        target: ObjectId,
        desired: &Desired,
        state: &mut State,
    ) -> Result<()> {
        let hex = target.to_string();
        let has_checks =
            !desired.health.is_empty() || desired.units.values().any(|u| u.check.is_some());
        if has_checks
            && state.last_good_commit.as_deref() != Some(hex.as_str())
            && state.unjudged_commit.as_deref() != Some(hex.as_str())
        {
            state.unjudged_commit = Some(hex);
            self.state_dir.save(state)?;
        }
        Ok(())
    }

    /// A gate stopped the pass before its units: a `validate` rejected the commit (nothing of
    /// its files written), or a unit's `check` refused the written files (put back before any
    /// restart).
    pub(super) fn gate_phase(
        &self,
        host: &Host,
        target: ObjectId,
        gate: Gate,
        state: &mut State,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        match gate {
            Gate::Rejected(e) => {
                draft.report.outcome = Outcome::Rejected;
                draft.report.reason = Some(e.reason);
                draft
                    .notes
                    .insert(0, format!("rejected {}: {}", short(&target), e.message));
                if state.unjudged_commit.as_deref() == Some(target.to_string().as_str()) {
                    state.unjudged_commit = None;
                }
            }
            Gate::CheckFailed(failed) => {
                let note = self.put_files_back(host, target, &failed, state, run)?;
                draft.report.outcome = Outcome::Failed;
                draft.report.reason = Some(if failed.fault {
                    Reason::CheckFault
                } else {
                    Reason::CheckFailed
                });
                draft.notes.insert(0, note);
            }
        }
        self.state_dir.save(state)
    }

    /// A unit's `check` refused the files `bad` wrote: the files go back to the last good commit
    /// before anything restarts, and the check runs again on them.
    fn put_files_back(
        &self,
        host: &Host,
        bad: ObjectId,
        failed: &CheckFailed,
        state: &mut State,
        run: &mut Converged,
    ) -> Result<String> {
        let hex = bad.to_string();
        state.unjudged_commit = None;
        let good = last_good(state, bad);
        let back = match good.map(|g| (g, self.load(g))) {
            Some((g, Ok(d))) => Some((g, d)),
            Some((g, Err(e))) => {
                return Ok(format!(
                    "{failed}; putting the files of {} back failed: {}",
                    short(&g),
                    e.message
                ))
            }
            None => None,
        };
        // With no good commit, "back" is no files of plumb's at all (backups restored).
        let (good_name, good_desired) = match back {
            Some((g, d)) => (short(&g), d),
            None => ("the state before plumb".to_string(), Desired::default()),
        };
        let reverted = self.converge(
            host,
            &good_desired,
            state,
            false,
            Gates::default(),
            &[KindId::Files],
        )?;
        let changed: std::collections::BTreeSet<String> = reverted
            .resources
            .iter()
            .filter(|r| r.state != ResourceState::Ok)
            .map(|r| r.name.clone())
            .collect();
        mark_rolled_back(run, reverted, &good_name);
        if let Some(g) = good {
            state.applied_commit = Some(g.to_string());
        }
        if failed.fault {
            return Ok(format!(
                "{failed}; the files were put back to {good_name} before anything restarted; the commit is not judged and is checked again on the next pass"
            ));
        }
        let mut note = format!(
            "{failed}; the files of {} were put back to {good_name} before anything restarted",
            short(&bad)
        );
        let blame = match resource::checks::check_units(&good_desired.units, &changed) {
            Err(again) if !again.fault => {
                note.push_str(&format!(
                    "; {good_name} fails this check too ({}): the cause is on the host, not in {}",
                    again.output,
                    short(&bad)
                ));
                Blame::Host
            }
            _ => Blame::Commit,
        };
        self.judge(&hex, Reason::CheckFailed, note, blame, state)
    }

    /// Health: the commit is applied; judged good, bad (rolled back), retried later (rolled
    /// back; not its own fault), or not at all (a fault: checked again on the next pass).
    pub(super) fn health_phase(
        &self,
        host: &Host,
        target: ObjectId,
        desired: &Desired,
        state: &mut State,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        state.applied_commit = Some(target.to_string());
        let mut healthy = run.failed == 0;
        let target_hex = target.to_string();
        let unjudged = state.unjudged_commit.as_deref() == Some(target_hex.as_str());
        if state.unjudged_commit.is_some() && !unjudged {
            state.unjudged_commit = None; // another commit is applied now
        }
        let due = run.touched_host() || unjudged;
        if due && !run.stopped && !desired.health.is_empty() {
            let checked = health_checks(host, desired);
            state.unjudged_commit = checked.is_err().then(|| target_hex.clone());
            match checked {
                Ok(Verdict::Healthy) => {}
                Ok(Verdict::Unhealthy(failure)) => {
                    healthy = false;
                    draft.report.outcome = Outcome::Failed;
                    draft.report.reason = Some(Reason::HealthCheckFailed);
                    let note = self.roll_back(host, target, &failure, state, run)?;
                    draft.notes.insert(0, note);
                }
                Err(fault) => {
                    tracing::warn!(error = %fault, "{fault}: the commit is not judged");
                    healthy = false;
                    draft.report.outcome = Outcome::Failed;
                    draft.report.reason = Some(Reason::CheckFault);
                    draft.notes.insert(
                        0,
                        format!("{fault}; the commit is neither marked good nor rolled back, and is checked again on the next pass"),
                    );
                }
            }
        } else if desired.health.is_empty() && unjudged && run.failed == 0 {
            state.unjudged_commit = None; // only unit checks, and they passed
        }
        if healthy && state.unjudged_commit.is_none() {
            let last = state.last_good_commit.clone();
            state
                .judged
                .good(&target_hex, last.as_deref(), &mut state.bad_commits);
            state.last_good_commit = Some(target_hex);
        }
        self.state_dir.save(state)
    }

    /// A health check failed after applying `bad`: re-apply the last good commit, check it too,
    /// and say what happened. `bad` is marked bad, or retried after a cool-down when the failure
    /// was not its own (the unit was stopped, not crashed; the last good commit fails as well).
    fn roll_back(
        &self,
        host: &Host,
        bad: ObjectId,
        failure: &Failure,
        state: &mut State,
        run: &mut Converged,
    ) -> Result<String> {
        let hex = bad.to_string();
        let Some(good) = last_good(state, bad) else {
            let note = format!(
                "{failure}; no earlier good commit to roll back to: {} stays applied",
                short(&bad)
            );
            let blame = if failure.stopped {
                Blame::Host
            } else {
                Blame::Commit
            };
            return self.judge(&hex, Reason::HealthCheckFailed, note, blame, state);
        };
        let desired = match self.load(good) {
            Ok(d) => d,
            Err(e) => {
                let note = format!("{failure}; rolling back to {} failed: {e}", short(&good));
                return self.judge(&hex, Reason::HealthCheckFailed, note, Blame::Commit, state);
            }
        };
        tracing::warn!(message_id = crate::logging::id::ROLLED_BACK, bad = %bad, good = %good, "rolling back from {} to the last good commit {}", short(&bad), short(&good));
        let back = self.converge(
            host,
            &desired,
            state,
            false,
            Gates::default(),
            &resource::ORDER,
        )?;
        let touched = back.touched_host();
        run.resources.clear();
        run.failed = back.failed;
        mark_rolled_back(run, back, &short(&good));
        state.applied_commit = Some(good.to_string());
        let mut note = format!(
            "{failure}; rolled back from {} to the last good commit {}",
            short(&bad),
            short(&good)
        );
        let mut blame = Blame::Commit;
        if failure.stopped {
            note.push_str(&format!(
                "; the unit was stopped during the check, not crashed, so {} is not blamed",
                short(&bad)
            ));
            blame = Blame::Host;
        }
        if touched && !desired.health.is_empty() {
            if let Ok(Verdict::Unhealthy(again)) = health_checks(host, &desired) {
                note.push_str(&format!(
                    "; the last good commit {} fails its health checks too ({again}): the cause is on the host, not in {}",
                    short(&good),
                    short(&bad)
                ));
                blame = Blame::Host;
            }
        }
        self.judge(&hex, Reason::HealthCheckFailed, note, blame, state)
    }

    /// Records the verdict on `commit` and finishes the note with what follows from it.
    fn judge(
        &self,
        commit: &str,
        reason: Reason,
        mut note: String,
        blame: Blame,
        state: &mut State,
    ) -> Result<String> {
        let cause = |note: &str| Cause {
            reason,
            message: note.to_string(),
        };
        match blame {
            Blame::Commit => {
                state
                    .judged
                    .mark_bad(commit, cause(&note), &mut state.bad_commits);
            }
            Blame::Host => {
                let now = now_secs();
                let wait = cool_down(self.settings.interval);
                let retried = state.judged.mark_retry(
                    commit,
                    cause(&note),
                    now,
                    wait,
                    &mut state.bad_commits,
                );
                if retried {
                    let at = std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(now.saturating_add(wait.as_secs()));
                    note.push_str(&format!(
                        "; retried after {}",
                        humantime::format_rfc3339_seconds(at)
                    ));
                } else {
                    note.push_str(&format!(
                        "; failed {} times, so it stays rolled back until a newer commit",
                        crate::judged::MAX_TRIES
                    ));
                }
            }
        }
        self.state_dir.save(state)?;
        Ok(note)
    }
}

/// The last good commit, unless it is `bad` itself.
fn last_good(state: &State, bad: ObjectId) -> Option<ObjectId> {
    state
        .last_good_commit
        .as_deref()
        .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
        .filter(|g| *g != bad)
}

/// Adds what a rollback (or a put-back of files) did to the pass, called what it is: a change
/// back to `good`, not drift.
fn mark_rolled_back(run: &mut Converged, back: Converged, good: &str) {
    run.lines.extend(back.lines);
    for mut r in back.resources {
        if r.state == ResourceState::DriftCorrected {
            r.state = ResourceState::Changed;
        }
        if r.state != ResourceState::Ok {
            r.detail = if r.detail.is_empty() {
                format!("rolled back to {good}")
            } else {
                format!("rolled back to {good}: {}", r.detail)
            };
        }
        run.resources
            .retain(|x| (x.kind, &x.name) != (r.kind, &r.name));
        run.resources.push(r);
    }
    run.resources
        .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
}
