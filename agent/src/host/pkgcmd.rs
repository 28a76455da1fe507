//! OS packages without PackageKit: the system's own tools as subprocesses (no shell), and the
//! installed set read with one query (`dpkg-query` or `rpm`), which every backend uses.

use super::command::{self, find_program};
use crate::spec::version::{self, Scheme};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Queries are quick; installs may download a lot.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// dnf's queries read the repositories' metadata, and download it first when it has expired
/// (dnf does that on any command, by each repository's `metadata_expire`): a distribution's
/// metadata is tens of MB.
pub(crate) const DNF_QUERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Environment variables a tool runs with.
pub type Env = Vec<(&'static str, &'static str)>;

/// The package manager of this system, driven directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    Apt,
    Dnf,
}

impl Native {
    /// apt-get on Debian-like systems, dnf on Fedora-like ones.
    pub fn detect() -> Option<Native> {
        [Native::Apt, Native::Dnf].into_iter().find(|n| n.present())
    }

    /// Whether the tool and its package database's query are installed.
    pub fn present(self) -> bool {
        match self {
            Native::Apt => {
                find_program("apt-get").is_some() && find_program("dpkg-query").is_some()
            }
            Native::Dnf => find_program("dnf").is_some() && find_program("rpm").is_some(),
        }
    }

    /// Its value of agent.toml's `package_manager`.
    pub fn setting_name(self) -> &'static str {
        match self {
            Native::Apt => "apt",
            Native::Dnf => "dnf",
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
                let mut c = dnf_command(false);
                c.args(["-q", "repoquery", "--qf", "%{name}\\n", "--"])
                    .args(names);
                let out = run_dnf(&mut c, DNF_QUERY_TIMEOUT, "dnf repoquery")?;
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

    /// Every version the configured repositories offer of each of `names` (one query), for
    /// pinned packages. A name no repository has is absent.
    pub fn available_versions(self, names: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
        check_names(names)?;
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        match self {
            Native::Apt => {
                let mut c = Command::new("apt-cache");
                c.arg("madison").arg("--").args(names).env("LC_ALL", "C");
                let out = run_checked(&mut c, QUERY_TIMEOUT, "apt-cache madison")?;
                Ok(parse_apt_madison(&out))
            }
            Native::Dnf => {
                let mut c = dnf_command(false);
                c.args(DNF_VERSIONS_QUERY).arg("--").args(names);
                let out = run_dnf(&mut c, DNF_QUERY_TIMEOUT, "dnf repoquery")?;
                Ok(parse_dnf_versions(&out))
            }
        }
    }

    /// Re-reads the repositories' package lists.
    pub fn refresh(self) -> Result<()> {
        let what = match self {
            Native::Apt => "apt-get update",
            Native::Dnf => "dnf makecache",
        };
        match self {
            Native::Apt => run_checked(&mut self.apt_get(["update"]), CHANGE_TIMEOUT, what),
            Native::Dnf => {
                let mut c = dnf_command(true);
                c.args(["-y", "makecache", "--refresh"]);
                run_dnf(&mut c, CHANGE_TIMEOUT, what)
            }
        }
        .map(drop)
    }

    /// Installs all `ids` in one run of the tool; trusted packages only (neither tool is told
    /// to allow unauthenticated ones), and never removing anything to make room. An id is a
    /// name, or `name=version` for a pinned package (installed in exactly that version, an
    /// older one than installed included).
    pub fn install(self, ids: &[String]) -> Result<()> {
        let (options, specs) = self.install_args(ids)?;
        let what = format!("{} install", self.name());
        let mut c = match self {
            Native::Apt => self.apt_get(["install"]),
            Native::Dnf => dnf_command(true),
        };
        c.args(options).arg("--").args(specs);
        match self {
            Native::Apt => run_checked(&mut c, CHANGE_TIMEOUT, &what),
            Native::Dnf => run_dnf(&mut c, CHANGE_TIMEOUT, &what),
        }
        .map(drop)
    }

    /// Why the repositories have none of `names`, in the tool's own words, by name (dnf's "No
    /// match for argument: x"); empty when the tool has no better words than "not found".
    /// Nothing is installed: dnf is told to answer no.
    pub fn why_missing(self, names: &[String]) -> Result<BTreeMap<String, String>> {
        check_names(names)?;
        if names.is_empty() || self == Native::Apt {
            return Ok(BTreeMap::new());
        }
        let mut c = dnf_command(true);
        c.args(["--assumeno", "install", "--"]).args(names);
        let out = command::run(&mut c, DNF_QUERY_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        Ok(parse_dnf_no_match(&stdout, &stderr))
    }

    /// The whole command line of `install(ids)` and the environment it needs, to run it
    /// elsewhere (plumb's own upgrade runs it detached, after the pass).
    pub fn install_argv(self, ids: &[String]) -> Result<(Vec<String>, Env)> {
        let (options, specs) = self.install_args(ids)?;
        let mut argv: Vec<String> = match self {
            Native::Apt => [
                "apt-get",
                "-y",
                "-q",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                "install",
            ]
            .map(String::from)
            .to_vec(),
            Native::Dnf => {
                let mut argv = vec!["dnf".to_string()];
                argv.extend(dnf_releasever().map(|v| format!("--releasever={v}")));
                argv
            }
        };
        argv.extend(options.into_iter().map(String::from));
        argv.push("--".into());
        argv.extend(specs);
        let env = match self {
            Native::Apt => vec![("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C")],
            Native::Dnf => vec![("LC_ALL", "C")],
        };
        Ok((argv, env))
    }

    /// The options and package arguments of an install of `ids` (after the tool's own setup):
    /// apt-get takes `name=version` and needs `--allow-downgrades` to go back to an older one;
    /// dnf takes `name-[epoch:]version[-release]`, and its `install` of an exact version
    /// upgrades or downgrades to it (dnf 4's install command).
    fn install_args(self, ids: &[String]) -> Result<(Vec<&'static str>, Vec<String>)> {
        ids.iter().try_for_each(|id| check_id(id))?;
        let pinned = ids.iter().any(|id| id.contains('='));
        Ok(match self {
            Native::Apt => {
                let mut options = vec!["--no-remove"];
                if pinned {
                    options.push("--allow-downgrades");
                }
                (options, ids.to_vec())
            }
            Native::Dnf => (
                vec!["-y", "install"],
                ids.iter().map(|id| id.replacen('=', "-", 1)).collect(),
            ),
        })
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
                // dnf removes what depends on a package with it: rpm's own test says first.
                let mut test = Command::new("rpm");
                test.args(["-e", "--test", "--"])
                    .args(names)
                    .env("LC_ALL", "C");
                let out = command::run(&mut test, QUERY_TIMEOUT)?;
                let dependents = parse_rpm_needed_by(&String::from_utf8_lossy(&out.stderr));
                if !out.status.success() && !dependents.is_empty() {
                    bail!(
                        "removing {} would also remove {} (they depend on it): add those to [packages] remove too, or keep it",
                        names.join(" "),
                        dependents.join(" ")
                    );
                }
                let mut c = dnf_command(true);
                c.args([
                    "-y",
                    "--setopt=clean_requirements_on_remove=False",
                    "remove",
                    "--",
                ])
                .args(names);
                run_dnf(&mut c, CHANGE_TIMEOUT, "dnf remove").map(drop)
            }
        }
    }

    /// dnf's unneeded packages: installed as a dependency, needed by nothing installed for
    /// itself (what `dnf autoremove` would remove). apt-get: nothing (see `pkg_cleanup`).
    pub fn unneeded(self) -> Result<BTreeSet<String>> {
        if self == Native::Apt {
            return Ok(BTreeSet::new());
        }
        let mut c = dnf_command(false);
        c.args(["-q", "repoquery", "--unneeded", "--qf", "%{name}\\n"]);
        Ok(
            run_dnf(&mut c, DNF_QUERY_TIMEOUT, "dnf repoquery --unneeded")?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )
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
    installed_from(None)
}

/// [`installed`] from the database of `tool` (dpkg for apt, rpm for dnf: a Debian host with dnf
/// installed has both), or with `None` the system's (dpkg first).
pub fn installed_from(tool: Option<Native>) -> Result<BTreeSet<String>> {
    Ok(installed_versions_from(tool)?
        .versions
        .into_keys()
        .collect())
}

/// The installed packages with their versions, and whose version rules they follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub scheme: Scheme,
    /// Name (bare and, on Debian, `name:arch` too) -> version as dpkg or rpm writes it
    /// (`1:2.0-1`; rpm's missing epoch left out). Of several installed versions (rpm's
    /// install-only kernels), the newest.
    pub versions: BTreeMap<String, String>,
}

/// [`installed`] with versions, in the same one read.
pub fn installed_versions() -> Result<Installed> {
    installed_versions_from(None)
}

/// [`installed_from`] with versions, in the same one read.
pub fn installed_versions_from(tool: Option<Native>) -> Result<Installed> {
    if tool == Some(Native::Dnf) {
        return installed_rpm();
    }
    let deb = |versions| Installed {
        scheme: Scheme::Deb,
        versions,
    };
    if Path::new(DPKG_STATUS).is_file() && !dpkg_journal_pending() {
        let text = std::fs::read_to_string(DPKG_STATUS)
            .with_context(|| format!("reading {DPKG_STATUS}"))?;
        Ok(deb(parse_dpkg_status_file(&text)))
    } else if find_program("dpkg-query").is_some() {
        let mut c = Command::new("dpkg-query");
        c.args([
            "-W",
            "-f",
            "${Package}\t${binary:Package}\t${db:Status-Abbrev}\t${Version}\n",
        ]);
        Ok(deb(parse_dpkg_status(&run_checked(
            &mut c,
            QUERY_TIMEOUT,
            "dpkg-query",
        )?)))
    } else if tool.is_none() && find_program("rpm").is_some() {
        installed_rpm()
    } else if tool == Some(Native::Apt) {
        bail!("package_manager = \"apt\" in agent.toml, but dpkg-query is not installed")
    } else {
        bail!("neither dpkg-query nor rpm is installed: plumb cannot read which packages this host has")
    }
}

fn installed_rpm() -> Result<Installed> {
    let mut c = Command::new("rpm");
    c.args(["-qa", "--qf", RPM_QUERY_FORMAT]);
    Ok(Installed {
        scheme: Scheme::Rpm,
        versions: parse_rpm_qa(&run_checked(&mut c, QUERY_TIMEOUT, "rpm -qa")?),
    })
}

/// dnf, set up the way every run of it needs: the C locale (its messages are read), and the
/// release version on a system dnf cannot take it from (see [`dnf_releasever`]). `change`: it
/// may change the system, so it runs outside plumb's sandbox ([`system_tool`]).
pub(crate) fn dnf_command(change: bool) -> Command {
    let mut c = if change {
        system_tool("dnf", &[("LC_ALL", "C")])
    } else {
        let mut c = Command::new("dnf");
        c.env("LC_ALL", "C");
        c
    };
    if let Some(v) = dnf_releasever() {
        c.arg(format!("--releasever={v}"));
    }
    c
}

/// dnf reads `$releasever` from the package that provides `system-release` (fedora-release,
/// redhat-release, ...). Where none does (Debian's dnf), it warns on every run ("Unable to
/// detect release version") and leaves `$releasever` empty in repository URLs: plumb then passes
/// the admin's `/etc/dnf/vars/releasever`, else `VERSION_ID` of /etc/os-release. `None` where dnf
/// finds it itself (it is never overridden there: RHEL's `9` is not its VERSION_ID `9.4`).
fn dnf_releasever() -> Option<String> {
    let mut q = Command::new("rpm");
    q.args(["-q", "--quiet", "--whatprovides", "system-release"]);
    match command::run(&mut q, QUERY_TIMEOUT) {
        Ok(out) if out.status.success() => return None,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "rpm -q --whatprovides system-release");
            return None;
        }
    }
    let vars = std::fs::read_to_string("/etc/dnf/vars/releasever").ok();
    let os = std::fs::read_to_string("/etc/os-release").ok();
    releasever_from(vars.as_deref(), os.as_deref())
}

/// The release version from dnf's vars file or os-release text; only a plain value is taken.
fn releasever_from(vars: Option<&str>, os_release: Option<&str>) -> Option<String> {
    let plain = |v: &str| {
        !v.is_empty()
            && v.len() <= 32
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    };
    let from_vars = vars.map(str::trim).filter(|v| plain(v));
    let from_os = || {
        os_release?
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
            .filter(|v| plain(v))
    };
    from_vars.or_else(from_os).map(String::from)
}

/// Runs dnf like [`run_checked`]; a failure also quotes the lines dnf prints on stdout about
/// arguments it could not use ("No match for argument: x"), next to the stderr tail.
pub(crate) fn run_dnf(c: &mut Command, timeout: Duration, what: &str) -> Result<String> {
    let out = command::run(c, timeout)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let notes: Vec<&str> = stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("No match for argument"))
            .take(20)
            .collect();
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(": {}", notes.join(" | "))
        };
        bail!(
            "{what} failed ({}){notes}{}",
            out.status,
            command::tail(&out.stderr)
        );
    }
    Ok(stdout.into_owned())
}

/// dnf's answer to an install of unknown names -> name -> its words ("No match for argument:
/// x"; the "Error: Unable to find a match" after them says nothing more).
fn parse_dnf_no_match(stdout: &str, stderr: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .chain(stderr.lines())
        .map(str::trim)
        .filter_map(|l| {
            let name = l.strip_prefix("No match for argument:")?.trim();
            Some((name.to_string(), l.to_string()))
        })
        .collect()
}

/// `rpm -e --test` refusing -> the installed packages that need what would be removed
/// ("\tx is needed by (installed) y-1.0-1.noarch").
fn parse_rpm_needed_by(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(" is needed by (installed) "))
        .map(|(_, who)| who.trim().to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `rpm -qa --qf`: name and `[epoch:]version-release` (rpm prints a missing epoch as `(none)`).
const RPM_QUERY_FORMAT: &str = "%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\n";

/// `name \t epoch:version-release` lines -> name -> version (the newest of several).
fn parse_rpm_qa(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, evr)) = line.trim().split_once('\t') else {
            continue;
        };
        let evr = version::strip_zero_epoch(evr.trim()).to_string();
        match out.get(name) {
            Some(old) if Scheme::Rpm.compare(old, &evr).is_ge() => {}
            _ => {
                out.insert(name.to_string(), evr);
            }
        }
    }
    out
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

/// An install id: a name, or `name=version` with an exact version (no pattern: patterns are
/// resolved to a version before anything is installed).
pub fn check_id(id: &str) -> Result<()> {
    let Some((name, version)) = id.split_once('=') else {
        return check_name(id);
    };
    check_name(name)?;
    if let Err(e) = version::check_pin(version) {
        bail!("{id:?} is not a valid package version: {e}");
    }
    if version::is_pattern(version) {
        bail!("{id:?}: a pattern must be resolved to one version before it is installed");
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

/// One stanza of dpkg's status file, as far as it is read.
#[derive(Default)]
struct Stanza<'a> {
    name: Option<&'a str>,
    installed: bool,
    arch: Option<&'a str>,
    version: &'a str,
}

/// dpkg's status file (stanzas of `Field: value`) -> installed names, bare and `name:arch`, with
/// their versions. Installed: the third word of `Status:` is installed, or triggers-awaited/
/// -pending. One pass over the lines: the file is ~1 MB on a big host.
fn parse_dpkg_status_file(text: &str) -> BTreeMap<String, String> {
    fn finish(out: &mut BTreeMap<String, String>, s: &mut Stanza) {
        if let (Some(n), true) = (s.name, s.installed) {
            out.insert(n.to_string(), s.version.to_string());
            if let Some(a) = s.arch {
                out.insert(format!("{n}:{a}"), s.version.to_string());
            }
        }
        *s = Stanza::default();
    }
    let mut out = BTreeMap::new();
    let mut s = Stanza::default();
    for line in text.lines() {
        if line.is_empty() {
            finish(&mut out, &mut s);
        } else if let Some(v) = line.strip_prefix("Package:") {
            s.name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("Status:") {
            s.installed = matches!(
                v.split_whitespace().nth(2),
                Some("installed" | "triggers-awaited" | "triggers-pending")
            );
        } else if let Some(v) = line.strip_prefix("Architecture:") {
            s.arch = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("Version:") {
            s.version = v.trim();
        }
    }
    finish(&mut out, &mut s);
    out
}

/// `name \t name:arch \t Status-Abbrev \t Version` lines -> installed names with versions. The
/// second letter of the status is the package's state: i(nstalled), or W/t (installed, triggers
/// pending).
fn parse_dpkg_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(qualified), Some(status)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let version = f.next().unwrap_or_default().trim().to_string();
        if matches!(status.chars().nth(1), Some('i' | 'W' | 't')) {
            out.insert(name.to_string(), version.clone());
            out.insert(qualified.to_string(), version);
        }
    }
    out
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

/// `dnf repoquery` of every available version: `name epoch:version-release` per line (a space,
/// not a tab: dnf 4 and 5 unescape differently; dnf 4 ends each entry with a newline itself).
const DNF_VERSIONS_QUERY: [&str; 5] = [
    "-q",
    "repoquery",
    "--available",
    "--qf",
    "%{name} %{epoch}:%{version}-%{release}\\n",
];

/// `apt-cache madison a b` -> name -> versions (binary packages only; source lines left out).
fn parse_apt_madison(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, ver, source] = f[..] else {
            continue;
        };
        if name.is_empty() || ver.is_empty() || source.ends_with("Sources") {
            continue;
        }
        let versions = out.entry(name.to_string()).or_default();
        if !versions.iter().any(|v| v == ver) {
            versions.push(ver.to_string());
        }
    }
    out
}

/// [`DNF_VERSIONS_QUERY`]'s output -> name -> versions (epoch 0 left out, as rpm prints them).
fn parse_dnf_versions(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, evr)) = line.trim().split_once(' ') else {
            continue;
        };
        let evr = version::strip_zero_epoch(evr.trim()).to_string();
        let versions = out.entry(name.to_string()).or_default();
        if !versions.contains(&evr) {
            versions.push(evr);
        }
    }
    out
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
        let got: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(got, ["curl", "libc6", "libc6:amd64", "trig"]);
        let s = parse_dpkg_status("nginx\tnginx:amd64\tii \t1.26.0-1\nold\told\trc \t1.0\n");
        assert_eq!(s["nginx"], "1.26.0-1");
        assert_eq!(s["nginx:amd64"], "1.26.0-1");
        assert!(!s.contains_key("old"));
    }

    #[test]
    fn dpkg_status_file() {
        let text = "\
Package: curl
Status: install ok installed
Architecture: amd64
Version: 8.14.1-2
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
Version: 1:2.0~rc1-3
Architecture: all
";
        let s = parse_dpkg_status_file(text);
        let got: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(got, ["curl", "curl:amd64", "trig", "trig:all"]);
        assert_eq!(s["trig"], "1:2.0~rc1-3");
        assert_eq!(s["trig:all"], "1:2.0~rc1-3");
        assert_eq!(s["curl"], "8.14.1-2");
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
            "${Package}\t${binary:Package}\t${db:Status-Abbrev}\t${Version}\n",
        ]);
        let queried = parse_dpkg_status(&run_checked(&mut c, QUERY_TIMEOUT, "dpkg-query").unwrap());
        let direct_versions = installed_versions().unwrap().versions;
        for (name, v) in &queried {
            if let Some(d) = direct_versions.get(name) {
                assert_eq!(d, v, "version of {name}");
            }
        }
        let queried: BTreeSet<String> = queried.into_keys().collect();
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
    fn dnf_words_for_unknown_names() {
        let stdout = "Last metadata expiration check: 0:00:40 ago.\nNo match for argument: nope\nNo match for argument: other\n";
        let stderr = "Error: Unable to find a match: nope other\n";
        let got = parse_dnf_no_match(stdout, stderr);
        assert_eq!(got["nope"], "No match for argument: nope");
        assert_eq!(got.len(), 2);
        assert!(parse_dnf_no_match("Complete!\n", "").is_empty());
    }

    #[test]
    fn rpm_dependents() {
        let text = "error: Failed dependencies:\n\tplumb-test-a is needed by (installed) plumb-test-dep-1.0-1.noarch\n\tlibx.so.1 is needed by (installed) plumb-test-dep-1.0-1.noarch\n";
        assert_eq!(parse_rpm_needed_by(text), ["plumb-test-dep-1.0-1.noarch"]);
        assert!(parse_rpm_needed_by("error: package x is not installed\n").is_empty());
    }

    #[test]
    fn releasever_where_dnf_cannot_detect_it() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nID=debian\n";
        assert_eq!(releasever_from(None, Some(os)).as_deref(), Some("13"));
        assert_eq!(
            releasever_from(Some("12\n"), Some(os)).as_deref(),
            Some("12")
        );
        assert_eq!(
            releasever_from(Some("$(x)"), Some(os)).as_deref(),
            Some("13")
        );
        // Debian sid has no VERSION_ID.
        assert_eq!(releasever_from(None, Some("ID=debian\n")), None);
        assert_eq!(releasever_from(None, None), None);
    }

    #[test]
    fn apt_madison() {
        let text = "\
plumb-test-a |        2.0 | file:/srv/repo ./ Packages
plumb-test-a |        1.0 | file:/srv/repo ./ Packages
plumb-test-a |        1.0 | file:/srv/other ./ Packages
       nginx | 1.26.3-3 | http://mirror.invalid/debian trixie/main amd64 Packages
       nginx | 1.26.3-3 | http://mirror.invalid/debian trixie/main Sources
N: Unable to locate package nope
";
        let m = parse_apt_madison(text);
        assert_eq!(m["plumb-test-a"], ["2.0", "1.0"]);
        assert_eq!(m["nginx"], ["1.26.3-3"]);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn dnf_versions() {
        let text = "plumb-test-a 0:1.0-1\n\nplumb-test-a 0:2.0-1\nepo 2:1.0-1.fc40\nplumb-test-a 0:2.0-1\n";
        let m = parse_dnf_versions(text);
        assert_eq!(m["plumb-test-a"], ["1.0-1", "2.0-1"]);
        assert_eq!(m["epo"], ["2:1.0-1.fc40"]);
        let rpm = parse_rpm_qa(
            "kernel\t(none):6.1-1\nkernel\t(none):6.2-1\nkernel\t(none):6.0-1\nepo\t2:1.0-1\n",
        );
        assert_eq!(rpm["kernel"], "6.2-1");
        assert_eq!(rpm["epo"], "2:1.0-1");
        assert!(DNF_VERSIONS_QUERY.contains(&"--available"));
    }

    /// The command lines of a pinned install, for both tools (dnf is run for real on branch
    /// `dnf`'s node; the arguments are checked here).
    #[test]
    fn install_arguments() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (o, a) = Native::Apt
            .install_args(&ids(&["curl", "nginx=1.26.0-1"]))
            .unwrap();
        assert_eq!(o, ["--no-remove", "--allow-downgrades"]);
        assert_eq!(a, ["curl", "nginx=1.26.0-1"]);
        let (o, _) = Native::Apt.install_args(&ids(&["curl"])).unwrap();
        assert_eq!(o, ["--no-remove"], "plain names: the command of before");
        let (o, a) = Native::Dnf
            .install_args(&ids(&["curl", "nginx=1:1.26.0-1.fc40", "my-pkg=2.0-1"]))
            .unwrap();
        assert_eq!(o, ["-y", "install"]);
        assert_eq!(a, ["curl", "nginx-1:1.26.0-1.fc40", "my-pkg-2.0-1"]);
        for bad in ["nginx=1.*", "nginx=-1", "nginx=1;id", "x;y=1", "nginx="] {
            assert!(Native::Apt.install_args(&ids(&[bad])).is_err(), "{bad}");
            assert!(Native::Dnf.install_args(&ids(&[bad])).is_err(), "{bad}");
        }
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
