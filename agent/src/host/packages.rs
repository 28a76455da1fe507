//! Where package changes go: PackageKit when it is there, else the system's own tool. One enum
//! over the two, so the package resource does not care which one runs.

use super::packagekit::{self, PkPackage};
use super::pkgcmd::Native;
use crate::spec::version::{self, Scheme};
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

/// agent.toml `package_manager`: which backend plumb uses for `[packages]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackageManager {
    /// PackageKit when it answers on the system bus, else apt-get, else dnf.
    #[default]
    Auto,
    PackageKit,
    Apt,
    Dnf,
}

impl PackageManager {
    pub const NAMES: &'static str = "auto, packagekit, apt, dnf";

    pub fn parse(s: &str) -> Option<PackageManager> {
        Some(match s {
            "auto" => PackageManager::Auto,
            "packagekit" => PackageManager::PackageKit,
            "apt" => PackageManager::Apt,
            "dnf" => PackageManager::Dnf,
            _ => return None,
        })
    }

    /// The package database the installed set is read from: the named tool's own (rpm for dnf,
    /// dpkg for apt); `None`: whichever the system has (dpkg first).
    pub fn database(self) -> Option<Native> {
        match self {
            PackageManager::Apt => Some(Native::Apt),
            PackageManager::Dnf => Some(Native::Dnf),
            PackageManager::Auto | PackageManager::PackageKit => None,
        }
    }
}

/// What [`select`] picked.
#[derive(Debug, PartialEq, Eq)]
enum Selected {
    PackageKit,
    /// The tool, and why PackageKit was passed over (`auto` only).
    Native(Native, Option<String>),
}

/// The choice itself, pure: `probe` is PackageKit's answer (asked only for auto and
/// packagekit), `present` whether a tool is installed.
fn select(
    setting: PackageManager,
    probe: Option<std::result::Result<(), String>>,
    present: impl Fn(Native) -> bool,
) -> Result<Selected> {
    let named = |n: Native| {
        if present(n) {
            Ok(Selected::Native(n, None))
        } else {
            Err(anyhow!(
                "package_manager = {:?} in agent.toml, but {} is not installed: install it, or set package_manager = \"auto\"",
                n.setting_name(),
                n.name()
            ))
        }
    };
    match (setting, probe) {
        (PackageManager::Apt, _) => named(Native::Apt),
        (PackageManager::Dnf, _) => named(Native::Dnf),
        (PackageManager::PackageKit | PackageManager::Auto, Some(Ok(()))) => Ok(Selected::PackageKit),
        (PackageManager::PackageKit, Some(Err(why))) => Err(anyhow!(
            "package_manager = \"packagekit\" in agent.toml, but PackageKit is not available ({why}): install and enable it, or set package_manager = \"auto\""
        )),
        (PackageManager::Auto | PackageManager::PackageKit, probe) => {
            let why = match probe {
                Some(Err(why)) => why,
                _ => "not asked".to_string(),
            };
            [Native::Apt, Native::Dnf]
                .into_iter()
                .find(|n| present(*n))
                .map(|n| Selected::Native(n, Some(why.clone())))
                .ok_or_else(|| anyhow!("no package manager: PackageKit is not available ({why}), and neither apt-get nor dnf is installed"))
        }
    }
}

/// Where package changes go. Chosen per pass, only when there is something to change.
pub enum Backend {
    PackageKit(zbus::Connection),
    Native(Native),
}

impl Backend {
    /// The backend `setting` names: with `auto`, PackageKit on the pass's bus connection when it
    /// answers, else apt-get or dnf; otherwise that one, or an error saying why it cannot be used.
    pub async fn choose(
        setting: PackageManager,
        conn: std::result::Result<&zbus::Connection, super::Fault>,
    ) -> Result<Backend> {
        let probe = match setting {
            PackageManager::Auto | PackageManager::PackageKit => Some(match &conn {
                Ok(conn) => packagekit::probe(conn).await.map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("no system bus: {e}")),
            }),
            PackageManager::Apt | PackageManager::Dnf => None,
        };
        match select(setting, probe, Native::present)? {
            Selected::PackageKit => match conn {
                Ok(conn) => Ok(Backend::PackageKit(conn.clone())),
                Err(e) => Err(anyhow!("no system bus: {e}")),
            },
            Selected::Native(native, why) => {
                if let Some(why) = why {
                    tracing::info!(backend = native.name(), reason = %why, "PackageKit not available, using the package tool directly");
                }
                Ok(Backend::Native(native))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::PackageKit(_) => "PackageKit",
            Backend::Native(n) => n.name(),
        }
    }

    /// Name -> the id to install, for the names the repositories offer.
    pub async fn available(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        match self {
            Backend::PackageKit(conn) => {
                let found = packagekit::resolve(conn, packagekit::FILTER_ARCH, names).await?;
                Ok(pick(names, &found, packagekit::INFO_AVAILABLE))
            }
            Backend::Native(n) => Ok(n
                .available(names)?
                .into_iter()
                .map(|x| (x.clone(), x))
                .collect()),
        }
    }

    /// Why the repositories have none of `names`, in the tool's own words (dnf only).
    pub async fn why_missing(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        match self {
            Backend::Native(n) => n.why_missing(names),
            Backend::PackageKit(_) => Ok(BTreeMap::new()),
        }
    }

    /// For each pinned name (name -> pin), what the repositories offer: the id of the version
    /// the pin names (exact, or the newest matching a pattern in `scheme`'s order), or the
    /// versions there are when none matches. A name no repository has is absent.
    ///
    /// PackageKit's Resolve reports only the installed and the candidate version on Debian
    /// (aptcc), so the versions also come from the system's own query (`apt-cache madison`,
    /// `dnf repoquery`) when it is there; an id for a version only that query knows is built
    /// from the resolved package's arch and repository (aptcc and dnf look ids up by name,
    /// version and arch).
    pub async fn available_pinned(
        &self,
        pins: &BTreeMap<String, String>,
        scheme: Scheme,
    ) -> Result<BTreeMap<String, Offer>> {
        let names: Vec<String> = pins.keys().cloned().collect();
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        // name -> version -> id
        let mut known: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        match self {
            Backend::PackageKit(conn) => {
                let found = packagekit::resolve(conn, packagekit::FILTER_ARCH, &names).await?;
                let listed = match Native::detect() {
                    Some(n) => n.available_versions(&names)?,
                    None => BTreeMap::new(),
                };
                for name in &names {
                    let of: Vec<&PkPackage> = found.iter().filter(|p| p.is(name)).collect();
                    let versions = known.entry(name.clone()).or_default();
                    for p in &of {
                        if p.info == packagekit::INFO_AVAILABLE {
                            versions.insert(p.version().to_string(), p.id.clone());
                        }
                    }
                    let template = of
                        .iter()
                        .find(|p| p.info == packagekit::INFO_AVAILABLE)
                        .or(of.first());
                    if let Some(t) = template {
                        for v in listed.get(name).into_iter().flatten() {
                            versions
                                .entry(v.clone())
                                .or_insert_with(|| package_id(t, v));
                        }
                    }
                }
            }
            Backend::Native(n) => {
                for (name, versions) in n.available_versions(&names)? {
                    known.insert(
                        name.clone(),
                        versions
                            .into_iter()
                            .map(|v| (v.clone(), format!("{name}={v}")))
                            .collect(),
                    );
                }
            }
        }
        Ok(offers(pins, known, scheme))
    }

    /// Name -> the installed package's id.
    pub async fn installed_ids(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        match self {
            Backend::PackageKit(conn) => {
                let found = packagekit::resolve(conn, packagekit::FILTER_INSTALLED, names).await?;
                Ok(pick(names, &found, packagekit::INFO_INSTALLED))
            }
            Backend::Native(_) => Ok(names.iter().map(|n| (n.clone(), n.clone())).collect()),
        }
    }

    pub async fn refresh(&self) -> Result<()> {
        match self {
            Backend::PackageKit(conn) => packagekit::refresh_cache(conn).await,
            Backend::Native(n) => n.refresh(),
        }
    }

    /// `pinned`: some ids name a version (which may be older than the installed one).
    pub async fn install(&self, ids: &[String], pinned: bool) -> Result<()> {
        match self {
            Backend::PackageKit(conn) => packagekit::install(conn, ids, pinned).await,
            Backend::Native(n) => n.install(ids),
        }
    }

    pub async fn remove(&self, ids: &[String]) -> Result<()> {
        match self {
            Backend::PackageKit(conn) => packagekit::remove(conn, ids).await,
            Backend::Native(n) => n.remove(ids),
        }
    }
}

/// What the repositories offer for one pinned package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The id to install, and the version it is.
    Found { id: String, version: String },
    /// No version matches the pin: the versions there are, newest first.
    NoMatch(Vec<String>),
}

/// Picks, for each pin, the version it names among `known` (name -> version -> id).
fn offers(
    pins: &BTreeMap<String, String>,
    known: BTreeMap<String, BTreeMap<String, String>>,
    scheme: Scheme,
) -> BTreeMap<String, Offer> {
    let mut out = BTreeMap::new();
    for (name, versions) in known {
        let Some(pin) = pins.get(&name) else {
            continue;
        };
        if versions.is_empty() {
            continue;
        }
        let offer = match version::pick(scheme, pin, versions.keys().map(String::as_str)) {
            Some(v) => Offer::Found {
                id: versions[v].clone(),
                version: v.to_string(),
            },
            None => {
                let mut all: Vec<String> = versions.into_keys().collect();
                all.sort_by(|a, b| scheme.compare(b, a));
                Offer::NoMatch(all)
            }
        };
        out.insert(name, offer);
    }
    out
}

/// A PackageKit id for `version` of the package `like` is (its name, arch and repository).
fn package_id(like: &PkPackage, version: &str) -> String {
    let mut f = like.id.split(';');
    let (name, _, arch, data) = (f.next(), f.next(), f.next(), f.next());
    let data = data.unwrap_or_default();
    let data = data.strip_prefix("installed:").unwrap_or(data);
    let data = if data == "installed" { "" } else { data };
    format!(
        "{};{version};{};{data}",
        name.unwrap_or_default(),
        arch.unwrap_or_default()
    )
}

/// For each requested name, the first reported package with that `info`.
fn pick(names: &[String], found: &[PkPackage], info: u32) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|n| {
            found
                .iter()
                .find(|p| p.info == info && p.is(n))
                .map(|p| (n.clone(), p.id.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PackageKit stays the first choice where it answers, whatever tools are installed; a
    /// named tool is used as named, without asking PackageKit; a missing one is an error.
    #[test]
    fn selection() {
        use PackageManager as M;
        let both = |_: Native| true;
        let only_dnf = |n: Native| n == Native::Dnf;
        let none = |_: Native| false;
        let pk_ok = || Some(Ok(()));
        let pk_down = || Some(Err("ServiceUnknown".to_string()));
        assert_eq!(
            select(M::Auto, pk_ok(), both).unwrap(),
            Selected::PackageKit
        );
        assert_eq!(
            select(M::Auto, pk_ok(), only_dnf).unwrap(),
            Selected::PackageKit
        );
        assert_eq!(
            select(M::Auto, pk_down(), both).unwrap(),
            Selected::Native(Native::Apt, Some("ServiceUnknown".into()))
        );
        assert_eq!(
            select(M::Auto, pk_down(), only_dnf).unwrap(),
            Selected::Native(Native::Dnf, Some("ServiceUnknown".into()))
        );
        let e = select(M::Auto, pk_down(), none).unwrap_err().to_string();
        assert!(
            e.contains("no package manager") && e.contains("ServiceUnknown"),
            "{e}"
        );
        assert_eq!(
            select(M::PackageKit, pk_ok(), none).unwrap(),
            Selected::PackageKit
        );
        let e = select(M::PackageKit, pk_down(), both)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("package_manager = \"packagekit\"") && e.contains("ServiceUnknown"),
            "{e}"
        );
        assert_eq!(
            select(M::Dnf, None, both).unwrap(),
            Selected::Native(Native::Dnf, None)
        );
        assert_eq!(
            select(M::Apt, None, both).unwrap(),
            Selected::Native(Native::Apt, None)
        );
        let e = select(M::Apt, None, only_dnf).unwrap_err().to_string();
        assert!(
            e.contains("package_manager = \"apt\"") && e.contains("apt-get is not installed"),
            "{e}"
        );
        assert_eq!(M::parse("dnf"), Some(M::Dnf));
        assert_eq!(M::parse("yum"), None);
        assert_eq!(M::Dnf.database(), Some(Native::Dnf));
        assert_eq!(M::Auto.database(), None);
    }

    #[test]
    fn offers_pick_the_pinned_version() {
        let pins: BTreeMap<String, String> = [("a", "2.*"), ("b", "1.0"), ("c", "9.9"), ("d", "1")]
            .into_iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        let ids = |n: &str, vs: &[&str]| -> (String, BTreeMap<String, String>) {
            (
                n.to_string(),
                vs.iter()
                    .map(|v| (v.to_string(), format!("{n};{v};all;repo")))
                    .collect(),
            )
        };
        let known = [
            ids("a", &["1.0", "2.0", "2.10", "3.0"]),
            ids("b", &["1.0", "2.0"]),
            ids("c", &["1.0", "2.0", "10.0"]),
        ]
        .into_iter()
        .collect();
        let got = offers(&pins, known, Scheme::Deb);
        assert_eq!(
            got["a"],
            Offer::Found {
                id: "a;2.10;all;repo".into(),
                version: "2.10".into()
            }
        );
        assert_eq!(
            got["b"],
            Offer::Found {
                id: "b;1.0;all;repo".into(),
                version: "1.0".into()
            }
        );
        assert_eq!(
            got["c"],
            Offer::NoMatch(vec!["10.0".into(), "2.0".into(), "1.0".into()])
        );
        assert!(!got.contains_key("d"), "unknown to every repository");
    }

    #[test]
    fn ids_for_versions_only_apt_lists() {
        let installed = PkPackage {
            info: packagekit::INFO_INSTALLED,
            id: "plumb-test-a;2.0;all;installed:local".into(),
        };
        assert_eq!(package_id(&installed, "1.0"), "plumb-test-a;1.0;all;local");
        let available = PkPackage {
            info: packagekit::INFO_AVAILABLE,
            id: "nginx;1.26.3-3;amd64;debian-trixie-main".into(),
        };
        assert_eq!(
            package_id(&available, "1.26.0-1"),
            "nginx;1.26.0-1;amd64;debian-trixie-main"
        );
    }

    #[test]
    fn pick_matches_name_info_and_arch() {
        let found = vec![
            PkPackage {
                info: packagekit::INFO_INSTALLED,
                id: "a;1;amd64;installed".into(),
            },
            PkPackage {
                info: packagekit::INFO_AVAILABLE,
                id: "a;2;amd64;repo".into(),
            },
            PkPackage {
                info: packagekit::INFO_AVAILABLE,
                id: "ab;1;amd64;repo".into(),
            },
        ];
        let names = vec!["a".to_string(), "b".to_string()];
        let got = pick(&names, &found, packagekit::INFO_AVAILABLE);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [("a".into(), "a;2;amd64;repo".into())]
        );
    }
}
