//! Units and containers under a `root` other than `/` (an image being built, a chroot): their
//! files are written under root, and nothing is enabled, started or reloaded: systemd on the
//! D-Bus is the *host's*, not the image's.

use crate::host::fs::{HostFs, Meta, Observed};
use crate::resource::Outcome;
use crate::resource::{container, unit};
use crate::spec::Desired;
use crate::status::report::{Kind, ResourceReport, ResourceState};

/// What the report says for every unit and container under another root.
pub fn note(root: &std::path::Path) -> String {
    format!(
        "root is {}: unit and Quadlet files written only; no services enabled, started or reloaded (the D-Bus systemd is the host's)",
        root.display()
    )
}

/// Writes (or, with `detect`, compares) every unit file, drop-in and Quadlet file under root.
pub fn files_only(fs: &HostFs, desired: &Desired, detect: bool) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (name, spec) in &desired.units {
        let mut files: Vec<(String, &[u8])> = Vec::new();
        if let Some(f) = &spec.file {
            files.push((unit::unit_path(name), f));
        }
        for (conf, data) in &spec.dropins {
            files.push((unit::dropin_path(name, conf), data));
        }
        out.push(one(fs, Kind::Unit, name, &files, detect));
    }
    for (name, spec) in &desired.containers {
        let files = [(container::quadlet_path(name), spec.content.as_slice())];
        out.push(one(fs, Kind::Container, name, &files, detect));
    }
    out
}

fn one(fs: &HostFs, kind: Kind, name: &str, files: &[(String, &[u8])], detect: bool) -> Outcome {
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut changed = Vec::new();
    let mut error = None;
    for (path, data) in files {
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
    let (state, detail) = match (error, changed.is_empty(), detect) {
        (Some(e), ..) => (ResourceState::Failed, e),
        (None, true, _) => (ResourceState::Ok, note(fs.root())),
        (None, false, true) => (ResourceState::Drifted, note(fs.root())),
        (None, false, false) => (ResourceState::Changed, note(fs.root())),
    };
    let line = (!changed.is_empty()).then(|| {
        format!(
            "{} {name}: {} ({})",
            if detect { "would write" } else { "wrote" },
            changed.join(", "),
            "files only under another root"
        )
    });
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
