//! Reboots: does the OS say one is needed, which boot is this, and asking systemd for one.
//!
//! Debian-like systems (dpkg is the package database): `/run/reboot-required` exists (written by
//! the postinst of kernels, libc, ...; `/run/reboot-required.pkgs` names the packages). Elsewhere,
//! where dnf is: `needs-restarting -r` exits 1.

use super::command;
use super::fs::{HostFs, Observed};
use super::Host;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

const REBOOT_REQUIRED: &str = "/run/reboot-required";
const REBOOT_REQUIRED_PKGS: &str = "/run/reboot-required.pkgs";
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// How much of reboot-required.pkgs is read, and how many names are said.
const MAX_PKGS_READ: usize = 4096;
const MAX_PKGS_SAID: usize = 5;
const NEEDS_RESTARTING_TIMEOUT: Duration = Duration::from_secs(120);

/// How the need for a reboot is told on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/run/reboot-required` (dpkg systems, or nothing else to ask).
    RunFile,
    /// `needs-restarting -r` (dnf systems without dpkg).
    NeedsRestarting,
}

/// Which probe applies under `root`. `needs-restarting` is asked only about the running system.
pub fn probe(root: &Path) -> Probe {
    if root != Path::new("/") || root.join(DPKG_STATUS).is_file() {
        return Probe::RunFile;
    }
    if command::find_program("needs-restarting").is_some() {
        Probe::NeedsRestarting
    } else {
        Probe::RunFile
    }
}

/// `Some(why)` when `/run/reboot-required` exists under the root ("/run/reboot-required:
/// linux-image-6.12.57+deb13-amd64"); `None` when it does not. Read without following symlinks.
pub fn run_file(fs: &HostFs) -> Result<Option<String>> {
    if matches!(fs.observe(REBOOT_REQUIRED)?, Observed::Missing) {
        return Ok(None);
    }
    let mut why = REBOOT_REQUIRED.to_string();
    if let Ok(Observed::File { data, .. }) = fs.observe(REBOOT_REQUIRED_PKGS) {
        let text = String::from_utf8_lossy(&data[..data.len().min(MAX_PKGS_READ)]);
        let names = package_names(&text);
        if !names.is_empty() {
            why.push_str(": ");
            why.push_str(&names);
        }
    }
    Ok(Some(why))
}

/// `needs-restarting -r`: `Some(why)` when it exits 1, `None` when 0. It runs outside plumb's
/// sandbox (it reads the boot time and every process's libraries).
pub fn needs_restarting() -> Result<Option<String>> {
    let mut c = command::outside_sandbox("needs-restarting", NEEDS_RESTARTING_TIMEOUT, &[]);
    c.arg("-r");
    let out = command::run(&mut c, NEEDS_RESTARTING_TIMEOUT)?;
    match out.status.code() {
        Some(0) => Ok(None),
        Some(1) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("* "))
                .map(|l| l.trim_start_matches("* "))
                .take(MAX_PKGS_SAID)
                .collect();
            let mut why = "needs-restarting -r".to_string();
            if !said.is_empty() {
                why.push_str(&format!(": {}", clean(&said.join(", "))));
            }
            Ok(Some(why))
        }
        _ => {
            command::check(&c, &out)?;
            bail!("{} exited with {}", command::describe(&c), out.status)
        }
    }
}

/// The current boot's id, 32 lowercase hex digits: /proc (outside a `ProcSubset=pid` sandbox),
/// else hostnamed's `BootID` over D-Bus.
pub fn boot_id(host: &Host) -> Result<String> {
    if let Ok(text) = std::fs::read_to_string(BOOT_ID) {
        if let Some(id) = normalize(&text) {
            return Ok(id);
        }
    }
    let bus = host.bus().map_err(|f| anyhow::anyhow!("{f}"))?;
    let bytes: Vec<u8> = bus
        .block_on(async {
            let p = zbus::Proxy::new(
                bus.connection(),
                "org.freedesktop.hostname1",
                "/org/freedesktop/hostname1",
                "org.freedesktop.hostname1",
            )
            .await?;
            p.get_property::<Vec<u8>>("BootID").await
        })
        .with_context(|| format!("reading the boot id ({BOOT_ID} is hidden; asked hostnamed)"))?;
    if bytes.len() != 16 {
        bail!("hostnamed's BootID has {} bytes, not 16", bytes.len());
    }
    Ok(hex::encode(bytes))
}

/// Asks systemd to reboot the host (reboot.target, as `systemctl reboot`).
pub fn request(host: &Host) -> Result<()> {
    let bus = host.bus().map_err(|f| anyhow::anyhow!("{f}"))?;
    bus.block_on(bus.systemd.reboot())
}

/// "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n" -> "1b4e28ba2fa111d2883f0016d3cca427".
fn normalize(text: &str) -> Option<String> {
    let id: String = text
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The first few package names of reboot-required.pkgs, deduplicated, "a, b, c (and 4 more)".
fn package_names(text: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !names.contains(&l) {
            names.push(l);
        }
    }
    let more = names.len().saturating_sub(MAX_PKGS_SAID);
    let mut s = clean(&names[..names.len().min(MAX_PKGS_SAID)].join(", "));
    if more > 0 {
        s.push_str(&format!(" (and {more} more)"));
    }
    s
}

/// Printable ASCII only, at most 200 characters: the text comes from files packages wrote.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_file_and_its_packages() {
        let root = tempfile::tempdir().unwrap();
        let fs = || HostFs::open(root.path()).unwrap();
        assert_eq!(run_file(&fs()).unwrap(), None);
        let run = root.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("reboot-required"),
            "*** System restart required ***\n",
        )
        .unwrap();
        assert_eq!(
            run_file(&fs()).unwrap().as_deref(),
            Some("/run/reboot-required")
        );
        let pkgs = "linux-image-6.12\nlibc6\nlibc6\na\nb\nc\nd\x1b[31m\n";
        std::fs::write(run.join("reboot-required.pkgs"), pkgs).unwrap();
        assert_eq!(
            run_file(&fs()).unwrap().as_deref(),
            Some("/run/reboot-required: linux-image-6.12, libc6, a, b, c (and 1 more)")
        );
        // A symlinked package list is not followed out of the root.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "secret-name\n").unwrap();
        std::fs::remove_file(run.join("reboot-required.pkgs")).unwrap();
        std::os::unix::fs::symlink(outside.path(), run.join("reboot-required.pkgs")).unwrap();
        assert_eq!(
            run_file(&fs()).unwrap().as_deref(),
            Some("/run/reboot-required")
        );
        assert_eq!(probe(root.path()), Probe::RunFile);
    }

    #[test]
    fn boot_ids_normalize() {
        assert_eq!(
            normalize("1B4E28BA-2fa1-11d2-883f-0016d3cca427\n").as_deref(),
            Some("1b4e28ba2fa111d2883f0016d3cca427")
        );
        assert_eq!(normalize("nope"), None);
    }
}
