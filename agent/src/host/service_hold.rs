//! Holding service starts while packages install (Debian's policy-rc.d convention): a package's
//! maintainer scripts would start its service with the package's default config before plumb
//! writes its own (nginx served Debian's default site for ~1.2 s). While the hold is in place,
//! `deb-systemd-invoke` and `invoke-rc.d` start nothing; plumb starts the units once their files
//! are in place. rpm packages start nothing on install (Fedora policy), so no hold is needed there.

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `policy-rc.d(8)`: exit 101 means "action forbidden".
const SCRIPT: &str = "#!/bin/sh\n# plumb: service starts held while plumb installs packages; removed when it is done.\nexit 101\n";
/// How plumb knows the file is its own (and may remove it).
const MARK: &str = "# plumb: service starts held";

/// Removes the hold when dropped (and the next pass removes one a killed pass left behind).
pub struct Hold {
    path: PathBuf,
}

fn script_path(root: &Path) -> PathBuf {
    root.join("usr/sbin/policy-rc.d")
}

/// Holds service starts under `root`, unless a policy-rc.d that is not plumb's is there (an
/// image build's own): then that one decides, and it is left alone.
pub fn hold(root: &Path) -> Result<Option<Hold>> {
    let path = script_path(root);
    if !path.parent().is_some_and(Path::is_dir) {
        return Ok(None); // not a Debian-like root
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.contains(MARK) => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let tmp = path.with_file_name(".policy-rc.d.plumb-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(SCRIPT.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("putting {} in place", path.display()))?;
    tracing::debug!(path = %path.display(), "service starts held for the package transaction");
    Ok(Some(Hold { path }))
}

/// Removes a hold a killed pass left behind, so services of packages an operator installs by
/// hand start as usual.
pub fn clear_stale(root: &Path) {
    let path = script_path(root);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(MARK)) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a stale service hold");
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the service hold");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_then_releases_and_respects_a_foreign_policy() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            hold(root.path()).unwrap().is_none(),
            "no /usr/sbin: not Debian"
        );
        std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
        let p = script_path(root.path());
        {
            let h = hold(root.path()).unwrap().expect("held");
            let st = std::process::Command::new(&p).status().unwrap();
            assert_eq!(st.code(), Some(101));
            drop(h);
        }
        assert!(!p.exists(), "released");

        // A hold left by a killed pass is cleared; a foreign one is kept and not replaced.
        std::fs::write(&p, SCRIPT).unwrap();
        clear_stale(root.path());
        assert!(!p.exists());
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        assert!(hold(root.path()).unwrap().is_none());
        clear_stale(root.path());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "#!/bin/sh\nexit 0\n");
    }
}
