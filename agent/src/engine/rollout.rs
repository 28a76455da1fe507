//! The rollout phase, between verify/load and converge: may the host move to the new commit now
//! (DESIGN section 11)? The fleet.toml of the new commit decides (signed like the rest of it, and
//! the only way a change of the rollout settings can take effect). While the host waits it keeps
//! enforcing the commit it has.

use super::admit::Refusal;
use super::{short, Agent, PassOptions};
use crate::reason::Reason;
use crate::rollout::{self, gate, lock, Policy};
use crate::state::State;
use crate::status::remote::Endpoint;
use crate::status::report::Outcome;
use gix::ObjectId;

/// The disruption slot this host holds, in state_dir until released.
const SLOT_FILE: &str = "rollout-slot.json";
/// fleet.toml is read with the same bound as the spec loader's.
const MAX_FLEET_TOML: u64 = 1 << 20;
/// How far back a peer's commit is walked to see whether it descends from the new one.
const DESCENDS_WALK: usize = 1000;

/// What the gate said about the new commit.
pub(super) enum Verdict {
    Move,
    Wait(String),
}

impl Agent {
    fn status_endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.settings.status.repo.clone(),
            ssh_key: self.settings.ssh_key.clone(),
            token_file: self.settings.token_file.clone(),
            known_hosts: Some(self.state_dir.path().join("known_hosts")),
        }
    }

    /// Where the disruption slots live: the status repository (with a repository per host, the
    /// one named `locks`).
    fn locks_endpoint(&self) -> Endpoint {
        let t = &self.settings.status.repo_template;
        Endpoint {
            url: t.replace("{host}", "locks"),
            ..self.status_endpoint()
        }
    }

    /// The rollout gate for a move from the applied commit to `target`. `Err`: the commit's
    /// rollout settings are unusable (rejected like any bad commit).
    pub(super) fn rollout_gate(
        &self,
        target: ObjectId,
        state: &State,
        opts: PassOptions,
    ) -> std::result::Result<Verdict, Refusal> {
        let hex = target.to_string();
        if opts.ignore_rollout || state.applied_commit.as_deref() == Some(hex.as_str()) {
            return Ok(Verdict::Move);
        }
        let rejected = |why: String| Refusal {
            outcome: Outcome::Rejected,
            reason: Reason::InvalidSpec,
            message: format!("rejected {}: {why}", short(&target)),
        };
        let policy = self.policy(target).map_err(rejected)?;
        if policy.is_empty() {
            return Ok(Verdict::Move);
        }
        let repo = match self.repo.open(None) {
            Ok(r) => r,
            Err(e) => return Ok(Verdict::Wait(format!("cannot read the fleet clone: {e:#}"))),
        };
        let dirs = rollout::read::host_dirs(&repo, target).unwrap_or_default();
        let pinned = rollout::trust::pinned_keys(&repo, target, &dirs)
            .map_err(|e| rejected(format!("{e:#}")))?;
        let ep = self.status_endpoint();
        let fleet = rollout::read::open(self.state_dir.path(), &ep).and_then(|r| {
            rollout::read::read(
                &r,
                &ep,
                &self.settings.status.repo_template,
                &self.settings.host,
                &dirs,
                &pinned,
            )
        });
        rollout::read::gc(self.state_dir.path(), &ep);
        let fleet = match fleet {
            Ok(f) => f,
            Err(e) => {
                return Ok(Verdict::Wait(format!(
                    "cannot read the status of the other hosts: {e:#}"
                )))
            }
        };
        let mut known: Vec<String> = dirs;
        known.extend(fleet.reporting.iter().cloned());
        known.push(self.settings.host.clone());
        known.sort();
        known.dedup();
        let unmatched = policy.unmatched_patterns(&known);
        if !unmatched.is_empty() {
            return Err(rejected(format!(
                "fleet.toml: [rollout] waves: {} match no host (neither a host directory nor a status branch): fix the pattern",
                unmatched.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
            )));
        }
        for u in &fleet.untrusted {
            tracing::warn!("status not counted: {u}");
        }
        let now = crate::judged::now_secs() as i64;
        // Most peers share a few commits: each is walked once.
        let seen = std::cell::RefCell::new(std::collections::HashMap::new());
        let descends = |a: &str, b: &str| {
            *seen
                .borrow_mut()
                .entry((a.to_string(), b.to_string()))
                .or_insert_with(|| rollout::read::descends(&repo, a, b, DESCENDS_WALK))
        };
        let decision = gate::decide(&gate::Input {
            policy: &policy,
            me: &self.settings.host,
            target: &hex,
            peers: &fleet.peers,
            known: &known,
            now,
            utc_offset: rollout::window::local_offset(now),
            descends: &descends,
            // As `plumb fleet` judges staleness: two heartbeats without a report.
            stale_after: 2 * self.settings.status.heartbeat.as_secs() as i64,
        });
        if let gate::Decision::Wait(why) = decision {
            return Ok(Verdict::Wait(why));
        }
        let Some((share, ttl)) = policy.disruption else {
            return Ok(Verdict::Move);
        };
        if opts.dry_run {
            return Ok(Verdict::Move);
        }
        let count = share.of(known.len()).max(1) as u32;
        match self.take_slot(count, &hex, now, ttl) {
            Ok(Ok(())) => Ok(Verdict::Move),
            Ok(Err(why)) => Ok(Verdict::Wait(why)),
            Err(e) => Ok(Verdict::Wait(format!(
                "cannot take a disruption slot: {e:#}"
            ))),
        }
    }

    /// The checked rollout settings of `commit`'s fleet.toml.
    pub(super) fn policy(&self, commit: ObjectId) -> std::result::Result<Policy, String> {
        use crate::spec::fleet::{FleetToml, FLEET_TOML};
        use crate::spec::tree::FleetTree;
        let tree = self.repo.tree(commit).map_err(|e| format!("{e:#}"))?;
        let text = match tree.read(FLEET_TOML, MAX_FLEET_TOML) {
            Ok(Some(d)) => {
                String::from_utf8(d).map_err(|_| format!("{FLEET_TOML} is not UTF-8"))?
            }
            Ok(None) => return Ok(Policy::default()),
            Err(e) => return Err(format!("{e:#}")),
        };
        let f = FleetToml::parse(&text)?;
        Policy::of(&f).map_err(|e| format!("{FLEET_TOML}: {e}"))
    }

    fn slots<'a>(&self, repo: &'a gix::Repository) -> lock::Slots<'a> {
        lock::Slots {
            repo,
            dir: self.state_dir.path().join("rollout.git"),
            endpoint: self.locks_endpoint(),
        }
    }

    pub(super) fn take_slot(
        &self,
        count: u32,
        commit: &str,
        now: i64,
        ttl: std::time::Duration,
    ) -> anyhow::Result<std::result::Result<(), String>> {
        let ep = self.locks_endpoint();
        let repo = rollout::read::open(self.state_dir.path(), &ep)?;
        match self
            .slots(&repo)
            .take(count, &self.settings.host, commit, now, ttl)?
        {
            Ok(held) => {
                tracing::info!(slot = held.n, "took disruption slot {}", held.n);
                self.state_dir
                    .write_doc(SLOT_FILE, &serde_json::to_string(&held)?)?;
                Ok(Ok(()))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// Gives the disruption slot back once the commit is judged (health checks passed, or the
    /// rollback finished). A failed release is retried on the next pass; the slot expires anyway.
    pub(super) fn release_slot(&self, state: &State) {
        if state.unjudged_commit.is_some() || self.maintenance_holds_slot() {
            return;
        }
        self.give_back_slot();
    }

    /// Releases the slot this host holds, if any (a failed release is retried by the next pass).
    pub(super) fn give_back_slot(&self) {
        let Ok(Some(text)) = self.state_dir.read_doc(SLOT_FILE) else {
            return;
        };
        let result = serde_json::from_str::<lock::Held>(&text)
            .map_err(anyhow::Error::from)
            .and_then(|held| {
                let ep = self.locks_endpoint();
                let repo = rollout::read::open(self.state_dir.path(), &ep)?;
                self.slots(&repo).release(&held)?;
                tracing::info!(slot = held.n, "released disruption slot {}", held.n);
                Ok(())
            });
        match result {
            Ok(()) => {
                let _ = std::fs::remove_file(self.state_dir.path().join(SLOT_FILE));
            }
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "could not release the disruption slot, the next pass tries again: {e:#}"
            ),
        }
    }
}
