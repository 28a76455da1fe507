//! Publishing the report: `status.toml` committed (gix) onto the host's status branch in a local
//! bare repository (`state_dir/status.git`), then pushed with the `git` binary (gix cannot push).
//!
//! A push is made when the report's meaning changed, when the last push failed, or when the
//! heartbeat is due; `state_dir/status-push.json` remembers what was pushed when, and the last
//! error for `plumb status`. The local branch ref always holds the remote head as last seen, and
//! every push is `--force-with-lease` against it: if the branch moved (another writer, a wiped
//! state_dir), the branch is fetched and the report rebuilt on top of it.

use super::chain;
use super::git_cli::{git_command, moved};
use super::remote::{self, Endpoint};
use crate::config::Settings;
use crate::host::command;
use crate::state::StateDir;
use crate::status::report::{now_rfc3339, Outcome, Report, ResourceState};
use anyhow::{bail, Context, Result};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the last push is remembered, in state_dir.
pub const MEMO_FILE: &str = "status-push.json";
/// A push that takes longer is stopped; the next pass tries again.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What was pushed last, and the last error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushMemo {
    /// Status repository (credentials redacted) and branch the memo is about.
    pub repo: String,
    pub branch: String,
    pub pushed_commit: String,
    pub pushed_at: String,
    pub pushed_unix: u64,
    /// The report last pushed, to tell a change of meaning from a new timestamp.
    pub pushed_report: Option<Report>,
    /// Why the last attempt failed; empty once a push succeeds.
    pub last_error: String,
    pub last_error_at: String,
    /// Failed pushes in a row, and when the next may be tried (seconds since the epoch): a status
    /// server that is down or blackholed costs a pass one attempt now and then, not a connect
    /// timeout on every pass.
    pub failures: u32,
    pub retry_unix: u64,
}

/// When to try again after `failures` failed pushes in a row: the interval, doubled per failure,
/// at most max(interval, 10 min).
pub fn push_retry_after(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(600));
    interval
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(cap)
        .mul_f64(0.85)
}

/// The part of the memo `plumb status` shows, as its `[push]` table.
#[derive(Debug, Serialize)]
pub struct PushStatus {
    pub repo: String,
    pub branch: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_pushed_commit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_pushed_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error_at: String,
}

impl PushMemo {
    pub fn load(state_dir: &StateDir) -> Result<PushMemo> {
        match state_dir.read_doc(MEMO_FILE)? {
            // A memo that cannot be read only costs one extra push.
            Some(t) => Ok(serde_json::from_str(&t).unwrap_or_default()),
            None => Ok(PushMemo::default()),
        }
    }

    fn save(&self, state_dir: &StateDir) -> Result<()> {
        state_dir.write_doc(MEMO_FILE, &serde_json::to_string_pretty(self)?)
    }

    pub fn status(&self) -> PushStatus {
        PushStatus {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            last_pushed_commit: self.pushed_commit.clone(),
            last_pushed_at: self.pushed_at.clone(),
            last_error: self.last_error.clone(),
            last_error_at: self.last_error_at.clone(),
        }
    }
}

/// Why a push is due now, or None when the branch already says what `report` says.
pub fn due(
    memo: &PushMemo,
    repo: &str,
    branch: &str,
    report: &Report,
    now_unix: u64,
    heartbeat: Duration,
) -> Option<&'static str> {
    let Some(pushed) = &memo.pushed_report else {
        return Some("first report");
    };
    if memo.repo != repo || memo.branch != branch {
        Some("status repository or branch changed")
    } else if !memo.last_error.is_empty() {
        Some("retrying after a failed push")
    } else if !pushed.same_meaning(report) {
        Some("report changed")
    } else if now_unix.saturating_sub(memo.pushed_unix) >= heartbeat.as_secs() {
        Some("heartbeat")
    } else {
        None
    }
}

/// One line a person can scan: `web-01: converged at 3f2a9c1, 2 changed`.
pub fn commit_message(r: &Report) -> String {
    let short = |c: &str| {
        c.get(..7)
            .unwrap_or(if c.is_empty() { "-" } else { c })
            .to_string()
    };
    let mut line = match r.outcome {
        Outcome::Rejected => {
            let rejected = short(&r.desired_commit);
            let why = r
                .message
                .strip_prefix(&format!("rejected {rejected}: "))
                .unwrap_or(&r.message);
            format!("{}: rejected {rejected}: {why}", r.host)
        }
        o => {
            let mut l = format!("{}: {} at {}", r.host, o.as_str(), short(&r.applied_commit));
            let changed = r.count(ResourceState::Changed) + r.count(ResourceState::Pruned);
            for (n, what) in [
                (changed, "changed"),
                (r.count(ResourceState::DriftCorrected), "drift-corrected"),
                (r.count(ResourceState::Drifted), "drifted"),
                (r.count(ResourceState::Failed), "failed"),
            ] {
                if n > 0 {
                    l.push_str(&format!(", {n} {what}"));
                }
            }
            if matches!(o, Outcome::Failed) && !r.message.is_empty() {
                l.push_str(&format!(": {}", r.message));
            }
            l
        }
    };
    line = line.replace(['\n', '\r'], " ");
    if line.chars().count() > 160 {
        line = line.chars().take(157).collect::<String>() + "...";
    }
    line
}

/// Pushes `report` to the status branch when due. Never fails the pass: errors are logged and
/// kept in the memo for `plumb status`. Returns the pushed commit, None when nothing was pushed.
pub fn publish(settings: &Settings, state_dir: &StateDir, report: &Report) -> Option<ObjectId> {
    let ep = Endpoint {
        url: settings.status.repo.clone(),
        ssh_key: settings.ssh_key.clone(),
        token_file: settings.token_file.clone(),
        known_hosts: Some(state_dir.path().join("known_hosts")),
    };
    let branch = &settings.status.branch;
    let mut memo = PushMemo::load(state_dir).unwrap_or_default();
    let now = unix_now();
    let repo_name = ep.redacted();
    let Some(reason) = due(
        &memo,
        &repo_name,
        branch,
        report,
        now,
        settings.status.heartbeat,
    ) else {
        tracing::debug!(branch = %branch, "status unchanged, heartbeat not due: no push");
        return None;
    };
    if memo.failures > 0 && now < memo.retry_unix && memo.repo == repo_name {
        tracing::debug!(branch = %branch, failures = memo.failures, "status push held back after failures");
        return None;
    }
    let publisher = Publisher {
        dir: state_dir.path().join("status.git"),
        endpoint: ep,
        branch: branch.clone(),
        history: settings.status.history as usize,
        host: settings.host.clone(),
        timeout: PUSH_TIMEOUT,
        signing_key: Some(settings.status.signing_key.clone()),
    };
    let result = publisher.push(report);
    if memo.repo != repo_name || memo.branch != *branch {
        memo = PushMemo {
            repo: repo_name,
            branch: branch.clone(),
            ..Default::default()
        };
    }
    let pushed = match result {
        Ok(id) => {
            tracing::info!(branch = %branch, commit = %id, reason, "status pushed to {branch} ({reason})");
            memo.pushed_commit = id.to_string();
            memo.pushed_at = now_rfc3339();
            memo.pushed_unix = now;
            memo.pushed_report = Some(report.clone());
            memo.last_error.clear();
            memo.last_error_at.clear();
            memo.failures = 0;
            memo.retry_unix = 0;
            Some(id)
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::warn!(branch = %branch, error = %e, "status push to {branch} failed, the next pass tries again: {e}");
            memo.last_error = e;
            memo.last_error_at = now_rfc3339();
            memo.failures = memo.failures.saturating_add(1);
            memo.retry_unix = now + push_retry_after(settings.interval, memo.failures).as_secs();
            None
        }
    };
    if let Err(e) = memo.save(state_dir) {
        tracing::warn!(error = %format!("{e:#}"), "could not record the status push: {e:#}");
    }
    pushed
}

/// Commits and pushes reports to one status branch.
pub struct Publisher {
    /// The local bare repository (separate from the fleet clone: full history of one branch).
    pub dir: std::path::PathBuf,
    pub endpoint: Endpoint,
    pub branch: String,
    pub history: usize,
    pub host: String,
    pub timeout: Duration,
    /// The host key status commits are signed with (DESIGN section 11); unsigned when it
    /// cannot be read.
    pub signing_key: Option<std::path::PathBuf>,
}

enum PushResult {
    Pushed,
    /// The branch on the server is not what we last saw: fetch it and build on it.
    Moved(String),
}

impl Publisher {
    fn local_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// Commits `report` on the last seen remote head and pushes it; once more on the fetched head
    /// when the branch moved. Returns the pushed commit.
    pub fn push(&self, report: &Report) -> Result<ObjectId> {
        let repo = crate::source::repo::open_bare(&self.dir, Some(self.endpoint.ssh_command()))?;
        crate::source::git::LocalRepo::open_or_init(&self.dir)?.clear_stale_locks();
        let toml = report.to_toml();
        let message = commit_message(report);
        let who = chain::signature(&self.host);
        let signer = self.signing_key.as_deref().and_then(|k| {
            crate::rollout::trust::Signer::load(k)
                .map_err(|e| tracing::debug!("status commits unsigned: {e:#}"))
                .ok()
        });
        let sign_fn = |p: &[u8]| signer.as_ref().expect("checked").sign(p);
        let sign: Option<chain::Sign> = signer.is_some().then_some(&sign_fn as chain::Sign);
        let append =
            |base| chain::append_signed(&repo, base, &toml, &message, &who, self.history, sign);
        let base = self.head(&repo)?;
        let commit = append(base)?;
        let commit = match self.git_push(commit, base)? {
            PushResult::Pushed => commit,
            PushResult::Moved(why) => {
                tracing::info!(branch = %self.branch, why = %why, "status branch {} moved ({why}): fetching it and building on it", self.branch);
                let base = self.fetch_branch(&repo)?;
                let commit = append(base)?;
                match self.git_push(commit, base)? {
                    PushResult::Pushed => commit,
                    PushResult::Moved(why) => bail!(
                        "pushing {} to {}: the branch moved again while pushing ({why}); the next pass tries again",
                        self.branch,
                        self.endpoint.redacted()
                    ),
                }
            }
        };
        repo.reference(
            self.local_ref().as_str(),
            commit,
            gix::refs::transaction::PreviousValue::Any,
            "pushed",
        )
        .context("recording the pushed status commit")?;
        self.gc();
        Ok(commit)
    }

    /// Every report leaves a few objects (and a trim many unreachable ones) in the local repo:
    /// `git gc --auto` packs them once there are enough, pruning at once (we hold the state lock).
    fn gc(&self) {
        let result = git_command(&self.dir, &self.endpoint).and_then(|mut cmd| {
            cmd.args(["-c", "gc.pruneExpire=now", "gc", "--auto", "--quiet"]);
            let out = command::run(&mut cmd, self.timeout)?;
            command::check(&cmd, &out)
        });
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "cleaning up the local status repository failed: {e:#}");
        }
    }

    fn head(&self, repo: &gix::Repository) -> Result<Option<ObjectId>> {
        Ok(match repo.try_find_reference(self.local_ref().as_str())? {
            Some(mut r) => Some(
                r.peel_to_id()
                    .context("resolving the status branch")?
                    .detach(),
            ),
            None => None,
        })
    }

    /// Fetches the branch's full (bounded) history into the local ref; None if it does not exist.
    fn fetch_branch(&self, repo: &gix::Repository) -> Result<Option<ObjectId>> {
        let spec = format!("+{0}:{0}", self.local_ref());
        let fetched = remote::fetch(repo, &self.endpoint, &[spec], None)?;
        let on_server = fetched
            .remote_refs
            .iter()
            .find(|(name, _)| *name == self.local_ref())
            .map(|(_, id)| *id);
        if on_server.is_none() {
            if let Some(r) = repo.try_find_reference(self.local_ref().as_str())? {
                r.delete().context("forgetting the deleted status branch")?;
            }
        }
        Ok(on_server)
    }

    /// `git push --force-with-lease=<ref>:<expected>`: replaces the branch only if it still is
    /// what we last saw (absent when `expected` is None).
    fn git_push(&self, commit: ObjectId, expected: Option<ObjectId>) -> Result<PushResult> {
        let dst = self.local_ref();
        let mut cmd = git_command(&self.dir, &self.endpoint)?;
        cmd.arg("push")
            .arg("--porcelain")
            .arg("--no-verify")
            .arg(format!(
                "--force-with-lease={dst}:{}",
                expected.map(|e| e.to_string()).unwrap_or_default()
            ))
            .args(super::git_cli::push_args(&self.endpoint))
            .arg(format!("{commit}:{dst}"));
        let out = command::run(&mut cmd, self.timeout)
            .with_context(|| format!("pushing {} to {}", self.branch, self.endpoint.redacted()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            return Ok(PushResult::Pushed);
        }
        if let Some(why) = moved(&stdout) {
            return Ok(PushResult::Moved(why));
        }
        let refused = stdout
            .lines()
            .find(|l| l.starts_with('!'))
            .map(|l| format!(": {}", l.split('\t').next_back().unwrap_or(l)))
            .unwrap_or_default();
        bail!(
            "pushing {} to {} failed{refused}{}",
            self.branch,
            self.endpoint.redacted(),
            command::tail(&out.stderr)
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::{Kind, ResourceReport};

    fn report(outcome: Outcome, message: &str, states: &[ResourceState]) -> Report {
        Report {
            host: "web-01".into(),
            agent_version: "0.1.0".into(),
            outcome,
            desired_commit: "9d0e1f2".to_string() + &"a".repeat(33),
            applied_commit: "3f2a9c1".to_string() + &"b".repeat(33),
            last_good_commit: String::new(),
            applied_at: String::new(),
            waiting: String::new(),
            reboot_required: None,
            last_reboot: None,
            checked_at: "2026-11-26T10:00:00Z".into(),
            message: message.into(),
            reason: None,
            age_recipient: None,
            facts: None,
            upgrades: None,
            container_updates: vec![],
            resources: states
                .iter()
                .enumerate()
                .map(|(i, s)| ResourceReport {
                    kind: Kind::File,
                    name: format!("/etc/f{i}"),
                    state: *s,
                    detail: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn failed_pushes_back_off_up_to_ten_minutes() {
        let i = Duration::from_secs(60);
        assert_eq!(push_retry_after(i, 1), Duration::from_secs(51));
        assert_eq!(push_retry_after(i, 2), Duration::from_secs(102));
        assert_eq!(push_retry_after(i, 40), Duration::from_secs(510));
        let short = Duration::from_secs(1);
        assert!(push_retry_after(short, 3) < Duration::from_secs(4));
    }

    #[test]
    fn commit_messages() {
        use ResourceState::*;
        let cases = [
            (
                report(Outcome::Converged, "", &[Ok, Ok]),
                "web-01: converged at 3f2a9c1",
            ),
            (
                report(Outcome::Changed, "", &[Changed, Ok, Pruned]),
                "web-01: changed at 3f2a9c1, 2 changed",
            ),
            (
                report(
                    Outcome::Rejected,
                    "rejected 9d0e1f2: units/app.service: bad",
                    &[],
                ),
                "web-01: rejected 9d0e1f2: units/app.service: bad",
            ),
            (
                report(
                    Outcome::Failed,
                    "1 resource(s) failed",
                    &[Failed, DriftCorrected],
                ),
                "web-01: failed at 3f2a9c1, 1 drift-corrected, 1 failed: 1 resource(s) failed",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(commit_message(&r), want);
        }
        let long = report(Outcome::Rejected, &"x\n".repeat(200), &[]);
        let m = commit_message(&long);
        assert!(m.chars().count() <= 160 && !m.contains('\n'), "{m}");
    }

    #[test]
    fn when_a_push_is_due() {
        let hb = Duration::from_secs(3600);
        let r = report(Outcome::Converged, "", &[]);
        let pushed = PushMemo {
            repo: "git://h/s.git".into(),
            branch: "status/web-01".into(),
            pushed_unix: 1000,
            pushed_report: Some(r.clone()),
            ..Default::default()
        };
        let mut later = r.clone();
        later.checked_at = "2026-11-26T10:05:00Z".into();
        let mut changed = later.clone();
        changed.outcome = Outcome::Drifted;
        let failed = PushMemo {
            last_error: "refused".into(),
            ..pushed.clone()
        };
        let cases: [(&PushMemo, &Report, u64, Option<&str>); 6] = [
            (&PushMemo::default(), &r, 1000, Some("first report")),
            (&pushed, &later, 1300, None),
            (&pushed, &changed, 1300, Some("report changed")),
            (&pushed, &later, 1000 + 3600, Some("heartbeat")),
            (&failed, &later, 1300, Some("retrying after a failed push")),
            (&pushed, &later, 999, None),
        ];
        for (memo, rep, now, want) in cases {
            assert_eq!(
                due(memo, "git://h/s.git", "status/web-01", rep, now, hb),
                want
            );
        }
        assert_eq!(
            due(
                &pushed,
                "git://other/s.git",
                "status/web-01",
                &later,
                1300,
                hb
            ),
            Some("status repository or branch changed")
        );
    }
}
