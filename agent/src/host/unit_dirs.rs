//! A fingerprint of what systemd's unit-file states (enabled, disabled, masked, ...) depend on:
//! when systemd last loaded units, the symlinks in its unit directories, and the units' own
//! files. Reading it costs a few directory listings; asking systemd for the states costs it a
//! search through every unit directory per unit.

use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

/// `loaded_at`: systemd's UnitsLoadTimestamp (moves on every daemon-reload); `unit_path`: its
/// UnitPath (the unit directories, under `root`). Enablement lives in symlinks in these
/// directories (aliases, masks, linked units) and in their `.wants`, `.requires` and `.upholds`
/// directories: every entry's name and inode, and every directory's mtime, go in; so does the
/// mtime of each of `units`' files (its [Install] section). A symlink removed, added or replaced
/// by hand, or a unit file edited, without a daemon-reload, changes the fingerprint.
pub fn fingerprint(root: &Path, loaded_at: u64, unit_path: &[String], units: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(loaded_at.to_le_bytes());
    for dir in unit_path.iter().filter(|d| !written_by_systemd(d)) {
        let dir = root.join(dir.trim_start_matches('/'));
        h.update(dir.as_os_str().as_bytes());
        hash_dir(&mut h, &dir, true);
        for unit in units {
            if let Ok(m) = std::fs::metadata(dir.join(unit)) {
                h.update(unit.as_bytes());
                h.update(m.mtime().to_le_bytes());
                h.update(m.mtime_nsec().to_le_bytes());
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// Generator output only changes on a daemon-reload (in `loaded_at` already), and transient
/// units (systemd-run, podman health checks: frequent) cannot be enabled.
fn written_by_systemd(dir: &str) -> bool {
    dir.starts_with("/run/systemd/generator") || dir == "/run/systemd/transient"
}

fn hash_dir(h: &mut Sha256, dir: &Path, descend: bool) {
    let (Ok(meta), Ok(entries)) = (std::fs::metadata(dir), std::fs::read_dir(dir)) else {
        h.update(b"\0absent\0");
        return;
    };
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    let mut entries: Vec<_> = entries
        .flatten()
        .map(|e| {
            // DirEntry::file_type does not follow symlinks: linked directories are not walked.
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (e.file_name(), e.ino(), is_dir)
        })
        .collect();
    entries.sort();
    for (name, ino, is_dir) in entries {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(ino.to_le_bytes());
        if descend && is_dir && holds_enablement(name.as_bytes()) {
            hash_dir(h, &dir.join(&name), false);
        }
    }
}

fn holds_enablement(dir_name: &[u8]) -> bool {
    [&b".wants"[..], b".requires", b".upholds"]
        .iter()
        .any(|s| dir_name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const UNITS: &[&str] = &["app.service"];

    fn unit_dirs(root: &Path) -> Vec<String> {
        for d in [
            "etc/systemd/system/multi-user.target.wants",
            "run/systemd/transient",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/systemd/system/app.service"), "[Unit]\n").unwrap();
        symlink(
            "/etc/systemd/system/app.service",
            root.join("etc/systemd/system/multi-user.target.wants/app.service"),
        )
        .unwrap();
        [
            "/etc/systemd/system",
            "/run/systemd/transient",
            "/usr/lib/systemd/system",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn same_directories_same_fingerprint() {
        let root = tempfile::tempdir().unwrap();
        let dirs = unit_dirs(root.path());
        let a = fingerprint(root.path(), 1, &dirs, UNITS);
        assert_eq!(a, fingerprint(root.path(), 1, &dirs, UNITS));
        assert_ne!(
            a,
            fingerprint(root.path(), 2, &dirs, UNITS),
            "a daemon-reload changes it"
        );
    }

    #[test]
    fn enablement_symlink_removed_or_added_changes_it() {
        let root = tempfile::tempdir().unwrap();
        let dirs = unit_dirs(root.path());
        let wants = root
            .path()
            .join("etc/systemd/system/multi-user.target.wants");
        let enabled = fingerprint(root.path(), 1, &dirs, UNITS);
        std::fs::remove_file(wants.join("app.service")).unwrap();
        let disabled = fingerprint(root.path(), 1, &dirs, UNITS);
        assert_ne!(enabled, disabled);
        symlink(
            "/dev/null",
            root.path().join("etc/systemd/system/other.service"),
        )
        .unwrap();
        assert_ne!(
            disabled,
            fingerprint(root.path(), 1, &dirs, UNITS),
            "a mask changes it"
        );
    }

    #[test]
    fn unit_file_edited_in_place_changes_it() {
        let root = tempfile::tempdir().unwrap();
        let dirs = unit_dirs(root.path());
        let file = root.path().join("etc/systemd/system/app.service");
        let before = fingerprint(root.path(), 1, &dirs, UNITS);
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_ne!(before, fingerprint(root.path(), 1, &dirs, UNITS));
    }

    #[test]
    fn transient_units_do_not_change_it() {
        let root = tempfile::tempdir().unwrap();
        let dirs = unit_dirs(root.path());
        let before = fingerprint(root.path(), 1, &dirs, UNITS);
        std::fs::write(root.path().join("run/systemd/transient/run-u1.service"), "").unwrap();
        assert_eq!(before, fingerprint(root.path(), 1, &dirs, UNITS));
    }
}
