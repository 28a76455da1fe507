//! Units and containers under a `root` other than `/` (an image being built, a chroot): their
//! files are written under root, and nothing is enabled, started or reloaded: systemd on the
//! D-Bus is the *host's*, not the image's. The inventory records what was written, so a unit or
//! container that leaves Git has its files removed again, as on a live host.

use crate::host::fs::{HostFs, Meta, Observed};
use crate::resource::{container, unit, Apply, Outcome};
use crate::spec::Desired;
use crate::state::ManagedUnit;
use crate::status::report::{Kind, ResourceReport, ResourceState};
use anyhow::Result;
use std::collections::BTreeMap;

/// What the report says for every unit and container under another root.
pub fn note(root: &std::path::Path) -> String {
    format!(
        "root is {}: unit and Quadlet files written only; no services enabled, started or reloaded (the D-Bus systemd is the host's)",
        root.display()
    )
}

/// One unit or container: the files Git wants for it, and the inventory entry that says so.
struct Wanted<'a> {
    kind: Kind,
    name: &'a str,
    files: Vec<(String, &'a [u8])>,
    record: ManagedUnit,
}

/// Writes (or, with `detect`, compares) every unit file, drop-in and Quadlet file under root, and
/// removes those of units and containers that left Git.
pub fn files_only(
    fs: &HostFs,
    desired: &Desired,
    detect: bool,
    run: &mut Apply,
) -> Result<Vec<Outcome>> {
    let mut wanted = Vec::new();
    for (name, spec) in &desired.units {
        let mut files: Vec<(String, &[u8])> = Vec::new();
        if let Some(f) = &spec.file {
            files.push((unit::unit_path(name), f));
        }
        for (conf, data) in &spec.dropins {
            files.push((unit::dropin_path(name, conf), data));
        }
        let record = ManagedUnit {
            has_file: spec.file.is_some(),
            dropins: spec.dropins.keys().cloned().collect(),
            ..ManagedUnit::default()
        };
        wanted.push(Wanted {
            kind: Kind::Unit,
            name,
            files,
            record,
        });
    }
    for (name, spec) in &desired.containers {
        let files = vec![(container::quadlet_path(name), spec.content.as_slice())];
        let record = ManagedUnit {
            has_file: true,
            ..ManagedUnit::default()
        };
        wanted.push(Wanted {
            kind: Kind::Container,
            name,
            files,
            record,
        });
    }
    if !detect {
        // Known before anything is written: a pass killed half-way still removes them later.
        for w in &wanted {
            let e = inventory(run, w.kind)
                .entry(w.name.to_string())
                .or_default();
            e.has_file |= w.record.has_file;
            for d in &w.record.dropins {
                if !e.dropins.contains(d) {
                    e.dropins.push(d.clone());
                }
            }
        }
        run.state_dir.save(run.state)?;
    }
    let mut out = Vec::new();
    for w in &wanted {
        let had = inventory(run, w.kind)
            .get(w.name)
            .cloned()
            .unwrap_or_default();
        let stale: Vec<String> = had
            .dropins
            .iter()
            .filter(|d| !w.record.dropins.contains(d))
            .map(|d| unit::dropin_path(w.name, d))
            .collect();
        let o = one(fs, w, &stale, detect);
        if !detect && o.report.state != ResourceState::Failed {
            inventory(run, w.kind).insert(w.name.to_string(), w.record.clone());
        }
        out.push(o);
    }
    for kind in [Kind::Unit, Kind::Container] {
        let gone: Vec<(String, ManagedUnit)> = inventory(run, kind)
            .iter()
            .filter(|(name, _)| match kind {
                Kind::Container => !desired.containers.contains_key(*name),
                _ => !desired.units.contains_key(*name),
            })
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        for (name, had) in gone {
            let o = prune(fs, kind, &name, &had, detect);
            if !detect && o.report.state == ResourceState::Pruned {
                inventory(run, kind).remove(&name);
            }
            out.push(o);
        }
    }
    if !detect {
        run.state_dir.save(run.state)?;
    }
    Ok(out)
}

fn inventory<'a>(run: &'a mut Apply, kind: Kind) -> &'a mut BTreeMap<String, ManagedUnit> {
    if kind == Kind::Container {
        &mut run.state.containers
    } else {
        &mut run.state.units
    }
}

/// The files plumb wrote for a unit or container, as host paths.
fn written_files(kind: Kind, name: &str, had: &ManagedUnit) -> Vec<String> {
    let mut files = Vec::new();
    if had.has_file {
        files.push(match kind {
            Kind::Container => container::quadlet_path(name),
            _ => unit::unit_path(name),
        });
    }
    if kind != Kind::Container {
        files.extend(had.dropins.iter().map(|d| unit::dropin_path(name, d)));
    }
    files
}

/// Removes (or, with `detect`, reports) the files of a unit or container that left Git.
fn prune(fs: &HostFs, kind: Kind, name: &str, had: &ManagedUnit, detect: bool) -> Outcome {
    let files: Vec<String> = written_files(kind, name, had)
        .into_iter()
        .filter(|p| !matches!(fs.observe(p), Ok(Observed::Missing)))
        .collect();
    let mut error = None;
    if !detect {
        error = remove_all(fs, &files)
            .and_then(|()| remove_dropin_dir(fs, kind, name))
            .err()
            .map(|e| format!("{e:#}"));
    }
    let state = match (&error, detect, files.is_empty()) {
        (Some(_), ..) => ResourceState::Failed,
        (None, true, true) => ResourceState::Ok,
        (None, true, false) => ResourceState::Drifted,
        (None, false, _) => ResourceState::Pruned,
    };
    let lines = (!files.is_empty()).then(|| {
        format!(
            "{} {name}: {} (left Git; files only under another root)",
            if detect { "would remove" } else { "removed" },
            files.join(", ")
        )
    });
    outcome(
        kind,
        name,
        state,
        error.unwrap_or_else(|| note(fs.root())),
        lines,
    )
}

fn remove_all(fs: &HostFs, paths: &[String]) -> Result<()> {
    paths.iter().try_for_each(|p| fs.remove(p))
}

/// A unit's `NAME.d` directory goes when its last drop-in went (a directory someone else put
/// files in stays).
fn remove_dropin_dir(fs: &HostFs, kind: Kind, name: &str) -> Result<()> {
    if kind != Kind::Container {
        fs.remove_empty_dir(&format!("{}.d", unit::unit_path(name)))?;
    }
    Ok(())
}

fn one(fs: &HostFs, w: &Wanted, stale: &[String], detect: bool) -> Outcome {
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut changed = Vec::new();
    let mut error = None;
    for (path, data) in &w.files {
        let same = matches!(fs.observe(path), Ok(Observed::File { data: have, meta: m }) if have == *data && m == meta);
        if same {
            continue;
        }
        changed.push(path.clone());
        if !detect {
            if let Err(e) = fs.write_file(path, data, meta) {
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let stale: Vec<String> = stale
        .iter()
        .filter(|p| !matches!(fs.observe(p), Ok(Observed::Missing)))
        .cloned()
        .collect();
    if !detect && error.is_none() {
        let removed = remove_all(fs, &stale).and_then(|()| {
            if stale.is_empty() {
                Ok(())
            } else {
                remove_dropin_dir(fs, w.kind, w.name)
            }
        });
        if let Err(e) = removed {
            error = Some(format!("{e:#}"));
        }
    }
    let state = match (
        error.is_some(),
        changed.is_empty() && stale.is_empty(),
        detect,
    ) {
        (true, ..) => ResourceState::Failed,
        (false, true, _) => ResourceState::Ok,
        (false, false, true) => ResourceState::Drifted,
        (false, false, false) => ResourceState::Changed,
    };
    let mut lines = Vec::new();
    let verb = |would: &'static str, did: &'static str| if detect { would } else { did };
    if !changed.is_empty() {
        lines.push(format!(
            "{} {}: {} (files only under another root)",
            verb("would write", "wrote"),
            w.name,
            changed.join(", ")
        ));
    }
    if !stale.is_empty() {
        lines.push(format!(
            "{} {}: {} (left Git; files only under another root)",
            verb("would remove", "removed"),
            w.name,
            stale.join(", ")
        ));
    }
    let detail = error.unwrap_or_else(|| note(fs.root()));
    let mut o = outcome(w.kind, w.name, state, detail, None);
    o.lines = lines;
    o
}

fn outcome(
    kind: Kind,
    name: &str,
    state: ResourceState,
    detail: String,
    line: Option<String>,
) -> Outcome {
    Outcome {
        report: ResourceReport {
            kind,
            name: name.to_string(),
            state,
            detail,
        },
        drift: false,
        masked: false,
        lines: line.into_iter().collect(),
    }
}
