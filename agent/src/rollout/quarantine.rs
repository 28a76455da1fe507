//! Quarantine (pure): a commit that a host rolled back after a failed check, or that more than
//! `max_failed` hosts report failed or rejected, is applied by no further host. Only the commit
//! itself is held: a newer commit (another id) is judged afresh, which is how a fix lifts it.

use super::gate::Peer;
use crate::reason::Reason;
use crate::status::report::Outcome;

/// A peer's report says it rolled `commit` back after its checks failed (or keeps it rolled back).
pub fn rolled_back(p: &Peer, commit: &str) -> bool {
    p.report.desired_commit == commit
        && p.report.applied_commit != commit
        && matches!(
            p.report.reason,
            Some(Reason::HealthCheckFailed | Reason::CheckFailed | Reason::BadCommit)
        )
}

/// A peer's report says `commit` failed or was rejected there (a fault that judged nothing,
/// like an unreachable server or a check that could not run, does not count).
pub fn failed_on(p: &Peer, commit: &str) -> bool {
    p.report.desired_commit == commit
        && matches!(p.report.outcome, Outcome::Failed | Outcome::Rejected)
        && !matches!(
            p.report.reason,
            Some(Reason::FetchFailed | Reason::CheckFault) | None
        )
}

/// Why `commit` is quarantined, if it is: "quarantined: rolled back on canary-1 (health-check-failed)".
/// Only trusted reports count (a forged "rolled back" must not freeze the fleet).
pub fn check(peers: &[Peer], commit: &str, max_failed: u32) -> Option<String> {
    let short = commit.get(..7).unwrap_or(commit);
    let trusted = || peers.iter().filter(|p| p.trusted);
    if let Some(p) = trusted().find(|p| rolled_back(p, commit)) {
        return Some(format!(
            "quarantined: {short} was rolled back on {} ({}); push a fix (a newer commit)",
            p.host,
            p.report.reason.map(|r| r.as_str()).unwrap_or("-")
        ));
    }
    let failed: Vec<&str> = trusted()
        .filter(|p| failed_on(p, commit))
        .map(|p| p.host.as_str())
        .collect();
    (failed.len() > max_failed as usize).then(|| {
        format!(
            "quarantined: {short} failed or was rejected on {} host(s) ({}), more than max_failed = {max_failed}; push a fix (a newer commit)",
            failed.len(),
            failed.join(", ")
        )
    })
}
