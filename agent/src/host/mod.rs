//! The only layer with side effects on the host. A pass gets one [`Host`]: the file system under
//! `root`, and the system bus, connected the first time something needs it and then shared.

pub mod bus;
pub mod command;
pub mod facts;
pub mod fs;
pub mod packagekit;
pub mod packages;
pub mod pkg_cleanup;
pub mod pkgcmd;
pub mod podman;
pub mod reboot;
pub mod runtime;
pub mod secrets;
pub mod self_upgrade;
pub mod service_hold;
pub mod systemd;
pub mod unit_dirs;
pub mod upgrades;

use anyhow::Result;
use std::cell::OnceCell;

/// Something on the host could not be read or changed (an I/O or D-Bus error): the message
/// names what and why. Per resource it becomes a failed resource; it never judges a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fault(pub String);

impl Fault {
    /// The whole chain of an `anyhow` error, on one line.
    pub fn of(e: &anyhow::Error) -> Fault {
        Fault(format!("{e:#}"))
    }
}

impl From<&str> for Fault {
    fn from(e: &str) -> Fault {
        Fault(e.into())
    }
}

impl From<anyhow::Error> for Fault {
    fn from(e: anyhow::Error) -> Fault {
        Fault::of(&e)
    }
}
use std::path::Path;

/// Everything a pass may touch on the host.
pub struct Host {
    pub fs: fs::HostFs,
    /// agent.toml `package_manager`: which backend `[packages]` go through.
    pub package_manager: packages::PackageManager,
    /// Connected on first use; a failure is kept, so a pass without a bus tries once.
    bus: OnceCell<std::result::Result<bus::Bus, Fault>>,
}

impl Host {
    pub fn open(root: &Path) -> Result<Host> {
        Ok(Host {
            fs: fs::HostFs::open(root)?,
            package_manager: packages::PackageManager::default(),
            bus: OnceCell::new(),
        })
    }

    /// The file system under `root` is the host's own (`root = "/"`): only then do its services
    /// and packages belong to the system plumb runs on.
    pub fn is_system_root(&self) -> bool {
        self.fs.root() == Path::new("/")
    }

    /// The pass's connection to the system bus; the error says why there is none.
    pub fn bus(&self) -> std::result::Result<&bus::Bus, Fault> {
        self.bus
            .get_or_init(|| {
                bus::Bus::open()
                    .map_err(|e| Fault(format!("could not talk to systemd over D-Bus: {e:#}")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}
