//! `plumb fleet`'s rollout part (pure): per recent commit, how far each wave got, and which
//! commits are quarantined.

use super::gate::Peer;
use super::{quarantine, Policy};
use crate::spec::fleet::glob_match;
use crate::status::report::Outcome;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveProgress {
    /// 1-based, as in `waiting` messages; the hosts after the last wave are `waves + 1`.
    pub wave: usize,
    pub patterns: Vec<String>,
    pub hosts: usize,
    /// Report the commit (or a newer one) applied.
    pub applied: usize,
    /// Of those, converged or changed.
    pub healthy: usize,
    /// Failed or rejected it.
    pub failed: usize,
    /// Want it and wait (gate, window, slot, quarantine).
    pub waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitProgress {
    pub commit: String,
    /// "quarantined: ..." when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    pub waves: Vec<WaveProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// "signed" (pinned host keys: only signed status counts) or "server" (the status server's
    /// access control is what protects the status branches).
    pub trust: &'static str,
    /// Status branches that do not count: unsigned, forged, or signed by another key.
    pub untrusted: Vec<String>,
    pub commits: Vec<CommitProgress>,
}

impl Rollout {
    /// The wave of `host` (1-based as in `waiting`; one past the last for a host no wave
    /// names), from the waves' patterns.
    pub fn wave_of(&self, host: &str) -> Option<usize> {
        let waves = &self.commits.first()?.waves;
        let k = waves
            .iter()
            .position(|w| w.patterns.iter().any(|p| glob_match(p, host)))
            .unwrap_or(waves.iter().filter(|w| !w.patterns.is_empty()).count());
        Some(k + 1)
    }
}

/// Progress of every commit some host wants (`desired_commit`), newest (most wanted) first.
pub fn progress(policy: &Policy, peers: &[Peer], pinned: bool, head: Option<&str>) -> Rollout {
    let mut commits: Vec<String> = Vec::new();
    for c in head
        .into_iter()
        .map(str::to_string)
        .chain(peers.iter().map(|p| p.report.desired_commit.clone()))
    {
        if !c.is_empty() && !commits.contains(&c) {
            commits.push(c);
        }
    }
    let waves = policy.waves.len().max(1);
    let commits = commits
        .into_iter()
        .take(5)
        .map(|c| {
            let mut rows: Vec<WaveProgress> = (0..=waves)
                .map(|k| WaveProgress {
                    wave: k + 1,
                    patterns: policy.waves.get(k).cloned().unwrap_or_default(),
                    hosts: 0,
                    applied: 0,
                    healthy: 0,
                    failed: 0,
                    waiting: 0,
                })
                .collect();
            for p in peers.iter().filter(|p| p.trusted) {
                let k = policy.wave_of(&p.host).unwrap_or(0);
                let row = &mut rows[k.min(waves)];
                let r = &p.report;
                row.hosts += 1;
                if r.applied_commit == c {
                    row.applied += 1;
                    if matches!(r.outcome, Outcome::Converged | Outcome::Changed) {
                        row.healthy += 1;
                    }
                }
                if quarantine::failed_on(p, &c) || quarantine::rolled_back(p, &c) {
                    row.failed += 1;
                } else if r.desired_commit == c && !r.waiting.is_empty() {
                    row.waiting += 1;
                }
            }
            // The row after the last wave only when hosts fall there.
            if rows.last().is_some_and(|r| r.hosts == 0) {
                rows.pop();
            }
            CommitProgress {
                quarantined: quarantine::check(peers, &c, policy.max_failed),
                commit: c,
                waves: rows,
            }
        })
        .collect();
    Rollout {
        trust: if pinned { "signed" } else { "server" },
        untrusted: peers
            .iter()
            .filter(|p| !p.trusted)
            .map(|p| p.host.clone())
            .collect(),

        commits,
    }
}

/// The text `plumb fleet` prints below its table.
pub fn text(r: &Rollout) -> String {
    let mut out = String::new();
    for c in &r.commits {
        out.push_str(&format!(
            "\nrollout of {}",
            c.commit.get(..7).unwrap_or(&c.commit)
        ));
        match &c.quarantined {
            Some(q) => out.push_str(&format!(": {q}\n")),
            None => out.push('\n'),
        }
        for w in &c.waves {
            let what = if w.patterns.is_empty() {
                "(other hosts)".to_string()
            } else {
                w.patterns.join(" ")
            };
            out.push_str(&format!(
                "  wave {} {what}: {}/{} applied, {} healthy, {} failed, {} waiting\n",
                w.wave, w.applied, w.hosts, w.healthy, w.failed, w.waiting
            ));
        }
    }
    out.push_str(&match r.trust {
        "signed" => "\nstatus trust: host keys pinned in the fleet repo; only status signed by them counts\n".to_string(),
        _ => "\nstatus trust: no host keys pinned; the status server's access control protects the status branches\n".to_string(),
    });
    if !r.untrusted.is_empty() {
        out.push_str(&format!(
            "untrusted status (unsigned or forged, not counted): {}\n",
            r.untrusted.join(", ")
        ));
    }
    out
}

/// Whether `host` is matched by any of `patterns`.
pub fn matches(patterns: &[String], host: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, host))
}

/// The rollout progress for `plumb fleet` from fleet.toml at `head` (in `repo`) and the status
/// branches `plumb fleet` read, (host, tip); `None` when fleet.toml has no rollout settings.
/// With host keys pinned, a report counts only when its commit is signed by its host's key.
pub fn of_fleet(
    repo: &gix::Repository,
    head: gix::ObjectId,
    tips: &[(&str, &crate::status::tipcache::Tip)],
) -> anyhow::Result<Option<Rollout>> {
    use anyhow::Context;
    let tree = repo.find_commit(head)?.tree()?;
    let Some(entry) = tree.lookup_entry_by_path(crate::spec::fleet::FLEET_TOML)? else {
        return Ok(None);
    };
    let blob = repo.find_blob(entry.object_id())?;
    let text = std::str::from_utf8(&blob.data).context("fleet.toml is not UTF-8")?;
    let fleet = crate::spec::fleet::FleetToml::parse(text).map_err(anyhow::Error::msg)?;
    let policy = Policy::of(&fleet).map_err(anyhow::Error::msg)?;
    if policy.waves.is_empty() {
        return Ok(None);
    }
    let dirs = super::read::host_dirs(repo, head)?;
    let pinned = super::trust::pinned_keys(repo, head, &dirs)?;
    let mut peers = Vec::new();
    let mut untrusted = Vec::new();
    for (host, tip) in tips {
        if crate::config::validate_host(host).is_err() {
            continue; // not a host's branch (status/a/b): no host of ours
        }
        let trusted = if pinned.is_empty() {
            Ok(())
        } else {
            match pinned.get(*host) {
                Some(key) => super::trust::verify_raw(tip.commit.as_bytes(), key),
                None => Err(format!("no key pinned for {host}")),
            }
        };
        if let Err(why) = &trusted {
            untrusted.push(format!("{host}: {why}"));
        }
        // A report that cannot be read counts as no report.
        if let Ok(report) = crate::status::report::Report::from_toml(&tip.status) {
            peers.push(Peer {
                host: host.to_string(),
                report,
                trusted: trusted.is_ok(),
            });
        }
    }
    let head = head.to_string();
    let mut r = progress(&policy, &peers, !pinned.is_empty(), Some(&head));
    r.untrusted = untrusted;
    Ok(Some(r))
}
