//! What the agent remembers between passes (`state_dir/state.json`): the commits it applied, and
//! the inventory of every resource it manages, so what leaves Git can be pruned and what was on the
//! host before plumb can be restored.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct State {
    pub applied_commit: Option<String>,
    pub last_good_commit: Option<String>,
    /// When `applied_commit` was first applied: (commit, RFC 3339 time), for `applied_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_since: Option<(String, String)>,
    /// Commits whose health checks failed: never applied again (a newer commit clears them).
    pub bad_commits: BTreeSet<String>,
    /// Applied, but its health checks could not be run (a fault): they run again on the next
    /// pass, changes or not, and until then it is neither good nor bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unjudged_commit: Option<String>,
    /// Why bad commits failed, and commits to try again after a cool-down.
    #[serde(skip_serializing_if = "crate::judged::Judged::is_empty")]
    pub judged: crate::judged::Judged,
    pub files: BTreeMap<String, ManagedFile>,
    pub units: BTreeMap<String, ManagedUnit>,
    pub containers: BTreeMap<String, ManagedUnit>,
    pub packages: BTreeMap<String, ManagedPackage>,
    /// Every package that appeared while plumb installed packages (those it asked for and what
    /// they pulled in): after plumb removes one of its own, only these may go with it.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub brought: BTreeSet<String>,
    /// Packages installed with service starts held: the enabled units they ship are started
    /// after the pass's units (kept here until then, so a killed pass still starts them).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub held: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ManagedFile {
    /// Digest of the spec last applied (`FileSpec::digest`); None until the first write landed.
    pub digest: Option<String>,
    /// Directories plumb created for this file, outermost first: removed again when empty.
    pub created_dirs: Vec<String>,
    /// What was at the path before plumb first wrote it.
    pub backup: Option<Backup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Backup {
    /// File name under `state_dir/backups/` holding the content (or the symlink target).
    pub blob: String,
    pub symlink: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ManagedUnit {
    /// Digest of the unit file and drop-ins last applied.
    pub digest: Option<String>,
    /// Whether plumb installed a file for it (else it only set its state).
    pub has_file: bool,
    pub dropins: Vec<String>,
    /// Its files were about to be written and it not yet reloaded, restarted or started: a pass
    /// killed in between leaves this set (saved before the write), and the next pass, finding the
    /// files already in place, activates it still.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub activation_pending: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ManagedPackage {
    /// Installed by plumb (removed again when it leaves Git); false when it was there before.
    pub installed_by_plumb: bool,
    /// The version pin Git gave it when plumb last made the host match (`[packages] install`
    /// "name=pin"): another version with the same pin in Git is drift, a new pin is a change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir> {
        for sub in ["", "backups"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("creating state directory {}", d.display()))?;
            // Backups hold what was at a path before plumb (maybe a secret), state.json digests
            // of secret files, repo.git the fleet's files: for root's eyes only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting state directory {}", d.display()))?;
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Waits for, then holds, the exclusive lock on this state directory (released on drop).
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let p = self.dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", p.display()))
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    pub fn load(&self) -> Result<State> {
        let p = self.dir.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| {
                format!(
                    "parsing {}: it is plumb's own state; move it away to start over",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let data = serde_json::to_vec_pretty(state)?;
        let path = self.dir.join("state.json");
        // A no-op pass changes nothing here: skip the write and its two fsyncs.
        if std::fs::read(&path).is_ok_and(|old| old == data) {
            return Ok(());
        }
        write_atomic(&path, &data)
    }

    /// Reads a small named document (`report.toml`, ...).
    pub fn read_doc(&self, name: &str) -> Result<Option<String>> {
        match std::fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.dir.join(name).display())),
        }
    }

    pub fn write_doc(&self, name: &str, text: &str) -> Result<()> {
        write_atomic(&self.dir.join(name), text.as_bytes())
    }

    /// Like `write_doc` (atomic: temp file and rename) but not fsynced, for a document rewritten
    /// on every pass that nothing depends on (report.toml): a crash costs the last copy at most,
    /// and a no-op pass saves two fsyncs (tens of ms on a busy or flash disk).
    pub fn write_doc_unsynced(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} into place", path.display()))
    }

    /// Keeps what was at a path before plumb took it over. The blob is named by the path's hash.
    pub fn store_backup(&self, path: &str, data: &[u8]) -> Result<String> {
        use sha2::Digest;
        let blob = hex::encode(&sha2::Sha256::digest(path.as_bytes())[..16]);
        write_atomic(&self.dir.join("backups").join(&blob), data)?;
        Ok(blob)
    }

    pub fn read_backup(&self, blob: &str) -> Result<Vec<u8>> {
        let p = self.dir.join("backups").join(blob);
        std::fs::read(&p).with_context(|| format!("reading backup {}", p.display()))
    }

    pub fn drop_backup(&self, blob: &str) {
        let _ = std::fs::remove_file(self.dir.join("backups").join(blob));
    }
}

/// Temp file in the same directory, fsync, rename, fsync the directory: readers see the old or the
/// new content, never a torn one. For plumb's own files (the host's go through `host::fs`).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} into place", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Empties (or creates) a scratch directory plumb owns.
pub fn reset_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        assert_eq!(sd.load().unwrap(), State::default());
        let mut s = State {
            applied_commit: Some("abc".into()),
            ..Default::default()
        };
        s.files.insert(
            "/etc/motd".into(),
            ManagedFile {
                digest: Some("d".into()),
                ..Default::default()
            },
        );
        sd.save(&s).unwrap();
        assert_eq!(sd.load().unwrap(), s);
        let b = sd.store_backup("/etc/motd", b"old").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for d in [t.path().to_path_buf(), t.path().join("backups")] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert_eq!(sd.read_backup(&b).unwrap(), b"old");
    }
}
