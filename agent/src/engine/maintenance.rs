//! Maintenance: disruptive work that is not a move to a new commit — package upgrades, reboots,
//! container image updates (DESIGN section 13). It runs after the pass has converged on a judged
//! commit, only inside the host's window (the `[[windows]]` of the applied commit's fleet.toml;
//! no matching window: any time) and, when `[disruption]` is set, while this host holds one of
//! the disruption slots that commit moves take too, so upgrades, reboots and rollouts share one
//! fleet-wide budget.

#![allow(dead_code)] // the tasks of issue 17 (upgrades, reboots, container updates) land on this

use super::{Agent, Converged, Draft};
use crate::host::Host;
use crate::rollout;
use crate::spec::Desired;
use crate::state::State;
use crate::status::report::Outcome;
use anyhow::Result;
use gix::ObjectId;

/// In state_dir while maintenance keeps the disruption slot past the end of a pass (a reboot:
/// released by the first pass after boot whose health checks pass). Its text says what for.
pub(super) const HOLD_FILE: &str = "maintenance-hold";

/// May the host disrupt itself now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Permit {
    /// In the window, holding a slot (or no `[disruption]`): go, then `release` when done.
    Go,
    /// Why not now, in the words of status.toml ("window opens mon 02:00 UTC").
    Wait(String),
}

impl Agent {
    /// The maintenance of one pass: each task asks `maintenance_permit` before it disrupts.
    /// Not after a pass that failed (a health check rolled back): the host is not in a state
    /// to disrupt, and a hold across a reboot stays as it is.
    pub(super) fn maintenance_phase(
        &self,
        host: &Host,
        applied: ObjectId,
        desired: &Desired,
        _state: &mut State,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        // Not after a rollback or a refused commit: `applied` is then not a commit judged good.
        if matches!(draft.report.outcome, Outcome::Failed | Outcome::Rejected) {
            return Ok(());
        }
        self.upgrade_phase(host, applied, desired, run, draft)?;
        self.container_updates(host, applied, desired, run, draft)?;
        // Last: upgrades before it may be what makes a reboot required.
        if !matches!(draft.report.outcome, Outcome::Failed | Outcome::Rejected) {
            self.reboot_task(host, applied, desired, draft)?;
        }
        self.release_maintenance();
        Ok(())
    }

    /// Whether this host may do disruptive work now, by the rules of `commit`'s fleet.toml: its
    /// window is open (or none matches it) and, with `[disruption]`, it holds a slot (taken
    /// here; the one it already holds counts). `dry_run` takes no slot.
    pub(super) fn maintenance_permit(&self, commit: ObjectId, dry_run: bool) -> Permit {
        let policy = match self.policy(commit) {
            Ok(p) => p,
            Err(e) => return Permit::Wait(format!("fleet.toml cannot be read: {e}")),
        };
        let now = crate::judged::now_secs() as i64;
        let offset = rollout::window::local_offset(now);
        if let Err(why) = rollout::window::check(&policy.windows, &self.settings.host, now, offset)
        {
            return Permit::Wait(why);
        }
        let Some((share, ttl)) = policy.disruption else {
            return Permit::Go;
        };
        if dry_run {
            return Permit::Go;
        }
        let hosts = self
            .repo
            .open(None)
            .ok()
            .and_then(|r| rollout::read::host_dirs(&r, commit).ok())
            .map_or(1, |d| d.len().max(1));
        let count = share.of(hosts).max(1) as u32;
        match self.take_slot(count, &commit.to_string(), now, ttl) {
            Ok(Ok(())) => Permit::Go,
            Ok(Err(why)) => Permit::Wait(why),
            Err(e) => Permit::Wait(format!("cannot take a disruption slot: {e:#}")),
        }
    }

    /// Keeps the slot past this pass (until `unhold`): `why` is kept for the next pass to read.
    pub(super) fn hold_slot(&self, why: &str) -> Result<()> {
        self.state_dir.write_doc(HOLD_FILE, why)
    }

    /// What the slot is held for past a pass, if it is.
    pub(super) fn held_for(&self) -> Option<String> {
        self.state_dir.read_doc(HOLD_FILE).ok().flatten()
    }

    /// Ends a hold and gives the slot back.
    pub(super) fn unhold(&self) {
        let _ = std::fs::remove_file(self.state_dir.path().join(HOLD_FILE));
        self.give_back_slot();
    }

    /// Whether maintenance keeps the slot past the end of the pass.
    pub(super) fn maintenance_holds_slot(&self) -> bool {
        self.state_dir.path().join(HOLD_FILE).exists()
    }

    /// Gives the slot back after maintenance that finished within the pass.
    pub(super) fn release_maintenance(&self) {
        if !self.maintenance_holds_slot() {
            self.give_back_slot();
        }
    }
}
