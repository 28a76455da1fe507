//! `plumb secret encrypt / rekey / decrypt` (DESIGN section 10): the operator's side of secrets.
//! Hosts' recipients come from their status branches (`age_recipient`, published every pass),
//! roles expand to the hosts whose layers include them, fleet.toml `[secrets] admins` are always
//! added.

use crate::config::{Limits, Settings};
use crate::spec::secret::{self, Identity};
use crate::spec::tree::DirTree;
use crate::status::remote::{self, Endpoint};
use crate::status::report::Report;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the status branches are: `refs/heads/status/<host>` (as `plumb fleet` reads them).
const STATUS_PREFIX: &str = "refs/heads/status/";
/// Largest file `plumb secret` encrypts or decrypts (the agent's default max_file_size).
const MAX_PLAINTEXT: u64 = 16 << 20;

/// What `encrypt` and `rekey` need to know about the fleet.
pub struct Fleet {
    /// The checkout (fleet.toml, hosts/, roles/).
    pub dir: PathBuf,
    /// The status repository (`--repo`, else `[status] repo` of the agent config).
    pub status: Option<Endpoint>,
}

impl Fleet {
    pub fn new(config: &Path, dir: PathBuf, repo: Option<String>) -> Result<Fleet> {
        if let Some(u) = &repo {
            crate::config::validate_repo(u).context("--repo")?;
        }
        let settings = Settings::load(config).ok();
        let url = repo.or_else(|| settings.as_ref().map(|s| s.status.repo_template.clone()));
        let status = url.map(|url| Endpoint {
            url,
            ssh_key: settings.as_ref().and_then(|s| s.ssh_key.clone()),
            token_file: settings.as_ref().and_then(|s| s.token_file.clone()),
            known_hosts: None,
        });
        Ok(Fleet { dir, status })
    }

    fn tree(&self) -> DirTree {
        DirTree {
            root: self.dir.clone(),
        }
    }

    fn admins(&self) -> Result<Vec<String>> {
        let f = crate::spec::fleet_toml(&self.tree())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.dir.display()))?;
        Ok(f.secrets.admins)
    }

    /// `age_recipient` of each host that reported, by host name.
    fn reported(&self, wanted: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
        let Some(ep) = &self.status else {
            bail!("no status repository: pass --repo URL (or run where agent.toml names one)");
        };
        let dir = tempfile::Builder::new()
            .prefix("plumb-secret-")
            .tempdir()
            .context("creating a scratch directory for the fetch")?;
        let repo = crate::source::repo::open_bare(dir.path(), Some(ep.ssh_command()))?;
        let mut out = BTreeMap::new();
        let mut read = |ep: &Endpoint, spec: String| -> Result<()> {
            let fetched = remote::fetch(&repo, ep, &[spec], Some(NonZeroU32::MIN))?;
            for (name, id) in &fetched.remote_refs {
                let Some(host) = name.strip_prefix(STATUS_PREFIX) else {
                    continue;
                };
                let text = status_toml(&repo, *id)
                    .with_context(|| format!("{}: {name}", ep.redacted()))?;
                let report = Report::from_toml(&text)
                    .with_context(|| format!("{}: {name}: parsing status.toml", ep.redacted()))?;
                if let Some(r) = report.age_recipient {
                    out.insert(host.to_string(), r);
                }
            }
            Ok(())
        };
        if ep.url.contains("{host}") {
            for h in wanted {
                let one = Endpoint {
                    url: ep.url.replace("{host}", h),
                    ..ep.clone()
                };
                read(&one, format!("+{STATUS_PREFIX}{h}:refs/remotes/{h}/status"))?;
            }
        } else {
            read(
                ep,
                format!("+{STATUS_PREFIX}*:refs/remotes/origin/status/*"),
            )?;
        }
        Ok(out)
    }

    /// Every host name the fleet knows: directories under hosts/ and status branches.
    fn known_hosts(&self, reported: &BTreeMap<String, String>) -> Result<BTreeSet<String>> {
        let mut hosts: BTreeSet<String> = reported.keys().cloned().collect();
        let dir = self.dir.join("hosts");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                if e.file_type()?.is_dir() {
                    hosts.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(hosts)
    }

    /// Each host's layers ("roles/web", "hosts/web-01"); hosts whose tree does not load (no
    /// directory and no fleet.toml entry) are left out.
    fn layers(&self, hosts: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
        let tree = self.tree();
        let limits = Limits::default();
        hosts
            .iter()
            .filter_map(|h| {
                crate::spec::layers(&tree, &format!("hosts/{h}"), &limits, h)
                    .ok()
                    .map(|l| (h.clone(), l))
            })
            .collect()
    }
}

/// status.toml of a status commit.
fn status_toml(repo: &gix::Repository, id: gix::ObjectId) -> Result<String> {
    let tree = repo.find_commit(id)?.tree()?;
    let entry = tree
        .find_entry("status.toml")
        .context("the status commit has no status.toml")?;
    let blob = repo.find_blob(entry.object_id())?;
    Ok(String::from_utf8_lossy(&blob.data).into_owned())
}

/// A role argument as a layer directory: "web" -> "roles/web".
fn role_dir(r: &str) -> String {
    let r = r.trim_end_matches('/');
    if r.contains('/') {
        r.to_string()
    } else {
        format!("roles/{r}")
    }
}

pub struct EncryptArgs {
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    pub recipients: Vec<String>,
    pub out: Option<PathBuf>,
    pub input: PathBuf,
}

/// `plumb secret encrypt`: the recipients, then the file encrypted to them.
pub fn encrypt(fleet: &Fleet, a: EncryptArgs) -> Result<()> {
    let mut recipients: Vec<String> = a.recipients.clone();
    if !a.hosts.is_empty() || !a.roles.is_empty() {
        let wanted: BTreeSet<String> = a.hosts.iter().cloned().collect();
        let reported = fleet.reported(&wanted)?;
        let mut hosts: BTreeSet<String> = wanted;
        if !a.roles.is_empty() {
            let layers = fleet.layers(&fleet.known_hosts(&reported)?);
            for r in &a.roles {
                let dir = role_dir(r);
                let users: Vec<&String> = layers
                    .iter()
                    .filter(|(_, l)| l.contains(&dir))
                    .map(|(h, _)| h)
                    .collect();
                if users.is_empty() {
                    bail!(
                        "--role {r}: no host of {} includes {dir}",
                        fleet.dir.display()
                    );
                }
                hosts.extend(users.into_iter().cloned());
            }
        }
        recipients.extend(host_recipients(&hosts, &reported)?);
    }
    recipients.extend(fleet.admins()?);
    if recipients.is_empty() {
        bail!(
            "no recipients: give --host, --role or --recipient (or [secrets] admins in fleet.toml)"
        );
    }
    recipients.sort();
    recipients.dedup();
    let plain = read_bounded(&a.input)?;
    let enc = secret::encrypt(&plain, &recipients).map_err(anyhow::Error::msg)?;
    match &a.out {
        Some(p) => write_file(p, &enc)?,
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&enc)
                .context("writing to stdout")?;
        }
    }
    tracing::info!(
        "encrypted {} to {} recipient(s)",
        a.input.display(),
        recipients.len()
    );
    Ok(())
}

fn host_recipients(
    hosts: &BTreeSet<String>,
    reported: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    hosts
        .iter()
        .map(|h| {
            reported.get(h).cloned().with_context(|| {
                format!(
                    "host {h} has published no age_recipient on its status branch (status/{h}): start plumb on it (every pass publishes it) or pass its key with --recipient"
                )
            })
        })
        .collect()
}

/// `plumb secret decrypt`: the plaintext on stdout.
pub fn decrypt(identity: &Path, file: &Path) -> Result<()> {
    let id = crate::host::secrets::read_identity(identity)?;
    let plain = decrypt_with(&id, file)?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&plain)
        .context("writing to stdout")
}

fn decrypt_with(id: &Identity, file: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let data = read_bounded(file)?;
    secret::open(&file.display().to_string(), &data, id, MAX_PLAINTEXT)
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// `plumb secret rekey`: every `.age` file of the checkout re-encrypted to the hosts using it
/// and the admins. Files whose recipients did not change are left as they are (when that can be
/// told from the header: ssh recipients are tagged there, age1 ones are not).
pub fn rekey(fleet: &Fleet, identity: &Path) -> Result<()> {
    let id = crate::host::secrets::read_identity(identity)?;
    let admins = fleet.admins()?;
    let files = age_files(&fleet.dir)?;
    if files.is_empty() {
        println!("no .age files under {}", fleet.dir.display());
        return Ok(());
    }
    // One status repository per host: the hosts are the checkout's; else the status branches
    // name them too (hosts matched by fleet.toml [[assign]] alone).
    let per_host = fleet
        .status
        .as_ref()
        .is_some_and(|e| e.url.contains("{host}"));
    let (hosts, reported) = if per_host {
        let hosts = fleet.known_hosts(&BTreeMap::new())?;
        let reported = fleet.reported(&hosts)?;
        (hosts, reported)
    } else {
        let reported = fleet.reported(&BTreeSet::new())?;
        (fleet.known_hosts(&reported)?, reported)
    };
    let layers = fleet.layers(&hosts);
    let (mut changed, mut same) = (0, 0);
    for rel in files {
        let users: BTreeSet<String> = layers
            .iter()
            .filter(|(_, l)| l.iter().any(|d| rel.starts_with(&format!("{d}/"))))
            .map(|(h, _)| h.clone())
            .collect();
        if users.is_empty() {
            tracing::warn!("{rel}: no host uses it; left as it is");
            continue;
        }
        let mut recipients = host_recipients(&users, &reported)
            .with_context(|| format!("{rel}: used by {}", join(&users)))?;
        recipients.extend(admins.iter().cloned());
        recipients.sort();
        recipients.dedup();
        let path = fleet.dir.join(&rel);
        let data = read_bounded(&path)?;
        if header_names_exactly(&data, &recipients) {
            same += 1;
            continue;
        }
        let plain = secret::open(&rel, &data, &id, MAX_PLAINTEXT).map_err(|e| {
            anyhow::anyhow!(
                "{} (is your --identity one of fleet.toml's [secrets] admins?)",
                e.message
            )
        })?;
        let enc = secret::encrypt(&plain, &recipients).map_err(anyhow::Error::msg)?;
        write_file(&path, &enc)?;
        println!(
            "{rel}: encrypted to {} ({} recipients)",
            join(&users),
            recipients.len()
        );
        changed += 1;
    }
    println!("{changed} file(s) re-encrypted, {same} already encrypted to their recipients");
    Ok(())
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Repo paths of the `.age` files under the checkout (not in .git), sorted.
fn age_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).with_context(|| format!("reading {}", abs.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let r = rel.join(&name);
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(r);
            } else if t.is_file() && name.ends_with(secret::SUFFIX) {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the age header's stanzas are exactly one per recipient, every recipient an ssh key
/// whose tag is there (age1 recipients leave no trace in the header: then always false).
fn header_names_exactly(data: &[u8], recipients: &[String]) -> bool {
    use base64::Engine;
    use sha2::Digest;
    let mut tags = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        if line.starts_with(b"---") {
            break;
        }
        if let Some(st) = line.strip_prefix(b"-> ") {
            let mut parts = st.split(|b| *b == b' ');
            let kind = parts.next().unwrap_or_default();
            let tag = parts.next().unwrap_or_default();
            // age adds a random "grease" stanza now and then: no recipient's.
            if !kind.ends_with(b"-grease") {
                tags.push((kind.to_vec(), tag.to_vec()));
            }
        }
    }
    if tags.len() != recipients.len() {
        return false;
    }
    recipients.iter().all(|r| {
        let mut f = r.split_whitespace();
        let (Some(kind), Some(b64)) = (f.next(), f.next()) else {
            return false;
        };
        if !kind.starts_with("ssh-") {
            return false;
        }
        let Ok(wire) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let tag = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(&sha2::Sha256::digest(&wire)[..4]);
        tags.iter()
            .any(|(k, t)| k == kind.as_bytes() && t == tag.as_bytes())
    })
}

fn read_bounded(p: &Path) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut data = Zeroizing::new(Vec::new());
    f.take(MAX_PLAINTEXT + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", p.display()))?;
    if data.len() as u64 > MAX_PLAINTEXT {
        bail!("{}: larger than {MAX_PLAINTEXT} bytes", p.display());
    }
    Ok(data)
}

fn write_file(p: &Path, data: &[u8]) -> Result<()> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", p.display()))?;
    std::io::Write::write_all(&mut tmp, data)
        .with_context(|| format!("writing {}", p.display()))?;
    tmp.persist(p)
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}
