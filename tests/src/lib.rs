//! System-test harness: real Debian trixie nodes booted with systemd-nspawn on a private bridge,
//! plus a git server on the host. See `shared/notes/system-testing.md` for the recipe and its
//! pitfalls; every type here cleans up on Drop, including when a test panics.
//!
//! ```no_run
//! use plumb_systest::{GitServer, Network, Node, NodeImage};
//! if !plumb_systest::can_run() { return; }
//! let image = NodeImage::ensure().unwrap();
//! let net = Network::new().unwrap();
//! let git = GitServer::start(&net).unwrap();
//! let node = Node::boot(&image, &net, "web-01").unwrap();
//! node.install_plumb().unwrap();
//! ```

mod cmd;
mod git;
mod image;
mod lock;
mod network;
mod node;
mod registry;
mod wait;

pub use cmd::{run, CmdOutput};
pub use git::{FleetRepo, GitServer};
pub use image::NodeImage;
pub use network::Network;
pub use node::{plumb_bin, Node};
pub use registry::Registry;
pub use wait::wait_until;

/// Where the harness keeps its state between runs (image cache) and during a run (node dirs).
/// `PLUMB_SYSTEST_CACHE` overrides the image cache dir.
pub(crate) fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("PLUMB_SYSTEST_CACHE")
        .unwrap_or_else(|| "/var/cache/plumb-systest".into())
        .into()
}
pub(crate) const WORK_DIR: &str = "/var/tmp/plumb-systest";
pub(crate) const LOCK_DIR: &str = "/run/lock/plumb-systest";

/// System tests need root (nspawn, bridges, cgroups). Returns false, after saying so on stderr,
/// when they cannot run; a test then returns early and counts as passed.
pub fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("plumb-systest: skipped, system tests need root");
    false
}
