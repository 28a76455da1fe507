//! Reads the host facts templates see (`spec::facts::Facts`), once per pass. Files of the
//! configuration (/etc/hostname, /etc/machine-id, /etc/os-release, /etc/hosts) are read under the
//! agent's `root`; the kernel's view (uname, /proc, interfaces) is the running system's. Nothing
//! here touches the network: the fqdn comes from /etc/hosts, not from DNS, so the same host gives
//! the same facts every pass.

use crate::spec::facts::{Facts, Interface, Os};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest file read for a fact: these are a few lines long.
const MAX_FACT_FILE: u64 = 64 << 10;

/// The facts of the host `root` is applied to. A fact that cannot be read is left out (a
/// template that needs it then fails, naming it).
pub fn read(root: &Path) -> Facts {
    let uts = nix::sys::utsname::uname().ok();
    let uname = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .and_then(|u| f(u).to_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let hostname = small_file(&root.join("etc/hostname"))
        .and_then(|t| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
        })
        .or_else(|| uname(|u| u.nodename()));
    let fqdn = hostname.as_deref().map(|h| {
        small_file(&root.join("etc/hosts"))
            .and_then(|t| fqdn_from_hosts(&t, h))
            .unwrap_or_else(|| h.to_string())
    });
    let os_release = small_file(&root.join("etc/os-release"))
        .or_else(|| small_file(&root.join("usr/lib/os-release")))
        .unwrap_or_default();
    let interfaces = interfaces();
    let default_ipv4 = small_file(Path::new("/proc/net/route"))
        .and_then(|t| default_route_interface(&t))
        .and_then(|i| interfaces.get(&i).and_then(|i| i.ipv4.clone()));
    Facts {
        hostname,
        fqdn,
        machine_id: small_file(&root.join("etc/machine-id"))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
        arch: uname(|u| u.machine()),
        kernel: uname(|u| u.release()),
        cpus: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        memory_mib: small_file(Path::new("/proc/meminfo")).and_then(|t| mem_total_mib(&t)),
        default_ipv4,
        os: os(&os_release),
        interfaces,
    }
}

fn small_file(p: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(p).ok()?;
    let mut s = String::new();
    f.take(MAX_FACT_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The canonical name of `host` in an /etc/hosts file, when it has a dot in it.
fn fqdn_from_hosts(text: &str, host: &str) -> Option<String> {
    if host.contains('.') {
        return Some(host.to_string());
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if names
            .iter()
            .any(|n| *n == host || n.split('.').next() == Some(host))
        {
            if let Some(n) = names
                .iter()
                .find(|n| n.split('.').next() == Some(host) && n.contains('.'))
            {
                return Some(n.to_string());
            }
        }
    }
    None
}

/// os-release(5): KEY=value lines, values optionally quoted.
fn os(text: &str) -> Os {
    let mut os = Os::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => os.id = Some(v),
            "VERSION_ID" => os.version_id = Some(v),
            "PRETTY_NAME" => os.pretty_name = Some(v),
            _ => {}
        }
    }
    os
}

fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The interface of the default IPv4 route with the lowest metric, from /proc/net/route.
fn default_route_interface(route: &str) -> Option<String> {
    route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let up = u32::from_str_radix(f.get(3)?, 16).ok()? & 1 == 1;
            (f.get(1)? == &"00000000" && f.get(7)? == &"00000000" && up)
                .then(|| Some((f.get(6)?.parse::<u64>().ok()?, f[0].to_string())))?
        })
        .min()
        .map(|(_, i)| i)
}

/// Every interface but loopback: MAC (from sysfs), first IPv4, first IPv6 that is not link-local.
fn interfaces() -> BTreeMap<String, Interface> {
    use nix::net::if_::InterfaceFlags;
    let mut out: BTreeMap<String, Interface> = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        if a.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let entry = out.entry(a.interface_name.clone()).or_default();
        let Some(addr) = a.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            entry.ipv4.get_or_insert_with(|| v4.ip().to_string());
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            if ip.segments()[0] & 0xffc0 != 0xfe80 {
                entry.ipv6.get_or_insert_with(|| ip.to_string());
            }
        }
    }
    for (name, i) in out.iter_mut() {
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        i.mac = small_file(&Path::new("/sys/class/net").join(name).join("address"))
            .map(|t| t.trim().to_string())
            .filter(|m| !m.is_empty() && m != "00:00:00:00:00:00");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(
            fqdn_from_hosts(
                "127.0.0.1 localhost\n10.0.0.5 web-01.example.org web-01 # me\n",
                "web-01"
            ),
            Some("web-01.example.org".into())
        );
        assert_eq!(fqdn_from_hosts("127.0.0.1 localhost\n", "web-01"), None);
        let os = os("ID=debian\nVERSION_ID=\"13\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n");
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("13"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(
            mem_total_mib("MemTotal:        2048000 kB\nMemFree: 1 kB\n"),
            Some(2000)
        );
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t00000000\t0100000A\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn reads_the_files_under_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/hostname"), "store-042\n").unwrap();
        std::fs::write(t.path().join("etc/machine-id"), "0123abcd\n").unwrap();
        std::fs::write(t.path().join("etc/os-release"), "ID=debian\n").unwrap();
        let f = read(t.path());
        assert_eq!(f.hostname.as_deref(), Some("store-042"));
        assert_eq!(f.fqdn.as_deref(), Some("store-042"));
        assert_eq!(f.machine_id.as_deref(), Some("0123abcd"));
        assert_eq!(f.os.id.as_deref(), Some("debian"));
        assert!(f.cpus.unwrap() >= 1);
        assert!(f.memory_mib.unwrap() > 0);
        assert!(f.kernel.is_some() && f.arch.is_some());
        assert!(!f.interfaces.contains_key("lo"));
        // Read twice: the same facts (a pass must not see them change by itself).
        assert_eq!(read(t.path()), f);
    }
}
