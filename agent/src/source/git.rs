//! The fleet repository: a bare, shallow clone under `state_dir`, fetched one branch at a time.

use super::probe;
use crate::spec::tree::{FleetTree, Node};
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
        })
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
        super::repo::open_bare(&self.dir, remote.map(ssh_command))
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
        self.receive(&repo, conn, remote, local_ref, depth, &what)
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
    fn receive(
        &self,
        repo: &gix::Repository,
        mut conn: Connection<'_, '_>,
        remote: &Remote,
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
        let outcome = prepare
            .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .context(what.to_string())?;
        if outcome.handshake.server_protocol_version != gix::protocol::transport::Protocol::V2 {
            bail!("{what}: the server does not speak git protocol v2, which plumb needs for shallow fetches");
        }
        Ok(Some(!matches!(
            outcome.status,
            gix::remote::fetch::Status::NoPackReceived { .. }
        )))
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
        let data = repo.find_blob(entry.object_id())?.data.clone();
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
        Ok(CommitTree { repo, tree, commit })
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
    if url.scheme != gix::url::Scheme::Git {
        return Ok(remote.connect(Direction::Fetch)?);
    }
    let host = url.host().context("git:// URL without a host")?;
    let stream = probe::connect_tcp(host, url.port_or_default().unwrap_or(9418))?;
    let transport = gix::protocol::transport::client::git::blocking_io::Connection::new(
        stream.try_clone()?,
        stream,
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

/// One TLS crypto backend (ring) for every HTTPS client in the process.
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
}

impl CommitTree {
    fn walk_tree(&self, id: ObjectId, prefix: &str, out: &mut Vec<(String, Node)>) -> Result<()> {
        let tree = self.repo.find_tree(id)?;
        for entry in tree.iter() {
            let entry = entry?;
            let name = entry.filename().to_str().map_err(|_| {
                anyhow!(
                    "{prefix}/{:?}: file name is not UTF-8: rename it",
                    entry.filename()
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
                out.push((rel.clone(), Node::Dir));
                self.walk_tree(oid, &rel, out)?;
            } else if mode.is_link() {
                let blob = self.repo.find_blob(oid)?;
                let target = std::str::from_utf8(&blob.data)
                    .map_err(|_| anyhow!("{rel}: symlink target is not UTF-8"))?
                    .to_string();
                out.push((rel, Node::Symlink { target }));
            } else if mode.is_blob() {
                let blob = self.repo.find_blob(oid)?;
                out.push((
                    rel,
                    Node::File {
                        data: blob.data.clone(),
                        executable: mode.is_executable(),
                    },
                ));
            } else {
                bail!("{rel}: submodules are not supported in a fleet repo");
            }
        }
        Ok(())
    }
}

impl FleetTree for CommitTree {
    fn walk(&self, dir: &str) -> Result<Option<Vec<(String, Node)>>> {
        let root = self.repo.find_tree(self.tree)?;
        let Some(entry) = root.lookup_entry_by_path(dir)? else {
            return Ok(None);
        };
        if !entry.mode().is_tree() {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.walk_tree(entry.object_id(), "", &mut out)?;
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        format!("commit {}", self.commit)
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
