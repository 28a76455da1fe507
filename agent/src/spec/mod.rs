//! The fleet-repo format turned into one desired state for a host (pure: no host I/O).

pub mod facts;
pub mod fleet;
pub mod guard;
mod hosttoml;
mod load;
pub mod secret;
pub mod template;
pub mod tree;
pub mod version;

pub use fleet::{glob_match, FleetToml};
pub use load::{fleet_toml, has_templates, layers, load, load_with, Inputs};
pub use secret::Keys;
pub use template::RenderCache;

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Everything Git asks of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Keyed by absolute host path ("/etc/motd").
    pub files: BTreeMap<String, FileSpec>,
    /// Keyed by unit name ("app.service").
    pub units: BTreeMap<String, UnitSpec>,
    /// Keyed by Quadlet file name ("web.container").
    pub containers: BTreeMap<String, ContainerSpec>,
    pub packages: Packages,
    pub health: Vec<HealthCheck>,
    /// `[packages] upgrade`: the last host.toml that sets it (roles in order, the host last) wins.
    pub upgrade: Upgrade,
    /// `[reboot] when` (the last layer that sets it wins: the host's own over its roles).
    pub reboot: RebootWhen,
}

/// `[packages] upgrade`: which of the upgrades the repositories offer plumb applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upgrade {
    /// Only reported (`[upgrades]` in status.toml).
    #[default]
    None,
    /// Security updates only.
    Security,
    /// Every upgrade.
    All,
}

impl Upgrade {
    pub fn parse(s: &str) -> Option<Upgrade> {
        match s {
            "none" => Some(Upgrade::None),
            "security" => Some(Upgrade::Security),
            "all" => Some(Upgrade::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Upgrade::None => "none",
            Upgrade::Security => "security",
            Upgrade::All => "all",
        }
    }
}

/// `[reboot] when`: whether plumb reboots the host when the OS says a reboot is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootWhen {
    /// Only report `reboot_required`.
    #[default]
    Never,
    /// Reboot inside the host's window, holding a disruption slot (DESIGN section 13).
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Regular(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub content: Content,
    /// Permission bits; unused for symlinks.
    pub mode: u32,
    /// The owner and group Git names; empty when Git names none: root, or the invoking user's
    /// own ids when plumb does not run as root (the demo, a test root).
    pub owner: String,
    pub group: String,
    /// The repo path it came from, for messages.
    pub origin: String,
    /// `validate`: argv with one `%s` (the staged file), run before the file is put in place.
    pub validate: Option<Vec<String>>,
    /// A secret (decrypted from `.age`, or rendered from `secrets`): the HMAC of its content
    /// under the host's key, which `digest` uses instead of the content (state_dir never holds
    /// a plain hash of a secret). Its content is zeroed when the spec is dropped.
    pub secret: Option<[u8; 32]>,
}

impl Drop for FileSpec {
    fn drop(&mut self) {
        if self.secret.is_some() {
            if let Content::Regular(d) = &mut self.content {
                zeroize::Zeroize::zeroize(d);
            }
        }
    }
}

impl FileSpec {
    /// A file others cannot read: its content never appears in logs, diffs or status.
    pub fn is_secret(&self) -> bool {
        self.secret.is_some()
            || matches!(self.content, Content::Regular(_)) && self.mode & 0o004 == 0
    }

    /// Identifies content and metadata; the inventory keeps it to tell drift from a new commit.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        match &self.content {
            Content::Regular(_) if self.secret.is_some() => {
                h.update(b"secret\0");
                h.update(self.secret.as_ref().expect("checked"));
            }
            Content::Regular(d) => {
                h.update(b"file\0");
                h.update(d);
            }
            Content::Symlink(t) => {
                h.update(b"link\0");
                h.update(t.as_bytes());
            }
        }
        // An owner Git does not name hashes as root, as before it could be left unnamed.
        let named = |s: &str| if s.is_empty() { "root" } else { s }.to_string();
        h.update(
            format!(
                "\0{:o}\0{}\0{}",
                self.mode,
                named(&self.owner),
                named(&self.group)
            )
            .as_bytes(),
        );
        hex::encode(&h.finalize()[..16])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Started,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    pub name: String,
    /// The unit file from `units/`; `None` when host.toml only sets the state of a unit
    /// someone else installed (a package's nginx.service).
    pub file: Option<Vec<u8>>,
    /// Drop-in file name ("override.conf") -> content.
    pub dropins: BTreeMap<String, Vec<u8>>,
    /// `None`: enable when the unit file has an [Install] section.
    pub enabled: Option<bool>,
    /// `None`: started, unless another managed unit triggers it (a timer's, socket's or path's
    /// service is left to its trigger).
    pub state: Option<RunState>,
    /// Managed file paths whose change restarts this unit.
    pub restart_on: Vec<String>,
    /// Managed file paths whose change reloads this unit (ReloadUnit), unless it restarts anyway.
    pub reload_on: Vec<String>,
    /// `check`: argv run after a pass changed files, before this unit restarts or reloads.
    pub check: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Quadlet file name, "web.container".
    pub file_name: String,
    pub content: Vec<u8>,
    pub state: RunState,
}

impl ContainerSpec {
    /// The unit Quadlet generates: web.container -> web.service, data.volume -> data-volume.service.
    pub fn service_name(&self) -> String {
        let (stem, kind) = self
            .file_name
            .rsplit_once('.')
            .unwrap_or((&self.file_name, ""));
        match kind {
            "container" | "kube" => format!("{stem}.service"),
            _ => format!("{stem}-{kind}.service"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packages {
    /// Names (bare: "nginx", "libc6:amd64"), whatever their pin.
    pub install: BTreeSet<String>,
    pub remove: BTreeSet<String>,
    /// Name -> the version (or `*` pattern) `install` pins it to ("nginx=1.26.0-1"); a name
    /// without one takes any version.
    pub pins: BTreeMap<String, String>,
}

impl Packages {
    /// The version `install` pins `name` to, if any.
    pub fn pin(&self, name: &str) -> Option<&str> {
        self.pins.get(name).map(String::as_str)
    }

    /// The `install` entries as Git writes them: "nginx=1.26.0-1", "curl".
    pub fn entries(&self) -> BTreeSet<String> {
        self.install
            .iter()
            .map(|n| match self.pin(n) {
                Some(v) => format!("{n}={v}"),
                None => n.clone(),
            })
            .collect()
    }

    /// From `install` entries as Git writes them (tests, tools); entries are not checked.
    pub fn from_entries<'a>(
        install: impl IntoIterator<Item = &'a str>,
        remove: impl IntoIterator<Item = &'a str>,
    ) -> Packages {
        let mut p = Packages::default();
        for e in install {
            let (name, pin) = e.split_once('=').map_or((e, None), |(n, v)| (n, Some(v)));
            p.install.insert(name.to_string());
            if let Some(v) = pin {
                p.pins.insert(name.to_string(), v.to_string());
            }
        }
        p.remove = remove.into_iter().map(String::from).collect();
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    Unit(String),
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    pub timeout: Duration,
}

/// Why a commit cannot be applied: expected, reported, never retried until Git changes.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub reason: crate::reason::Reason,
    pub message: String,
}

impl SpecError {
    pub fn new(reason: crate::reason::Reason, message: impl Into<String>) -> SpecError {
        SpecError {
            reason,
            message: bounded(message.into()),
        }
    }

    /// A malformed spec (`invalid-spec`).
    pub fn invalid(message: impl Into<String>) -> SpecError {
        SpecError::new(crate::reason::Reason::InvalidSpec, message)
    }
}

/// Longest message a rejection carries into the report, the status branch and the journal: a
/// parse error quotes its line, and a hostile file can be one line of megabytes.
pub const MAX_MESSAGE: usize = 2048;

/// Keeps the start (the file) and the end (what is wrong, what to do) of a long message.
fn bounded(m: String) -> String {
    if m.len() <= MAX_MESSAGE {
        return m;
    }
    let half = MAX_MESSAGE / 2;
    let mut head = half;
    while !m.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = m.len() - half;
    while !m.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} ...({} bytes)... {}",
        &m[..head],
        tail - head,
        &m[tail..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_bounded() {
        let e = super::SpecError::invalid("é".repeat(5000));
        assert!(
            e.message.len() < super::MAX_MESSAGE + 40,
            "{}",
            e.message.len()
        );
        assert!(e.message.contains(" bytes)... "));
        let e = super::SpecError::invalid(format!("{}: shorten it", "p/".repeat(3000)));
        assert!(e.message.ends_with(": shorten it"));
        assert_eq!(super::SpecError::invalid("short").message, "short");
    }
}
