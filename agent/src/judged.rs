//! What the agent remembers about judging commits (part of state.json, next to
//! `State::bad_commits` and `State::unjudged_commit`): why each bad commit failed, and which
//! commits failed only because of something outside them (a unit stopped by hand during its check, a rollback target failing
//! too) and are tried again after a cool-down. Pure bookkeeping: the clock is passed in.

use crate::reason::Reason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a commit whose failure was not its own is tried again before it counts as bad.
pub const MAX_TRIES: u32 = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Judged {
    /// Why each commit in `State::bad_commits` failed: reported until a good commit lands.
    pub causes: BTreeMap<String, Cause>,
    /// Commits to try again once `not_before` (seconds since the epoch) has passed.
    pub retry: BTreeMap<String, Retry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub reason: Reason,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    pub not_before: u64,
    pub tries: u32,
    pub cause: Cause,
}

/// Why a commit is not applied now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// It failed its checks: applied again only after a newer commit or `--allow-rewind`.
    Bad(Option<Cause>),
    /// Its failure was not its own: tried again in `left`.
    CoolingDown { left: Duration, cause: Cause },
}

/// The wait before a commit is tried again: five intervals, between 10 s and 30 min.
pub fn cool_down(interval: Duration) -> Duration {
    interval
        .saturating_mul(5)
        .clamp(Duration::from_secs(10), Duration::from_secs(1800))
}

impl Judged {
    /// Whether `commit` is held back at `now`; `bad` is `State::bad_commits`.
    pub fn held(
        &self,
        commit: &str,
        bad: &std::collections::BTreeSet<String>,
        now: u64,
    ) -> Option<Held> {
        if bad.contains(commit) {
            return Some(Held::Bad(self.causes.get(commit).cloned()));
        }
        let r = self.retry.get(commit)?;
        (now < r.not_before).then(|| Held::CoolingDown {
            left: Duration::from_secs(r.not_before - now),
            cause: r.cause.clone(),
        })
    }

    /// `commit` failed because of itself: bad until a newer commit.
    pub fn mark_bad(
        &mut self,
        commit: &str,
        cause: Cause,
        bad: &mut std::collections::BTreeSet<String>,
    ) {
        self.retry.remove(commit);
        self.causes.insert(commit.to_string(), cause);
        bad.insert(commit.to_string());
    }

    /// `commit` failed, but not because of itself: tried again after the cool-down, at most
    /// `MAX_TRIES` times, then bad. Returns whether it will be tried again.
    pub fn mark_retry(
        &mut self,
        commit: &str,
        cause: Cause,
        now: u64,
        wait: Duration,
        bad: &mut std::collections::BTreeSet<String>,
    ) -> bool {
        let tries = self.retry.get(commit).map_or(0, |r| r.tries) + 1;
        if tries >= MAX_TRIES {
            self.mark_bad(commit, cause, bad);
            return false;
        }
        self.retry.insert(
            commit.to_string(),
            Retry {
                not_before: now.saturating_add(wait.as_secs()),
                tries,
                cause,
            },
        );
        true
    }

    /// Nothing to remember.
    pub fn is_empty(&self) -> bool {
        self.causes.is_empty() && self.retry.is_empty()
    }

    /// `commit` passed its checks. When it is not the last good commit already (a rollback
    /// target checked again), it supersedes every earlier verdict.
    pub fn good(
        &mut self,
        commit: &str,
        last_good: Option<&str>,
        bad: &mut std::collections::BTreeSet<String>,
    ) {
        if last_good != Some(commit) {
            bad.clear();
            self.causes.clear();
            self.retry.clear();
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn cause(m: &str) -> Cause {
        Cause {
            reason: Reason::HealthCheckFailed,
            message: m.into(),
        }
    }

    #[test]
    fn bad_commits_keep_their_cause_until_a_good_one() {
        let (mut j, mut bad) = (Judged::default(), BTreeSet::new());
        j.mark_bad("c2", cause("app.service is failed"), &mut bad);
        assert_eq!(
            j.held("c2", &bad, 0),
            Some(Held::Bad(Some(cause("app.service is failed"))))
        );
        assert_eq!(j.held("c3", &bad, 0), None);
        j.good("c1", Some("c1"), &mut bad);
        assert!(
            bad.contains("c2"),
            "the rollback target checked again clears nothing"
        );
        j.good("c3", Some("c1"), &mut bad);
        assert!(bad.is_empty() && j.causes.is_empty());
    }

    #[test]
    fn transient_failures_cool_down_then_count_as_bad() {
        let (mut j, mut bad) = (Judged::default(), BTreeSet::new());
        let wait = Duration::from_secs(10);
        assert!(j.mark_retry("c2", cause("stopped by hand"), 100, wait, &mut bad));
        assert_eq!(
            j.held("c2", &bad, 105),
            Some(Held::CoolingDown {
                left: Duration::from_secs(5),
                cause: cause("stopped by hand")
            })
        );
        assert_eq!(j.held("c2", &bad, 110), None, "tried again after the wait");
        assert!(j.mark_retry("c2", cause("again"), 110, wait, &mut bad));
        assert!(!j.mark_retry("c2", cause("third"), 120, wait, &mut bad));
        assert!(bad.contains("c2"), "bad after {MAX_TRIES} tries");
        assert!(matches!(j.held("c2", &bad, 10_000), Some(Held::Bad(_))));
    }

    #[test]
    fn cool_down_is_bounded() {
        assert_eq!(cool_down(Duration::from_secs(1)), Duration::from_secs(10));
        assert_eq!(cool_down(Duration::from_secs(60)), Duration::from_secs(300));
        assert_eq!(
            cool_down(Duration::from_secs(86400)),
            Duration::from_secs(1800)
        );
    }
}
