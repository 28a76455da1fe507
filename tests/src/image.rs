//! The golden node image: built once by `node-image.sh`, cached by the script's hash; and
//! variants of it with extra packages (`node-image-packages.sh`), cached by their own hash.

use crate::{cache_dir, cmd, lock};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

const SCRIPT: &str = include_str!("../node-image.sh");
const PACKAGES_SCRIPT: &str = include_str!("../node-image-packages.sh");

/// A read-only Debian trixie root filesystem that nodes are cloned from.
#[derive(Debug, Clone)]
pub struct NodeImage {
    root: PathBuf,
}

impl NodeImage {
    /// The cached image, building it first if this version of the script has not built one yet.
    /// Safe to call from parallel tests and test binaries: a lock file serializes builds, and a
    /// build goes to a temp dir that is renamed into place only when complete.
    pub fn ensure() -> Result<NodeImage> {
        static IMAGE: OnceLock<NodeImage> = OnceLock::new();
        if let Some(img) = IMAGE.get() {
            return Ok(img.clone());
        }
        let img = Self::ensure_uncached()?;
        Ok(IMAGE.get_or_init(|| img).clone())
    }

    /// The default image plus the Debian `packages`, for tools the system tests do not need
    /// (the benchmark's puppet and ansible-core). Built from a copy of the default image and cached under a hash
    /// of both scripts and the package list, so the default image's hash does not change.
    pub fn with_packages(packages: &[&str]) -> Result<NodeImage> {
        let base = Self::ensure()?;
        let key = format!("{SCRIPT}\n{PACKAGES_SCRIPT}\n{}", packages.join(" "));
        let hash = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        build_cached(
            &hash,
            ("node-image-packages.sh", PACKAGES_SCRIPT),
            packages,
            Some(base.root()),
        )
    }

    /// The image's root directory. Never boot it directly: `Node::boot` clones it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure_uncached() -> Result<NodeImage> {
        let hash = hex::encode(&Sha256::digest(SCRIPT.as_bytes())[..8]);
        build_cached(&hash, ("node-image.sh", SCRIPT), &[], None)
    }
}

/// The image cached under `hash`, else built by running `script` (name, text) with its rootfs
/// dir and `args`; `base`, if given, is copied to that rootfs dir first.
fn build_cached(
    hash: &str,
    (name, script): (&str, &str),
    args: &[&str],
    base: Option<&Path>,
) -> Result<NodeImage> {
    let cache = cache_dir();
    let dir = cache.join(hash);
    let root = dir.join("rootfs");
    if root.join("etc/os-release").exists() {
        return Ok(NodeImage { root });
    }
    let _lock = lock::lock(&cache.join("build.lock"))?;
    // Another process may have finished the build while we waited for the lock.
    if root.join("etc/os-release").exists() {
        return Ok(NodeImage { root });
    }
    let tmp = cache.join(format!(".build-{hash}"));
    // We hold the lock, so a leftover temp dir is from a build that died.
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let script_path = tmp.join(name);
    std::fs::write(&script_path, script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    if let Some(base) = base {
        cmd::run_ok(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(base)
                .arg(tmp.join("rootfs")),
        )?;
    }
    let log = cache.join(format!("{hash}.log"));
    eprintln!(
        "plumb-systest: building node image {} (log: {})",
        dir.display(),
        log.display()
    );
    let started = Instant::now();
    let out = cmd::run(
        Command::new("bash")
            .arg(&script_path)
            .arg(tmp.join("rootfs"))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    std::fs::write(
        &log,
        format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr),
    )
    .with_context(|| format!("writing {}", log.display()))?;
    if !out.success() {
        bail!(
            "{name} failed ({}), see {}:\n{}",
            out.status,
            log.display(),
            cmd::tail(&out.stderr, 3000)
        );
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    eprintln!(
        "plumb-systest: node image built in {:.1?}",
        started.elapsed()
    );
    Ok(NodeImage { root })
}
