//! Secrets in Git (DESIGN section 10): `.age` files decrypted with this host's identity (its SSH
//! host key, or an age identity file). Pure given the identity's bytes, which host/ reads once
//! per pass: parsing, decrypting (bounded, passphrase files refused) and the keyed hash that
//! stands for a secret's content in `state_dir`.
//!
//! Plaintext lives in `Zeroizing` buffers where this module holds it; an error never quotes it.

use super::SpecError;
use crate::reason::Reason;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use zeroize::Zeroizing;

pub const SUFFIX: &str = ".age";
/// `secrets.toml.age` at the top of a host or role directory: the `secrets` of its templates.
pub const SECRETS_TOML: &str = "secrets.toml.age";
/// An identity file is a key, a few KiB at most.
pub const MAX_IDENTITY: u64 = 64 << 10;

/// What decrypting needs: this host's identity (or why there is none) and the key of the hashes
/// kept for secret files in state_dir.
pub struct Keys {
    pub identity: Result<Identity, String>,
    /// HMAC key for `FileSpec::digest` of secret files (per host, random, 0600 in state_dir).
    pub mac_key: Zeroizing<[u8; 32]>,
}

impl Keys {
    /// The recipient to name in messages ("encrypt to ..."), or why there is none.
    pub fn recipient(&self) -> String {
        match &self.identity {
            Ok(i) => i.recipient.clone(),
            Err(e) => format!("(none: {e})"),
        }
    }

    /// HMAC-SHA256 of `data` under the host's key: what state keeps instead of a plain digest.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key[..]).expect("any key size");
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

/// A parsed identity and the recipient it answers to.
pub struct Identity {
    inner: Inner,
    /// `ssh-ed25519 AAAA...` (no comment) or `age1...`: what the host publishes.
    pub recipient: String,
}

enum Inner {
    Ssh(Box<age::ssh::Identity>),
    Age(Vec<Box<dyn age::Identity + Send + Sync>>),
}

impl Identity {
    /// Parses an OpenSSH private key (unencrypted ed25519 or rsa, as host keys are) or an age
    /// identity file (`AGE-SECRET-KEY-1...` lines). `name` is the file, for messages.
    pub fn parse(name: &str, data: &[u8]) -> Result<Identity, String> {
        let text =
            std::str::from_utf8(data).map_err(|_| format!("{name}: not a key file (not UTF-8)"))?;
        if text
            .trim_start()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        {
            let key = ssh_key::PrivateKey::from_openssh(text)
                .map_err(|e| format!("{name}: not an OpenSSH private key: {e}"))?;
            if key.is_encrypted() {
                return Err(format!(
                    "{name}: the key is passphrase-protected; a host key is not: use the host key or an age identity file"
                ));
            }
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| format!("{name}: {e}"))?;
            // "ssh-ed25519 AAAA... comment" -> without the comment.
            let recipient: String = public.split(' ').take(2).collect::<Vec<_>>().join(" ");
            let id = age::ssh::Identity::from_buffer(data, Some(name.to_string()))
                .map_err(|e| format!("{name}: {e}"))?;
            match &id {
                age::ssh::Identity::Unencrypted(_) => {}
                age::ssh::Identity::Encrypted(_) => {
                    return Err(format!("{name}: the key is passphrase-protected"))
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(format!(
                        "{name}: this key type cannot decrypt age files: use an ed25519 or rsa key"
                    ))
                }
            }
            return Ok(Identity {
                inner: Inner::Ssh(Box::new(id)),
                recipient,
            });
        }
        let mut recipient = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with("AGE-SECRET-KEY-1") {
                let id: age::x25519::Identity = line
                    .parse()
                    .map_err(|e| format!("{name}: not an age identity: {e}"))?;
                recipient.get_or_insert_with(|| id.to_public().to_string());
            }
        }
        let file = age::IdentityFile::from_buffer(data)
            .map_err(|e| format!("{name}: not an age identity file: {e}"))?;
        let ids = file
            .into_identities()
            .map_err(|e| format!("{name}: not an age identity file: {e}"))?;
        match recipient {
            Some(recipient) if !ids.is_empty() => Ok(Identity {
                inner: Inner::Age(ids),
                recipient,
            }),
            _ => Err(format!(
                "{name}: holds neither an OpenSSH private key nor an AGE-SECRET-KEY-1 line"
            )),
        }
    }

    fn identities(&self) -> Vec<&dyn age::Identity> {
        match &self.inner {
            Inner::Ssh(i) => vec![i.as_ref() as &dyn age::Identity],
            Inner::Age(v) => v.iter().map(|b| b.as_ref() as &dyn age::Identity).collect(),
        }
    }
}

fn cannot(origin: &str, what: &str, keys: Option<&Keys>) -> SpecError {
    let recipient = keys.map_or_else(|| "(no identity given)".into(), Keys::recipient);
    SpecError::new(
        Reason::CannotDecrypt,
        format!(
            "{origin}: cannot decrypt: {what}; this host's recipient is {recipient}: encrypt the file to it (`plumb secret encrypt --host ...`, or `plumb secret rekey` after the host published it)"
        ),
    )
}

/// Decrypts an age file of at most `max` bytes of plaintext. Passphrase (scrypt) files are
/// refused: their work factor is the author's choice, a CPU bomb for the host.
pub fn decrypt(
    origin: &str,
    data: &[u8],
    keys: Option<&Keys>,
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, SpecError> {
    let Some(k) = keys else {
        return Err(cannot(origin, "no identity to decrypt with", keys));
    };
    match &k.identity {
        Ok(i) => open(origin, data, i, max),
        Err(e) => Err(cannot(origin, &format!("no identity: {e}"), keys)),
    }
}

/// Decrypts with `identity` (see `decrypt`); messages name its recipient.
pub fn open(
    origin: &str,
    data: &[u8],
    identity: &Identity,
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, SpecError> {
    let cannot = |what: &str| {
        SpecError::new(
            Reason::CannotDecrypt,
            format!(
                "{origin}: cannot decrypt: {what}; this host's recipient is {}: encrypt the file to it (`plumb secret encrypt --host ...`, or `plumb secret rekey` after the host published it)",
                identity.recipient
            ),
        )
    };
    let d = age::Decryptor::new_buffered(data).map_err(|e| {
        cannot(&format!(
            "not an age file, or a corrupt one ({})",
            describe(&e)
        ))
    })?;
    if d.is_scrypt() {
        return Err(cannot(
            "it is encrypted with a passphrase; plumb decrypts only files encrypted to host keys (X25519 or SSH recipients)",
        ));
    }
    let reader = d
        .decrypt(identity.identities().into_iter())
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => cannot("it is not encrypted to this host"),
            e => cannot(&format!("corrupt ({})", describe(&e))),
        })?;
    let mut out = Zeroizing::new(Vec::new());
    let mut limited = reader.take(max + 1);
    if let Err(e) = limited.read_to_end(&mut out) {
        return Err(cannot(&format!("corrupt or truncated ({})", e.kind())));
    }
    if out.len() as u64 > max {
        return Err(SpecError::new(
            Reason::SizeLimit,
            format!(
                "{origin}: decrypts to more than {max} bytes (limits.max_file_size in agent.toml)"
            ),
        ));
    }
    Ok(out)
}

/// Checks that `data` looks like an age file plumb would decrypt, without decrypting it (for
/// `plumb validate` on a machine that is not the host).
pub fn check_format(origin: &str, data: &[u8]) -> Result<(), SpecError> {
    let d = age::Decryptor::new_buffered(data).map_err(|e| {
        SpecError::new(
            Reason::CannotDecrypt,
            format!(
                "{origin}: not an age file, or a corrupt one ({})",
                describe(&e)
            ),
        )
    })?;
    if d.is_scrypt() {
        return Err(SpecError::new(
            Reason::CannotDecrypt,
            format!("{origin}: encrypted with a passphrase; encrypt to host keys (`plumb secret encrypt`)"),
        ));
    }
    Ok(())
}

/// A short, fixed wording per error (never the content).
fn describe(e: &age::DecryptError) -> &'static str {
    match e {
        age::DecryptError::DecryptionFailed => "decryption failed",
        age::DecryptError::ExcessiveWork { .. } => "excessive work factor",
        age::DecryptError::InvalidHeader => "invalid header",
        age::DecryptError::InvalidMac => "the header's MAC does not match",
        age::DecryptError::Io(_) => "truncated or unreadable",
        age::DecryptError::KeyDecryptionFailed => "the identity could not be unlocked",
        age::DecryptError::NoMatchingKeys => "not encrypted to this host",
        age::DecryptError::UnknownFormat => "unknown format",
        _ => "unsupported",
    }
}

/// A recipient as published in status.toml or given on the command line.
pub fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let s = s.trim();
    if s.starts_with("age1") {
        return s
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("{s:?}: not an age recipient: {e}"));
    }
    s.parse::<age::ssh::Recipient>()
        .map(|r| Box::new(r) as _)
        .map_err(|_| {
            format!(
                "{s:?}: not a recipient: use `ssh-ed25519 AAAA...`, `ssh-rsa AAAA...` or `age1...`"
            )
        })
}

/// Encrypts `plaintext` to every recipient (binary age format).
pub fn encrypt(plaintext: &[u8], recipients: &[String]) -> Result<Vec<u8>, String> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
    let e =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .map_err(|e| format!("cannot encrypt: {e}"))?;
    let mut out = Vec::new();
    let mut w = e
        .wrap_output(&mut out)
        .map_err(|e| format!("cannot encrypt: {e}"))?;
    std::io::Write::write_all(&mut w, plaintext).map_err(|e| format!("cannot encrypt: {e}"))?;
    w.finish().map_err(|e| format!("cannot encrypt: {e}"))?;
    Ok(out)
}

/// Parses a decrypted `secrets.toml.age`; a parse error names the line, never quotes it.
pub fn parse_secrets_toml(origin: &str, data: &[u8]) -> Result<toml::Table, SpecError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| SpecError::invalid(format!("{origin}: decrypts to text that is not UTF-8")))?;
    toml::from_str::<toml::Table>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        SpecError::invalid(format!(
            "{origin}: decrypts to invalid TOML{} (content not shown: it is a secret)",
            line.map_or(String::new(), |l| format!(" at line {l}"))
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

    fn keys() -> (Keys, String) {
        let id = age::x25519::Identity::generate();
        let text = id.to_string();
        use age::secrecy::ExposeSecret;
        let text = text.expose_secret().to_string();
        let parsed = Identity::parse("key.txt", text.as_bytes()).unwrap();
        let r = parsed.recipient.clone();
        (
            Keys {
                identity: Ok(parsed),
                mac_key: Zeroizing::new(
                    [NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 32],
                ),
            },
            r,
        )
    }

    #[test]
    fn round_trip_bounds_and_refusals() {
        let (k, r) = keys();
        let (other, r2) = keys();
        let enc = encrypt(b"pw=hunter2\n", std::slice::from_ref(&r)).unwrap();
        assert_eq!(
            &decrypt("f.age", &enc, Some(&k), 100).unwrap()[..],
            b"pw=hunter2\n"
        );
        let e = decrypt("f.age", &enc, Some(&other), 100).unwrap_err();
        assert_eq!(e.reason, Reason::CannotDecrypt);
        assert!(
            e.message.contains("f.age") && e.message.contains(&r2),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("not encrypted to this host"),
            "{}",
            e.message
        );
        // Truncated, tampered, not age at all, too large.
        let e = decrypt("f.age", &enc[..enc.len() - 5], Some(&k), 100).unwrap_err();
        assert_eq!(e.reason, Reason::CannotDecrypt, "{}", e.message);
        let mut bad = enc.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert_eq!(
            decrypt("f.age", &bad, Some(&k), 100).unwrap_err().reason,
            Reason::CannotDecrypt
        );
        assert_eq!(
            decrypt("f.age", b"hello", Some(&k), 100)
                .unwrap_err()
                .reason,
            Reason::CannotDecrypt
        );
        assert_eq!(
            decrypt("f.age", &enc, Some(&k), 5).unwrap_err().reason,
            Reason::SizeLimit
        );
        let none = Keys {
            identity: Err("/etc/ssh/x: not found".into()),
            mac_key: Zeroizing::new([0; 32]),
        };
        let e = decrypt("f.age", &enc, Some(&none), 100).unwrap_err();
        assert!(e.message.contains("/etc/ssh/x: not found"), "{}", e.message);
        // A passphrase file is refused before any work.
        let p =
            age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from("x".to_string()));
        let mut out = Vec::new();
        let mut w = p.wrap_output(&mut out).unwrap();
        std::io::Write::write_all(&mut w, b"s").unwrap();
        w.finish().unwrap();
        let e = decrypt("p.age", &out, Some(&k), 100).unwrap_err();
        assert!(e.message.contains("passphrase"), "{}", e.message);
        assert!(check_format("p.age", &out).is_err());
        assert!(check_format("f.age", &enc).is_ok());
        // Two recipients: both decrypt.
        let enc2 = encrypt(b"x", &[r.clone(), r2]).unwrap();
        assert!(decrypt("f", &enc2, Some(&other), 10).is_ok());
        assert_ne!(k.mac(b"x"), other.mac(b"y"));
    }

    #[test]
    fn toml_errors_do_not_quote_the_secret() {
        let e = parse_secrets_toml("s.age", b"[db]\npassword = hunter2\n").unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains("line 2"), "{}", e.message);
    }

    fn load(
        t: &crate::spec::tree::MemTree,
        k: Option<&Keys>,
        cache: Option<&mut crate::spec::RenderCache>,
    ) -> Result<crate::spec::Desired, SpecError> {
        let facts = crate::spec::facts::Facts::default();
        crate::spec::load_with(
            t,
            "hosts/h1",
            &crate::config::Limits::default(),
            crate::spec::Inputs {
                host: "h1",
                facts: &facts,
                cache,
                keys: k,
            },
        )
    }

    #[test]
    fn age_files_and_secrets_in_templates() {
        use crate::spec::tree::MemTree;
        let (k, r) = keys();
        let (other, _) = keys();
        let t = MemTree::default()
            .bytes(
                "hosts/h1/files/etc/app/db.env.age",
                encrypt(b"PW=hunter2\n", std::slice::from_ref(&r)).unwrap(),
            )
            .bytes(
                "hosts/h1/secrets.toml.age",
                encrypt(b"[db]\npassword = \"s3cret\"\n", std::slice::from_ref(&r)).unwrap(),
            )
            .bytes(
                "hosts/h1/files/etc/app/t.conf.tmpl.age",
                encrypt(b"user={{ host }}\n", std::slice::from_ref(&r)).unwrap(),
            )
            .file(
                "hosts/h1/files/etc/app/app.conf.tmpl",
                "pw={{ secrets.db.password }}\n",
            )
            .file("hosts/h1/files/etc/app/dump.tmpl", "{{ debug() }}\n")
            .file("hosts/h1/files/etc/app/plain.tmpl", "host={{ host }}\n")
            .file(
                "hosts/h1/host.toml",
                "[files.\"/etc/app/t.conf\"]\nmode = \"0640\"\n",
            );
        let mut cache = crate::spec::RenderCache::default();
        let d = load(&t, Some(&k), Some(&mut cache)).unwrap();
        let f = &d.files["/etc/app/db.env"];
        assert_eq!(
            f.content,
            crate::spec::Content::Regular(b"PW=hunter2\n".to_vec())
        );
        assert_eq!(f.mode, 0o600);
        assert!(f.is_secret() && f.secret.is_some());
        let a = &d.files["/etc/app/app.conf"];
        assert_eq!(
            a.content,
            crate::spec::Content::Regular(b"pw=s3cret\n".to_vec())
        );
        assert!(a.is_secret());
        assert_eq!(a.mode, 0o600);
        let dump = &d.files["/etc/app/dump"];
        assert!(dump.is_secret(), "debug() reads every name, secrets too");
        let crate::spec::Content::Regular(dumped) = &dump.content else {
            panic!()
        };
        assert!(!String::from_utf8_lossy(dumped).contains("s3cret"));
        let tc = &d.files["/etc/app/t.conf"];
        assert_eq!(
            tc.content,
            crate::spec::Content::Regular(b"user=h1\n".to_vec())
        );
        assert!(tc.is_secret() && tc.mode == 0o640, "host.toml's mode wins");
        assert!(!d.files["/etc/app/plain"].is_secret());
        // The digest of a secret file is keyed: another host key, another digest, same content.
        let mut f2 = f.clone();
        f2.secret = Some(other.mac(b"PW=hunter2\n"));
        assert_ne!(f.digest(), f2.digest());
        // Only the plain render is cached (nothing of a secret in the cache).
        let path = tempfile::tempdir().unwrap();
        let cp = path.path().join("c");
        cache.save(&cp).unwrap();
        let saved = std::fs::read(&cp).unwrap();
        assert!(String::from_utf8_lossy(&saved).contains("host=h1"));
        for needle in ["s3cret", "hunter2", "user=h1"] {
            assert!(
                !String::from_utf8_lossy(&saved).contains(needle),
                "{needle} in the cache"
            );
        }
        // Another host's identity: rejected, naming the file and this host's recipient.
        let e = load(&t, Some(&other), None).unwrap_err();
        assert_eq!(e.reason, Reason::CannotDecrypt);
        assert!(e.message.contains(&other.recipient()), "{}", e.message);
        // No keys (validate off the host): formats checked, placeholders rendered.
        let d = load(&t, None, None).unwrap();
        assert_eq!(
            d.files["/etc/app/app.conf"].content,
            crate::spec::Content::Regular(b"pw=(secret)\n".to_vec())
        );
        // A unit may not read secrets, nor be an .age file.
        let u = t.clone().file(
            "hosts/h1/units/a.service.tmpl",
            "[Service]\nEnvironment=P={{ secrets.db.password }}\n",
        );
        let e = load(&u, Some(&k), None).unwrap_err();
        assert!(e.message.contains("world-readable"), "{}", e.message);
        let u = t
            .clone()
            .bytes("hosts/h1/units/a.service.age", b"x".to_vec());
        assert!(load(&u, Some(&k), None)
            .unwrap_err()
            .message
            .contains("secrets go under files/"));
        // An error in a template that read secrets does not show the detail.
        let u = t
            .clone()
            .file("hosts/h1/files/etc/x.tmpl", "{{ secrets.db.password + 1 }}");
        let e = load(&u, Some(&k), None).unwrap_err();
        assert!(
            !e.message.contains("s3cret") && e.message.contains("details not shown"),
            "{}",
            e.message
        );
    }
}
