//! Trustworthy status: hosts sign their status commits with their SSH host key (git's SSH
//! signature format, namespace "git"); when the fleet repo pins host keys
//! (`hosts/<host>/host_key.pub`), gates and quarantine count only status signed by the pinned
//! key of the branch's host. Without pinned keys every report counts, and the status server's
//! access control is what protects the branches.

use anyhow::{bail, Context, Result};
use gix::ObjectId;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::collections::HashMap;
use std::path::Path;

/// Where a host's pinned key is, in its directory of the fleet repo.
pub const HOST_KEY: &str = "host_key.pub";
const MAX_KEY: u64 = 16 << 10;

/// Signs commit payloads with a private key in OpenSSH format (a host key).
pub struct Signer {
    key: PrivateKey,
}

impl Signer {
    pub fn load(path: &Path) -> Result<Signer> {
        let key = PrivateKey::read_openssh_file(path)
            .with_context(|| format!("reading the status signing key {}", path.display()))?;
        if key.is_encrypted() {
            bail!(
                "the status signing key {} is encrypted: use the host key (not encrypted)",
                path.display()
            );
        }
        Ok(Signer { key })
    }

    /// The armored SSH signature (namespace "git") of `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<String> {
        let sig = self
            .key
            .sign("git", HashAlg::Sha512, payload)
            .context("signing the status commit")?;
        Ok(sig.to_pem(LineEnding::LF)?)
    }
}

/// The pinned host keys: `hosts/<host>/host_key.pub` in `commit`'s tree, for each of `hosts`.
/// A key file that does not parse is an error (the commit is then not usable for gates).
pub fn pinned_keys(
    repo: &gix::Repository,
    commit: ObjectId,
    hosts: &[String],
) -> Result<HashMap<String, PublicKey>> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut out = HashMap::new();
    for h in hosts {
        let path = format!("hosts/{h}/{HOST_KEY}");
        let Some(e) = tree.lookup_entry_by_path(&path)? else {
            continue;
        };
        if !e.mode().is_blob() || repo.find_header(e.object_id())?.size() > MAX_KEY {
            bail!("{path}: must be a regular file of at most {MAX_KEY} bytes");
        }
        let blob = repo.find_blob(e.object_id())?;
        let text = std::str::from_utf8(&blob.data).with_context(|| format!("{path}: not UTF-8"))?;
        let key = PublicKey::from_openssh(text.trim())
            .with_context(|| format!("{path}: not an OpenSSH public key"))?;
        out.insert(h.clone(), key);
    }
    Ok(out)
}

/// Whether status commit `id` is signed by `key`; the error says why not.
pub fn verify(repo: &gix::Repository, id: ObjectId, key: &PublicKey) -> Result<(), String> {
    let commit = repo.find_commit(id).map_err(|e| e.to_string())?;
    verify_raw(&commit.data, key)
}

/// Whether the raw commit object `data` is signed by `key`; the error says why not.
pub fn verify_raw(data: &[u8], key: &PublicKey) -> Result<(), String> {
    let signed = gix::objs::CommitRefIter::signature(data, gix::hash::Kind::Sha1)
        .map_err(|e| e.to_string())?;
    let Some((sig, payload)) = signed else {
        return Err("unsigned".into());
    };
    let payload = payload.to_bstring();
    let sig = SshSig::from_pem(sig.to_string().trim())
        .map_err(|e| format!("unreadable signature ({e})"))?;
    if sig.namespace() != "git" {
        return Err(format!("signed for namespace {:?}", sig.namespace()));
    }
    if sig.public_key() != key.key_data() {
        return Err("signed by another key than the pinned one".into());
    }
    key.verify("git", &payload, &sig)
        .map_err(|_| "bad signature: the commit does not match what was signed".into())
}
