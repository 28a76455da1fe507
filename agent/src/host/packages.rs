//! Where package changes go: PackageKit when it is there, else the system's own tool. One enum
//! over the two, so the package resource does not care which one runs.

use super::packagekit::{self, PkPackage};
use super::pkgcmd::Native;
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
