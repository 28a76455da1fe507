//! `[packages] upgrade` (DESIGN section 13): which upgrades the repositories offer, in status.toml
//! `[upgrades]` on every pass, and applying them as maintenance: when the host moved to a new
//! commit, else once per occurrence of its window (no window matching it: once a day), always
//! holding the maintenance permit (window open, disruption slot taken), then the applied
//! commit's health checks. Listing runs a package tool, so it runs again only when the package
//! database or the package lists changed (a fingerprint of a few `stat`s, kept in state_dir).

use super::{health_checks, Agent, Converged, Draft};
use crate::health::Verdict;
use crate::host::packages::Backend;
use crate::host::upgrades::{self, Available};
use crate::host::Host;
use crate::reason::Reason;
use crate::resource::package::{cache_age, refresh, CACHE_MIN_AGE};
use crate::rollout::window::{self, Occurrence};
use crate::spec::{Desired, Upgrade};
use crate::state::StateDir;
use crate::status::report::{Outcome, Upgrades, MAX_UPGRADE_NAMES};
use anyhow::Result;
use gix::ObjectId;
use serde::{Deserialize, Serialize};

/// In state_dir: the last listing and the last run.
const DOC: &str = "upgrades.json";
/// What a maintenance hold for upgrades starts with (`held_for`).
const HOLD_PREFIX: &str = "upgrades";
/// No window matches the host: upgrades run at most once per this.
const DAILY: i64 = 86400;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    /// `host::upgrades::fingerprint()` right after the list below was made.
    fingerprint: String,
    count: usize,
    security: usize,
    /// Security updates first, then the rest, each sorted; at most `MAX_UPGRADE_NAMES`.
    names: Vec<String>,
    /// Why the last listing failed (not retried until the fingerprint changes).
    #[serde(default)]
    error: String,
    /// The applied commit the last run was for (a new commit runs them again).
    #[serde(default)]
    run_commit: String,
    /// The window occurrence (its start) the last run was in; 0 without a window.
    #[serde(default)]
    run_window: i64,
    /// When the last run was (unix seconds); 0: never.
    #[serde(default)]
    run_at: i64,
    /// A failed run (or failed health checks after one): reported on every pass until a run
    /// succeeds (or, for health, the checks pass again); the slot stays held meanwhile.
    #[serde(default)]
    failed: Option<(Reason, String)>,
    /// Until `quiet_until` (unix seconds) nothing is due for `quiet_commit` and `[upgrades]
    /// next` is `quiet_next`: a pass then reads neither fleet.toml nor the clock's windows.
    #[serde(default)]
    quiet_commit: String,
    #[serde(default)]
    quiet_until: i64,
    #[serde(default)]
    quiet_next: String,
}

fn load(sd: &StateDir) -> Doc {
    sd.read_doc(DOC)
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save(sd: &StateDir, doc: &Doc) {
    let text = serde_json::to_string(doc).expect("the upgrades doc serializes");
    if let Err(e) = sd.write_doc(DOC, &text) {
        tracing::warn!(error = %format!("{e:#}"), "could not save {DOC}: {e:#}");
    }
}

/// Remembers that nothing is due for `commit` until `until` (saved when that changed).
fn quiet(doc: &mut Doc, commit: &str, until: i64, next: &str, sd: &StateDir) {
    if doc.quiet_commit != commit || doc.quiet_until != until || doc.quiet_next != next {
        doc.quiet_commit = commit.to_string();
        doc.quiet_until = until;
        doc.quiet_next = next.to_string();
        save(sd, doc);
    }
}

/// When the upgrades are due, by the host's windows (pure).
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Run now (holding the permit); `window`: the occurrence's key (0: none).
    Now { window: i64 },
    /// Not now: in the words of `[upgrades] next`, and until when that holds for this commit.
    Later { next: String, until: i64 },
}

/// Whether a run is due: the host moved to `commit` since the last run, or this is a window
/// occurrence (no window: a day) without a run yet.
fn due(doc: &Doc, commit: &str, occ: &Occurrence, now: i64) -> Due {
    let moved = doc.run_commit != commit;
    match occ {
        Occurrence::Closed { why, opens_at } => Due::Later {
            next: format!("when the {why}"),
            until: *opens_at,
        },
        Occurrence::Open { start, .. } if moved || doc.run_window != *start => {
            Due::Now { window: *start }
        }
        Occurrence::Open { next, next_at, .. } => Due::Later {
            next: format!("in the next window occurrence ({next})"),
            until: *next_at,
        },
        Occurrence::NoWindow if moved || now - doc.run_at >= DAILY => Due::Now { window: 0 },
        Occurrence::NoWindow => Due::Later {
            next: format!(
                "after {} (once a day: no [[windows]] entry matches this host)",
                rfc3339(doc.run_at + DAILY)
            ),
            until: doc.run_at + DAILY,
        },
    }
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The upgrades `policy` applies.
fn chosen(policy: Upgrade, offered: &[Available]) -> Vec<Available> {
    offered
        .iter()
        .filter(|a| policy == Upgrade::All || (policy == Upgrade::Security && a.security))
        .cloned()
        .collect()
}

/// Count, security count and the bounded names of a listing: security updates first.
fn summarize(offered: &[Available]) -> (usize, usize, Vec<String>) {
    let security = offered.iter().filter(|a| a.security).count();
    let mut names: Vec<(bool, &str)> = offered
        .iter()
        .map(|a| (!a.security, a.name.as_str()))
        .collect();
    names.sort();
    let names = names
        .into_iter()
        .take(MAX_UPGRADE_NAMES)
        .map(|(_, n)| n.to_string())
        .collect();
    (offered.len(), security, names)
}

impl Agent {
    /// `[upgrades]` of the report, on every pass that looked at the host (not `plan`): listed
    /// again only when the fingerprint changed.
    pub(super) fn report_upgrades(&self, host: &Host, desired: &Desired, draft: &mut Draft) {
        if !host.is_system_root() {
            return;
        }
        let mut doc = load(&self.state_dir);
        let fp = upgrades::fingerprint();
        if fp != doc.fingerprint {
            tracing::info!("the package database or lists changed: listing the upgrades");
            let listed =
                self.with_backend(
                    host,
                    |backend| async move { upgrades::list(&backend).await },
                );
            // Taken again after the listing: dnf rewrites files in its cache directory on every
            // run, a cache-only `check-update` too, so the fingerprint from before would never
            // match the next pass's and every pass would list again.
            doc.fingerprint = upgrades::fingerprint();
            match listed {
                Ok(offered) => {
                    (doc.count, doc.security, doc.names) = summarize(&offered);
                    doc.error.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not list the upgrades: {e:#}");
                    doc.error = format!("{e:#}");
                }
            }
            save(&self.state_dir, &doc);
        }
        if !doc.error.is_empty() {
            draft.report.upgrades = None;
            return;
        }
        let mut u = draft.report.upgrades.take().unwrap_or_default();
        u.count = doc.count;
        u.security = doc.security;
        u.names = doc.names;
        u.policy = desired.upgrade.as_str().into();
        if doc.run_at > 0 {
            u.last_run = rfc3339(doc.run_at);
        }
        draft.report.upgrades = Some(u);
    }

    /// Maintenance: apply `[packages] upgrade` when due and permitted, then the health checks.
    pub(super) fn upgrade_phase(
        &self,
        host: &Host,
        applied: ObjectId,
        desired: &Desired,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        // A pass that failed (a rollback, a check) or refused its commit runs no maintenance.
        if !host.is_system_root()
            || matches!(draft.report.outcome, Outcome::Failed | Outcome::Rejected)
        {
            return Ok(());
        }
        let mut doc = load(&self.state_dir);
        let held = self.held_for().is_some_and(|h| h.starts_with(HOLD_PREFIX));
        if desired.upgrade == Upgrade::None {
            if doc.failed.take().is_some() || held {
                self.unhold();
                save(&self.state_dir, &doc);
            }
            return Ok(());
        }
        if let Some((Reason::UpgradeUnhealthy, _)) = &doc.failed {
            if let Ok(Verdict::Healthy) = health_checks(host, desired) {
                tracing::info!("the health checks pass again after the upgrades: releasing the disruption slot");
                doc.failed = None;
                self.unhold();
                save(&self.state_dir, &doc);
            }
        }
        let commit = applied.to_string();
        let now = crate::judged::now_secs() as i64;
        if doc.failed.is_none() && doc.quiet_commit == commit && now < doc.quiet_until {
            draft.report.upgrades = Some(Upgrades {
                next: doc.quiet_next,
                ..Default::default()
            });
            return Ok(());
        }
        let occ = match self.policy(applied) {
            Ok(p) => window::occurrence(
                &p.windows,
                &self.settings.host,
                now,
                window::local_offset(now),
            ),
            Err(e) => Occurrence::Closed {
                why: format!("fleet.toml cannot be read: {e}"),
                opens_at: now,
            },
        };
        let next = match due(&doc, &commit, &occ, now) {
            Due::Later { next, until } => {
                quiet(&mut doc, &commit, until, &next, &self.state_dir);
                Some(next)
            }
            Due::Now { window } => match self.maintenance_permit(applied, false) {
                super::maintenance::Permit::Wait(why) => Some(format!("waiting: {why}")),
                super::maintenance::Permit::Go => {
                    self.run_upgrades(host, desired, &mut doc, run, draft);
                    doc.run_commit = commit.clone();
                    doc.run_window = window;
                    doc.run_at = now;
                    save(&self.state_dir, &doc);
                    match due(&doc, &commit, &occ, now) {
                        Due::Later { next, until } if doc.failed.is_none() => {
                            quiet(&mut doc, &commit, until, &next, &self.state_dir);
                            Some(next)
                        }
                        Due::Later { next, .. } => Some(next),
                        Due::Now { .. } => None,
                    }
                }
            },
        };
        if let Some((reason, message)) = &doc.failed {
            draft.report.outcome = Outcome::Failed;
            draft.report.reason = Some(*reason);
            draft.notes.insert(0, message.clone());
        }
        draft.report.upgrades = Some(Upgrades {
            next: next.unwrap_or_default(),
            ..Default::default()
        });
        Ok(())
    }

    /// One run, holding the permit: refresh the lists (unless fresh), list, apply what the
    /// policy chooses, check health; release the slot on success, keep it on failure.
    fn run_upgrades(
        &self,
        host: &Host,
        desired: &Desired,
        doc: &mut Doc,
        run: &mut Converged,
        draft: &mut Draft,
    ) {
        let policy = desired.upgrade;
        let state_dir = &self.state_dir;
        let done = self.with_backend(host, |backend| async move {
            if cache_age(state_dir).is_none_or(|a| a > CACHE_MIN_AGE) {
                refresh(&backend, state_dir).await;
            }
            let picked = chosen(policy, &upgrades::list(&backend).await?);
            if !picked.is_empty() {
                tracing::info!(
                    backend = backend.name(),
                    policy = policy.as_str(),
                    packages = ?picked.iter().map(|a| &a.name).collect::<Vec<_>>(),
                    "upgrading {} package(s) with {}",
                    picked.len(),
                    backend.name()
                );
                upgrades::apply(&backend, policy == Upgrade::All, &picked).await?;
            }
            Ok((picked, backend.name()))
        });
        let (picked, via) = match done {
            Ok(d) => d,
            Err(e) => {
                let message = format!(
                    "[packages] upgrade = \"{}\": the upgrades failed, the disruption slot stays held until a run succeeds: {e:#}",
                    policy.as_str()
                );
                tracing::error!(reason = "upgrade-failed", "{message}");
                self.fail(doc, Reason::UpgradeFailed, message);
                return;
            }
        };
        if !picked.is_empty() {
            let names: Vec<&str> = picked.iter().map(|a| a.name.as_str()).collect();
            let line = format!(
                "upgraded {} package(s) via {via} ([packages] upgrade = \"{}\"): {}",
                picked.len(),
                policy.as_str(),
                names.join(", ")
            );
            run.lines.push(line.clone());
            run.changed += 1;
            run.changes += 1;
            draft.notes.push(line);
            let verdict = if desired.health.is_empty() {
                Ok(Verdict::Healthy)
            } else {
                health_checks(host, desired)
            };
            let why = match verdict {
                Ok(Verdict::Healthy) => None,
                Ok(Verdict::Unhealthy(f)) => Some(f.to_string()),
                Err(fault) => Some(fault.to_string()),
            };
            if let Some(why) = why {
                let message = format!(
                    "the health checks failed after upgrading {}: {why}; upgrades cannot be rolled back: the disruption slot stays held until the checks pass",
                    names.join(", ")
                );
                tracing::error!(reason = "upgrade-unhealthy", "{message}");
                self.fail(doc, Reason::UpgradeUnhealthy, message);
                return;
            }
        }
        doc.failed = None;
        if self.held_for().is_some_and(|h| h.starts_with(HOLD_PREFIX)) {
            self.unhold();
        } else {
            self.release_maintenance();
        }
    }

    fn fail(&self, doc: &mut Doc, reason: Reason, message: String) {
        if let Err(e) = self.hold_slot(&format!("{HOLD_PREFIX}: {message}")) {
            tracing::warn!(error = %format!("{e:#}"), "could not record the hold of the disruption slot: {e:#}");
        }
        doc.failed = Some((reason, message));
    }

    /// Runs `f` with the pass's package backend (agent.toml's `package_manager`; by default
    /// PackageKit when it answers, else apt-get or dnf) on the shared runtime.
    fn with_backend<T, F, Fut>(&self, host: &Host, f: F) -> Result<T>
    where
        F: FnOnce(Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let conn = host.bus().map(|b| b.connection());
        crate::host::runtime::handle()?.block_on(async move {
            let backend = Backend::choose(host.package_manager, conn).await?;
            f(backend).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, security: bool) -> Available {
        Available {
            name: name.into(),
            id: name.into(),
            security,
        }
    }

    #[test]
    fn once_per_window_occurrence_or_a_day_and_on_every_new_commit() {
        let ran = Doc {
            run_commit: "c1".into(),
            run_window: 1000,
            run_at: 1_000_000,
            ..Doc::default()
        };
        let open = |start| Occurrence::Open {
            start,
            next: "tue 02:00 UTC".into(),
            next_at: start + DAILY,
        };
        let closed = Occurrence::Closed {
            why: "window opens mon 02:00 UTC".into(),
            opens_at: 2_000_000,
        };
        let cases: Vec<(&str, Occurrence, i64, Due)> = vec![
            // Same commit, same occurrence: done already.
            (
                "c1",
                open(1000),
                1_000_100,
                Due::Later {
                    next: "in the next window occurrence (tue 02:00 UTC)".into(),
                    until: 1000 + DAILY,
                },
            ),
            ("c1", open(90000), 1_000_100, Due::Now { window: 90000 }),
            // A new commit runs them in the same occurrence too.
            ("c2", open(1000), 1_000_100, Due::Now { window: 1000 }),
            // A closed window: never now, whatever moved.
            (
                "c2",
                closed.clone(),
                1_000_100,
                Due::Later {
                    next: "when the window opens mon 02:00 UTC".into(),
                    until: 2_000_000,
                },
            ),
            // No window: a day after the last run, or a new commit.
            (
                "c1",
                Occurrence::NoWindow,
                1_000_000 + DAILY - 1,
                Due::Later {
                    next: format!(
                        "after {} (once a day: no [[windows]] entry matches this host)",
                        rfc3339(1_000_000 + DAILY)
                    ),
                    until: 1_000_000 + DAILY,
                },
            ),
            (
                "c1",
                Occurrence::NoWindow,
                1_000_000 + DAILY,
                Due::Now { window: 0 },
            ),
            (
                "c2",
                Occurrence::NoWindow,
                1_000_001,
                Due::Now { window: 0 },
            ),
        ];
        for (commit, occ, now, want) in cases {
            assert_eq!(due(&ran, commit, &occ, now), want, "{commit} {occ:?} {now}");
        }
        // Never ran: due at once.
        assert_eq!(
            due(&Doc::default(), "c1", &Occurrence::NoWindow, 5),
            Due::Now { window: 0 }
        );
    }

    #[test]
    fn the_policy_chooses_and_the_names_are_bounded() {
        let offered: Vec<Available> = (0..60)
            .map(|i| offer(&format!("p{i:02}"), i == 42))
            .collect();
        assert!(chosen(Upgrade::None, &offered).is_empty());
        let sec = chosen(Upgrade::Security, &offered);
        assert_eq!(sec.len(), 1);
        assert_eq!(sec[0].name, "p42");
        assert_eq!(chosen(Upgrade::All, &offered).len(), 60);
        let (count, security, names) = summarize(&offered);
        assert_eq!((count, security), (60, 1));
        assert_eq!(names.len(), MAX_UPGRADE_NAMES);
        assert_eq!(names[0], "p42", "security updates come first");
        assert_eq!(names[1], "p00");
    }
}
