//! Reads what decrypting secrets needs, once per pass: this host's identity (`[secrets]
//! identity`, by default its SSH host key) and the key of the hashes state_dir keeps for secret
//! files (made on first use: 32 random bytes, mode 0600).

use crate::spec::secret::{Identity, Keys, MAX_IDENTITY};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

const MAC_KEY: &str = "secret-hash-key";

/// The identity (or why there is none: the message names the file) and the hash key.
pub fn read_keys(identity: &Path, state_dir: &Path) -> Result<Keys> {
    Ok(Keys {
        identity: read_identity(identity).map_err(|e| format!("{e:#}")),
        mac_key: mac_key(state_dir)?,
    })
}

/// Parses the identity file, bounded in size; its content never reaches an error message.
pub fn read_identity(path: &Path) -> Result<Identity> {
    let f = std::fs::File::open(path).with_context(|| {
        format!(
            "reading the identity {} (set [secrets] identity in agent.toml)",
            path.display()
        )
    })?;
    let mut data = Zeroizing::new(Vec::new());
    f.take(MAX_IDENTITY + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading the identity {}", path.display()))?;
    if data.len() as u64 > MAX_IDENTITY {
        bail!(
            "{}: larger than {MAX_IDENTITY} bytes, not a key",
            path.display()
        );
    }
    Identity::parse(&path.display().to_string(), &data).map_err(anyhow::Error::msg)
}

/// The per-host HMAC key, made the first time.
fn mac_key(state_dir: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let p = state_dir.join(MAC_KEY);
    let mut key = Zeroizing::new([0u8; 32]);
    match std::fs::read(&p) {
        Ok(d) if d.len() == 32 => {
            key.copy_from_slice(&d);
            let mut d = d;
            zeroize::Zeroize::zeroize(&mut d);
            return Ok(key);
        }
        Ok(_) => {} // damaged: a new key (secret files then count as changed once)
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    }
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key[..]))
        .context("reading /dev/urandom")?;
    let tmp = state_dir.join(format!("{MAC_KEY}.new"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&key[..])
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_key_is_made_once_0600() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let a = super::mac_key(t.path()).unwrap();
        let b = super::mac_key(t.path()).unwrap();
        assert_eq!(*a, *b);
        let m = std::fs::metadata(t.path().join(super::MAC_KEY)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(*super::mac_key(other.path()).unwrap(), *a);
        let Err(e) = super::read_identity(&t.path().join("nope")) else {
            panic!("no such file")
        };
        assert!(format!("{e:#}").contains("nope"));
    }
}
