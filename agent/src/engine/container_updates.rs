//! Container image updates (DESIGN section 13): a Quadlet container with `AutoUpdate=registry`
//! gets the registry's newer image inside the host's window, holding a disruption slot, checked
//! by the applied commit's `[[health]]` like any change, and rolled back when they fail.
//!
//! Each pass asks podman cheaply whether any image is newer (`podman auto-update --dry-run`); only
//! then does it ask for the window and a slot, keep what every container runs, run `podman
//! auto-update` (podman itself rolls back a unit that does not start), and run the health checks.
//! On failure the previous image gets its name back and the unit restarts; the failed image is
//! remembered and not tried again while the registry still offers it.

use super::maintenance::Permit;
use super::{health_checks, Agent, Converged, Draft};
use crate::health::Verdict;
use crate::host::podman::{self, AutoUpdate};
use crate::host::Host;
use crate::reason::Reason;
use crate::spec::Desired;
use crate::status::report::{
    now_rfc3339, ContainerUpdate, Kind, Outcome, ResourceState, UpdateState,
};
use anyhow::{bail, Result};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// In state_dir: the last update of each container and the images that failed.
const MEMORY_FILE: &str = "container-updates.json";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Memory {
    /// The last update per Quadlet file ("web.container"), as the report shows it.
    last: BTreeMap<String, ContainerUpdate>,
    /// Per Quadlet file, the image id that failed: not tried again while the registry has it.
    bad: BTreeMap<String, String>,
}

/// A container podman would update, with what it runs now.
struct Pending {
    file: String,
    entry: AutoUpdate,
    old_id: String,
    old_digest: String,
}

/// An update podman made, waiting for the health checks.
struct Made {
    pending: Pending,
    new_id: String,
    new_digest: String,
}

impl Agent {
    /// The container updates of one maintenance phase. A podman that cannot be asked is said in
    /// the report's message, never an error of the pass.
    pub(super) fn container_updates(
        &self,
        host: &Host,
        applied: ObjectId,
        desired: &Desired,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        let followed = followed(desired);
        let mut memory: Memory = self
            .state_dir
            .read_doc(MEMORY_FILE)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let before = serde_json::to_string(&memory)?;
        let keep = |file: &String| followed.values().any(|f| f == file);
        memory.last.retain(|f, _| keep(f));
        memory.bad.retain(|f, _| keep(f));
        let mut waiting = vec![];
        if !followed.is_empty() {
            match self.update_containers(host, applied, desired, &followed, &mut memory, run, draft)
            {
                Ok(w) => waiting = w,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "container updates: {e:#}");
                    draft
                        .notes
                        .push(format!("container updates could not be checked: {e:#}"));
                }
            }
        }
        if serde_json::to_string(&memory)? != before {
            self.state_dir
                .write_doc(MEMORY_FILE, &serde_json::to_string_pretty(&memory)?)?;
        }
        let mut shown = memory.last;
        for w in waiting {
            shown.insert(w.container.clone(), w);
        }
        draft.report.container_updates = shown.into_values().collect();
        Ok(())
    }

    /// Updates what podman says is newer; the containers left waiting for the window or a slot.
    #[allow(clippy::too_many_arguments)]
    fn update_containers(
        &self,
        host: &Host,
        applied: ObjectId,
        desired: &Desired,
        followed: &BTreeMap<String, String>,
        memory: &mut Memory,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<Vec<ContainerUpdate>> {
        let offered = podman::auto_update(true)?;
        let mut pending = vec![];
        // Known-bad images still offered: podman updates every container it finds newer, so
        // these are put back right after, should another update run.
        let mut held: Vec<Pending> = vec![];
        for entry in offered.into_iter().filter(AutoUpdate::pending) {
            let Some(file) = followed.get(&entry.unit) else {
                continue;
            };
            let old_id = podman::container_image(&entry.container_id)?;
            let (_, old_digest) = podman::image_id_digest(&old_id, &entry.image)?;
            let p = Pending {
                file: file.clone(),
                entry,
                old_id,
                old_digest,
            };
            if let Some(bad) = memory.bad.get(file) {
                // Which image does the registry offer now? (The failed one is stored here: the
                // pull reads a manifest.) Then the name goes back to what runs.
                let now_offered = podman::pull(&p.entry.image)?;
                podman::tag(&p.old_id, &p.entry.image)?;
                if &now_offered == bad {
                    held.push(p);
                    continue;
                }
                memory.bad.remove(file);
            }
            pending.push(p);
        }
        if pending.is_empty() {
            return Ok(vec![]);
        }
        if let Permit::Wait(why) = self.maintenance_permit(applied, false) {
            tracing::info!(
                message_id = crate::logging::id::WAITING,
                "container updates wait: {why}"
            );
            return Ok(pending
                .into_iter()
                .map(|p| ContainerUpdate {
                    container: p.file,
                    image: p.entry.image,
                    state: UpdateState::Waiting,
                    old_digest: p.old_digest,
                    new_digest: String::new(),
                    at: String::new(),
                    detail: format!("a newer image is in the registry; {why}"),
                })
                .collect());
        }
        let result = self.update_now(host, desired, pending, held, memory, run, draft);
        self.release_maintenance();
        result.map(|()| vec![])
    }

    /// `podman auto-update`, then the health checks; a failure puts the old images back.
    #[allow(clippy::too_many_arguments)]
    fn update_now(
        &self,
        host: &Host,
        desired: &Desired,
        pending: Vec<Pending>,
        held: Vec<Pending>,
        memory: &mut Memory,
        run: &mut Converged,
        draft: &mut Draft,
    ) -> Result<()> {
        let names: Vec<&str> = pending.iter().map(|p| p.file.as_str()).collect();
        tracing::info!("updating the images of {}", names.join(", "));
        let now = now_rfc3339();
        let (done, error) = match podman::auto_update(false) {
            Ok(d) => (d, None),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "podman auto-update failed: {e:#}");
                (vec![], Some(format!("{e:#}")))
            }
        };
        let word = |p: &Pending| match done.iter().find(|d| d.unit == p.entry.unit) {
            Some(d) => d.updated.clone(),
            // podman said nothing of it (stopped at its time limit, failed): what runs now?
            None => match podman::container_image(&p.entry.container_name) {
                Ok(id) if id != p.old_id => "true".into(),
                _ => {
                    let _ = podman::tag(&p.old_id, &p.entry.image);
                    error.clone().unwrap_or_else(|| "nothing".into())
                }
            },
        };
        let mut problems = vec![];
        // Failed images still offered: back to what ran, at once, unchecked.
        for h in &held {
            if word(h) == "true" {
                if let Err(e) = put_back(host, &h.old_id, &h.entry) {
                    problems.push(format!(
                        "{}: putting {} back failed: {e:#}",
                        h.file, h.old_digest
                    ));
                }
            }
        }
        // From here on no early return: every update made is judged.
        let mut made = vec![];
        for p in pending {
            match word(&p).as_str() {
                "true" => {
                    let (new_id, new_digest) =
                        podman::image_id_digest(&p.entry.image, &p.entry.image).unwrap_or_default();
                    made.push(Made {
                        pending: p,
                        new_id,
                        new_digest,
                    });
                }
                "rolled back" => {
                    // podman put the old image back: which one failed (a pull of a stored image
                    // reads a manifest), so it is not tried again.
                    let failed = podman::pull(&p.entry.image).and_then(|new_id| {
                        podman::tag(&p.old_id, &p.entry.image)?;
                        let (_, digest) = podman::image_id_digest(&new_id, &p.entry.image)?;
                        Ok((new_id, digest))
                    });
                    let (new_id, new_digest) = failed.unwrap_or_default();
                    let why = format!(
                        "{} did not start on the new image {new_digest}: podman put {} back",
                        p.entry.unit, p.old_digest
                    );
                    problems.push(format!("{}: {why}", p.file));
                    if !new_id.is_empty() {
                        memory.bad.insert(p.file.clone(), new_id);
                    }
                    memory.last.insert(
                        p.file.clone(),
                        record(&p, &new_digest, UpdateState::RolledBack, &now, why),
                    );
                }
                other => {
                    let why = format!("podman auto-update: {other}");
                    problems.push(format!("{}: {why}", p.file));
                    memory.last.insert(
                        p.file.clone(),
                        record(&p, "", UpdateState::Failed, &now, why),
                    );
                }
            }
        }
        if !made.is_empty() {
            self.judge_updates(host, desired, made, &now, memory, run, &mut problems);
        }
        if !problems.is_empty() {
            fail(
                draft,
                format!("container update failed: {}", problems.join("; ")),
            );
        }
        Ok(())
    }

    /// The health checks after updates: kept, or the old images put back.
    #[allow(clippy::too_many_arguments)]
    fn judge_updates(
        &self,
        host: &Host,
        desired: &Desired,
        made: Vec<Made>,
        now: &str,
        memory: &mut Memory,
        run: &mut Converged,
        problems: &mut Vec<String>,
    ) {
        let verdict = if desired.health.is_empty() {
            Ok(Verdict::Healthy)
        } else {
            health_checks(host, desired)
        };
        let failure = match verdict {
            Ok(Verdict::Healthy) => None,
            Ok(Verdict::Unhealthy(f)) => Some((f.to_string(), true)),
            // No verdict: put back, not marked bad, tried again on the next pass.
            Err(fault) => Some((fault.to_string(), false)),
        };
        for m in made {
            let p = &m.pending;
            let Some((why, bad)) = &failure else {
                tracing::info!(
                    message_id = crate::logging::id::CHANGE_APPLIED,
                    kind = "container",
                    name = %p.file,
                    "updated {} to {} ({})",
                    p.file,
                    m.new_digest,
                    p.entry.image
                );
                mark_changed(run, &p.file, &m.new_digest);
                let detail = format!("was {}", p.old_digest);
                memory.last.insert(
                    p.file.clone(),
                    record(p, &m.new_digest, UpdateState::Updated, now, detail),
                );
                continue;
            };
            let (state, detail) = match put_back(host, &p.old_id, &p.entry) {
                Ok(()) => (
                    UpdateState::RolledBack,
                    format!("{why}; {} runs again", p.old_digest),
                ),
                Err(e) => (
                    UpdateState::Failed,
                    format!("{why}; putting {} back failed: {e:#}", p.old_digest),
                ),
            };
            tracing::warn!(
                message_id = crate::logging::id::ROLLED_BACK,
                kind = "container",
                name = %p.file,
                "{}: {detail}",
                p.file
            );
            problems.push(format!(
                "{}: the update to {} was undone: {detail}",
                p.file, m.new_digest
            ));
            if *bad && !m.new_id.is_empty() {
                memory.bad.insert(p.file.clone(), m.new_id.clone());
            }
            memory
                .last
                .insert(p.file.clone(), record(p, &m.new_digest, state, now, detail));
        }
    }
}

/// The last update of each container, for the report of any pass (also one that stopped before
/// maintenance: a rejected commit, detect mode).
pub(super) fn last_updates(state_dir: &crate::state::StateDir) -> Vec<ContainerUpdate> {
    state_dir
        .read_doc(MEMORY_FILE)
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str::<Memory>(&t).ok())
        .map(|m| m.last.into_values().collect())
        .unwrap_or_default()
}

/// The containers plumb updates: generated service -> Quadlet file, for the `.container` files
/// with `AutoUpdate=registry`.
fn followed(desired: &Desired) -> BTreeMap<String, String> {
    desired
        .containers
        .iter()
        .filter(|(name, spec)| name.ends_with(".container") && auto_update_registry(&spec.content))
        .map(|(name, spec)| (spec.service_name(), name.clone()))
        .collect()
}

/// Whether a Quadlet file's `[Container]` section says `AutoUpdate=registry`.
fn auto_update_registry(content: &[u8]) -> bool {
    let mut in_container = false;
    for line in String::from_utf8_lossy(content).lines().map(str::trim) {
        if line.starts_with('[') {
            in_container = line == "[Container]";
        } else if in_container {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "AutoUpdate" && v.trim() == "registry" {
                    return true;
                }
            }
        }
    }
    false
}

/// The old image gets its name back and the unit restarts on it.
fn put_back(host: &Host, old_id: &str, entry: &AutoUpdate) -> Result<()> {
    podman::tag(old_id, &entry.image)?;
    let bus = host.bus()?;
    let job = bus.block_on(bus.systemd.restart(&entry.unit))?;
    if !job.is_done() {
        bail!("restarting {} on the old image: {job:?}", entry.unit);
    }
    Ok(())
}

fn record(
    p: &Pending,
    new_digest: &str,
    state: UpdateState,
    at: &str,
    detail: String,
) -> ContainerUpdate {
    ContainerUpdate {
        container: p.file.clone(),
        image: p.entry.image.clone(),
        state,
        old_digest: p.old_digest.clone(),
        new_digest: new_digest.to_string(),
        at: at.to_string(),
        detail,
    }
}

/// The container's resource says it changed, and the pass counts one change.
fn mark_changed(run: &mut Converged, file: &str, digest: &str) {
    let line = format!("updated the image of container {file} to {digest}");
    if let Some(r) = run
        .resources
        .iter_mut()
        .find(|r| r.kind == Kind::Container && r.name == file)
    {
        if r.state == ResourceState::Ok {
            r.state = ResourceState::Changed;
            run.changed += 1;
            run.changes += 1;
        }
        r.detail = line.clone();
    }
    run.lines.push(line);
}

/// The pass failed with `container-update-failed` (the commit stays good).
fn fail(draft: &mut Draft, note: String) {
    draft.report.outcome = Outcome::Failed;
    draft.report.reason = Some(Reason::ContainerUpdateFailed);
    draft.notes.insert(0, note);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_containers_that_follow_the_registry() {
        let yes =
            b"[Unit]\nAutoUpdate=registry\n[Container]\nImage=r/web\n AutoUpdate = registry\n";
        assert!(auto_update_registry(yes));
        assert!(!auto_update_registry(
            b"[Unit]\nAutoUpdate=registry\n[Container]\nImage=r/web\n"
        ));
        assert!(!auto_update_registry(b"[Container]\nAutoUpdate=local\n"));
        assert!(!auto_update_registry(
            b"[Container]\n#AutoUpdate=registry\n"
        ));
    }
}
