//! Trust: which commits plumb may move to. The new head must descend from the last applied commit
//! (no rollback to an older or unrelated history), and with `[trust] allowed_signers` set, the head
//! and every commit on its first-parent path since the last applied commit must carry a valid SSH
//! signature (namespace "git") by a key of that file. Everything here fails closed.
//!
//! Signatures are checked in-process with the `ssh-key` crate (ed25519, ecdsa p256, rsa): no
//! dependency on `ssh-keygen` being installed or on its output format, no subprocess per commit.

use super::git::{LocalRepo, Remote};
use crate::reason::Reason;
use anyhow::{bail, Context, Result};
use gix::ObjectId;
use ssh_key::{PublicKey, SshSig};
use std::path::Path;

/// How far back (first-parent commits) plumb looks for the last applied commit before it gives up.
pub const MAX_WALK: usize = 4096;
/// Depths fetched, in turn, when the walk runs past the local (shallow) history.
const DEEPEN_STEPS: [u32; 4] = [16, 128, 1024, MAX_WALK as u32 + 1];

/// Why a commit may not be applied: the message names the commit and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Untrusted {
    pub reason: Reason,
    pub message: String,
}

/// The trust check could not vouch for the commit (signers file, history unreadable).
fn untrusted(message: String) -> Untrusted {
    Untrusted {
        reason: Reason::UntrustedSignature,
        message,
    }
}

/// One line of an allowed-signers file (ssh-keygen(1) ALLOWED SIGNERS).
#[derive(Debug, Clone)]
pub struct Signer {
    /// Comma-separated ssh patterns (`*`, `?`, `!negation`) matched against the committer email.
    pub principals: String,
    pub key: PublicKey,
    /// `namespaces="..."`; `None` allows every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Unix seconds, from `valid-after` / `valid-before`.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    /// Line number, for messages.
    pub line: usize,
}

/// The allowed signers, read once per pass. Missing, unreadable, malformed or empty: an error,
/// and the caller applies nothing new.
pub fn load_signers(path: &Path) -> Result<Vec<Signer>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading trust.allowed_signers {}: no new commit is applied until it is readable",
            path.display()
        )
    })?;
    let signers = parse_signers(&text)
        .with_context(|| format!("parsing trust.allowed_signers {}", path.display()))?;
    if signers.is_empty() {
        bail!(
            "trust.allowed_signers {} lists no key: no new commit is applied until it does",
            path.display()
        );
    }
    Ok(signers)
}

pub fn parse_signers(text: &str) -> Result<Vec<Signer>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_line(line)
                .with_context(|| format!("line {}", i + 1))
                .map(|mut s| {
                    s.line = i + 1;
                    s
                })?,
        );
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Signer> {
    let (principals, rest) = split_token(line);
    let principals = principals.trim_matches('"').to_string();
    let (second, rest) = split_token(rest);
    let (options, key_text) = if is_key_type(second) {
        ("", format!("{second} {rest}"))
    } else {
        let (kt, rest) = split_token(rest);
        (second, format!("{kt} {rest}"))
    };
    let key = PublicKey::from_openssh(key_text.trim())
        .map_err(|e| anyhow::anyhow!("not a public key ({e})"))?;
    let mut s = Signer {
        principals,
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        line: 0,
    };
    for opt in split_options(options) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"'))),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("namespaces", Some(v)) => {
                s.namespaces = Some(v.split(',').map(|n| n.trim().to_string()).collect())
            }
            ("valid-after", Some(v)) => s.valid_after = Some(parse_time(v)?),
            ("valid-before", Some(v)) => s.valid_before = Some(parse_time(v)?),
            ("cert-authority", _) => {
                bail!("cert-authority is not supported by plumb: list the signing keys themselves")
            }
            _ => bail!("unknown option {opt:?}: plumb knows namespaces, valid-after, valid-before"),
        }
    }
    Ok(s)
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

/// The first whitespace-separated token (double quotes group), and the rest.
fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], s[i..].trim_start()),
            _ => {}
        }
    }
    (s, "")
}

/// `a,b="x,y",c` -> [a, b="x,y", c]
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// `YYYYMMDD[HHMM[SS]][Z]`, read as UTC (ssh-keygen reads it as local time without the Z; plumb
/// hosts are expected to run on UTC, and the file is better written with the Z).
fn parse_time(v: &str) -> Result<i64> {
    let d = v.strip_suffix(['Z', 'z']).unwrap_or(v);
    let bad = || anyhow::anyhow!("{v:?} is not a time like 20260101 or 202601011200Z");
    if !matches!(d.len(), 8 | 12 | 14) || !d.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| d.get(r).map_or(Ok(0), |x| x.parse::<i64>());
    let (y, m, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, day) * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// ssh's match_pattern_list: any `!pattern` that matches denies; else any pattern that matches allows.
pub fn principal_matches(patterns: &str, name: &str) -> bool {
    let mut allowed = false;
    for p in patterns.split(',').map(str::trim) {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(p.as_bytes(), name.as_bytes()) {
            allowed = true;
        }
    }
    allowed
}

/// `*` and `?` wildcards, without backtracking recursion: one pass over `s`, returning to the last
/// `*` at most once per byte of `s` (O(len(p) * len(s)) at worst, both bounded by the caller).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Longest committer email matched against allowed_signers patterns (RFC 5321 allows 254).
const MAX_EMAIL: usize = 320;

/// What a signed commit says about itself.
pub struct SignedCommit {
    /// The armored signature, if any.
    pub signature: Option<String>,
    /// The exact bytes the signature covers.
    pub payload: Vec<u8>,
    pub committer_email: String,
    pub committer_time: i64,
}

/// Checks one commit's signature against the signers at time `now`; the error says why not.
pub fn verify_signature(
    c: &SignedCommit,
    signers: &[Signer],
    now: i64,
) -> std::result::Result<(), String> {
    let Some(armored) = &c.signature else {
        return Err("is not signed".into());
    };
    if armored.contains("BEGIN PGP SIGNATURE") {
        return Err(
            "has an OpenPGP signature: plumb accepts SSH signatures only (gpg.format = ssh)".into(),
        );
    }
    let sig = SshSig::from_pem(armored.trim())
        .map_err(|e| format!("has an unreadable signature ({e})"))?;
    if sig.namespace() != "git" {
        return Err(format!(
            "is signed for namespace {:?}, not \"git\"",
            sig.namespace()
        ));
    }
    let fingerprint = PublicKey::from(sig.public_key().clone())
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let candidates: Vec<&Signer> = signers
        .iter()
        .filter(|s| s.key.key_data() == sig.public_key())
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "is signed by key {fingerprint}, which is not in allowed_signers"
        ));
    }
    // The signature first: nothing the pusher wrote (the committer email) is looked at before the
    // key in allowed_signers is known to have signed exactly this commit.
    sig_key_verify(candidates[0], &c.payload, &sig).map_err(|_| {
        format!(
            "has a bad signature by key {fingerprint}: the commit does not match what was signed"
        )
    })?;
    if c.committer_email.len() > MAX_EMAIL {
        return Err(format!(
            "has a committer email of {} bytes, over {MAX_EMAIL}",
            c.committer_email.len()
        ));
    }
    let mut why = Vec::new();
    for s in candidates {
        let at = format!("allowed_signers line {}", s.line);
        if let Some(ns) = &s.namespaces {
            if !ns.iter().any(|n| n == "git") {
                why.push(format!("{at} does not allow namespace \"git\""));
                continue;
            }
        }
        if !principal_matches(&s.principals, &c.committer_email) {
            why.push(format!(
                "{at} allows principals {:?}, not the committer <{}>",
                s.principals, c.committer_email
            ));
            continue;
        }
        let expired = |t: i64| s.valid_before.is_some_and(|b| t >= b);
        let early = |t: i64| s.valid_after.is_some_and(|a| t < a);
        if expired(now) || expired(c.committer_time) {
            why.push(format!(
                "key {fingerprint} has expired ({at}: valid-before)"
            ));
            continue;
        }
        if early(now) || early(c.committer_time) {
            why.push(format!(
                "key {fingerprint} is not valid yet ({at}: valid-after)"
            ));
            continue;
        }
        return Ok(());
    }
    Err(format!(
        "is signed by key {fingerprint}, but {}",
        why.join("; ")
    ))
}

/// Every candidate holds the same public key (they were picked by it), so one check covers all.
fn sig_key_verify(s: &Signer, payload: &[u8], sig: &SshSig) -> std::result::Result<(), ()> {
    s.key.verify("git", payload, sig).map_err(drop)
}

/// Reads what verification needs from a commit in the local repo.
fn read_commit(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<Option<(SignedCommit, Option<ObjectId>)>> {
    let Ok(commit) = repo.find_commit(id) else {
        return Ok(None);
    };
    let committer = commit
        .committer()
        .with_context(|| format!("reading the committer of {id}"))?;
    let committer_email = committer.email.to_string();
    let committer_time = committer.seconds();
    let (signature, payload) = match commit
        .signature()
        .with_context(|| format!("reading the signature of {id}"))?
    {
        Some((sig, data)) => (Some(sig.to_string()), data.to_bstring().to_vec()),
        None => (None, Vec::new()),
    };
    let parent = commit.parent_ids().next().map(|p| p.detach());
    Ok(Some((
        SignedCommit {
            signature,
            payload,
            committer_email,
            committer_time,
        },
        parent,
    )))
}

/// What the trust check needs to know.
pub struct Policy<'a> {
    /// The last commit applied to this host, if known (state.json or the status branch).
    pub applied: Option<ObjectId>,
    pub allowed_signers: Option<&'a Path>,
    /// `plumb apply --allow-rewind`: accept a head that does not descend from `applied`.
    pub allow_rewind: bool,
}

/// May plumb move from `policy.applied` to `head`? Deepens the shallow local history as needed to
/// walk the first-parent path. `Err(Untrusted)` rejects the commit (the message names it); any
/// other error (say, the server went away while deepening) also applies nothing.
pub fn check(
    repo: &LocalRepo,
    remote: &Remote,
    head: ObjectId,
    policy: &Policy,
) -> std::result::Result<(), Untrusted> {
    let signers = match policy.allowed_signers {
        Some(p) => Some(load_signers(p).map_err(|e| untrusted(format!("{e:#}")))?),
        None => None,
    };
    if Some(head) == policy.applied {
        return Ok(());
    }
    let git = repo.open(None).map_err(|e| untrusted(format!("{e:#}")))?;
    let mut git = git;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let base = policy.applied.filter(|_| !policy.allow_rewind);
    let mut deepen = DEEPEN_STEPS.iter();
    let mut cur = head;
    let mut walked = 0usize;
    loop {
        if Some(cur) == base {
            return Ok(());
        }
        let read = read_commit(&git, cur).map_err(|e| untrusted(format!("{e:#}")))?;
        let Some((commit, parent)) = read else {
            // Past the shallow history: fetch deeper, then look again.
            let Some(depth) = deepen.next() else {
                return Err(untrusted(format!(
                    "cannot find commit {cur} in the server's history"
                )));
            };
            repo.deepen(remote, *depth).map_err(|e| {
                untrusted(format!(
                    "could not fetch the history between the applied commit and {head}: {e:#}"
                ))
            })?;
            git = repo.open(None).map_err(|e| untrusted(format!("{e:#}")))?;
            continue;
        };
        if let Some(signers) = &signers {
            verify_signature(&commit, signers, now).map_err(|why| Untrusted {
                reason: if commit.signature.is_none() {
                    Reason::UnsignedCommit
                } else {
                    Reason::UntrustedSignature
                },
                message: if cur == head {
                    format!("commit {cur} {why}")
                } else {
                    format!("commit {cur} ({walked} before the head {head}) {why}")
                },
            })?;
        }
        let Some(base) = base else {
            return Ok(()); // first apply, or rewind allowed: the head alone is checked
        };
        walked += 1;
        cur = match parent {
            Some(p) if walked < MAX_WALK => p,
            Some(_) => {
                return Err(not_fast_forward(format!(
                    "commit {head} is more than {MAX_WALK} commits ahead of the applied commit {base}, or does not descend from it: check the history, then run `plumb apply --allow-rewind` on the host"
                )))
            }
            None => {
                return Err(not_fast_forward(format!(
                    "commit {head} does not descend from the applied commit {base} (a force-push to an older or unrelated history): plumb only moves forward; if this is intended, run `plumb apply --allow-rewind` on the host"
                )))
            }
        };
    }
}

fn not_fast_forward(message: String) -> Untrusted {
    Untrusted {
        reason: Reason::NotFastForward,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJFH20tWZCVUA3V+ut6HV9I8JNRzOabh20x0rQsPqI7O";

    #[test]
    fn signers_file_format() {
        let text = format!(
            "# comment\n\nops@example.org {KEY} laptop\n\"a@x,b@x\" namespaces=\"git,file\",valid-after=\"20250101\",valid-before=\"20270101Z\" {KEY}\n*@example.org namespaces=\"file\" {KEY}\n"
        );
        let s = parse_signers(&text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].principals, "ops@example.org");
        assert_eq!(s[0].line, 3);
        assert_eq!(s[1].principals, "a@x,b@x");
        assert_eq!(
            s[1].namespaces.as_deref().unwrap(),
            ["git".to_string(), "file".to_string()]
        );
        assert_eq!(s[1].valid_after, Some(1735689600));
        assert_eq!(s[1].valid_before, Some(1798761600));
        assert_eq!(s[2].namespaces.as_deref().unwrap(), ["file".to_string()]);
        for bad in [
            format!("x cert-authority {KEY}"),
            format!("x bogus=1 {KEY}"),
            "x ssh-ed25519 notbase64".to_string(),
            format!("x valid-after=\"2025\" {KEY}"),
        ] {
            assert!(parse_signers(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700101").unwrap(), 0);
        assert_eq!(parse_time("197001020000").unwrap(), 86400);
        assert_eq!(parse_time("20000301000001Z").unwrap(), 951868801);
        assert!(parse_time("20001301").is_err());
    }

    #[test]
    fn principals() {
        assert!(principal_matches("ops@example.org", "ops@example.org"));
        assert!(principal_matches("*@example.org", "ops@example.org"));
        assert!(principal_matches("a@x,*@example.org", "ops@example.org"));
        assert!(!principal_matches(
            "*@example.org,!ops@*",
            "ops@example.org"
        ));
        assert!(!principal_matches("*@example.org", "ops@example.org.evil"));
        assert!(principal_matches("o?s@*", "ops@x"));
        assert!(principal_matches("*", "anyone"));
        assert!(principal_matches("**a*b*", "xxaxxbxx"));
        assert!(!principal_matches("a*", ""));
        assert!(principal_matches("*", ""));
        // Backtracking blew up on this (issue 12): now it is one pass.
        let pattern = "*a".repeat(30) + "b";
        let email = "a".repeat(300);
        let t = std::time::Instant::now();
        assert!(!principal_matches(&pattern, &email));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn unsigned_and_pgp_are_refused() {
        let signers = parse_signers(&format!("* {KEY}")).unwrap();
        let c = |sig: Option<&str>| SignedCommit {
            signature: sig.map(String::from),
            payload: b"tree x\n".to_vec(),
            committer_email: "a@b".into(),
            committer_time: 0,
        };
        assert_eq!(
            verify_signature(&c(None), &signers, 0).unwrap_err(),
            "is not signed"
        );
        assert!(verify_signature(
            &c(Some(
                "-----BEGIN PGP SIGNATURE-----\nx\n-----END PGP SIGNATURE-----"
            )),
            &signers,
            0
        )
        .unwrap_err()
        .contains("OpenPGP"));
        assert!(verify_signature(&c(Some("garbage")), &signers, 0)
            .unwrap_err()
            .contains("unreadable"));
    }
}
