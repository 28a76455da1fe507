//! Reading status branches with gix: fetches filtered by ref prefix over protocol v2, with the
//! agent's credentials and the host's git config kept out.

use crate::source::git::{
    connect, init_tls, read_token, redact_url, remote_url, ssh_command, token_helper, Remote,
};
use anyhow::{bail, Context, Result};
use gix::remote::Direction;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// A repository to read from or push to, with the credentials for it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub ssh_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Host keys pinned on first contact (the agent's state_dir/known_hosts).
    pub known_hosts: Option<PathBuf>,
}

impl Endpoint {
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// The ssh command line the fetch uses, for gix and for `git push` alike.
    pub fn ssh_command(&self) -> String {
        ssh_command(&Remote {
            url: self.url.clone(),
            branch: String::new(),
            ssh_key: self.ssh_key.clone(),
            token_file: self.token_file.clone(),
            known_hosts: self.known_hosts.clone(),
        })
    }
}

/// What a fetch saw on the server.
pub struct Fetched {
    /// (full ref name, commit) of the refs the server advertised for our refspecs.
    pub remote_refs: Vec<(String, gix::ObjectId)>,
}

/// Fetches `refspecs` from `ep` into `repo`. Only refs under the refspecs' prefixes are listed
/// by the server (protocol v2 `ref-prefix`), so other branches cost nothing.
pub fn fetch(
    repo: &gix::Repository,
    ep: &Endpoint,
    refspecs: &[String],
    depth: Option<NonZeroU32>,
) -> Result<Fetched> {
    fetch_unless(repo, ep, refspecs, depth, |_| false).map(|(f, _)| f)
}

/// [`fetch`], but when `have` says the listed refs are all we need (their objects are known),
/// the connection ends after the ref listing: no pack is made or received. The bool is whether
/// a pack was fetched.
pub fn fetch_unless(
    repo: &gix::Repository,
    ep: &Endpoint,
    refspecs: &[String],
    depth: Option<NonZeroU32>,
    have: impl FnOnce(&[(String, gix::ObjectId)]) -> bool,
) -> Result<(Fetched, bool)> {
    init_tls();
    let what = format!("fetching {} from {}", refspecs.join(" "), ep.redacted());
    let url = remote_url(&ep.url)?;
    let remote = repo
        .remote_at(url.as_str())
        .with_context(|| format!("{what}: bad repository URL"))?
        .with_refspecs(refspecs.iter().map(String::as_str), Direction::Fetch)
        .with_context(|| what.clone())?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut conn = connect(&remote).with_context(|| what.clone())?;
    if let Some(token_file) = &ep.token_file {
        conn = conn.with_credentials(token_helper(read_token(token_file)?));
    }
    // One packed-refs file instead of a loose file per ref: thousands of status branches.
    let mut prepare = conn
        .prepare_fetch(gix::progress::Discard, Default::default())
        .with_context(|| what.clone())?
        .with_write_packed_refs_only(true);
    if let Some(depth) = depth {
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth));
    }
    let remote_refs = prepare
        .ref_map()
        .remote_refs
        .iter()
        .filter_map(|r| match r.unpack() {
            (name, Some(target), peeled) => {
                Some((name.to_string(), peeled.unwrap_or(target).to_owned()))
            }
            _ => None,
        })
        .collect::<Vec<_>>();
    if remote_refs.is_empty() || have(&remote_refs) {
        // Nothing matches (no status branch yet, which gix would call an error), or nothing new.
        return Ok((Fetched { remote_refs }, false));
    }
    let outcome = prepare
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .with_context(|| what.clone())?;
    if outcome.handshake.server_protocol_version != gix::protocol::transport::Protocol::V2 {
        bail!("{what}: the server does not speak git protocol v2");
    }
    Ok((Fetched { remote_refs }, true))
}

/// The commit `refs/heads/<branch>` points to on the server, listed without fetching anything.
pub fn remote_head(repo: &gix::Repository, ep: &Endpoint, branch: &str) -> Result<Option<String>> {
    init_tls();
    let what = format!("listing branch {branch} of {}", ep.redacted());
    let url = remote_url(&ep.url)?;
    let full = format!("refs/heads/{branch}");
    let remote = repo
        .remote_at(url.as_str())
        .with_context(|| format!("{what}: bad repository URL"))?
        .with_refspecs([full.as_str()], Direction::Fetch)
        .with_context(|| what.clone())?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut conn = connect(&remote).with_context(|| what.clone())?;
    if let Some(token_file) = &ep.token_file {
        conn = conn.with_credentials(token_helper(read_token(token_file)?));
    }
    let (map, _) = conn
        .ref_map(gix::progress::Discard, Default::default())
        .with_context(|| what.clone())?;
    Ok(map.remote_refs.iter().find_map(|r| match r.unpack() {
        (name, Some(target), peeled) if name == full.as_str() => {
            Some(peeled.unwrap_or(target).to_string())
        }
        _ => None,
    }))
}
