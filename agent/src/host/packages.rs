//! Where package changes go: PackageKit when it is there, else the system's own tool. One enum
//! over the two, so the package resource does not care which one runs.

use super::packagekit::{self, PkPackage};
use super::pkgcmd::Native;
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

    pub async fn install(&self, ids: &[String]) -> Result<()> {
        match self {
            Backend::PackageKit(conn) => packagekit::install(conn, ids).await,
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
