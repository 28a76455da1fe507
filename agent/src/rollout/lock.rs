//! Disruption slots: refs `refs/heads/locks/<n>` in the status repository, each a one-commit
//! branch whose `lock.toml` says who holds it, for which commit, and until when. Taken and
//! released by compare-and-swap pushes (`git push --force-with-lease=<ref>:<expected>`): two
//! hosts racing for a slot cannot both win. A slot whose holder died is free after its
//! `expires_at` (taken_at + `lock_ttl`).

use crate::host::command;
use crate::status::git_cli::{git_command, moved, push_args};
use crate::status::remote::{self, Endpoint};
use anyhow::{bail, Context, Result};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

pub const LOCK_PREFIX: &str = "locks/";
const LOCK_FILE: &str = "lock.toml";
const MAX_LOCK: u64 = 64 << 10;
/// A push that takes longer is stopped (the slot is then not taken, or expires).
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a slot's `lock.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub host: String,
    pub commit: String,
    pub taken_at: i64,
    pub expires_at: i64,
}

/// One slot as seen on the server.
#[derive(Debug, Clone)]
pub struct Slot {
    pub n: u32,
    pub id: ObjectId,
    /// None when its lock.toml cannot be read (then it is free once old enough? no: taken,
    /// until someone with write access deletes it; an unreadable lock is never ours to break).
    pub lock: Option<Lock>,
}

/// A slot this host holds: released by `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub n: u32,
    pub id: String,
}

pub struct Slots<'a> {
    pub repo: &'a gix::Repository,
    pub dir: PathBuf,
    pub endpoint: Endpoint,
}

fn slot_ref(n: u32) -> String {
    format!("refs/heads/{LOCK_PREFIX}{n}")
}

impl Slots<'_> {
    /// The slots on the server.
    pub fn list(&self) -> Result<Vec<Slot>> {
        let spec = format!("+refs/heads/{LOCK_PREFIX}*:refs/locks/*");
        let f = remote::fetch(self.repo, &self.endpoint, &[spec], Some(NonZeroU32::MIN))?;
        let prefix = format!("refs/heads/{LOCK_PREFIX}");
        let mut out = Vec::new();
        for (name, id) in f.remote_refs {
            let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) else {
                continue;
            };
            out.push(Slot {
                n,
                id,
                lock: self.read(id).ok(),
            });
        }
        out.sort_by_key(|s| s.n);
        Ok(out)
    }

    fn read(&self, id: ObjectId) -> Result<Lock> {
        let tree = self.repo.find_commit(id)?.tree()?;
        let e = tree.find_entry(LOCK_FILE).context("no lock.toml")?;
        if self.repo.find_header(e.object_id())?.size() > MAX_LOCK {
            bail!("lock.toml too large");
        }
        let blob = self.repo.find_blob(e.object_id())?;
        Ok(toml::from_str(std::str::from_utf8(&blob.data)?)?)
    }

    /// Takes one of `count` slots for `me` (the one it already holds, if any). `Ok(None)`: all
    /// are held by others; the error of `Err` is a fault (server unreachable).
    pub fn take(
        &self,
        count: u32,
        me: &str,
        commit: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<std::result::Result<Held, String>> {
        let slots = self.list()?;
        if let Some(s) = slots
            .iter()
            .find(|s| s.lock.as_ref().is_some_and(|l| l.host == me))
        {
            return Ok(Ok(Held {
                n: s.n,
                id: s.id.to_string(),
            }));
        }
        let lock = Lock {
            host: me.into(),
            commit: commit.into(),
            taken_at: now,
            expires_at: now + ttl.as_secs() as i64,
        };
        for n in 0..count {
            let current = slots.iter().find(|s| s.n == n);
            let expected = match current {
                None => None,
                Some(s) if s.lock.as_ref().is_some_and(|l| l.expires_at <= now) => Some(s.id),
                Some(_) => continue,
            };
            let id = self.write(&lock, n)?;
            if self.push(Some(id), n, expected)? {
                return Ok(Ok(Held {
                    n,
                    id: id.to_string(),
                }));
            }
        }
        let holders: Vec<String> = slots
            .iter()
            .filter(|s| s.n < count)
            .map(|s| match &s.lock {
                Some(l) => format!(
                    "{} until {}",
                    l.host,
                    super::gate::format_time(l.expires_at)
                ),
                None => format!("slot {} (unreadable)", s.n),
            })
            .collect();
        Ok(Err(format!(
            "waiting for a disruption slot ({count} of {count} held: {})",
            holders.join(", ")
        )))
    }

    /// Gives `held` back, unless someone broke it in the meantime (then it is theirs).
    pub fn release(&self, held: &Held) -> Result<()> {
        let id = ObjectId::from_hex(held.id.as_bytes()).context("the held slot's id")?;
        if !self.push(None, held.n, Some(id))? {
            tracing::info!(
                slot = held.n,
                "disruption slot {} was taken over after it expired",
                held.n
            );
        }
        Ok(())
    }

    fn write(&self, lock: &Lock, n: u32) -> Result<ObjectId> {
        let text = toml::to_string(lock)?;
        let blob = self.repo.write_blob(text.as_bytes())?.detach();
        let tree = gix::objs::Tree {
            entries: vec![gix::objs::tree::Entry {
                mode: gix::objs::tree::EntryKind::Blob.into(),
                filename: LOCK_FILE.into(),
                oid: blob,
            }],
        };
        let tree = self.repo.write_object(&tree)?.detach();
        let who = crate::status::chain_signature(&lock.host);
        let commit = gix::objs::Commit {
            tree,
            parents: Default::default(),
            author: who.clone(),
            committer: who,
            encoding: None,
            message: format!(
                "{}: holds disruption slot {n} for {}\n",
                lock.host, lock.commit
            )
            .into(),
            extra_headers: vec![],
        };
        Ok(self.repo.write_object(&commit)?.detach())
    }

    /// CAS push: `new` (or a deletion) onto slot `n` only if it still is `expected` (absent
    /// when None). False when the lease did not hold.
    fn push(&self, new: Option<ObjectId>, n: u32, expected: Option<ObjectId>) -> Result<bool> {
        let dst = slot_ref(n);
        let mut cmd = git_command(&self.dir, &self.endpoint)?;
        cmd.arg("push")
            .arg("--porcelain")
            .arg("--no-verify")
            .arg(format!(
                "--force-with-lease={dst}:{}",
                expected.map(|e| e.to_string()).unwrap_or_default()
            ))
            .args(push_args(&self.endpoint))
            .arg(format!(
                "{}:{dst}",
                new.map(|c| c.to_string()).unwrap_or_default()
            ));
        let out = command::run(&mut cmd, PUSH_TIMEOUT)
            .with_context(|| format!("pushing {dst} to {}", self.endpoint.redacted()))?;
        if out.status.success() {
            return Ok(true);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if moved(&stdout).is_some() {
            return Ok(false);
        }
        bail!(
            "pushing {dst} to {} failed{}",
            self.endpoint.redacted(),
            command::tail(&out.stderr)
        )
    }
}
