//! A private bridge per test process: 10.78.N.0/24 on `plumbbrN`, the host at 10.78.N.1.

use crate::cmd::run_ok;
use crate::{lock, LOCK_DIR, WORK_DIR};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// How many bridges may exist at once (parallel test binaries).
const SLOTS: u8 = 64;

/// A Linux bridge with its own /24, removed on Drop (once the last node on it is gone too).
/// Nodes get addresses .10 and up and use the bridge address as their default gateway; the
/// host does not forward anything from the bridge, so nodes only reach each other and the host.
pub struct Network {
    pub(crate) inner: Arc<NetInner>,
}

pub(crate) struct NetInner {
    index: u8,
    bridge: String,
    next_host: AtomicU8,
    workdir: PathBuf,
    _lock: lock::Lock,
}

impl Network {
    pub fn new() -> Result<Network> {
        let (index, lock) = claim_slot()?;
        let bridge = format!("plumbbr{index}");
        let workdir = Path::new(WORK_DIR).join(format!("net-{index}"));
        // We hold the slot's lock, so what is left under its name is from a test that died.
        if Path::new("/sys/class/net").join(&bridge).exists() {
            run_ok(Command::new("ip").args(["link", "del", &bridge]))?;
        }
        remove_workdir(&workdir)?;
        std::fs::create_dir_all(&workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        // Node roots live in RAM: creating a 450 MB tree of small files on this machine's disk
        // takes 10-20 s, on a tmpfs ~1 s, and unmounting deletes it all at once.
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755", "plumb-systest"])
                .arg(&workdir),
        )?;
        let inner = NetInner {
            index,
            bridge,
            next_host: AtomicU8::new(10),
            workdir,
            _lock: lock,
        };
        // From here on, Drop of `inner` removes the bridge if setup fails halfway.
        let gw = format!("{}/24", inner.gateway());
        let br = inner.bridge.as_str();
        run_ok(Command::new("ip").args(["link", "add", br, "type", "bridge"]))?;
        run_ok(Command::new("ip").args(["addr", "add", &gw, "dev", br]))?;
        run_ok(Command::new("ip").args(["link", "set", br, "up"]))?;
        // Packets from nodes must never leave through the host, whatever ip_forward says.
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/forwarding"), "0")?;
        let v6 = format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6");
        if Path::new(&v6).exists() {
            write_sysctl(&v6, "1")?;
        }
        Ok(Network {
            inner: Arc::new(inner),
        })
    }

    /// The bridge's interface name on the host.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// The host's address on the bridge: nodes' gateway, where host services listen.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway()
    }

    /// This network's slot N (subnet 10.78.N.0/24).
    pub fn index(&self) -> u8 {
        self.inner.index
    }
}

impl NetInner {
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.index, 1)
    }

    pub(crate) fn bridge(&self) -> &str {
        &self.bridge
    }

    pub(crate) fn index(&self) -> u8 {
        self.index
    }

    pub(crate) fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub(crate) fn alloc_addr(&self) -> Result<Ipv4Addr> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if host >= 250 {
            bail!("network {}: out of node addresses", self.bridge);
        }
        Ok(Ipv4Addr::new(10, 78, self.index, host))
    }
}

impl Drop for NetInner {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            if let Err(e) = run_ok(Command::new("ip").args(["link", "del", &self.bridge])) {
                eprintln!("plumb-systest: removing bridge {}: {e:#}", self.bridge);
            }
        }
        if let Err(e) = remove_workdir(&self.workdir) {
            eprintln!("plumb-systest: {e:#}");
        }
    }
}

/// Unmounts (if mounted) and removes a network's work dir.
fn remove_workdir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    if dev(dir)? != dev(dir.parent().expect("has a parent"))? {
        run_ok(Command::new("umount").arg("-l").arg(dir))?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// A free slot, starting from one derived from our PID so parallel binaries rarely contend.
fn claim_slot() -> Result<(u8, lock::Lock)> {
    let start = (std::process::id() % u32::from(SLOTS)) as u8;
    for i in 0..SLOTS {
        let n = (start + i) % SLOTS;
        let path = Path::new(LOCK_DIR).join(format!("net-{n}.lock"));
        if let Some(l) = lock::try_lock(&path)? {
            return Ok((n, l));
        }
    }
    bail!("all {SLOTS} test network slots are in use (locks in {LOCK_DIR})")
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}
