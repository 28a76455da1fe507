//! `plumb fleet`'s memory of what it last read from a status URL with one repository per host:
//! per host, the tip of its status branch, that commit's raw text (for the signature check) and
//! its status.toml. A host whose tip is unchanged is then only listed (ls-refs), never fetched.
//!
//! Kept in the user's cache directory (`$XDG_CACHE_HOME` or `~/.cache`, `plumb/fleet-<hash of the
//! redacted URL>`), written atomically with entries only for the hosts asked. It is content
//! addressed: an entry is only used for the tip it was read at, and only when the stored commit
//! hashes to that tip. A file that cannot be read, is too large, of another format or for another
//! URL is ignored (and replaced at the next write).

use anyhow::{Context, Result};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;
/// A cache file larger than this is ignored (10,000 hosts with reports of a few KiB fit).
const MAX_FILE: u64 = 512 << 20;
/// An entry whose status.toml or commit is larger than this is not kept (the readers bound a
/// status.toml at 1 MiB too).
pub const MAX_ENTRY: usize = 1 << 20;

/// What was read of one host's status branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// The commit the status branch pointed to.
    pub tip: String,
    /// That commit object's raw text (it carries the host's signature).
    pub commit: String,
    /// Its status.toml.
    pub status: String,
}

impl Tip {
    /// The tip's id, when the stored commit really is that commit.
    fn checked(&self) -> Option<ObjectId> {
        let id = ObjectId::from_hex(self.tip.as_bytes()).ok()?;
        let computed =
            gix::objs::compute_hash(id.kind(), gix::objs::Kind::Commit, self.commit.as_bytes())
                .ok()?;
        (computed == id && self.status.len() <= MAX_ENTRY).then_some(id)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    url: String,
    hosts: BTreeMap<String, Tip>,
}

/// The cache of one status URL.
#[derive(Debug)]
pub struct TipCache {
    path: Option<PathBuf>,
    url: String,
    hosts: BTreeMap<String, Tip>,
}

impl TipCache {
    /// The cache for `redacted_url` in the user's cache directory (empty when there is none, or
    /// it is unusable).
    pub fn open(redacted_url: &str) -> TipCache {
        let path = cache_dir().map(|d| d.join("plumb").join(file_name(redacted_url)));
        Self::at(path, redacted_url)
    }

    /// An empty cache that is never written (`--no-cache`).
    pub fn disabled(redacted_url: &str) -> TipCache {
        Self::at(None, redacted_url)
    }

    /// The cache in file `path`.
    pub fn at(path: Option<PathBuf>, redacted_url: &str) -> TipCache {
        let hosts = match &path {
            Some(p) => match load(p, redacted_url) {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!("ignoring the fleet cache {}: {e:#}", p.display());
                    BTreeMap::new()
                }
            },
            None => BTreeMap::new(),
        };
        TipCache {
            path,
            url: redacted_url.into(),
            hosts,
        }
    }

    /// What was read of `host` at `tip`; None unless the entry is for exactly that commit.
    pub fn get(&self, host: &str, tip: ObjectId) -> Option<&Tip> {
        self.hosts.get(host).filter(|t| t.checked() == Some(tip))
    }

    /// Writes the cache with exactly `entries` (the hosts just read; hosts gone are dropped).
    pub fn save(&mut self, entries: BTreeMap<String, Tip>) -> Result<()> {
        self.hosts = entries
            .into_iter()
            .filter(|(_, t)| t.commit.len() <= MAX_ENTRY && t.status.len() <= MAX_ENTRY)
            .collect();
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().context("cache path has no parent")?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the cache directory {}", dir.display()))?;
        let file = File {
            format: FORMAT,
            url: self.url.clone(),
            hosts: std::mem::take(&mut self.hosts),
        };
        let data = serde_json::to_vec(&file)?;
        self.hosts = file.hosts;
        crate::state::write_atomic(path, &data)
            .with_context(|| format!("writing the fleet cache {}", path.display()))
    }
}

fn load(path: &Path, url: &str) -> Result<BTreeMap<String, Tip>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut data = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut data)?;
    anyhow::ensure!(
        data.len() as u64 <= MAX_FILE,
        "larger than {MAX_FILE} bytes"
    );
    let file: File = serde_json::from_slice(&data).context("not a fleet cache")?;
    anyhow::ensure!(file.format == FORMAT, "format {}", file.format);
    anyhow::ensure!(file.url == url, "for another URL ({})", file.url);
    Ok(file.hosts)
}

/// `fleet-<sha1 of the redacted URL>`: no credentials in a file name, one file per URL.
fn file_name(redacted_url: &str) -> String {
    let id = gix::objs::compute_hash(
        gix::hash::Kind::Sha1,
        gix::objs::Kind::Blob,
        redacted_url.as_bytes(),
    )
    .map(|h| h.to_string())
    .unwrap_or_default();
    format!("fleet-{id}")
}

/// `$XDG_CACHE_HOME` when absolute, else `~/.cache`.
fn cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
    match xdg {
        Some(d) if d.is_absolute() => Some(d),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .map(|h| h.join(".cache")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip(status: &str) -> (ObjectId, Tip) {
        let commit = format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\n{status}\n"
        );
        let id = gix::objs::compute_hash(
            gix::hash::Kind::Sha1,
            gix::objs::Kind::Commit,
            commit.as_bytes(),
        )
        .unwrap();
        (
            id,
            Tip {
                tip: id.to_string(),
                commit,
                status: status.into(),
            },
        )
    }

    const URL: &str = "git://example.org/{host}.git";

    #[test]
    fn reused_only_for_the_same_tip_and_hosts_gone_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plumb/fleet-x");
        let (a1, t1) = tip("a one");
        let (a2, _) = tip("a two");
        let (b1, tb) = tip("b one");
        let mut c = TipCache::at(Some(path.clone()), URL);
        assert!(c.get("a", a1).is_none());
        c.save(BTreeMap::from([("a".into(), t1.clone()), ("b".into(), tb)]))
            .unwrap();
        let mut c = TipCache::at(Some(path.clone()), URL);
        assert_eq!(c.get("a", a1), Some(&t1));
        // The tip changed: the entry is of no use.
        assert!(c.get("a", a2).is_none());
        // Another host's tip does not count for this one.
        assert!(c.get("a", b1).is_none());
        // b is no host any more: dropped at the next write.
        c.save(BTreeMap::from([("a".into(), t1.clone())])).unwrap();
        let c = TipCache::at(Some(path.clone()), URL);
        assert!(c.get("b", b1).is_none());
        assert!(c.get("a", a1).is_some());
        // Another URL's file is not used.
        let c = TipCache::at(Some(path), "git://example.org/other/{host}.git");
        assert!(c.get("a", a1).is_none());
    }

    #[test]
    fn a_corrupt_or_forged_cache_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet-x");
        std::fs::write(&path, b"{\"format\":1,\"url\":").unwrap();
        let (a1, t1) = tip("a one");
        let mut c = TipCache::at(Some(path.clone()), URL);
        assert!(c.get("a", a1).is_none());
        c.save(BTreeMap::from([("a".into(), t1.clone())])).unwrap();
        assert!(TipCache::at(Some(path.clone()), URL).get("a", a1).is_some());
        // An entry whose commit does not hash to its tip (edited status behind the same tip)
        // is not trusted.
        let (_, forged) = tip("a forged");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace(
            &serde_json::to_string(&t1.commit).unwrap(),
            &serde_json::to_string(&forged.commit).unwrap(),
        );
        std::fs::write(&path, text).unwrap();
        assert!(TipCache::at(Some(path), URL).get("a", a1).is_none());
    }

    #[test]
    fn file_names_hide_the_url() {
        let n = file_name("https://example.org/{host}.git");
        assert!(n.starts_with("fleet-") && n.len() == 46, "{n}");
        assert_ne!(n, file_name("https://example.org/x/{host}.git"));
    }
}
