//! Reading the other hosts' status for the gate: one protocol v2 fetch filtered to
//! `refs/heads/status/` (depth 1) from a shared status repository, or, with `{host}` in
//! `[status] repo`, one fetch per host directory of the fleet. Into `state_dir/rollout.git`,
//! which keeps what it fetched: a poll with no new report costs the ref listing only.

use super::gate::Peer;
use crate::status::fleet::STATUS_PREFIX;
use crate::status::remote::{self, Endpoint};
use crate::status::report::Report;
use anyhow::{bail, Context, Result};
use gix::ObjectId;
use ssh_key::PublicKey;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

/// A status.toml larger than this is not read (a report is a few KiB).
const MAX_STATUS: u64 = 1 << 20;
/// At most this many status branches are read (a bound on the work a hostile server can cause).
const MAX_HOSTS: usize = 100_000;
const HOST_PLACEHOLDER: &str = "{host}";

/// The other hosts' reports, and the names of every host with a status branch.
pub struct Fleet {
    pub peers: Vec<Peer>,
    pub reporting: Vec<String>,
    /// Branches whose status does not count, and why ("web-2: unsigned").
    pub untrusted: Vec<String>,
}

/// Fetches the status branches (all but `me`'s). `known` are the host directories of the fleet
/// (for a status repository per host, the only way to know whom to ask).
pub fn read(
    repo: &gix::Repository,
    status: &Endpoint,
    template: &str,
    me: &str,
    known: &[String],
    pinned: &HashMap<String, PublicKey>,
) -> Result<Fleet> {
    let mut tips: Vec<(String, ObjectId)> = Vec::new();
    if template.contains(HOST_PLACEHOLDER) {
        for host in known.iter().filter(|h| *h != me) {
            let ep = Endpoint {
                url: template.replace(HOST_PLACEHOLDER, host),
                ..status.clone()
            };
            let branch = format!("refs/heads/{STATUS_PREFIX}{host}");
            let spec = format!("+{branch}:refs/peers/{host}");
            let f = remote::fetch(repo, &ep, &[spec], Some(NonZeroU32::MIN))?;
            tips.extend(
                f.remote_refs
                    .into_iter()
                    .filter(|(n, _)| *n == branch)
                    .map(|(_, id)| (host.clone(), id)),
            );
        }
    } else {
        let spec = format!("+refs/heads/{STATUS_PREFIX}*:refs/peers/*");
        let f = remote::fetch(repo, status, &[spec], Some(NonZeroU32::MIN))?;
        let prefix = format!("refs/heads/{STATUS_PREFIX}");
        for (name, id) in f.remote_refs {
            if let Some(host) = name.strip_prefix(&prefix) {
                tips.push((host.to_string(), id));
            }
        }
    }
    if tips.len() > MAX_HOSTS {
        bail!("{} status branches: more than {MAX_HOSTS}", tips.len());
    }
    let mut peers = Vec::new();
    let mut reporting = Vec::new();
    let mut untrusted = Vec::new();
    for (host, id) in tips {
        if crate::config::validate_host(&host).is_err() {
            continue; // not a host's branch (status/a/b): no host of ours
        }
        reporting.push(host.clone());
        if host == me {
            continue;
        }
        // A report that cannot be read counts as no report: it opens no gate.
        // With pinned keys, only status signed by the branch host's own key counts.
        let trusted = if pinned.is_empty() {
            Ok(())
        } else {
            match pinned.get(&host) {
                Some(key) => super::trust::verify(repo, id, key),
                None => Err(format!("no key pinned for {host}")),
            }
        };
        if let Err(why) = &trusted {
            untrusted.push(format!("{host}: {why}"));
        }
        match read_report(repo, id) {
            Ok(report) => peers.push(Peer {
                host,
                report,
                trusted: trusted.is_ok(),
            }),
            Err(e) => tracing::debug!(host = %host, "status of {host} unreadable: {e:#}"),
        }
    }
    Ok(Fleet {
        peers,
        reporting,
        untrusted,
    })
}

fn read_report(repo: &gix::Repository, commit: ObjectId) -> Result<Report> {
    let tree = repo.find_commit(commit)?.tree()?;
    let entry = tree.find_entry("status.toml").context("no status.toml")?;
    let size = repo.find_header(entry.object_id())?.size();
    if size > MAX_STATUS {
        bail!("status.toml is {size} bytes, more than {MAX_STATUS}");
    }
    let blob = repo.find_blob(entry.object_id())?;
    let text = std::str::from_utf8(&blob.data).context("status.toml is not UTF-8")?;
    Report::from_toml(text)
}

/// The host directories under `hosts/` of `commit` in the fleet clone.
pub fn host_dirs(repo: &gix::Repository, commit: ObjectId) -> Result<Vec<String>> {
    let tree = repo.find_commit(commit)?.tree()?;
    let Some(entry) = tree.lookup_entry_by_path("hosts")? else {
        return Ok(Vec::new());
    };
    if !entry.mode().is_tree() {
        return Ok(Vec::new());
    }
    let hosts = repo.find_tree(entry.object_id())?;
    let mut out = Vec::new();
    for e in hosts.iter() {
        let e = e?;
        let name = e.filename().to_string();
        if e.mode().is_tree() && crate::config::validate_host(&name).is_ok() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Whether `a` descends from `b` in the fleet clone: walks back from `a` at most `limit`
/// commits (first parents and merges alike), false when `a` is not there.
pub fn descends(repo: &gix::Repository, a: &str, b: &str, limit: usize) -> bool {
    let (Ok(a), Ok(b)) = (
        ObjectId::from_hex(a.as_bytes()),
        ObjectId::from_hex(b.as_bytes()),
    ) else {
        return false;
    };
    let mut todo = vec![a];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = todo.pop() {
        if seen.len() >= limit || !seen.insert(id) {
            continue;
        }
        let Ok(c) = repo.find_commit(id) else {
            continue;
        };
        for p in c.parent_ids() {
            if p.detach() == b {
                return true;
            }
            todo.push(p.detach());
        }
    }
    false
}

/// Opens (creating) the rollout repository in state_dir.
pub fn open(state_dir: &Path, ep: &Endpoint) -> Result<gix::Repository> {
    crate::source::repo::open_bare(&state_dir.join("rollout.git"), Some(ep.ssh_command()))
}

/// Packs and prunes `rollout.git` once enough loose objects piled up (`git gc --auto`: every new
/// report fetched leaves a few). A failure is only logged.
pub fn gc(state_dir: &Path, ep: &Endpoint) {
    let dir = state_dir.join("rollout.git");
    let result = crate::status::git_cli::git_command(&dir, ep).and_then(|mut cmd| {
        cmd.args(["-c", "gc.pruneExpire=now", "gc", "--auto", "--quiet"]);
        let out = crate::host::command::run(&mut cmd, std::time::Duration::from_secs(60))?;
        crate::host::command::check(&cmd, &out)
    });
    if let Err(e) = result {
        tracing::warn!(error = %format!("{e:#}"), "cleaning up the rollout repository failed: {e:#}");
    }
}
