//! The one opener of plumb's own bare repositories: the local clone of the fleet repo, and the
//! scratch repositories of the status push and `plumb fleet`.

use anyhow::{Context, Result};
use std::path::Path;

/// Creates an empty bare repository in `dir` unless one is there.
pub fn init_bare(dir: &Path) -> Result<()> {
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        gix::init_bare(dir)
            .with_context(|| format!("initializing a git repository in {}", dir.display()))?;
    }
    Ok(())
}

/// Opens (creating on first use) the bare repository in `dir` with the host's git config kept
/// out and protocol v2 forced (gix ignores the shallow depth on v1). `ssh_command` is what
/// `ssh://` remotes run (see `git::ssh_command`).
pub fn open_bare(dir: &Path, ssh_command: Option<String>) -> Result<gix::Repository> {
    open_bare_limited(dir, ssh_command, None)
}

/// `open_bare`, and gix refuses to hold any object over `alloc_limit` bytes in memory (when
/// indexing a fetched pack or reading): a hostile blob costs an error, not the memory.
pub fn open_bare_limited(
    dir: &Path,
    ssh_command: Option<String>,
    alloc_limit: Option<u64>,
) -> Result<gix::Repository> {
    init_bare(dir)?;
    let mut overrides = vec!["protocol.version=2".to_string(), "core.askPass=".into()];
    if let Some(limit) = alloc_limit {
        overrides.push(format!("gitoxide.objects.allocLimit={limit}"));
    }
    if let Some(ssh) = ssh_command {
        overrides.push(format!("core.sshCommand={ssh}"));
    }
    let opts = gix::open::Options::isolated().config_overrides(overrides);
    gix::open_opts(dir, opts).with_context(|| format!("opening git repository {}", dir.display()))
}
