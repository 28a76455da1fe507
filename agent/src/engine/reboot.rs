//! Coordinated reboots (DESIGN section 13, `[reboot] when = "required"`).
//!
//! Every pass reports `reboot_required` (and `last_reboot`). When the OS says a reboot is
//! needed and host.toml allows it, the maintenance phase asks for the window and a disruption
//! slot, keeps the slot past the pass (`hold_slot`) and records the decision with this boot's
//! id in state_dir; the pass records and pushes its report, and only then asks systemd for the
//! reboot (`reboot_if_due`). The first pass of the next boot sees the record with another boot
//! id, runs the applied commit's health checks and, when they pass, gives the slot back and
//! reports `last_reboot`; when they fail it keeps the slot, so no further host reboots.
//!
//! Every step is one atomic write of `reboot.json` (or of the hold), in an order that a kill
//! between any two leaves something the next pass finishes or undoes:
//! hold -> decided (`pending`, not requested) -> requested -> (boot) -> done (`last`) -> unhold.

use super::{health_checks, Agent, Draft};
use crate::health::Verdict;
use crate::host::reboot::{self, Probe};
use crate::host::Host;
use crate::reason::Reason;
use crate::rollout;
use crate::spec::{Desired, RebootWhen};
use crate::status::report::{now_rfc3339, LastReboot, Outcome};
use anyhow::Result;
use gix::ObjectId;
use serde::{Deserialize, Serialize};

/// In state_dir: the reboot plumb decided on or asked for, and the last one it made.
const REBOOT_FILE: &str = "reboot.json";
/// What the maintenance hold says while it is held for a reboot.
const HOLD_WHAT: &str = "reboot";
/// A reboot asked for that has not happened after this long did not happen (seconds).
const GRACE: i64 = 600;
/// `plumb run` runs no pass for this long after asking for a reboot (the shutdown's SIGTERM
/// ends the wait; if none comes, the next pass reports the reboot that did not happen).
pub const REBOOT_QUIET: std::time::Duration = std::time::Duration::from_secs(GRACE as u64);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Record {
    /// Decided (and maybe asked for) in the boot `boot_id`; done once the next boot is healthy.
    pending: Option<Pending>,
    /// The last reboot plumb made, as reported.
    last: Option<LastReboot>,
    /// The window occurrence (`rollout::window::occurrence_start`) of the last reboot asked for, kept
    /// while the need lasts: a reboot that did not clear it is not repeated in that occurrence.
    tried: Option<i64>,
    /// When that reboot was asked for.
    tried_at: Option<String>,
    /// `needs-restarting -r`'s last answer and what it depends on (boot, rpm database).
    probe_cache: Option<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    boot_id: String,
    /// When it was decided (then asked for), RFC 3339 and seconds.
    at: String,
    at_secs: i64,
    why: String,
    occurrence: i64,
    /// systemd was asked (reboot.target queued).
    requested: bool,
    /// The request failed: why.
    error: Option<String>,
}

impl Agent {
    fn reboot_record(&self) -> Record {
        match self.state_dir.read_doc(REBOOT_FILE) {
            Ok(Some(t)) => serde_json::from_str(&t).unwrap_or_else(|e| {
                tracing::warn!("{REBOOT_FILE} in state_dir is unreadable ({e}); starting afresh");
                Record::default()
            }),
            _ => Record::default(),
        }
    }

    fn save_reboot_record(&self, rec: &Record) -> Result<()> {
        self.state_dir
            .write_doc(REBOOT_FILE, &serde_json::to_string(rec)?)
    }

    /// `reboot_required` and `last_reboot` of every pass's report, whatever `[reboot]` says.
    pub(super) fn reboot_report(&self, draft: &mut Draft) {
        let mut rec = self.reboot_record();
        draft.report.last_reboot = rec.last.clone();
        let host = match Host::open(&self.settings.root) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot tell whether a reboot is required: {e:#}");
                return;
            }
        };
        match self.reboot_need(&host, &mut rec) {
            Ok(need) => draft.report.reboot_required = Some(need.is_some()),
            Err(e) => tracing::warn!("cannot tell whether a reboot is required: {e:#}"),
        }
    }

    /// Why the OS wants a reboot, if it does. `needs-restarting` is asked again only when the
    /// boot or the rpm database changed.
    fn reboot_need(&self, host: &Host, rec: &mut Record) -> Result<Option<String>> {
        let root = host.fs.root();
        match reboot::probe(root) {
            Probe::RunFile => reboot::run_file(&host.fs),
            Probe::NeedsRestarting => {
                let key = format!("{} {}", reboot::boot_id(host)?, rpmdb_stamp());
                if let Some((k, need)) = &rec.probe_cache {
                    if *k == key {
                        return Ok(need.clone());
                    }
                }
                let need = reboot::needs_restarting()?;
                rec.probe_cache = Some((key, need.clone()));
                self.save_reboot_record(rec)?;
                Ok(need)
            }
        }
    }

    /// The reboot task of the maintenance phase, on the applied (judged) commit.
    pub(super) fn reboot_task(
        &self,
        host: &Host,
        applied: ObjectId,
        desired: &Desired,
        draft: &mut Draft,
    ) -> Result<()> {
        if !host.is_system_root() {
            return Ok(()); // another root (an image build): its reboots are not ours to make
        }
        let mut rec = self.reboot_record();
        let wanted = desired.reboot == RebootWhen::Required;
        if rec.pending.is_none() && !wanted && rec.tried.is_none() && !self.holds_for_reboot() {
            return Ok(()); // the common case: nothing to do, nothing to read
        }
        let boot = match reboot::boot_id(host) {
            Ok(b) => b,
            Err(e) => {
                if wanted || rec.pending.is_some() {
                    draft.notes.push(format!(
                        "not rebooting: cannot tell which boot this is: {e:#}"
                    ));
                }
                return Ok(());
            }
        };
        let now = crate::judged::now_secs() as i64;
        match (stage(rec.pending.as_ref(), &boot, now), rec.pending.clone()) {
            (Stage::Booted, Some(p)) => return self.after_reboot(host, desired, rec, p, draft),
            (Stage::Rebooting, Some(p)) => {
                wait(
                    draft,
                    format!("rebooting (asked for at {}): {}", p.at, p.why),
                );
                return Ok(());
            }
            (Stage::NotHappened, Some(p)) => return self.reboot_not_happened(rec, p, draft),
            (Stage::Decided, _) => {
                // Decided, never asked for (stopped in between): decided afresh below.
                rec.pending = None;
                self.save_reboot_record(&rec)?;
            }
            _ => {}
        }
        if self.holds_for_reboot() {
            self.unhold(); // a hold whose decision was never written
        }
        let need = match self.reboot_need(host, &mut rec) {
            Ok(n) => n,
            Err(e) => {
                draft.notes.push(format!(
                    "not rebooting: cannot tell whether a reboot is required: {e:#}"
                ));
                return Ok(());
            }
        };
        let Some(why) = need else {
            if rec.tried.take().is_some() {
                rec.tried_at = None;
                self.save_reboot_record(&rec)?; // the need cleared: the guard is over
            }
            return Ok(());
        };
        if !wanted {
            return Ok(());
        }
        let occurrence = self.window_occurrence(applied);
        if rec.tried == Some(occurrence) {
            let at = rec.tried_at.as_deref().unwrap_or("?");
            wait(
                draft,
                format!(
                    "reboot waits: the reboot plumb asked for at {at} did not clear the need ({why}); \
                     plumb reboots at most once per window (with no window: until the need clears)"
                ),
            );
            return Ok(());
        }
        match self.maintenance_permit(applied, false) {
            super::maintenance::Permit::Go => {}
            super::maintenance::Permit::Wait(w) => {
                wait(draft, format!("reboot waits: {w}"));
                return Ok(());
            }
        }
        self.hold_slot(HOLD_WHAT)?;
        let now = crate::judged::now_secs() as i64;
        rec.pending = Some(Pending {
            boot_id: boot,
            at: now_rfc3339(),
            at_secs: now,
            why: why.clone(),
            occurrence,
            requested: false,
            error: None,
        });
        self.save_reboot_record(&rec)?;
        draft
            .notes
            .push(format!("rebooting once this report is pushed: {why}"));
        Ok(())
    }

    /// After `record`: asks systemd for the reboot the pass decided on; whether it did (the
    /// host is shutting down). A SIGTERM before leaves the decision for the next pass to make
    /// again.
    pub(super) fn reboot_if_due(&self) -> bool {
        let mut rec = self.reboot_record();
        let Some(p) = rec.pending.as_mut() else {
            return false;
        };
        if p.requested || self.stopping() {
            return false;
        }
        let host = match Host::open(&self.settings.root) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("not rebooting: {e:#}");
                return false;
            }
        };
        if reboot::boot_id(&host).ok().as_deref() != Some(p.boot_id.as_str()) {
            return false;
        }
        p.requested = true;
        p.at = now_rfc3339();
        p.at_secs = crate::judged::now_secs() as i64;
        let why = p.why.clone();
        rec.tried = Some(p.occurrence);
        rec.tried_at = Some(p.at.clone());
        if let Err(e) = self.save_reboot_record(&rec) {
            tracing::warn!("not rebooting: {e:#}");
            return false;
        }
        tracing::info!(
            message_id = crate::logging::id::REBOOTING,
            "rebooting: {why}"
        );
        let Err(e) = reboot::request(&host) else {
            return true;
        };
        let e = format!("{e:#}");
        tracing::error!(error = %e, "the reboot could not be asked for: {e}");
        if let Some(p) = rec.pending.as_mut() {
            p.error = Some(e);
        }
        if let Err(e) = self.save_reboot_record(&rec) {
            tracing::warn!("{e:#}");
        }
        false
    }

    /// The first passes of the boot after plumb's reboot: the applied commit's health checks
    /// decide whether the slot is given back.
    fn after_reboot(
        &self,
        host: &Host,
        desired: &Desired,
        mut rec: Record,
        p: Pending,
        draft: &mut Draft,
    ) -> Result<()> {
        let checked = if desired.health.is_empty() {
            Ok(Verdict::Healthy)
        } else {
            health_checks(host, desired)
        };
        let failed = |draft: &mut Draft, reason: Reason, what: String| {
            draft.report.outcome = Outcome::Failed;
            draft.report.reason = Some(reason);
            draft.notes.insert(
                0,
                format!(
                    "after the reboot at {} ({}): {what}; the disruption slot is kept (no other host reboots until it expires), checked again on the next pass",
                    p.at, p.why
                ),
            );
        };
        match checked {
            Ok(Verdict::Healthy) => {
                let last = LastReboot {
                    at: p.at.clone(),
                    why: p.why.clone(),
                };
                rec.pending = None;
                rec.last = Some(last.clone());
                // The reboot cleared the need: the loop guard is over (a need that comes back
                // later, from new packages, gets its own reboot).
                if matches!(self.reboot_need(host, &mut rec), Ok(None)) {
                    rec.tried = None;
                    rec.tried_at = None;
                }
                self.save_reboot_record(&rec)?;
                self.unhold();
                tracing::info!(
                    message_id = crate::logging::id::REBOOTED,
                    "back from the reboot at {}: health checks passed, disruption slot released",
                    p.at
                );
                draft.report.last_reboot = Some(last);
            }
            Ok(Verdict::Unhealthy(f)) => failed(draft, Reason::RebootHealthFailed, f.to_string()),
            Err(fault) => failed(draft, Reason::CheckFault, fault.to_string()),
        }
        Ok(())
    }

    /// Still the boot that asked for a reboot: it is under way, or it did not happen.
    fn reboot_not_happened(&self, mut rec: Record, p: Pending, draft: &mut Draft) -> Result<()> {
        let age = crate::judged::now_secs() as i64 - p.at_secs;
        if p.error.is_none() && (0..GRACE).contains(&age) {
            wait(
                draft,
                format!("rebooting (asked for at {}): {}", p.at, p.why),
            );
            return Ok(());
        }
        rec.pending = None;
        self.save_reboot_record(&rec)?;
        self.unhold();
        let cause = p
            .error
            .unwrap_or_else(|| format!("the host is still up {}s later", GRACE));
        draft.report.outcome = Outcome::Failed;
        draft.report.reason = Some(Reason::RebootFailed);
        draft.notes.insert(
            0,
            format!(
                "the reboot asked for at {} ({}) did not happen: {cause}; the disruption slot was given back and plumb does not ask again in this window",
                p.at, p.why
            ),
        );
        Ok(())
    }

    fn holds_for_reboot(&self) -> bool {
        self.held_for().as_deref() == Some(HOLD_WHAT)
    }

    /// The key of the window occurrence open now for this host (0: no window).
    fn window_occurrence(&self, commit: ObjectId) -> i64 {
        let Ok(policy) = self.policy(commit) else {
            return 0;
        };
        let now = crate::judged::now_secs() as i64;
        let offset = rollout::window::local_offset(now);
        rollout::window::occurrence_start(&policy.windows, &self.settings.host, now, offset)
    }
}

/// Where a reboot plumb decided on stands, seen from a pass in boot `boot` at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// None decided.
    None,
    /// Decided in this boot, never asked for (a SIGTERM came between): to decide again.
    Decided,
    /// Asked for in this boot, moments ago: under way.
    Rebooting,
    /// Asked for in this boot and the call failed, or the host is still up long after.
    NotHappened,
    /// Decided in another boot: this is the boot after it.
    Booted,
}

fn stage(pending: Option<&Pending>, boot: &str, now: i64) -> Stage {
    let Some(p) = pending else {
        return Stage::None;
    };
    if p.boot_id != boot {
        return Stage::Booted;
    }
    if !p.requested {
        return Stage::Decided;
    }
    if p.error.is_none() && (0..GRACE).contains(&(now - p.at_secs)) {
        Stage::Rebooting
    } else {
        Stage::NotHappened
    }
}

/// Adds to the report's `waiting` (a rollout may have said why already).
fn wait(draft: &mut Draft, why: String) {
    tracing::info!(message_id = crate::logging::id::WAITING, "{why}");
    let w = &mut draft.report.waiting;
    if !w.is_empty() {
        w.push_str("; ");
    }
    w.push_str(&why);
}

/// What `needs-restarting -r`'s answer depends on besides the boot: the rpm database's
/// directories (sqlite's journal files come and go as it is written).
fn rpmdb_stamp() -> String {
    ["/var/lib/rpm", "/usr/lib/sysimage/rpm"]
        .iter()
        .filter_map(|d| std::fs::metadata(d).ok()?.modified().ok())
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(boot: &str, at: i64, requested: bool, error: Option<&str>) -> Pending {
        Pending {
            boot_id: boot.into(),
            at: String::new(),
            at_secs: at,
            why: "/run/reboot-required".into(),
            occurrence: 0,
            requested,
            error: error.map(Into::into),
        }
    }

    #[test]
    fn where_a_reboot_stands() {
        let now = 1_000_000;
        let cases = [
            (None, Stage::None),
            (Some(pending("b0", now - 5, true, None)), Stage::Booted),
            (Some(pending("b0", now - 5, false, None)), Stage::Booted),
            (Some(pending("b1", now - 5, false, None)), Stage::Decided),
            (Some(pending("b1", now - 5, true, None)), Stage::Rebooting),
            (
                Some(pending("b1", now - GRACE, true, None)),
                Stage::NotHappened,
            ),
            (
                Some(pending("b1", now + 60, true, None)),
                Stage::NotHappened,
            ), // clock went back
            (
                Some(pending("b1", now - 5, true, Some("no bus"))),
                Stage::NotHappened,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(stage(p.as_ref(), "b1", now), want, "{p:?}");
        }
    }

    #[test]
    fn the_record_reads_what_older_versions_wrote() {
        let r: Record = serde_json::from_str("{}").unwrap();
        assert_eq!(r, Record::default());
        let r: Record = serde_json::from_str(r#"{"tried":0,"last":{"at":"t","why":"w"}}"#).unwrap();
        assert_eq!(r.tried, Some(0));
        assert_eq!(r.last.unwrap().why, "w");
        let full = Record {
            pending: Some(pending("b", 1, true, Some("e"))),
            ..Record::default()
        };
        let back: Record = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
    }
}
