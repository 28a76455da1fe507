//! Where package changes go: PackageKit when it is there, else the system's own tool. One enum
//! over the two, so the package resource does not care which one runs.

use super::packagekit::{self, PkPackage};
use super::pkgcmd::Native;
use crate::spec::version::{self, Scheme};
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

/// Where package changes go. Chosen per pass, only when there is something to change.
pub enum Backend {
    PackageKit(zbus::Connection),
    Native(Native),
}

impl Backend {
    /// PackageKit on the pass's bus connection when it answers, else apt-get or dnf.
    pub async fn choose(
        conn: std::result::Result<&zbus::Connection, super::Fault>,
    ) -> Result<Backend> {
        let why = match conn {
            Ok(conn) => match packagekit::probe(conn).await {
                Ok(()) => return Ok(Backend::PackageKit(conn.clone())),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("no system bus: {e}"),
        };
        let native = Native::detect().ok_or_else(|| {
            anyhow!("no package manager: PackageKit is not available ({why}), and neither apt-get nor dnf is installed")
        })?;
        tracing::info!(backend = native.name(), reason = %why, "PackageKit not available, using the package tool directly");
        Ok(Backend::Native(native))
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
