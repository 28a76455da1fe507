//! OS packages without PackageKit: the system's own tools as subprocesses (no shell), and the
//! installed set read with one query (`dpkg-query` or `rpm`), which every backend uses.

use super::command::{self, find_program};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Queries are quick; installs may download a lot.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The package manager of this system, driven directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    Apt,
    Dnf,
}

impl Native {
    /// apt-get on Debian-like systems, dnf on Fedora-like ones.
    pub fn detect() -> Option<Native> {
        if find_program("apt-get").is_some() && find_program("dpkg-query").is_some() {
            Some(Native::Apt)
        } else if find_program("dnf").is_some() {
            Some(Native::Dnf)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Native::Apt => "apt-get",
            Native::Dnf => "dnf",
        }
    }

    /// Which of `names` the configured repositories offer (one query for all).
    pub fn available(self, names: &[String]) -> Result<BTreeSet<String>> {
        check_names(names)?;
        if names.is_empty() {
            return Ok(BTreeSet::new());
        }
        match self {
            Native::Apt => {
                let mut c = Command::new("apt-cache");
                c.arg("policy").arg("--").args(names).env("LC_ALL", "C");
                let out = run_checked(&mut c, QUERY_TIMEOUT, "apt-cache policy")?;
                Ok(parse_apt_policy(&out))
            }
            Native::Dnf => {
                let mut c = Command::new("dnf");
                c.args(["-q", "repoquery", "--qf", "%{name}\\n", "--"])
                    .args(names)
                    .env("LC_ALL", "C");
                let out = run_checked(&mut c, QUERY_TIMEOUT, "dnf repoquery")?;
                let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                Ok(out
                    .lines()
                    .map(str::trim)
                    .filter(|n| wanted.contains(n))
                    .map(String::from)
                    .collect())
            }
        }
    }

    /// Re-reads the repositories' package lists.
    pub fn refresh(self) -> Result<()> {
        let what = match self {
            Native::Apt => "apt-get update",
            Native::Dnf => "dnf makecache",
        };
        let mut c = match self {
            Native::Apt => self.apt_get(["update"]),
            Native::Dnf => {
                let mut c = system_tool("dnf", &[]);
                c.args(["-y", "makecache", "--refresh"]);
                c
            }
        };
        run_checked(&mut c, CHANGE_TIMEOUT, what).map(drop)
    }

    /// Installs all `names` in one run of the tool; trusted packages only (neither tool is told
    /// to allow unauthenticated ones), and never removing anything to make room.
    pub fn install(self, names: &[String]) -> Result<()> {
        check_names(names)?;
        let what = format!("{} install", self.name());
        let what = what.as_str();
        let mut c = match self {
            Native::Apt => self.apt_get(["install", "--no-remove"]),
            Native::Dnf => {
                let mut c = system_tool("dnf", &[]);
                c.args(["-y", "install"]);
                c
            }
        };
        c.arg("--").args(names);
        run_checked(&mut c, CHANGE_TIMEOUT, what).map(drop)
    }

    /// Removes all `names` in one run, refusing when that would also remove packages that depend
    /// on them (PackageKit's `allow_deps = false`).
    pub fn remove(self, names: &[String]) -> Result<()> {
        check_names(names)?;
        match self {
            Native::Apt => {
                let mut sim = self.apt_get(["-s", "remove"]);
                sim.arg("--").args(names);
                let plan = run_checked(&mut sim, QUERY_TIMEOUT, "apt-get -s remove")?;
                let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                let extra: Vec<String> = parse_apt_removals(&plan)
                    .into_iter()
                    .filter(|n| !wanted.contains(n.as_str()))
                    .collect();
                if !extra.is_empty() {
                    bail!(
                        "removing {} would also remove {} (they depend on it): add those to [packages] remove too, or keep it",
                        names.join(" "),
                        extra.join(" ")
                    );
                }
                let mut c = self.apt_get(["remove"]);
                c.arg("--").args(names);
                run_checked(&mut c, CHANGE_TIMEOUT, "apt-get remove").map(drop)
            }
            Native::Dnf => {
                let mut c = system_tool("dnf", &[]);
                c.args([
                    "-y",
                    "--setopt=clean_requirements_on_remove=False",
                    "remove",
                    "--",
                ])
                .args(names);
                run_checked(&mut c, CHANGE_TIMEOUT, "dnf remove").map(drop)
            }
        }
    }

    /// apt-get, never prompting, keeping the admin's edited conffiles (run outside the sandbox).
    pub(crate) fn apt_get<const N: usize>(self, args: [&str; N]) -> Command {
        let mut c = system_tool(
            "apt-get",
            &[("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C")],
        );
        c.args(["-y", "-q"])
            // Keep the admin's edited conffiles, never ask.
            .args([
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
            ])
            .args(args);
        c
    }
}

/// A package tool that changes the system. When plumb runs as a systemd service, its sandbox
/// (plumb.service keeps only the file capabilities) would break apt's privilege drop and the
/// packages' maintainer scripts: the tool then runs as a transient unit of systemd, outside that
/// sandbox, waited for, its output piped back. Run by hand, it runs directly.
pub(crate) fn system_tool(program: &str, env: &[(&str, &str)]) -> Command {
    super::command::outside_sandbox(program, CHANGE_TIMEOUT, env)
}

/// dpkg's database, read directly: every pass of a host with packages in Git reads it, and
/// `dpkg-query -W` alone takes ~50 ms for 740 packages here (the read: 17 ms in a debug build).
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const DPKG_UPDATES: &str = "/var/lib/dpkg/updates";

/// The names of the installed packages, in one read of the package database. Debian
/// multi-arch names appear both bare (`libc6`) and qualified (`libc6:amd64`).
pub fn installed() -> Result<BTreeSet<String>> {
    if Path::new(DPKG_STATUS).is_file() && !dpkg_journal_pending() {
        let text = std::fs::read_to_string(DPKG_STATUS)
            .with_context(|| format!("reading {DPKG_STATUS}"))?;
        Ok(parse_dpkg_status_file(&text))
    } else if find_program("dpkg-query").is_some() {
        let mut c = Command::new("dpkg-query");
        c.args([
            "-W",
            "-f",
            "${Package}\t${binary:Package}\t${db:Status-Abbrev}\n",
        ]);
        Ok(parse_dpkg_status(&run_checked(
            &mut c,
            QUERY_TIMEOUT,
            "dpkg-query",
        )?))
    } else if find_program("rpm").is_some() {
        let mut c = Command::new("rpm");
        c.args(["-qa", "--qf", "%{NAME}\\n"]);
        Ok(run_checked(&mut c, QUERY_TIMEOUT, "rpm -qa")?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    } else {
        bail!("neither dpkg-query nor rpm is installed: plumb cannot read which packages this host has")
    }
}

/// The same rule as the spec loader, checked again right before a command line is built:
/// nothing a shell or an option parser could take (`x; rm -rf /`, `-oFoo`).
pub fn check_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:".contains(c));
    if !ok {
        bail!("{n:?} is not a valid package name");
    }
    Ok(())
}

fn check_names(names: &[String]) -> Result<()> {
    names.iter().try_for_each(|n| check_name(n))
}

/// Runs `c` (its whole argv is logged); a failure says `what` failed, with the tool's own words.
pub(crate) fn run_checked(c: &mut Command, timeout: Duration, what: &str) -> Result<String> {
    let out = command::run(c, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}){}",
            out.status,
            command::tail(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{what}: output is not UTF-8"))
}

fn dpkg_journal_pending() -> bool {
    std::fs::read_dir(DPKG_UPDATES)
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
        })
        .unwrap_or(false)
}

/// dpkg's status file (stanzas of `Field: value`) -> installed names, bare and `name:arch`.
/// Installed: the third word of `Status:` is installed, or triggers-awaited/-pending. One pass
/// over the lines: the file is ~1 MB on a big host.
fn parse_dpkg_status_file(text: &str) -> BTreeSet<String> {
    fn finish(
        set: &mut BTreeSet<String>,
        name: &mut Option<&str>,
        ok: &mut bool,
        arch: &mut Option<&str>,
    ) {
        if let (Some(n), true) = (name.take(), *ok) {
            set.insert(n.to_string());
            if let Some(a) = arch {
                set.insert(format!("{n}:{a}"));
            }
        }
        *ok = false;
        *arch = None;
    }
    let mut set = BTreeSet::new();
    let (mut name, mut ok, mut arch) = (None, false, None);
    for line in text.lines() {
        if line.is_empty() {
            finish(&mut set, &mut name, &mut ok, &mut arch);
        } else if let Some(v) = line.strip_prefix("Package:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("Status:") {
            ok = matches!(
                v.split_whitespace().nth(2),
                Some("installed" | "triggers-awaited" | "triggers-pending")
            );
        } else if let Some(v) = line.strip_prefix("Architecture:") {
            arch = Some(v.trim());
        }
    }
    finish(&mut set, &mut name, &mut ok, &mut arch);
    set
}

/// `name \t name:arch \t Status-Abbrev` lines -> installed names. The second letter of the status
/// is the package's state: i(nstalled), or W/t (installed, triggers pending).
fn parse_dpkg_status(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(qualified), Some(status)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if matches!(status.chars().nth(1), Some('i' | 'W' | 't')) {
            set.insert(name.to_string());
            set.insert(qualified.to_string());
        }
    }
    set
}

/// `apt-cache policy a b` -> the names that have a candidate version.
fn parse_apt_policy(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.strip_suffix(':');
        } else if let (Some(name), Some(cand)) = (current, line.trim().strip_prefix("Candidate:")) {
            if cand.trim() != "(none)" {
                set.insert(name.to_string());
            }
        }
    }
    set
}

/// `apt-get -s remove` -> the packages it would remove (`Remv name [version]`).
pub(crate) fn parse_apt_removals(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The systemd units a Debian package ships (`dpkg-query -L`), by name: services, sockets,
/// timers and paths in the system unit directories; templates (`x@.service`) cannot be started
/// and are left out.
pub fn shipped_units(pkg: &str) -> Result<Vec<String>> {
    check_name(pkg)?;
    let mut c = Command::new("dpkg-query");
    c.args(["-L", "--", pkg]);
    Ok(units_in_file_list(&run_checked(
        &mut c,
        QUERY_TIMEOUT,
        "dpkg-query -L",
    )?))
}

fn units_in_file_list(text: &str) -> Vec<String> {
    const DIRS: [&str; 2] = ["/usr/lib/systemd/system/", "/lib/systemd/system/"];
    const KINDS: [&str; 4] = [".service", ".socket", ".timer", ".path"];
    let mut units: Vec<String> = text
        .lines()
        .filter_map(|l| DIRS.iter().find_map(|d| l.trim_end().strip_prefix(d)))
        .filter(|n| !n.contains('/') && !n.contains("@.") && KINDS.iter().any(|k| n.ends_with(k)))
        .map(String::from)
        .collect();
    units.sort();
    units.dedup();
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_a_package_ships() {
        let list = "/.\n/etc/nginx/nginx.conf\n/usr/lib/systemd/system\n\
            /usr/lib/systemd/system/nginx.service\n/lib/systemd/system/nginx.service\n\
            /usr/lib/systemd/system/getty@.service\n/usr/lib/systemd/system/x.timer\n\
            /usr/lib/systemd/system/x.service.d/override.conf\n/usr/lib/systemd/system/x.conf\n\
            /usr/lib/systemd/user/u.service\n";
        assert_eq!(units_in_file_list(list), ["nginx.service", "x.timer"]);
    }

    #[test]
    fn dpkg_status() {
        let text = "curl\tcurl\tii \nlibc6\tlibc6:amd64\tii \ntelnet\ttelnet\trc \nhalf\thalf\tiU \ntrig\ttrig\tiW \n";
        let s = parse_dpkg_status(text);
        let got: Vec<&str> = s.iter().map(String::as_str).collect();
        assert_eq!(got, ["curl", "libc6", "libc6:amd64", "trig"]);
    }

    #[test]
    fn dpkg_status_file() {
        let text = "\
Package: curl
Status: install ok installed
Architecture: amd64
Description: a tool
 with a long description
 Package: not-a-field

Package: telnet
Status: deinstall ok config-files
Architecture: amd64

Package: half
Status: install reinstreq half-installed
Architecture: amd64

Package: trig
Status: install ok triggers-pending
Architecture: all
";
        let s = parse_dpkg_status_file(text);
        let got: Vec<&str> = s.iter().map(String::as_str).collect();
        assert_eq!(got, ["curl", "curl:amd64", "trig", "trig:all"]);
    }

    /// The direct read agrees with dpkg-query on this machine (when it is a dpkg system).
    #[test]
    fn dpkg_status_file_matches_dpkg_query() {
        if !Path::new(DPKG_STATUS).is_file() || find_program("dpkg-query").is_none() {
            return;
        }
        let direct = installed().unwrap();
        let mut c = Command::new("dpkg-query");
        c.args([
            "-W",
            "-f",
            "${Package}\t${binary:Package}\t${db:Status-Abbrev}\n",
        ]);
        let queried = parse_dpkg_status(&run_checked(&mut c, QUERY_TIMEOUT, "dpkg-query").unwrap());
        let missing: Vec<&String> = queried.difference(&direct).collect();
        assert!(missing.is_empty(), "dpkg-query knows more: {missing:?}");
        let bare = |s: &BTreeSet<String>| -> BTreeSet<String> {
            s.iter()
                .map(|n| n.split(':').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(bare(&direct), bare(&queried));
    }

    #[test]
    fn apt_policy() {
        let text = "\
plumb-a:
  Installed: (none)
  Candidate: 1.0
  Version table:
     1.0 500
        500 file:/srv/repo ./ Packages
virtual:
  Installed: (none)
  Candidate: (none)
  Version table:
curl:
  Installed: 8.14.1-2
  Candidate: 8.14.1-2
";
        let s = parse_apt_policy(text);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["curl", "plumb-a"]);
    }

    #[test]
    fn apt_removals() {
        let text = "NOTE: This is only a simulation!\nRemv plumb-b [1.0]\nRemv plumb-a [1.0]\n";
        assert_eq!(parse_apt_removals(text), ["plumb-b", "plumb-a"]);
    }

    #[test]
    fn names_are_checked_before_any_command() {
        for bad in ["x; rm -rf /", "-oFoo", "", "a b", "$(id)", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["curl", "libc6:amd64", "g++", "python3.13-venv"] {
            check_name(good).unwrap();
        }
        let bad = vec!["ok".to_string(), "x; rm -rf /".to_string()];
        let e = Native::Apt.install(&bad).unwrap_err().to_string();
        assert!(e.contains("not a valid package name"), "{e}");
    }
}
