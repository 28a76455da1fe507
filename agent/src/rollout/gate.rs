//! The gate (pure): may this host move to a new commit now? From the checked fleet.toml, the
//! other hosts' reports and the time; no I/O, no clock of its own.

use super::{quarantine, window, Policy};
use crate::status::report::{Outcome, Report};
use std::time::Duration;

/// Another host's last report, as read from its status branch.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The host the branch belongs to (`status/<host>`), not what the report claims.
    pub host: String,
    pub report: Report,
    /// Counts for gates and quarantine: signed by the host's pinned key, or no keys are pinned.
    pub trusted: bool,
}

/// What the gate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Move,
    /// Why not yet, with numbers: goes into `waiting` of status.toml.
    Wait(String),
}

/// Everything the gate looks at.
pub struct Input<'a> {
    pub policy: &'a Policy,
    pub me: &'a str,
    /// The new commit (full hex).
    pub target: &'a str,
    /// Every other host that reported (this host left out).
    pub peers: &'a [Peer],
    /// The hosts the fleet knows: host directories and the hosts of the status branches.
    pub known: &'a [String],
    /// Seconds since the epoch, and the host's UTC offset for local windows.
    pub now: i64,
    pub utc_offset: i64,
    /// Whether commit `a` descends from commit `b` (both full hex): a host on a newer commit
    /// counts as having passed `b`.
    pub descends: &'a dyn Fn(&str, &str) -> bool,
    /// A report older than this (seconds since its `checked_at`) no longer counts as healthy:
    /// a host that died after reporting says nothing about the commit since.
    pub stale_after: i64,
}

/// Quarantine, then the wave gate (success and soak), then the window.
pub fn decide(i: &Input) -> Decision {
    let p = i.policy;
    if let Some(why) = quarantine::check(i.peers, i.target, p.max_failed) {
        return Decision::Wait(why);
    }
    if let Some(why) = wave_gate(i) {
        return Decision::Wait(why);
    }
    if let Err(why) = window::check(&p.windows, i.me, i.now, i.utc_offset) {
        return Decision::Wait(why);
    }
    Decision::Move
}

/// The hosts of wave `k` among `known`.
pub fn wave_hosts<'a>(p: &Policy, known: &'a [String], k: usize) -> Vec<&'a str> {
    known
        .iter()
        .filter(|h| p.wave_of(h) == Some(k))
        .map(String::as_str)
        .collect()
}

/// A peer that reports `target` (or a descendant) applied and healthy: when it applied it.
pub fn on_commit(i: &Input, peer: &Peer) -> Option<i64> {
    let r = &peer.report;
    let on = !r.applied_commit.is_empty()
        && (r.applied_commit == i.target || (i.descends)(&r.applied_commit, i.target));
    let healthy = matches!(r.outcome, Outcome::Converged | Outcome::Changed);
    if !(peer.trusted && on && healthy) || is_stale(i, peer) {
        return None;
    }
    // Without applied_at (an older agent) the report's time is the best lower bound.
    let at = if r.applied_at.is_empty() {
        &r.checked_at
    } else {
        &r.applied_at
    };
    parse_time(at)
}

/// Whether the peer's last report is too old to vouch for anything now.
pub fn is_stale(i: &Input, peer: &Peer) -> bool {
    parse_time(&peer.report.checked_at).is_none_or(|t| i.now - t > i.stale_after)
}

pub fn parse_time(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

pub fn format_time(t: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
        .to_string()
}

/// Why the previous wave does not let this host on yet, if it does not.
fn wave_gate(i: &Input) -> Option<String> {
    let p = i.policy;
    let mine = p.wave_of(i.me)?;
    // The nearest earlier wave with hosts: an empty wave is no gate, and none is skipped.
    let (prev, hosts) = (0..mine)
        .rev()
        .map(|k| (k, wave_hosts(p, i.known, k)))
        .find(|(_, h)| !h.is_empty())?;
    let need = p
        .success
        .unwrap_or(super::Share::Percent(100))
        .of(hosts.len());
    let by_host: std::collections::HashMap<&str, &Peer> =
        i.peers.iter().map(|p| (p.host.as_str(), p)).collect();
    let mut times: Vec<i64> = hosts
        .iter()
        .filter_map(|h| by_host.get(h).copied())
        .filter_map(|peer| on_commit(i, peer))
        .collect();
    times.sort_unstable();
    let stale = hosts
        .iter()
        .filter_map(|h| by_host.get(h).copied())
        .filter(|peer| is_stale(i, peer))
        .count();
    let short = i.target.get(..7).unwrap_or(i.target);
    let mut head = format!(
        "wave {} waits for wave {}: {}/{} hosts on {short} (needs {need})",
        mine + 1,
        prev + 1,
        times.len(),
        hosts.len()
    );
    if stale > 0 {
        head.push_str(&format!(
            ", {stale} not reported for over {}",
            humantime::format_duration(Duration::from_secs(i.stale_after.max(0) as u64))
        ));
    }
    if times.len() < need {
        return Some(head);
    }
    if need == 0 {
        return None;
    }
    // The need-th earliest has to have held it for `soak`.
    let soaked_at = times[need - 1] + p.soak.as_secs() as i64;
    // The end, not the time left: the text (and so the report) stays the same from pass to
    // pass, and is not pushed again on every one.
    (i.now < soaked_at).then(|| {
        format!(
            "{head}, soak of {} until {}",
            humantime::format_duration(p.soak),
            format_time(soaked_at)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;
    use crate::spec::fleet::FleetToml;

    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const OLD: &str = "0000000000000000000000000000000000000000";
    const NEWER: &str = "dddddddddddddddddddddddddddddddddddddddd";
    const T0: i64 = 1_800_000_000;

    fn policy(text: &str) -> Policy {
        Policy::of(&FleetToml::parse(text).unwrap()).unwrap()
    }

    fn peer(host: &str, outcome: Outcome, applied: &str, applied_at: i64) -> Peer {
        Peer {
            host: host.into(),
            trusted: true,
            report: Report {
                host: host.into(),
                agent_version: "0".into(),
                outcome,
                desired_commit: C.into(),
                applied_commit: applied.into(),
                last_good_commit: applied.into(),
                applied_at: format_time(applied_at),
                waiting: String::new(),
                reboot_required: None,
                last_reboot: None,
                checked_at: format_time(applied_at),
                message: String::new(),
                reason: None,
                facts: None,
                upgrades: None,
                age_recipient: None,
                resources: vec![],
                container_updates: vec![],
            },
        }
    }

    fn decide_at(p: &Policy, me: &str, peers: &[Peer], known: &[&str], now: i64) -> Decision {
        let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
        let descends = |a: &str, b: &str| a == NEWER && b == C;
        decide(&Input {
            policy: p,
            me,
            target: C,
            peers,
            known: &known,
            now,
            utc_offset: 0,
            descends: &descends,
            stale_after: 86_400,
        })
    }

    #[test]
    fn waves_success_and_soak() {
        let p = policy(
            "[rollout]\nwaves = [[\"canary-*\"], [\"store-*\"], [\"*\"]]\nsoak = \"10m\"\nsuccess = \"50%\"\n",
        );
        let known = ["canary-1", "store-1", "store-2", "store-3", "web-1"];
        use Outcome::*;
        let canary_on = [peer("canary-1", Converged, C, T0)];
        let w = |s: &str| Decision::Wait(s.to_string());
        let cases: Vec<(&str, Vec<Peer>, i64, Decision)> = vec![
            // Wave 0 moves at once.
            ("canary-1", vec![], T0, Decision::Move),
            // Wave 1 waits for the canary, then for its soak.
            (
                "store-1",
                vec![peer("canary-1", Converged, OLD, T0)],
                T0,
                w("wave 2 waits for wave 1: 0/1 hosts on ccccccc (needs 1)"),
            ),
            (
                "store-1",
                canary_on.to_vec(),
                T0 + 60,
                w("wave 2 waits for wave 1: 1/1 hosts on ccccccc (needs 1), soak of 10m until 2027-01-15T08:10:00Z"),
            ),
            ("store-1", canary_on.to_vec(), T0 + 600, Decision::Move),
            // A failed canary lets nobody on (and is no quarantine either: max_failed 0 counts
            // only failures on this commit, and this one failed on another).
            (
                "store-1",
                vec![peer("canary-1", Failed, C, T0)],
                T0 + 3600,
                w("wave 2 waits for wave 1: 0/1 hosts on ccccccc (needs 1)"),
            ),
            // A descendant counts.
            ("store-1", vec![peer("canary-1", Changed, NEWER, T0)], T0 + 600, Decision::Move),
            // 50% of 3 stores is 2.
            (
                "web-1",
                vec![peer("store-1", Converged, C, T0), peer("store-2", Converged, OLD, T0)],
                T0 + 600,
                w("wave 3 waits for wave 2: 1/3 hosts on ccccccc (needs 2)"),
            ),
            (
                "web-1",
                vec![peer("store-1", Converged, C, T0), peer("store-3", Changed, C, T0 + 300)],
                T0 + 700,
                w("wave 3 waits for wave 2: 2/3 hosts on ccccccc (needs 2), soak of 10m until 2027-01-15T08:15:00Z"),
            ),
            (
                "web-1",
                vec![peer("store-1", Converged, C, T0), peer("store-3", Changed, C, T0 + 300)],
                T0 + 900,
                Decision::Move,
            ),
            // A canary that reported healthy but not for over a day (it died) vouches for
            // nothing now.
            (
                "store-1",
                canary_on.to_vec(),
                T0 + 86_401,
                w("wave 2 waits for wave 1: 0/1 hosts on ccccccc (needs 1), 1 not reported for over 1day"),
            ),
            // The canary alone is no wave 2: web-1 never skips the stores.
            ("web-1", canary_on.to_vec(), T0 + 9000, w("wave 3 waits for wave 2: 0/3 hosts on ccccccc (needs 2)")),
        ];
        for (me, peers, now, want) in cases {
            assert_eq!(
                decide_at(&p, me, &peers, &known, now),
                want,
                "{me} at {now}"
            );
        }
        // An empty wave is passed over to the one before it.
        let known2 = ["canary-1", "web-1"];
        assert_eq!(
            decide_at(&p, "web-1", &canary_on, &known2, T0 + 600),
            Decision::Move
        );
        // Untrusted reports never open a gate.
        let mut forged = canary_on.to_vec();
        forged[0].trusted = false;
        assert!(matches!(
            decide_at(&p, "store-1", &forged, &known, T0 + 600),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn quarantine() {
        let p = policy("[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\nmax_failed = 1\n");
        let known = ["canary-1", "canary-2", "web-1", "web-2"];
        let mut rolled = peer("canary-1", Outcome::Failed, OLD, T0);
        rolled.report.reason = Some(Reason::HealthCheckFailed);
        // Even another canary (wave 0) does not apply a commit a canary rolled back.
        let d = decide_at(&p, "canary-2", &[rolled.clone()], &known, T0);
        assert_eq!(
            d,
            Decision::Wait(
                "quarantined: ccccccc was rolled back on canary-1 (health-check-failed); push a fix (a newer commit)".into()
            )
        );
        // A forged rollback does not freeze anyone.
        let mut forged = rolled.clone();
        forged.trusted = false;
        assert_eq!(
            decide_at(&p, "canary-2", &[forged], &known, T0),
            Decision::Move
        );
        // A newer commit is not quarantined by the old one's rollback.
        let mut old_news = rolled.clone();
        old_news.report.desired_commit = OLD.into();
        assert_eq!(
            decide_at(&p, "canary-2", &[old_news], &known, T0),
            Decision::Move
        );
        // Failures: more than max_failed = 1.
        let mut f1 = peer("web-1", Outcome::Rejected, OLD, T0);
        f1.report.reason = Some(Reason::InvalidUnit);
        let mut f2 = peer("web-2", Outcome::Failed, C, T0);
        f2.report.reason = Some(Reason::ApplyFailed);
        let mut fault = peer("canary-1", Outcome::Failed, OLD, T0);
        fault.report.reason = Some(Reason::FetchFailed);
        assert_eq!(
            decide_at(&p, "canary-2", &[f1.clone(), fault.clone()], &known, T0),
            Decision::Move
        );
        let d = decide_at(&p, "canary-2", &[f1, f2, fault], &known, T0);
        assert_eq!(
            d,
            Decision::Wait("quarantined: ccccccc failed or was rejected on 2 host(s) (web-1, web-2), more than max_failed = 1; push a fix (a newer commit)".into())
        );
    }

    #[test]
    fn windows_after_waves() {
        let p =
            policy("[[windows]]\nhosts = [\"store-*\"]\nstart = \"02:00\"\nduration = \"1h\"\n");
        // 2027-01-15T08:00:00Z is outside 02:00-03:00.
        assert_eq!(
            decide_at(&p, "store-1", &[], &["store-1"], T0),
            Decision::Wait("window opens sat 02:00 UTC".into())
        );
        assert_eq!(decide_at(&p, "web-1", &[], &["web-1"], T0), Decision::Move);
        assert_eq!(
            decide_at(&p, "store-1", &[], &["store-1"], T0 - 6 * 3600 + 600),
            Decision::Move
        );
    }
}
