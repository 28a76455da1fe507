//! `agent.toml`: raw serde fragments (unknown keys rejected) validated into `Settings`.

use crate::host::packages::PackageManager;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/plumb/agent.toml";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repo: Option<String>,
    branch: Option<String>,
    host: Option<String>,
    path: Option<String>,
    interval: Option<String>,
    root: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    mode: Option<String>,
    package_manager: Option<String>,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    trust: RawTrust,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    notify: RawNotify,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    identity: Option<PathBuf>,
}

/// The host key `.age` files are decrypted with, unless `[secrets] identity` names another.
pub const DEFAULT_IDENTITY: &str = "/etc/ssh/ssh_host_ed25519_key";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    repo: Option<String>,
    branch: Option<String>,
    heartbeat: Option<String>,
    history: Option<u64>,
    signing_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    allowed_signers: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    ssh_key: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_file_size: Option<u64>,
    max_total_size: Option<u64>,
    max_files: Option<u64>,
    max_depth: Option<u64>,
    max_includes: Option<u64>,
    max_rendered_size: Option<u64>,
}

/// What the agent does with the differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Correct drift and apply new commits.
    Enforce,
    /// Report drift and pending changes, change nothing.
    Detect,
    /// Fetch and report only.
    Suspend,
}

#[derive(Debug, Clone)]
pub struct StatusSettings {
    pub repo: String,
    /// `[status] repo` before `{host}` expansion, for `plumb fleet` (with `{host}` in it, every
    /// host has a status repository of its own).
    pub repo_template: String,
    pub branch: String,
    pub heartbeat: Duration,
    pub history: u32,
    /// The SSH host key status commits are signed with (unsigned when it cannot be read);
    /// default: `[secrets] identity`, the host key.
    pub signing_key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single file Git may ask for.
    pub max_file_size: u64,
    /// Largest sum of file sizes for one host.
    pub max_total_size: u64,
    /// Most files (and symlinks) for one host.
    pub max_files: usize,
    /// Deepest directory nesting below a host or role directory (`files/etc/motd` is 3).
    pub max_depth: usize,
    /// Most distinct roles one host may include (directly or through other roles).
    pub max_includes: usize,
    /// Largest output one template may render.
    pub max_rendered_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 16 << 20,
            max_total_size: 256 << 20,
            max_files: 20_000,
            max_depth: 32,
            max_includes: 128,
            max_rendered_size: 4 << 20,
        }
    }
}

/// The range every duration and count of agent.toml must be in: a value out of range is an error
/// at load, never an overflow (or a hang) in the middle of a pass.
pub mod ranges {
    use std::time::Duration;
    pub const INTERVAL: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(7 * 86400));
    pub const HEARTBEAT: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(30 * 86400));
    pub const HEALTH_TIMEOUT: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(3600));
    pub const HISTORY: (u64, u64) = (2, 100_000);
    pub const MAX_FILE_SIZE: (u64, u64) = (1, 1 << 30);
    pub const MAX_TOTAL_SIZE: (u64, u64) = (1, 64 << 30);
    pub const MAX_FILES: (u64, u64) = (1, 1_000_000);
    pub const MAX_DEPTH: (u64, u64) = (1, 256);
    pub const MAX_INCLUDES: (u64, u64) = (1, 10_000);
    pub const MAX_RENDERED_SIZE: (u64, u64) = (1, 1 << 30);
}

/// Where the metrics go after every pass (`[metrics] textfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    /// `textfile = ""`, or another `root` with no textfile named: no metrics.
    Off,
    /// Not set: node_exporter's textfile collector directory, when it exists at write time.
    Collector(PathBuf),
    /// Named in agent.toml: written there (its directory must exist).
    File(PathBuf),
}

/// node_exporter's textfile collector directory as Debian's prometheus-node-exporter sets it up.
pub const DEFAULT_METRICS_TEXTFILE: &str = "/var/lib/prometheus/node-exporter/plumb.prom";

/// `[notify]`: where changes of outcome are posted.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// https://, or http:// to a relay on this host (loopback).
    pub webhook: String,
    /// A bearer token, read at each send (never logged).
    pub token_file: Option<PathBuf>,
    /// PEM roots to trust instead of the system's (an internal CA).
    pub ca_file: Option<PathBuf>,
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source_file: PathBuf,
    pub repo: String,
    pub branch: String,
    pub host: String,
    /// Directory of this host inside the fleet repo, `{host}` expanded, no trailing slash.
    pub path: String,
    pub interval: Duration,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub mode: Mode,
    /// `package_manager`: the backend of `[packages]` (auto: PackageKit, else apt-get, else dnf).
    pub package_manager: PackageManager,
    pub status: StatusSettings,
    pub allowed_signers: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub limits: Limits,
    /// `[secrets] identity`: the key `.age` files are decrypted with (section 10).
    pub identity: PathBuf,
    pub metrics: MetricsTarget,
    pub notify: Option<NotifySettings>,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading agent config {}: create it (see config/agent.toml) or pass --config PATH",
                path.display()
            )
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Settings> {
        let raw: RawConfig = toml::from_str(text)
            .with_context(|| format!("parsing agent config {}", path.display()))?;
        let at = |key: &str| format!("{}: key `{key}`", path.display());

        let repo = match raw.repo {
            Some(r) if !r.trim().is_empty() => {
                validate_repo(&r).with_context(|| at("repo"))?;
                r
            }
            _ => bail!(
                "{}: `repo` is not set: name the fleet repository (https://, ssh://, git://, file:// or a local path)",
                path.display()
            ),
        };
        let host = match raw.host {
            Some(h) => h,
            None => nix::unistd::gethostname()
                .context("reading the hostname (set `host` in the agent config)")?
                .to_string_lossy()
                .into_owned(),
        };
        validate_host(&host).with_context(|| at("host"))?;
        let expand = |s: &str| s.replace("{host}", &host);

        let branch = raw.branch.unwrap_or_else(|| "main".into());
        validate_ref_name(&branch).with_context(|| at("branch"))?;
        let repo_path = expand(raw.path.as_deref().unwrap_or("hosts/{host}"));
        let repo_path = repo_path.trim_matches('/').to_string();
        if repo_path.is_empty()
            || repo_path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("{}: `path` = {repo_path:?} must be a relative path inside the repo without `.` or `..`", path.display());
        }
        let interval =
            parse_duration_in(raw.interval.as_deref().unwrap_or("60s"), ranges::INTERVAL)
                .with_context(|| at("interval"))?;
        let root = raw.root.unwrap_or_else(|| "/".into());
        let state_dir = raw.state_dir.unwrap_or_else(|| "/var/lib/plumb".into());
        let identity = raw
            .secrets
            .identity
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IDENTITY));
        let signing_key = raw
            .status
            .signing_key
            .clone()
            .unwrap_or_else(|| identity.clone());
        for (key, p) in [
            ("root", &root),
            ("state_dir", &state_dir),
            ("secrets.identity", &identity),
            ("status.signing_key", &signing_key),
        ] {
            if !p.is_absolute() {
                bail!(
                    "{}: `{key}` = {} must be an absolute path",
                    path.display(),
                    p.display()
                );
            }
        }
        validate_state_dir(&state_dir, &root).with_context(|| at("state_dir"))?;
        let mode = match raw.mode.as_deref().unwrap_or("enforce") {
            "enforce" => Mode::Enforce,
            "detect" => Mode::Detect,
            "suspend" => Mode::Suspend,
            other => bail!(
                "{}: `mode` = {other:?}: allowed are enforce, detect, suspend",
                path.display()
            ),
        };
        let package_manager = match raw.package_manager.as_deref() {
            None => PackageManager::Auto,
            Some(s) => PackageManager::parse(s).with_context(|| {
                format!(
                    "{}: `package_manager` = {s:?}: allowed are {}",
                    path.display(),
                    PackageManager::NAMES
                )
            })?,
        };
        let status_branch = expand(raw.status.branch.as_deref().unwrap_or("status/{host}"));
        validate_ref_name(&status_branch).with_context(|| at("status.branch"))?;
        let status_repo = raw.status.repo.unwrap_or_else(|| repo.clone());
        validate_repo(&status_repo).with_context(|| at("status.repo"))?;
        let status = StatusSettings {
            repo: expand(&status_repo),
            repo_template: status_repo,
            branch: status_branch,
            heartbeat: parse_duration_in(
                raw.status.heartbeat.as_deref().unwrap_or("1h"),
                ranges::HEARTBEAT,
            )
            .with_context(|| at("status.heartbeat"))?,
            history: count_in(raw.status.history.unwrap_or(100), ranges::HISTORY)
                .with_context(|| at("status.history"))? as u32,
            signing_key,
        };
        let d = Limits::default();
        let l = &raw.limits;
        let count = |v: Option<u64>, default: u64, range, key: &str| {
            count_in(v.unwrap_or(default), range).with_context(|| at(key))
        };
        let limits = Limits {
            max_file_size: count(
                l.max_file_size,
                d.max_file_size,
                ranges::MAX_FILE_SIZE,
                "limits.max_file_size",
            )?,
            max_total_size: count(
                l.max_total_size,
                d.max_total_size,
                ranges::MAX_TOTAL_SIZE,
                "limits.max_total_size",
            )?,
            max_files: count(
                l.max_files,
                d.max_files as u64,
                ranges::MAX_FILES,
                "limits.max_files",
            )? as usize,
            max_depth: count(
                l.max_depth,
                d.max_depth as u64,
                ranges::MAX_DEPTH,
                "limits.max_depth",
            )? as usize,
            max_includes: count(
                l.max_includes,
                d.max_includes as u64,
                ranges::MAX_INCLUDES,
                "limits.max_includes",
            )? as usize,
            max_rendered_size: count(
                l.max_rendered_size,
                d.max_rendered_size,
                ranges::MAX_RENDERED_SIZE,
                "limits.max_rendered_size",
            )?,
        };
        let metrics = match raw.metrics.textfile {
            Some(p) if p.as_os_str().is_empty() => MetricsTarget::Off,
            Some(p) if !p.is_absolute() || p.file_name().is_none() => bail!(
                "{}: `metrics.textfile` = {} must be an absolute file path (or \"\" for no metrics)",
                path.display(),
                p.display()
            ),
            Some(p) => MetricsTarget::File(p),
            // Under another root (tests, image builds) nothing is written outside it unasked.
            None if root == Path::new("/") => {
                MetricsTarget::Collector(DEFAULT_METRICS_TEXTFILE.into())
            }
            None => MetricsTarget::Off,
        };
        let notify = match raw.notify.webhook {
            Some(url) => {
                validate_webhook(&url).with_context(|| at("notify.webhook"))?;
                Some(NotifySettings {
                    webhook: url,
                    token_file: raw.notify.token_file,
                    ca_file: raw.notify.ca_file,
                })
            }
            None if raw.notify.token_file.is_some() || raw.notify.ca_file.is_some() => bail!(
                "{}: `[notify]` has token_file or ca_file but no `webhook`: name the URL to post to",
                path.display()
            ),
            None => None,
        };
        Ok(Settings {
            source_file: path.to_path_buf(),
            repo: expand(&repo),
            branch,
            host,
            path: repo_path,
            interval,
            root,
            state_dir,
            mode,
            package_manager,
            status,
            allowed_signers: raw.trust.allowed_signers,
            ssh_key: raw.auth.ssh_key,
            token_file: raw.auth.token_file,
            limits,
            identity,
            metrics,
            notify,
        })
    }
}

/// A webhook URL: https://, or http:// only to this host (a local relay such as Alertmanager),
/// so that a token and the fleet's state never cross a network in clear text.
pub fn validate_webhook(url: &str) -> Result<()> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{url:?} is not a URL: write https://host/path"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        bail!("{url:?} carries credentials: put the token in `notify.token_file`");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{url:?} is not a URL: write https://host/path");
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "localhost" | "127.0.0.1" | "::1") => Ok(()),
        "http" => bail!(
            "{url:?}: http:// only to this host (localhost, 127.0.0.1, ::1); use https:// for another"
        ),
        other => bail!("{url:?}: scheme {other}:// is not supported; use https://"),
    }
}

/// Whether the config file exists and sets `repo`: a freshly installed package ships one that does
/// not, and the service is skipped until it does. A file that does not parse counts as configured,
/// so that `plumb run` starts and reports the error.
pub fn names_a_repo(path: &Path) -> Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(e).with_context(|| format!("reading agent config {}", path.display()))
        }
    };
    Ok(match toml::from_str::<toml::Table>(&text) {
        Ok(t) => t
            .get("repo")
            .is_some_and(|r| r.as_str().is_none_or(|s| !s.trim().is_empty())),
        Err(_) => true,
    })
}

/// "60s", "5m", "1h 30m" and the like.
pub fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        anyhow::anyhow!("{s:?} is not a duration ({e}); write it like \"60s\", \"5m\" or \"1h\"")
    })
}

/// A duration within `range` (inclusive): "0s", "99999999999d" and the like are refused here.
pub fn parse_duration_in(s: &str, range: (Duration, Duration)) -> Result<Duration> {
    let d = parse_duration(s)?;
    if d < range.0 || d > range.1 {
        bail!(
            "{s:?} is out of range: use {} to {}",
            humantime::format_duration(range.0),
            humantime::format_duration(range.1)
        );
    }
    Ok(d)
}

/// A count within `range` (inclusive).
pub fn count_in(v: u64, range: (u64, u64)) -> Result<u64> {
    if v < range.0 || v > range.1 {
        bail!("{v} is out of range: use {} to {}", range.0, range.1);
    }
    Ok(v)
}

/// A repository URL or path reaches `git` and ssh as an argument: it may not look like an option.
pub fn validate_repo(r: &str) -> Result<()> {
    if r.trim_start().starts_with('-') {
        bail!("{r:?} starts with `-`: git would take it for an option; write the URL or an absolute path");
    }
    if r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("{r:?} contains whitespace or control characters");
    }
    Ok(())
}

/// Directories plumb must never take over as its state_dir (it is chmod-ed 0700 and filled).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/tmp",
    "/etc/plumb",
];

/// Files plumb keeps in its state_dir: a non-empty directory without any of them is someone else's.
const STATE_FILES: &[&str] = &[
    "state.json",
    "lock",
    "repo.git",
    "report.toml",
    "backups",
    "status.git",
    "status-push.json",
    "known_hosts",
    "staging",
    "unit-file-states.json",
];

/// state_dir is plumb's own: not `/`, not root (or above it), not a system directory, and not an
/// existing directory holding other things (plumb would chmod it 0700 and write into it).
fn validate_state_dir(state_dir: &Path, root: &Path) -> Result<()> {
    let norm = |p: &Path| -> PathBuf { p.components().collect() };
    let (sd, root) = (norm(state_dir), norm(root));
    let shown = sd.display();
    if root.starts_with(&sd) {
        bail!("{shown} is the managed root or a directory above it: use a directory of plumb's own, like /var/lib/plumb");
    }
    if SYSTEM_DIRS.iter().any(|d| Path::new(d) == sd) {
        bail!("{shown} is a system directory: use a directory of plumb's own, like /var/lib/plumb");
    }
    if let Ok(entries) = std::fs::read_dir(&sd) {
        let names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        if !names.is_empty() && !names.iter().any(|n| STATE_FILES.iter().any(|f| n == *f)) {
            bail!("{shown} already exists and holds files that are not plumb's: use an empty or new directory, like /var/lib/plumb");
        }
    }
    Ok(())
}

/// A host name becomes a path component and a branch name: keep it to a safe alphabet.
pub fn validate_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!("host name {host:?} is invalid: use letters, digits, '.', '-' and '_' only");
    }
    Ok(())
}

fn validate_ref_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with(['/', '-', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        bail!("{name:?} is not a valid git branch name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings> {
        Settings::parse(text, Path::new("/etc/plumb/agent.toml"))
    }

    #[test]
    fn defaults_and_host_expansion() {
        let s = parse("repo = \"file:///srv/fleet.git\"\nhost = \"web-01\"\n").unwrap();
        assert_eq!(s.branch, "main");
        assert_eq!(s.path, "hosts/web-01");
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.root, Path::new("/"));
        assert_eq!(s.state_dir, Path::new("/var/lib/plumb"));
        assert_eq!(s.mode, Mode::Enforce);
        assert_eq!(s.package_manager, PackageManager::Auto);
        assert_eq!(s.status.branch, "status/web-01");
        assert_eq!(s.status.repo, "file:///srv/fleet.git");
        assert_eq!(s.status.heartbeat, Duration::from_secs(3600));
        assert_eq!(s.status.history, 100);
        assert_eq!(
            s.status.signing_key,
            std::path::Path::new("/etc/ssh/ssh_host_ed25519_key")
        );
        assert_eq!(
            s.metrics,
            MetricsTarget::Collector(DEFAULT_METRICS_TEXTFILE.into())
        );
        assert!(s.notify.is_none());
        // Another root writes no metrics unless asked; "" turns them off.
        let img = parse("repo = \"x\"\nhost = \"h\"\nroot = \"/srv/img\"\n").unwrap();
        assert_eq!(img.metrics, MetricsTarget::Off);
        let off = parse("repo = \"x\"\nhost = \"h\"\n[metrics]\ntextfile = \"\"\n").unwrap();
        assert_eq!(off.metrics, MetricsTarget::Off);
        let hook = parse(
            "repo = \"x\"\nhost = \"h\"\n[notify]\nwebhook = \"http://127.0.0.1:9093/hook\"\ntoken_file = \"/etc/plumb/hook\"\n",
        )
        .unwrap()
        .notify
        .unwrap();
        assert_eq!(hook.webhook, "http://127.0.0.1:9093/hook");
        assert_eq!(hook.token_file.unwrap(), Path::new("/etc/plumb/hook"));
    }

    #[test]
    fn all_keys() {
        let s = parse(
            r#"
repo = "git://127.0.0.1/fleet.git"
branch = "prod"
host = "db-2"
path = "fleet/{host}/"
interval = "5m"
root = "/tmp/root"
state_dir = "/tmp/plumb-config-test/state"
mode = "detect"
package_manager = "dnf"
[status]
repo = "git://127.0.0.1/status.git"
branch = "reports/{host}"
heartbeat = "10m"
history = 5
[trust]
allowed_signers = "/etc/plumb/allowed_signers"
[auth]
ssh_key = "/etc/plumb/deploy_key"
token_file = "/etc/plumb/token"
"#,
        )
        .unwrap();
        assert_eq!(s.path, "fleet/db-2");
        assert_eq!(s.interval, Duration::from_secs(300));
        assert_eq!(s.mode, Mode::Detect);
        assert_eq!(s.package_manager, PackageManager::Dnf);
        assert_eq!(s.status.branch, "reports/db-2");
        assert_eq!(s.status.history, 5);
        assert!(s.allowed_signers.is_some() && s.ssh_key.is_some() && s.token_file.is_some());
    }

    #[test]
    fn configured_means_a_repo_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        assert!(!names_a_repo(&p).unwrap(), "missing file");
        let example = include_str!("../../config/agent.toml");
        for (text, want) in [
            (example, false),
            ("# repo = \"x\"\n", false),
            ("repo = \"  \"\n", false),
            ("repo = \"git://10.0.0.1/fleet.git\"\n", true),
            ("repo = [oops\n", true),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(names_a_repo(&p).unwrap(), want, "{text}");
        }
        let configured = example.replacen("#repo = ", "repo = ", 1);
        std::fs::write(&p, &configured).unwrap();
        assert!(names_a_repo(&p).unwrap());
        Settings::parse(&configured, &p).expect("the example parses once repo is set");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "repo = \"x\"\nhost = \"h\"\nintervall = \"5s\"\n",
                "intervall",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\ninterval = \"soon\"\n",
                "interval",
            ),
            ("repo = \"x\"\nhost = \"h\"\nmode = \"yolo\"\n", "mode"),
            (
                "repo = \"x\"\nhost = \"h\"\npackage_manager = \"yum\"\n",
                "package_manager",
            ),
            ("host = \"h\"\n", "repo"),
            ("repo = \"x\"\nhost = \"a/b\"\n", "host"),
            ("repo = \"x\"\nhost = \"h\"\nroot = \"rel\"\n", "root"),
            ("repo = \"x\"\nhost = \"h\"\npath = \"../x\"\n", "path"),
            (
                "repo = \"x\"\nhost = \"h\"\n[status]\nbranch = \"a b\"\n",
                "status.branch",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[status]\nheartbeat = \"x\"\n",
                "status.heartbeat",
            ),
            // Issue 12: ranges, option-like repos, state_dir.
            (
                "repo = \"x\"\nhost = \"h\"\ninterval = \"0s\"\n",
                "interval",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\ninterval = \"18446744073709551615s\"\n",
                "interval",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[status]\nhistory = 0\n",
                "status.history",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[limits]\nmax_depth = 0\n",
                "limits.max_depth",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[limits]\nmax_includes = 99999999\n",
                "limits.max_includes",
            ),
            ("repo = \"-oProxyCommand=x\"\nhost = \"h\"\n", "repo"),
            (
                "repo = \"x\"\nhost = \"h\"\n[status]\nrepo = \"--receive-pack=x\"\n",
                "status.repo",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\nstate_dir = \"/\"\n",
                "state_dir",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\nstate_dir = \"/etc\"\n",
                "state_dir",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\nroot = \"/srv/img\"\nstate_dir = \"/srv\"\n",
                "state_dir",
            ),
            // Issue 16: metrics and the webhook.
            (
                "repo = \"x\"\nhost = \"h\"\n[metrics]\ntextfile = \"plumb.prom\"\n",
                "metrics.textfile",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[notify]\nwebhook = \"http://alerts.example.org/hook\"\n",
                "notify.webhook",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[notify]\nwebhook = \"https://u:pw@example.org/\"\n",
                "notify.webhook",
            ),
            (
                "repo = \"x\"\nhost = \"h\"\n[notify]\ntoken_file = \"/etc/plumb/hook\"\n",
                "webhook",
            ),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(key), "{text:?}: {err}");
            assert!(err.contains("/etc/plumb/agent.toml"), "{text:?}: {err}");
        }
    }
}
