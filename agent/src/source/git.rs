//! The fleet repository: a bare, shallow clone under `state_dir`, fetched one branch at a time.

use super::probe;
use crate::spec::tree::{Budget, FleetTree, Node};
use anyhow::{anyhow, bail, Context, Result};
use gix::bstr::ByteSlice;
use gix::remote::Direction;
use gix::ObjectId;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Where and how to fetch.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub branch: String,
    pub ssh_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Host keys learnt on first contact (trust on first use), beside the system's known hosts.
    pub known_hosts: Option<PathBuf>,
}

/// The local bare repository that fetched commits land in.
pub struct LocalRepo {
    dir: PathBuf,
    /// `limits.max_file_size`: no blob over it is read (see [`Self::with_file_limit`]).
    max_file_size: Option<u64>,
}

/// No object gix reads or indexes may allocate more than this, whatever `limits.max_file_size`
/// says below it: trees and commits are objects too, and a tree of a few thousand entries is
/// larger than a small file limit.
const MIN_OBJECT_LIMIT: u64 = 16 << 20;

/// Longest symlink target read from a tree: a bound on memory; the spec rejects any target over
/// PATH_MAX with its own message (invalid-path).
const MAX_LINK_TARGET: u64 = 64 * 1024;

/// Largest `host.toml` read, when `limits.max_file_size` is below it.
const MIN_HOST_TOML_LIMIT: u64 = 1 << 20;

/// A blob of the tree is over a `[limits]` bound: rejected before it was read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is {size} bytes, over the limit of {limit} bytes ({key} in agent.toml) [size-limit]"
)]
pub struct TooLarge {
    pub path: String,
    pub size: u64,
    pub limit: u64,
    pub key: &'static str,
}

/// What one fetch found.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: ObjectId,
    /// False when the server had nothing new (no pack was transferred).
    pub received_pack: bool,
}

impl LocalRepo {
    /// Opens `dir`, creating an empty bare repository there on first use.
    pub fn open_or_init(dir: &Path) -> Result<LocalRepo> {
        super::repo::init_bare(dir)?;
        Ok(LocalRepo {
            dir: dir.to_path_buf(),
            max_file_size: None,
        })
    }

    /// Bounds memory by `limits.max_file_size`: gix allocates no object over it (or over
    /// [`MIN_OBJECT_LIMIT`], the larger), neither when it indexes a fetched pack (such a pack is
    /// fetched again by git, which streams it: [`Self::fetch_streaming`]) nor when it reads one;
    /// [`Self::tree`] checks blob sizes in the object headers before reading any blob.
    pub fn with_file_limit(mut self, max_file_size: u64) -> LocalRepo {
        self.max_file_size = Some(max_file_size);
        self
    }

    /// The largest allocation gix may make for one object, if bounded.
    fn object_limit(&self) -> Option<u64> {
        self.max_file_size.map(|m| m.max(MIN_OBJECT_LIMIT))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes lock files a killed pass left behind (the caller holds the state_dir lock, so no
    /// other writer exists); else every later fetch would fail on them.
    pub fn clear_stale_locks(&self) {
        fn sweep(dir: &Path, depth: usize) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if depth > 0 {
                        sweep(&p, depth - 1);
                    }
                } else if p.extension().is_some_and(|x| x == "lock") {
                    tracing::warn!(path = %p.display(), "removing a stale git lock file");
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        sweep(&self.dir, 0);
        sweep(&self.dir.join("refs"), 6);
    }

    /// Opens the repository with the host's git config kept out and protocol v2 forced (gix ignores
    /// the shallow depth on v1).
    pub fn open(&self, remote: Option<&Remote>) -> Result<gix::Repository> {
        super::repo::open_bare_limited(&self.dir, remote.map(ssh_command), self.object_limit())
    }

    fn tracking_ref(branch: &str) -> String {
        format!("refs/remotes/origin/{branch}")
    }

    /// Fetches the tip of `remote.branch`, depth 1, over protocol v2. Blocking: run it off the runtime.
    pub fn fetch(&self, remote: &Remote) -> Result<Fetched> {
        self.fetch_branch(remote, NonZeroU32::MIN)
    }

    /// Fetches `remote.branch` again with `depth` commits of history (counted from the tip), so
    /// the trust check can walk back to the last applied commit.
    pub fn deepen(&self, remote: &Remote, depth: u32) -> Result<()> {
        let depth = NonZeroU32::new(depth).unwrap_or(NonZeroU32::MIN);
        self.fetch_branch(remote, depth).map(|_| ())
    }

    fn fetch_branch(&self, remote: &Remote, depth: NonZeroU32) -> Result<Fetched> {
        let received_pack = self.fetch_ref(
            remote,
            &format!("refs/heads/{}", remote.branch),
            &Self::tracking_ref(&remote.branch),
            depth,
        )?;
        let commit = received_pack
            .and(self.fetched(&remote.branch)?)
            .ok_or_else(|| {
                anyhow!(
                    "fetching branch {} from {}: the branch does not exist on the server",
                    remote.branch,
                    redact_url(&remote.url)
                )
            })?;
        Ok(Fetched {
            commit,
            received_pack: received_pack == Some(true),
        })
    }

    /// Fetches `remote_ref` of `remote.url` into `local_ref` with `depth` commits; says whether a
    /// pack came, or `None` when the server has no such ref (the local ref stays as it was).
    pub fn fetch_ref(
        &self,
        remote: &Remote,
        remote_ref: &str,
        local_ref: &str,
        depth: NonZeroU32,
    ) -> Result<Option<bool>> {
        init_tls();
        let repo = self.open(Some(remote))?;
        let what = format!("fetching {remote_ref} from {}", redact_url(&remote.url));
        if depth == NonZeroU32::MIN {
            if let Some(found) = self.probe(&repo, remote, remote_ref, local_ref)? {
                return Ok(found);
            }
        }
        let spec = format!("+{remote_ref}:{local_ref}");
        let url = remote_url(&remote.url)?;
        let r = repo
            .remote_at(url.as_str())
            .with_context(|| format!("{what}: bad repository URL"))?
            .with_refspecs([spec.as_str()], Direction::Fetch)
            .with_context(|| what.clone())?
            // Tags are not needed, and asking for them would list every tag on each poll.
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let conn = connect(&r).with_context(|| what.clone())?;
        self.receive(&repo, conn, remote, remote_ref, local_ref, depth, &what)
    }

    /// The one-round-trip check of a poll ([`probe`]): `Some` when the server's tip is the one we
    /// already have (nothing to fetch) or the ref is gone; `None` when gix must fetch.
    fn probe(
        &self,
        repo: &gix::Repository,
        remote: &Remote,
        remote_ref: &str,
        local_ref: &str,
    ) -> Result<Option<Option<bool>>> {
        let Some(have) = self.resolve(local_ref)? else {
            return Ok(None);
        };
        match probe::remote_tip(remote, remote_ref) {
            Ok(probe::Tip::At(tip)) if tip == have && repo.has_object(tip) => {
                tracing::debug!(commit = %tip, "the server's tip is the fetched one: nothing to fetch");
                Ok(Some(Some(false)))
            }
            Ok(probe::Tip::Missing) => Ok(Some(None)),
            Ok(probe::Tip::At(_)) => Ok(None),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "ref probe failed; fetching with the full handshake");
                Ok(None)
            }
        }
    }

    /// The fetch proper over an open connection; see [`Self::fetch_ref`].
    #[allow(clippy::too_many_arguments)]
    fn receive(
        &self,
        repo: &gix::Repository,
        mut conn: Connection<'_, '_>,
        remote: &Remote,
        remote_ref: &str,
        local_ref: &str,
        depth: NonZeroU32,
        what: &str,
    ) -> Result<Option<bool>> {
        if let Some(token_file) = &remote.token_file {
            conn = conn.with_credentials(token_helper(read_token(token_file)?));
        }
        let prepare = conn
            .prepare_fetch(gix::progress::Discard, Default::default())
            .context(what.to_string())?;
        if prepare.ref_map().is_missing_required_mapping() {
            return Ok(None);
        }
        // Nothing new: stop after the ref listing. Else gix negotiates a (shallow) fetch anyway,
        // one more round trip and ~450 bytes on every poll. Dropping `prepare` ends the session.
        // (A deepening fetch of the same tip must go on: it wants the history behind it.)
        let tip = prepare
            .ref_map()
            .mappings
            .iter()
            .find(|m| {
                m.local
                    .as_ref()
                    .is_some_and(|l| l.as_slice() == local_ref.as_bytes())
            })
            .and_then(|m| m.remote.as_id())
            .map(|id| id.to_owned());
        if let (Some(tip), Some(have), true) =
            (tip, self.resolve(local_ref)?, depth == NonZeroU32::MIN)
        {
            if tip == have && repo.has_object(tip) {
                return Ok(Some(false));
            }
        }
        let outcome = match prepare
            .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(anyhow::Error::from)
        {
            Ok(o) => o,
            Err(e) if self.over_object_limit(&e) => {
                return self.fetch_streaming(remote, remote_ref, local_ref, depth, what);
            }
            Err(e) => return Err(e.context(what.to_string())),
        };
        if outcome.handshake.server_protocol_version != gix::protocol::transport::Protocol::V2 {
            bail!("{what}: the server does not speak git protocol v2, which plumb needs for shallow fetches");
        }
        Ok(Some(!matches!(
            outcome.status,
            gix::remote::fetch::Status::NoPackReceived { .. }
        )))
    }

    /// Did gix refuse to index a pack because one of its objects is over the allocation limit?
    fn over_object_limit(&self, e: &anyhow::Error) -> bool {
        self.object_limit().is_some() && format!("{e:#}").contains("too large to fit in memory")
    }

    /// The fetch again, by `git fetch`: gix indexes a received pack with every object whole in
    /// memory, so a pack holding a huge blob (a few hundred KB of zeros on the wire) is refused
    /// by the allocation limit. git's index-pack hashes objects over `core.bigFileThreshold` as a
    /// stream, in bounded memory; the commit then lands here, and the trust check and the spec
    /// loader (object headers only) reject it naming the file, without reading the blob.
    fn fetch_streaming(
        &self,
        remote: &Remote,
        remote_ref: &str,
        local_ref: &str,
        depth: NonZeroU32,
        what: &str,
    ) -> Result<Option<bool>> {
        let limit = self.object_limit().unwrap_or(MIN_OBJECT_LIMIT);
        tracing::info!(
            limit,
            "the fetched pack holds an object over the limit; fetching it again with git, which streams it"
        );
        let endpoint = crate::status::remote::Endpoint {
            url: remote_url(&remote.url)?,
            ssh_key: remote.ssh_key.clone(),
            token_file: remote.token_file.clone(),
            known_hosts: remote.known_hosts.clone(),
        };
        let mut cmd = crate::status::git_cli::git_command(&self.dir, &endpoint)?;
        // Objects over 1 MiB are hashed as a stream, never held whole.
        cmd.args(["-c", "core.bigFileThreshold=1m"])
            // Always index-pack (it streams), never unpack-objects into loose objects.
            .args(["-c", "fetch.unpackLimit=1", "-c", "protocol.version=2"])
            .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"])
            .arg(format!("--depth={depth}"))
            .arg("--")
            .arg(&endpoint.url)
            .arg(format!("+{remote_ref}:{local_ref}"))
            .stdin(std::process::Stdio::null());
        let out = cmd
            .output()
            .with_context(|| format!("{what}: running git fetch"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!(
                "{what}: the commit holds an object over {limit} bytes (limits.max_file_size is {}) \
                 [size-limit], and git fetch failed too: {}",
                self.max_file_size.unwrap_or(limit),
                redact_url(stderr.trim())
            );
        }
        Ok(Some(true))
    }

    /// The commit a local ref points to, if the ref exists.
    pub fn resolve(&self, local_ref: &str) -> Result<Option<ObjectId>> {
        let repo = self.open(None)?;
        let r = repo.try_find_reference(local_ref)?;
        Ok(match r {
            Some(mut r) => Some(
                r.peel_to_id()
                    .with_context(|| format!("resolving {local_ref}"))?
                    .detach(),
            ),
            None => None,
        })
    }

    /// The content of `path` in the tree of `commit`, if it is a blob there.
    pub fn read_blob(&self, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>> {
        let repo = self.open(None)?;
        let tree = repo
            .find_commit(commit)
            .with_context(|| format!("commit {commit} is not in {}", self.dir.display()))?
            .tree()
            .context("reading the commit's tree")?;
        let Some(entry) = tree.lookup_entry_by_path(path)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let limit = self.object_limit().unwrap_or(MIN_OBJECT_LIMIT);
        let size = repo.find_header(entry.object_id())?.size();
        if size > limit {
            bail!(TooLarge {
                path: path.to_string(),
                size,
                limit,
                key: "limits.max_file_size",
            });
        }
        let data = repo.find_blob(entry.object_id())?.take_data();
        Ok(Some(data))
    }

    /// The last fetched tip of `branch`, if any.
    pub fn fetched(&self, branch: &str) -> Result<Option<ObjectId>> {
        self.resolve(&Self::tracking_ref(branch))
    }

    /// A view of `commit`'s tree for the spec loader.
    pub fn tree(&self, commit: ObjectId) -> Result<CommitTree> {
        let repo = self.open(None)?;
        let tree = repo
            .find_commit(commit)
            .with_context(|| format!("commit {commit} is not in {}", self.dir.display()))?
            .tree_id()
            .context("reading the commit's tree")?
            .detach();
        Ok(CommitTree {
            repo,
            tree,
            commit,
            max_file_size: self.max_file_size.unwrap_or(u64::MAX),
        })
    }
}

/// A gix connection for fetching.
pub(crate) type Connection<'a, 'repo> = gix::remote::Connection<
    'a,
    'static,
    'repo,
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
>;

/// Connects `remote` for a fetch. A git:// connection gets its socket from
/// [`probe::connect_tcp`]: gix's own keeps Nagle's algorithm on, and its small writes then wait
/// ~40 ms for the server's delayed ACK, once per request.
pub(crate) fn connect<'a, 'repo>(remote: &'a gix::Remote<'repo>) -> Result<Connection<'a, 'repo>> {
    let url = remote
        .url(Direction::Fetch)
        .context("the remote has no URL")?;
    match url.scheme {
        gix::url::Scheme::Git => {}
        gix::url::Scheme::Http | gix::url::Scheme::Https => {
            let transport = super::http::transport(url.clone());
            return Ok(remote.to_connection_with_transport(Box::new(transport)));
        }
        _ => return Ok(remote.connect(Direction::Fetch)?),
    }
    let host = url.host().context("git:// URL without a host")?;
    let stream = probe::connect_tcp(host, url.port_or_default().unwrap_or(9418))?;
    // Buffered both ways: gix writes a request as many small pkt-lines and flushes before it
    // reads the answer, and reads each pkt-line's 4-byte length apart from its body: one send
    // per request and far fewer reads instead of a syscall (and a loopback packet) per line.
    let transport = gix::protocol::transport::client::git::blocking_io::Connection::new(
        std::io::BufReader::new(stream.try_clone()?),
        std::io::BufWriter::new(stream),
        gix::protocol::transport::Protocol::V2,
        url.path.clone(),
        Some((host.to_string(), url.port)),
        gix::protocol::transport::client::git::ConnectMode::Daemon,
        false,
    );
    Ok(remote.to_connection_with_transport(Box::new(transport)))
}

/// Local paths become file:// URLs so the same code path serves both.
pub(crate) fn remote_url(url: &str) -> Result<String> {
    if url.contains("://") || !url.starts_with('/') {
        return Ok(url.to_string());
    }
    Ok(format!("file://{url}"))
}

/// `ssh` never prompts; a new host key is accepted once and pinned in `known_hosts`.
pub(crate) fn ssh_command(r: &Remote) -> String {
    let mut cmd = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new".to_string();
    if let Some(key) = &r.ssh_key {
        cmd.push_str(&format!(" -o IdentitiesOnly=yes -i {}", key.display()));
    }
    if let Some(kh) = &r.known_hosts {
        cmd.push_str(&format!(" -o UserKnownHostsFile={}", kh.display()));
    }
    cmd
}

/// One TLS crypto backend (ring) for the process's HTTPS client.
pub(crate) fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Answers gix's credential requests with the token of `auth.token_file`.
pub(crate) fn token_helper(
    token: String,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| match action {
        gix::credentials::helper::Action::Get(ctx) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: ctx.username.clone().unwrap_or_else(|| "plumb".into()),
                    password: token.clone(),
                    oauth_refresh_token: None,
                },
                next: gix::credentials::helper::NextAction::from(ctx),
            }))
        }
        _ => Ok(None),
    }
}

pub(crate) fn read_token(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading auth.token_file {}: create it with the access token",
            path.display()
        )
    })?;
    Ok(t.trim().to_string())
}

/// Drops any password in a URL before it reaches a log line or the status.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A commit's tree, read without a worktree.
pub struct CommitTree {
    repo: gix::Repository,
    tree: ObjectId,
    pub commit: ObjectId,
    max_file_size: u64,
}

impl CommitTree {
    /// The content of blob `oid` at `rel`, its size checked in the object's header (against
    /// `limit` and what is left of `budget`) first, so a blob over either is never read.
    fn read_blob(
        &self,
        oid: ObjectId,
        rel: &str,
        limit: u64,
        key: &'static str,
        budget: Option<&mut Budget>,
    ) -> Result<Vec<u8>> {
        let size = self
            .repo
            .find_header(oid)
            .with_context(|| format!("{rel}: reading the object header"))?
            .size();
        if size > limit {
            bail!(TooLarge {
                path: rel.to_string(),
                size,
                limit,
                key,
            });
        }
        if let Some(b) = budget {
            b.take_file(rel, size)?;
        }
        Ok(self.repo.find_blob(oid)?.take_data())
    }

    /// Depth first, iteratively (a tree 8,000 levels deep must not overflow the stack); trees
    /// `max_depth` levels down are listed, not entered (see `FleetTree::walk`).
    fn walk_tree(
        &self,
        id: ObjectId,
        budget: &mut Budget,
        out: &mut Vec<(String, Node)>,
    ) -> Result<()> {
        // Trees still to list: (tree id, path prefix, depth of its entries).
        let mut pending: Vec<(ObjectId, String, usize)> = vec![(id, String::new(), 1)];
        while let Some((id, prefix, depth)) = pending.pop() {
            let tree = self.repo.find_tree(id)?;
            let mut subtrees = Vec::new();
            for entry in tree.iter() {
                let entry = entry?;
                let name = entry.filename().to_str().map_err(|_| {
                    crate::spec::SpecError::new(
                        crate::reason::Reason::InvalidPath,
                        format!(
                            "{prefix}/{:?}: file name is not UTF-8: rename it",
                            entry.filename()
                        ),
                    )
                })?;
                let rel = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                };
                let mode = entry.mode();
                let oid = entry.object_id();
                if mode.is_tree() {
                    budget.take_dir(&rel)?;
                    out.push((rel.clone(), Node::Dir));
                    if depth <= budget.max_depth() {
                        subtrees.push((oid, rel, depth + 1));
                    }
                } else if mode.is_link() {
                    let data =
                        self.read_blob(oid, &rel, MAX_LINK_TARGET, "PATH_MAX", Some(budget))?;
                    let target = String::from_utf8(data)
                        .map_err(|_| anyhow!("{rel}: symlink target is not UTF-8"))?;
                    out.push((rel, Node::Symlink { target }));
                } else if mode.is_blob() {
                    let (limit, key) = if rel == "host.toml" {
                        (
                            self.max_file_size.max(MIN_HOST_TOML_LIMIT),
                            "limits.max_file_size (at least 1 MiB for host.toml)",
                        )
                    } else {
                        (self.max_file_size, "limits.max_file_size")
                    };
                    let data = self.read_blob(oid, &rel, limit, key, Some(budget))?;
                    out.push((
                        rel,
                        Node::File {
                            data,
                            executable: mode.is_executable(),
                        },
                    ));
                } else {
                    bail!("{rel}: submodules are not supported in a fleet repo");
                }
            }
            pending.extend(subtrees.into_iter().rev());
        }
        Ok(())
    }
}

impl CommitTree {
    /// Keeps up to `bytes` of decoded objects in memory: a tree read for many hosts (`plumb
    /// diff`) is decompressed once.
    pub fn with_object_cache(mut self, bytes: usize) -> CommitTree {
        self.repo.object_cache_size(bytes);
        self
    }

    /// Whether `dir` is a directory of the tree.
    pub fn is_dir(&self, dir: &str) -> Result<bool> {
        let root = self.repo.find_tree(self.tree)?;
        Ok(root
            .lookup_entry_by_path(dir)?
            .is_some_and(|e| e.mode().is_tree()))
    }

    /// The names of the directories directly under `dir` (none when it is not a directory).
    pub fn subdirs(&self, dir: &str) -> Result<Vec<String>> {
        let root = self.repo.find_tree(self.tree)?;
        let Some(entry) = root.lookup_entry_by_path(dir)? else {
            return Ok(Vec::new());
        };
        if !entry.mode().is_tree() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in self.repo.find_tree(entry.object_id())?.iter() {
            let e = e?;
            if e.mode().is_tree() {
                out.push(e.filename().to_str_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

impl FleetTree for CommitTree {
    fn walk(&self, dir: &str, budget: &mut Budget) -> Result<Option<Vec<(String, Node)>>> {
        let root = self.repo.find_tree(self.tree)?;
        let Some(entry) = root.lookup_entry_by_path(dir)? else {
            return Ok(None);
        };
        if !entry.mode().is_tree() {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.walk_tree(entry.object_id(), budget, &mut out)?;
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        format!("commit {}", self.commit)
    }

    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let root = self.repo.find_tree(self.tree)?;
        let Some(entry) = root.lookup_entry_by_path(path)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() || entry.mode().is_link() {
            return Ok(None);
        }
        let limit = max.min(self.max_file_size);
        self.read_blob(entry.object_id(), path, limit, "limits.max_file_size", None)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("https://u:secret@h/x.git"),
            "https://***@h/x.git"
        );
        assert_eq!(redact_url("git://h/x.git"), "git://h/x.git");
        assert_eq!(
            remote_url("/srv/fleet.git").unwrap(),
            "file:///srv/fleet.git"
        );
        assert_eq!(remote_url("ssh://git@h/x").unwrap(), "ssh://git@h/x");
    }
}
