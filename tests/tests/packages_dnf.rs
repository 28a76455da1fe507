//! dnf for real (issue 17): Debian's dnf 4 and rpm in a trixie node, a local rpm repository
//! made with createrepo_c from rpms this test builds with rpmbuild, and plumb told to use dnf
//! (`package_manager = "dnf"`): the node also has apt-get, dpkg and PackageKit.

use anyhow::{bail, ensure, Context, Result};
use plumb_systest::{run, FleetRepo, GitServer, Network, Node, NodeImage};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

mod support;

const PKG_A: &str = "plumb-test-a";
const PKG_B: &str = "plumb-test-b";
/// Requires plumb-test-b: removing b alone would take it along.
const PKG_DEP: &str = "plumb-test-dep";
const UNKNOWN: &str = "plumb-test-nope";
const REPO_DIR: &str = "/srv/rpmrepo";

#[test]
fn packages_via_dnf() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new()?;
    let node = &w.node;

    // 1. Two packages installed in one dnf transaction, read back from rpm's database (not
    //    dpkg's: the node has both), so a second pass changes nothing.
    w.commit(&[PKG_A, PKG_B], &[], "first")?;
    let out = w.apply(true)?;
    ensure!(
        out.contains("backend=dnf") || out.contains("backend=\"dnf\""),
        "the log does not say dnf ran:\n{out}"
    );
    ensure!(out.contains("install=2 remove=0"), "not one batch:\n{out}");
    let r = w.report()?;
    w.expect(&r, PKG_A, "changed", "installed via dnf")?;
    w.expect(&r, PKG_B, "changed", "installed via dnf")?;
    ensure!(w.version(PKG_A)?.as_deref() == Some("1.0-1"));
    ensure!(w.version(PKG_B)?.is_some());
    // No package provides system-release here: plumb gave each dnf run the release version
    // (VERSION_ID of os-release); dnf's log says which it used, "None" without it.
    let releasevers = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split_once("DDEBUG Releasever:"))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    let version_id = node.sh_ok(". /etc/os-release; echo $VERSION_ID")?;
    let used = releasevers(&node.read_file("/var/log/dnf.log")?);
    ensure!(
        !used.is_empty() && used.iter().all(|v| v == version_id.trim()),
        "dnf ran with release versions {used:?}, not {version_id}"
    );
    let history = node.exec_ok(&["dnf", "-q", "history", "list"])?;
    let transactions = history
        .lines()
        .filter(|l| {
            l.split('|')
                .next()
                .is_some_and(|id| id.trim().parse::<u32>().is_ok())
        })
        .count();
    ensure!(transactions == 1, "not one dnf transaction:\n{history}");
    let used = releasevers(&node.read_file("/var/log/dnf.log")?);
    ensure!(used.last().is_some_and(|v| v == "None"), "{used:?}");

    w.apply(true)?;
    let r = w.report()?;
    w.expect(&r, PKG_A, "ok", "")?;
    w.expect(&r, PKG_B, "ok", "")?;
    // Cheap: a pass with nothing changed runs no dnf (the installed set is one `rpm -qa`; the
    // upgrades are listed again only when rpm's database or dnf's cache changed).
    let out = w.apply(true)?;
    ensure!(
        !out.contains("listing the upgrades"),
        "a no-op pass listed the upgrades again:\n{out}"
    );

    // 2. Removed by hand -> reinstalled, reported as drift.
    node.exec_ok(&["rpm", "-e", PKG_A])?;
    w.apply(true)?;
    ensure!(w.version(PKG_A)?.is_some(), "{PKG_A} was not reinstalled");
    w.expect(
        &w.report()?,
        PKG_A,
        "drift-corrected",
        "removed on the host",
    )?;

    // 3. A remove that would take a package depending on it along is refused with rpm's
    //    answer; named together, both go.
    node.exec_ok(&["dnf", "-y", "-q", "install", PKG_DEP])?;
    w.commit(&[PKG_A], &[PKG_B], "remove b")?;
    w.apply(false)?;
    let r = w.report()?;
    w.expect(&r, PKG_B, "failed", "would also remove plumb-test-dep")?;
    ensure!(w.version(PKG_B)?.is_some() && w.version(PKG_DEP)?.is_some());
    w.commit(&[PKG_A], &[PKG_B, PKG_DEP], "remove b and dep")?;
    w.apply(true)?;
    let r = w.report()?;
    w.expect(&r, PKG_B, "changed", "removed via dnf")?;
    w.expect(&r, PKG_DEP, "changed", "removed via dnf")?;
    ensure!(w.version(PKG_B)?.is_none() && w.version(PKG_DEP)?.is_none());
    ensure!(w.version(PKG_A)?.is_some(), "{PKG_A} went with them");

    // 4. What plumb's install brought (b, for dep) goes when plumb's package leaves Git and
    //    nothing else needs it.
    w.commit(&[PKG_A, PKG_DEP], &[], "dep")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_B)?.is_some(),
        "{PKG_DEP} came without {PKG_B}"
    );
    w.commit(&[PKG_A], &[], "no dep")?;
    w.apply(true)?;
    w.expect(
        &w.report()?,
        PKG_DEP,
        "pruned",
        &format!("what its install brought and nothing else needs: {PKG_B}"),
    )?;
    ensure!(w.version(PKG_DEP)?.is_none() && w.version(PKG_B)?.is_none());
    ensure!(w.version(PKG_A)?.is_some());

    // 5. An unknown name fails that package with dnf's own words; the rest still applies.
    w.commit(&[PKG_A, PKG_B, UNKNOWN], &[], "unknown name")?;
    let out = w.apply(false)?;
    let r = w.report()?;
    ensure!(r.outcome == "failed", "outcome {}:\n{out}", r.outcome);
    w.expect(
        &r,
        UNKNOWN,
        "failed",
        &format!("No match for argument: {UNKNOWN}"),
    )?;
    w.expect(&r, PKG_B, "changed", "installed via dnf")?;
    ensure!(
        w.version(PKG_B)?.is_some(),
        "{PKG_B} held back by the unknown name"
    );

    // 6. A newer version published: with `upgrade = "none"` it is listed in the status, not
    //    installed; with "all" (no window: on the move to the commit) dnf upgrades it.
    ensure!(w.version(PKG_A)?.as_deref() == Some("1.0-1"));
    w.publish(PKG_A, "2.0", &[])?;
    // The listing reads dnf's cached metadata (as apt's reads its lists): read the repository
    // again, as a timer or an admin would.
    node.exec_ok(&["dnf", "-q", "makecache"])?;
    w.commit_toml(
        &format!("[packages]\ninstall = [\"{PKG_A}\", \"{PKG_B}\"]\nupgrade = \"none\"\n"),
        "upgrade none",
    )?;
    let out = w.apply(true)?;
    let u = w.upgrades()?;
    ensure!(
        u.get("count").and_then(|c| c.as_integer()) == Some(1)
            && u.get("names")
                .and_then(|n| n.as_array())
                .is_some_and(|n| n.len() == 1 && n[0].as_str() == Some(PKG_A)),
        "the upgrade of {PKG_A} is not listed: {u:?}\n{out}"
    );
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("1.0-1"),
        "upgraded with upgrade = none"
    );
    w.commit_toml(
        &format!("[packages]\ninstall = [\"{PKG_A}\", \"{PKG_B}\"]\nupgrade = \"all\"\n"),
        "upgrade all",
    )?;
    let out = w.apply(true)?;
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("2.0-1"),
        "{PKG_A} is {:?} with upgrade = all:\n{out}",
        w.version(PKG_A)?
    );
    let status = w.node.exec_ok(&["/usr/local/bin/plumb", "status"])?;
    ensure!(
        status.contains("upgraded 1 package(s) via dnf"),
        "the status does not say the upgrade:\n{status}"
    );
    let u = w.upgrades()?;
    ensure!(
        u.get("count").and_then(|c| c.as_integer()) == Some(0),
        "{u:?}"
    );
    w.commit(&[PKG_A, PKG_B], &[], "upgrade policy gone")?;
    w.apply(true)?;

    // 7. Pinned versions.
    pins(&w)?;

    // 8. detect mode: a package removed by hand is reported, not reinstalled.
    let config = node.read_file("/etc/plumb/agent.toml")?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!("{config}mode = \"detect\"\n"),
    )?;
    node.exec_ok(&["rpm", "-e", PKG_B])?;
    let out = w.apply(true)?;
    w.expect(&w.report()?, PKG_B, "drifted", "reinstall")?;
    ensure!(
        w.version(PKG_B)?.is_none(),
        "detect mode reinstalled {PKG_B}:\n{out}"
    );
    node.write_file("/etc/plumb/agent.toml", config.clone())?;

    // 9. Without `package_manager` (auto), PackageKit stays the first choice where it answers,
    //    dnf or not: it is asked (and, with Debian's apt behind it, knows no rpm).
    node.exec_ok(&["pkcon", "backend-details"])?;
    node.write_file(
        "/etc/plumb/agent.toml",
        config.replace("package_manager = \"dnf\"\n", ""),
    )?;
    w.commit(&[UNKNOWN], &[], "auto")?;
    let out = w.apply(false)?;
    ensure!(
        out.contains("backend=\"PackageKit\"") || out.contains("backend=PackageKit"),
        "auto did not choose PackageKit:\n{out}"
    );
    w.expect(
        &w.report()?,
        UNKNOWN,
        "failed",
        "PackageKit found no package",
    )?;
    Ok(())
}

/// Pinned versions through dnf (issue 17): a fresh install of a pinned version, a lower pin
/// (a downgrade), the pin moved to the newer version (an upgrade), another version installed by
/// hand (drift), a pattern, a version no repository has. On entry plumb-test-a 2.0-1 is installed.
fn pins(w: &World) -> Result<()> {
    let node = &w.node;
    let pin = |v: &str| format!("{PKG_A}={v}");
    let dep = format!("{PKG_DEP}=1.0-1");

    // 1. Exact pins: a package not installed yet gets that version; the installed newer one
    //    goes back to the pinned one.
    w.commit(&[&pin("1.0-1"), PKG_B, &dep], &[], "pin 1.0-1")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("1.0-1"),
        "pinned 1.0-1, got {:?}",
        w.version(PKG_A)?
    );
    ensure!(w.version(PKG_DEP)?.as_deref() == Some("1.0-1"));
    let r = w.report()?;
    w.expect(&r, PKG_A, "changed", "downgraded 2.0-1 -> 1.0-1 via dnf")?;
    w.expect(&r, PKG_DEP, "changed", "installed 1.0-1 via dnf")?;
    w.apply(true)?;
    w.expect(&w.report()?, PKG_A, "ok", "")?;

    // 2. The pin moved to the newer version: an upgrade.
    w.commit(&[&pin("2.0-1"), PKG_B, &dep], &[], "pin 2.0-1")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("2.0-1"),
        "not upgraded"
    );
    w.expect(
        &w.report()?,
        PKG_A,
        "changed",
        "upgraded 1.0-1 -> 2.0-1 via dnf",
    )?;

    // 3. Another version installed by hand is drift, corrected.
    node.exec_ok(&["dnf", "-y", "-q", "downgrade", PKG_A])?;
    ensure!(w.version(PKG_A)?.as_deref() == Some("1.0-1"));
    w.apply(true)?;
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("2.0-1"),
        "drift not corrected: {:?}",
        w.version(PKG_A)?
    );
    w.expect(
        &w.report()?,
        PKG_A,
        "drift-corrected",
        "upgraded 1.0-1 -> 2.0-1 via dnf: 1.0-1 had been installed on the host",
    )?;

    // 4. A pattern: the newest version matching it.
    w.commit(&[&pin("1.*"), PKG_B, &dep], &[], "pin 1.*")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_A)?.as_deref() == Some("1.0-1"),
        "not downgraded"
    );
    w.expect(
        &w.report()?,
        PKG_A,
        "changed",
        "downgraded 2.0-1 -> 1.0-1 via dnf",
    )?;

    // 5. A version no repository has fails the package, naming the versions there are.
    w.commit(&[&pin("9.9-1"), PKG_B, &dep], &[], "no such version")?;
    w.apply(false)?;
    w.expect(
        &w.report()?,
        PKG_A,
        "failed",
        &format!("dnf found no version 9.9-1 of package {PKG_A} in the configured repositories (they have 2.0-1, 1.0-1)"),
    )?;
    ensure!(w.version(PKG_A)?.as_deref() == Some("1.0-1"));
    w.commit(&[PKG_A, PKG_B], &[], "unpinned")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_DEP)?.is_none(),
        "{PKG_DEP} left Git but stays"
    );
    Ok(())
}

/// A node with dnf, the rpm repository, the fleet repo and plumb set to dnf.
struct World {
    repo: FleetRepo,
    /// plumb.service's sandbox settings, as `systemd-run -p` properties.
    sandbox: Vec<String>,
    node: Node,
    _git: GitServer,
    _net: Network,
}

impl World {
    fn new() -> Result<World> {
        let image = NodeImage::with_packages(&["dnf", "createrepo-c"])?;
        let net = Network::new()?;
        let git = GitServer::start(&net)?;
        let repo = git.create_repo("fleet-dnf.git")?;
        let node = Node::boot(&image, &net, "n1")?;
        node.install_plumb()?;
        // libdnf resolves the host name when it starts: a node has no DNS server, so without
        // this line (Debian's installer writes it) every dnf run waits 10 s for the resolver.
        let hosts = node.read_file("/etc/hosts")?;
        node.write_file("/etc/hosts", format!("{hosts}127.0.1.1\tn1\n"))?;
        node.write_file(
            "/etc/yum.repos.d/plumb-test.repo",
            format!(
                "[plumb-test]\nname=plumb test packages\nbaseurl=file://{REPO_DIR}\n\
                 gpgcheck=0\nenabled=1\nmetadata_expire=0\n"
            ),
        )?;
        node.write_file(
            "/etc/plumb/agent.toml",
            format!(
                "repo = \"{}\"\nhost = \"n1\"\ninterval = \"1h\"\npackage_manager = \"dnf\"\n",
                git.url("fleet-dnf.git")
            ),
        )?;
        repo.write("hosts/n1/files/etc/plumb-test.conf", "made by plumb\n")?;
        let w = World {
            repo,
            sandbox: support::sandbox_properties()?,
            node,
            _git: git,
            _net: net,
        };
        w.publish(PKG_A, "1.0", &[])?;
        w.publish(PKG_B, "1.0", &[])?;
        w.publish(PKG_DEP, "1.0", &[PKG_B])?;
        Ok(w)
    }

    /// Builds `name-version-1.noarch.rpm` (needing `requires`), adds it to the node's
    /// repository and updates the repository's metadata.
    fn publish(&self, name: &str, version: &str, requires: &[&str]) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let rpm = build_rpm(dir.path(), name, version, requires)?;
        let file = rpm.file_name().context("rpm file name")?.to_string_lossy();
        self.node
            .write_file(&format!("{REPO_DIR}/{file}"), std::fs::read(&rpm)?)?;
        self.node
            .exec_ok(&["createrepo_c", "-q", "--update", REPO_DIR])?;
        Ok(())
    }

    fn commit(&self, install: &[&str], remove: &[&str], msg: &str) -> Result<()> {
        let list = |v: &[&str]| {
            v.iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.repo.write(
            "hosts/n1/host.toml",
            format!(
                "[packages]\ninstall = [{}]\nremove = [{}]\n",
                list(install),
                list(remove)
            ),
        )?;
        self.repo.commit(msg)?;
        Ok(())
    }

    /// Commits `text` as the host's host.toml.
    fn commit_toml(&self, text: &str, msg: &str) -> Result<()> {
        self.repo.write("hosts/n1/host.toml", text)?;
        self.repo.commit(msg)?;
        Ok(())
    }

    /// The `[upgrades]` table of `plumb status`.
    fn upgrades(&self) -> Result<toml::Value> {
        let text = self.node.exec_ok(&["/usr/local/bin/plumb", "status"])?;
        let v: toml::Value = toml::from_str(&text).context("parsing plumb status")?;
        v.get("upgrades")
            .cloned()
            .with_context(|| format!("no [upgrades] in the status:\n{text}"))
    }

    /// `plumb apply` in the node, in the sandbox of the shipped plumb.service, as the agent runs;
    /// its output (the log). `ok`: whether exit 0 is expected.
    fn apply(&self, ok: bool) -> Result<String> {
        let mut argv = vec!["systemd-run", "--quiet", "--wait", "--pipe", "--collect"];
        for p in &self.sandbox {
            argv.extend(["-p", p]);
        }
        argv.extend(["/usr/local/bin/plumb", "apply"]);
        let started = std::time::Instant::now();
        let out = self.node.exec(&argv)?;
        let text = format!("{}{}", out.stdout, out.stderr);
        eprintln!(
            "--- plumb apply ({}, {:.2?})\n{text}",
            out.status,
            started.elapsed()
        );
        if out.success() != ok {
            bail!(
                "plumb apply: {} (expected success: {ok})\n{text}",
                out.status
            );
        }
        Ok(text)
    }

    /// The installed `version-release` per rpm, or None.
    fn version(&self, pkg: &str) -> Result<Option<String>> {
        let out = self
            .node
            .exec(&["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", pkg])?;
        Ok(out.success().then(|| out.stdout.trim().to_string()))
    }

    fn report(&self) -> Result<Report> {
        Report::parse(&self.node.read_file("/var/lib/plumb/report.toml")?)
    }

    fn expect(&self, r: &Report, pkg: &str, state: &str, detail: &str) -> Result<()> {
        let Some((st, d)) = r.packages.get(pkg) else {
            bail!("{pkg} is not in the report:\n{}", r.text);
        };
        ensure!(
            st == state && d.contains(detail),
            "{pkg}: expected state {state} with detail containing {detail:?}, got {st} {d:?}\n{}",
            r.text
        );
        Ok(())
    }
}

/// The bits of report.toml this test looks at.
struct Report {
    outcome: String,
    /// name -> (state, detail) of package resources
    packages: BTreeMap<String, (String, String)>,
    text: String,
}

impl Report {
    fn parse(text: &str) -> Result<Report> {
        let value = |block: &str, key: &str| -> Option<String> {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').replace("\\\"", "\""))
            })
        };
        let mut blocks = text.split("[[resources]]");
        let head = blocks.next().unwrap_or_default();
        let outcome = value(head, "outcome").context("report without outcome")?;
        let mut packages = BTreeMap::new();
        for b in blocks {
            if value(b, "kind").as_deref() == Some("package") {
                packages.insert(
                    value(b, "name").context("resource without name")?,
                    (
                        value(b, "state").unwrap_or_default(),
                        value(b, "detail").unwrap_or_default(),
                    ),
                );
            }
        }
        Ok(Report {
            outcome,
            packages,
            text: text.to_owned(),
        })
    }
}

/// Builds `name-version-1.noarch.rpm` into `dir` with rpmbuild from a minimal spec: one file,
/// no automatic dependencies, `requires` as its only ones.
fn build_rpm(
    dir: &Path,
    name: &str,
    version: &str,
    requires: &[&str],
) -> Result<std::path::PathBuf> {
    let top = tempfile::tempdir()?;
    let spec = top.path().join(format!("{name}.spec"));
    let requires: String = requires
        .iter()
        .map(|r| format!("Requires: {r}\n"))
        .collect();
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: plumb system-test package {name}\n\
             License: MIT\nBuildArch: noarch\nAutoReqProv: no\n{requires}\n\
             %description\nplumb system-test package {name}, version {version}.\n\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/plumb-test\n\
             echo '{name} {version}' > %{{buildroot}}/usr/share/plumb-test/{name}\n\n\
             %files\n/usr/share/plumb-test/{name}\n"
        ),
    )?;
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--quiet")
        .arg("--define")
        .arg(format!("_topdir {}", top.path().display()))
        .arg("--define")
        .arg("_build_id_links none")
        .arg(&spec))?
    .check("rpmbuild")?;
    let file = format!("{name}-{version}-1.noarch.rpm");
    let built = top.path().join("RPMS/noarch").join(&file);
    let out = dir.join(&file);
    std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    Ok(out)
}
