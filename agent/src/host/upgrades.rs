//! Package upgrades (DESIGN section 13): the upgrades the repositories offer, listed and applied
//! through PackageKit (`GetUpdates`, `UpdatePackages`) or the system's own tool (`apt-get -s
//! upgrade`, `apt-get install --only-upgrade` / `apt-get upgrade`; `dnf check-update`, `dnf
//! updateinfo list --security`, `dnf upgrade [--security]`). Listing runs a tool, so
//! [`fingerprint`] says, with a few `stat`s, whether the package database or the package lists
//! changed since the last listing.

use super::command;
use super::packagekit;
use super::packages::Backend;
use super::pkgcmd::{self, run_checked, Native, CHANGE_TIMEOUT, QUERY_TIMEOUT};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

/// One upgrade on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub name: String,
    /// What the backend upgrades it by: a PackageKit id, else the name.
    pub id: String,
    pub security: bool,
}

/// What changes when the installed packages or the package lists (or what decides the
/// candidates) change: dpkg's and rpm's databases, apt's lists, dnf's cache. A directory's
/// mtime changes when a file in it is replaced (apt and dnf write by rename).
const WATCHED: [&str; 8] = [
    "/var/lib/dpkg/status",
    "/var/lib/apt/lists",
    "/etc/apt/preferences.d",
    "/etc/apt/sources.list.d",
    "/var/lib/rpm",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/dnf",
    "/var/cache/dnf",
];

/// inode, size and mtime (ns) of each watched path ("-" when absent), on one line.
pub fn fingerprint() -> String {
    WATCHED
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => format!("{}:{}:{}.{}", m.ino(), m.size(), m.mtime(), m.mtime_nsec()),
            Err(_) => "-".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The upgrades on offer, by name (one entry per name), sorted.
pub async fn list(backend: &Backend) -> Result<Vec<Available>> {
    let found = match backend {
        Backend::PackageKit(conn) => packagekit::get_updates(conn)
            .await?
            .into_iter()
            .map(|p| Available {
                name: p.name().to_string(),
                security: packagekit::is_security(p.info),
                id: p.id,
            })
            .collect(),
        Backend::Native(Native::Apt) => {
            let mut c = Native::Apt.apt_get(["-s", "upgrade"]);
            parse_apt_simulation(&run_checked(&mut c, QUERY_TIMEOUT, "apt-get -s upgrade")?)
        }
        Backend::Native(Native::Dnf) => dnf_list()?,
    };
    let mut by_name: BTreeMap<String, Available> = BTreeMap::new();
    for a in found {
        let e = by_name.entry(a.name.clone()).or_insert_with(|| a.clone());
        e.security |= a.security;
    }
    Ok(by_name.into_values().collect())
}

/// Applies `chosen` (from `list`); `all`: every upgrade on offer, else the security ones only.
pub async fn apply(backend: &Backend, all: bool, chosen: &[Available]) -> Result<()> {
    if chosen.is_empty() {
        return Ok(());
    }
    match backend {
        Backend::PackageKit(conn) => {
            let ids: Vec<String> = chosen.iter().map(|a| a.id.clone()).collect();
            packagekit::update(conn, &ids).await
        }
        Backend::Native(Native::Apt) => {
            let mut c = if all {
                Native::Apt.apt_get(["upgrade"])
            } else {
                let names: Vec<String> = chosen.iter().map(|a| a.name.clone()).collect();
                names.iter().try_for_each(|n| pkgcmd::check_name(n))?;
                let mut c = Native::Apt.apt_get(["install", "--only-upgrade", "--no-remove"]);
                c.arg("--").args(names);
                c
            };
            let what = if all {
                "apt-get upgrade"
            } else {
                "apt-get install --only-upgrade"
            };
            run_checked(&mut c, CHANGE_TIMEOUT, what).map(drop)
        }
        Backend::Native(Native::Dnf) => {
            let mut c = pkgcmd::dnf_command(true);
            c.args(["-y", "upgrade"]);
            if !all {
                c.arg("--security");
            }
            let what = if all {
                "dnf upgrade"
            } else {
                "dnf upgrade --security"
            };
            pkgcmd::run_dnf(&mut c, CHANGE_TIMEOUT, what).map(drop)
        }
    }
}

/// `dnf check-update` (exit 100: upgrades on offer, 0: none) and the names of the security
/// advisories' packages, from the cached metadata only (a refresh is a separate step).
fn dnf_list() -> Result<Vec<Available>> {
    let mut c = pkgcmd::dnf_command(false);
    c.args(["-q", "-C", "check-update"]);
    let out = command::run(&mut c, QUERY_TIMEOUT)?;
    let text = String::from_utf8(out.stdout).context("dnf check-update: output is not UTF-8")?;
    match out.status.code() {
        Some(0) => return Ok(vec![]),
        Some(100) => {}
        _ => bail!(
            "dnf check-update failed ({}){}",
            out.status,
            command::tail(&out.stderr)
        ),
    }
    let mut c = pkgcmd::dnf_command(false);
    c.args(["-q", "-C", "updateinfo", "list", "--security"]);
    let security = parse_dnf_updateinfo(&run_checked(
        &mut c,
        QUERY_TIMEOUT,
        "dnf updateinfo list --security",
    )?);
    Ok(parse_dnf_check_update(&text)
        .into_iter()
        .map(|name| Available {
            security: security.contains(&name),
            id: name.clone(),
            name,
        })
        .collect())
}

/// `apt-get -s upgrade` (LC_ALL=C) -> the upgrades: `Inst NAME [OLD] (NEW REL, REL [ARCH])`,
/// each REL `Label:Version/Archive` (or `Archive`, or a site). A security update, the way
/// unattended-upgrades and PackageKit's apt backend decide: an archive ending in "-security"
/// or the label "Debian-Security". A line without `[OLD]` is a new package, not an upgrade.
fn parse_apt_simulation(text: &str) -> Vec<Available> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            if !rest.starts_with('[') {
                return None;
            }
            let open = rest.find('(')?;
            let close = rest.rfind(')')?;
            let inner = rest.get(open + 1..close)?;
            // "NEW REL, REL [ARCH]": the version, then the releases.
            let (_, releases) = inner.split_once(' ').unwrap_or((inner, ""));
            let releases = match releases.rfind(" [") {
                Some(i) => &releases[..i],
                None => releases,
            };
            let security = releases.split(", ").any(|r| {
                let (label, place) = r.split_once(':').unwrap_or(("", r));
                let archive = place.rsplit('/').next().unwrap_or(place);
                label == "Debian-Security" || archive.ends_with("-security")
            });
            Some(Available {
                name: name.to_string(),
                id: name.to_string(),
                security,
            })
        })
        .collect()
}

/// `dnf check-update` -> names: `name.arch  version  repo` lines, up to "Obsoleting Packages".
fn parse_dnf_check_update(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if line.starts_with("Obsoleting Packages") {
            break;
        }
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        if let Some((name, _arch)) = f[0].rsplit_once('.') {
            if pkgcmd::check_name(name).is_ok() {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// `dnf updateinfo list --security` -> package names: `ADVISORY  SEVERITY/Sec.  NEVRA` lines.
fn parse_dnf_updateinfo(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let nevra = *f.get(2)?;
            (f.len() == 3).then(|| nevra_name(nevra)).flatten()
        })
        .collect()
}

/// `openssl-libs-1:3.0.9-2.fc39.x86_64` -> `openssl-libs`.
fn nevra_name(nevra: &str) -> Option<String> {
    let (nevr, _arch) = nevra.rsplit_once('.')?;
    let mut parts = nevr.rsplitn(3, '-');
    let (_release, _version, name) = (parts.next()?, parts.next()?, parts.next()?);
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Available]) -> Vec<(&str, bool)> {
        v.iter().map(|a| (a.name.as_str(), a.security)).collect()
    }

    #[test]
    fn apt_simulation() {
        let text = "\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
The following packages will be upgraded:
  base-files libssl3t64 plumb-up-a plumb-up-sec
Inst base-files [13.8] (13.8+deb13u1 Debian:13.1/stable [amd64])
Inst libssl3t64 [3.5.1-1] (3.5.1-1+deb13u1 Debian:13.1/stable, Debian-Security:13/stable-security [amd64]) []
Inst plumb-up-a [1.0] (2.0 localhost [all])
Inst plumb-up-sec [1.0] (2.0 Debian-Security:trixie-security [all])
Inst plumb-up-new (1.0 localhost [all])
Inst plumb-up-x:i386 [1.0] (2.0 Local:1/trixie-security [i386])
Conf base-files (13.8+deb13u1 Debian:13.1/stable [amd64])
";
        assert_eq!(
            names(&parse_apt_simulation(text)),
            [
                ("base-files", false),
                ("libssl3t64", true),
                ("plumb-up-a", false),
                ("plumb-up-sec", true),
                ("plumb-up-x:i386", true),
            ]
        );
    }

    #[test]
    fn dnf_check_update() {
        let text = "\
Last metadata expiration check: 0:01:02 ago on Mon 30 Nov 2026.

curl.x86_64                    8.9.1-3.fc41               updates
openssl-libs.x86_64            1:3.2.4-1.fc41             updates
plumb-up-a.noarch              2.0-1                      plumb-test
Obsoleting Packages
grub2-tools.x86_64             1:2.12-1.fc41              updates
    grub2-tools.x86_64         1:2.06-1.fc41              @anaconda
";
        assert_eq!(
            parse_dnf_check_update(text),
            ["curl", "openssl-libs", "plumb-up-a"]
        );
    }

    #[test]
    fn dnf_updateinfo() {
        let text = "\
FEDORA-2026-1a2b3c  Important/Sec.  openssl-libs-1:3.2.4-1.fc41.x86_64
FEDORA-2026-4d5e6f  Moderate/Sec.   plumb-up-sec-2.0-1.noarch
Last metadata expiration check: 0:01:02 ago
";
        let s = parse_dnf_updateinfo(text);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            ["openssl-libs", "plumb-up-sec"]
        );
        assert_eq!(
            nevra_name("a-b-c-1.0-2.el9.noarch").as_deref(),
            Some("a-b-c")
        );
        assert_eq!(nevra_name("nodots"), None);
    }

    #[test]
    fn fingerprint_is_stable_when_nothing_changes() {
        assert_eq!(fingerprint(), fingerprint());
        assert_eq!(fingerprint().split(' ').count(), WATCHED.len());
    }
}
