//! OS packages (issue 4): real PackageKit and real apt in a trixie node, a local apt repository of
//! test packages built here with `dpkg-deb`, plumb running inside the node.

use anyhow::{bail, ensure, Context, Result};
use plumb_systest::{run, FleetRepo, GitServer, Network, Node, NodeImage};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod support;

const PKG_A: &str = "plumb-test-a";
const PKG_B: &str = "plumb-test-b";
/// Installed by hand before plumb; named in `install`, later dropped from Git: must stay.
const PKG_PRE: &str = "plumb-test-pre";
/// Installed by hand; named in `remove`.
const PKG_OLD: &str = "plumb-test-old";
const UNKNOWN: &str = "plumb-test-nope";
const PKG_C: &str = "plumb-test-c";
/// Conflicts with plumb-test-a: cannot be installed next to it.
const PKG_CONFLICT: &str = "plumb-test-conflict";
/// Its preinst waits for /srv/release-lock: installing it holds the dpkg lock.
const PKG_SLOW: &str = "plumb-test-slow";
/// In the repository in three versions, for pins (issue 17).
const PKG_V: &str = "plumb-test-v";
const PKG_V_VERSIONS: [&str; 3] = ["1.0", "2.0", "2.1"];

#[test]
fn packages_via_packagekit() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let world = World::new("pk")?;
    let node = &world.node;
    // PackageKit is activatable in the image; make sure it answers before plumb asks.
    node.exec_ok(&["pkcon", "backend-details"])?;

    scenarios(&world, "PackageKit")?;
    pins(&world, "PackageKit")?;

    // The daemon runs passes in its runtime's blocking pool: D-Bus works from there too.
    world.commit(&[PKG_A, PKG_C], &[PKG_B], "daemon")?;
    let head = world.repo.head()?;
    let mut argv = vec!["systemd-run", "--unit=plumb-test", "--property=Type=notify"];
    for p in &world.sandbox {
        argv.extend(["-p", p]);
    }
    argv.extend(["/usr/local/bin/plumb", "run"]);
    node.exec_ok(&argv)?;
    let done = node.wait_until("the daemon's pass", Duration::from_secs(120), || {
        let r = world.report()?;
        Ok((r.desired_commit == head).then_some(r))
    });
    let journal = node.journal(Some("plumb-test.service"), 50);
    node.exec(&["systemctl", "stop", "plumb-test.service"])?;
    let r = done?;
    world.expect(&r, PKG_B, "changed", "removed via PackageKit")?;
    ensure!(
        !world.installed(PKG_B)?,
        "the daemon did not remove {PKG_B}:\n{journal}"
    );
    Ok(())
}

#[test]
fn packages_via_apt_get_without_packagekit() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let world = World::new("apt")?;
    let node = &world.node;
    // PackageKit absent: stopped and masked, so D-Bus activation fails.
    node.exec_ok(&["systemctl", "mask", "--now", "packagekit.service"])?;
    scenarios(&world, "apt-get")?;
    pins(&world, "apt-get")?;

    Ok(())
}

/// Pinned versions (issue 17): exact, a pattern, upgrade and downgrade by Git, another version
/// installed by hand (drift: reported in detect mode and by `plan`, corrected in enforce mode),
/// and a version no repository has.
fn pins(w: &World, backend: &str) -> Result<()> {
    let node = &w.node;
    let pin = |p: &str| format!("{PKG_V}={p}");
    // The other packages stay as the scenarios left them (the daemon test goes on from there).

    // 1. An exact pin installs that version, not the newest.
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("1.0")], &[], "pin 1.0")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_V)? == "1.0",
        "pinned 1.0, got {}",
        w.version(PKG_V)?
    );
    w.expect(
        &w.report()?,
        PKG_V,
        "changed",
        &format!("installed 1.0 via {backend}"),
    )?;
    w.apply(true)?;
    w.expect(&w.report()?, PKG_V, "ok", "")?;

    // 2. A new pin in Git is an upgrade (a change, not drift).
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("2.0")], &[], "pin 2.0")?;
    let (code, plan) = w.plumb(&["plan"])?;
    ensure!(
        code == Some(2)
            && plan.contains(&format!(
                "upgrade package {PKG_V}: 1.0 installed, 2.0 wanted"
            )),
        "plan ({code:?}) does not say the upgrade:\n{plan}"
    );
    ensure!(
        !plan.contains("changed on the host"),
        "a new pin is not drift:\n{plan}"
    );
    w.apply(true)?;
    ensure!(w.version(PKG_V)? == "2.0");
    w.expect(
        &w.report()?,
        PKG_V,
        "changed",
        &format!("upgraded 1.0 -> 2.0 via {backend}"),
    )?;

    // 3. Another version installed by hand is drift: detect mode and plan report it ...
    node.exec_ok(&["dpkg", "-i", &format!("/srv/repo/{PKG_V}_1.0_all.deb")])?;
    ensure!(w.version(PKG_V)? == "1.0");
    // apt trusts its cache while dpkg's status file keeps its size and its mtime in seconds:
    // a hand install in the same second as plumb's last one (only a test is that quick) would
    // go unseen by apt. What the next second does, done now.
    node.sh_ok("rm -f /var/cache/apt/pkgcache.bin /var/cache/apt/srcpkgcache.bin")?;
    let config = node.read_file("/etc/plumb/agent.toml")?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!("{config}mode = \"detect\"\n"),
    )?;
    let out = w.apply(true)?;
    let wanted =
        format!("upgrade package {PKG_V}: 1.0 installed, 2.0 wanted (changed on the host)");
    w.expect(&w.report()?, PKG_V, "drifted", &wanted)?;
    ensure!(
        w.report()?.outcome == "drifted",
        "outcome in detect mode:\n{}",
        w.report()?.text
    );
    ensure!(
        w.version(PKG_V)? == "1.0",
        "detect mode changed the version:\n{out}"
    );
    node.write_file("/etc/plumb/agent.toml", &config)?;
    let (code, plan) = w.plumb(&["plan"])?;
    ensure!(
        code == Some(2) && plan.contains(&wanted),
        "plan ({code:?}):\n{plan}"
    );
    // ... and enforce mode corrects it.
    w.apply(true)?;
    ensure!(
        w.version(PKG_V)? == "2.0",
        "drift not corrected: {}\n{}",
        w.version(PKG_V)?,
        node.sh("tail -n 30 /var/log/apt/history.log /var/log/dpkg.log")?
            .stdout
    );
    w.expect(
        &w.report()?,
        PKG_V,
        "drift-corrected",
        &format!("upgraded 1.0 -> 2.0 via {backend}: 1.0 had been installed on the host"),
    )?;

    // 4. A pattern the installed version matches changes nothing.
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("2.*")], &[], "pin 2.*")?;
    let out = w.apply(true)?;
    ensure!(
        w.version(PKG_V)? == "2.0",
        "a matching version was replaced:\n{out}"
    );
    w.expect(&w.report()?, PKG_V, "ok", "")?;

    // 5. A lower pin in Git downgrades.
    w.commit(
        &[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("1.0")],
        &[],
        "back to 1.0",
    )?;
    w.apply(true)?;
    ensure!(w.version(PKG_V)? == "1.0", "not downgraded");
    w.expect(
        &w.report()?,
        PKG_V,
        "changed",
        &format!("downgraded 2.0 -> 1.0 via {backend}"),
    )?;

    // 6. A pattern installs the newest version matching it.
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("2.*")], &[], "pattern")?;
    w.apply(true)?;
    ensure!(
        w.version(PKG_V)? == "2.1",
        "not the newest 2.*: {}",
        w.version(PKG_V)?
    );
    w.expect(
        &w.report()?,
        PKG_V,
        "changed",
        &format!("upgraded 1.0 -> 2.1 via {backend}"),
    )?;

    // 7. A version no repository has fails the package, naming it and the versions there are;
    //    the host keeps what it has.
    w.commit(
        &[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("9.9")],
        &[],
        "no such version",
    )?;
    w.apply(false)?;
    let r = w.report()?;
    ensure!(r.outcome == "failed", "outcome {}:\n{}", r.outcome, r.text);
    w.expect(
        &r,
        PKG_V,
        "failed",
        &format!("{backend} found no version 9.9 of package {PKG_V} in the configured repositories (they have 2.1, 2.0, 1.0)"),
    )?;
    ensure!(w.version(PKG_V)? == "2.1");

    // 8. A bad pin rejects the commit, naming the file, the key and the entry.
    w.commit(
        &[PKG_A, PKG_B, PKG_C, PKG_OLD, &format!("{PKG_V}=-1")],
        &[],
        "bad pin",
    )?;
    w.apply(false)?;
    let r = w.report()?;
    ensure!(
        r.outcome == "rejected"
            && r.text.contains("hosts/n1/host.toml: [packages] install: ")
            && r.text.contains("plumb-test-v=-1")
            && r.text.contains("NAME=VERSION"),
        "a bad pin was not rejected with its file and entry:\n{}",
        r.text
    );
    w.commit(
        &[PKG_A, PKG_B, PKG_C, PKG_OLD, &pin("2.1")],
        &[],
        "good again",
    )?;
    w.apply(true)?;
    Ok(())
}

/// The shared story, run once per backend.
fn scenarios(w: &World, backend: &str) -> Result<()> {
    let node = &w.node;
    let via = format!("via {backend}");

    // 1. Two packages installed in one pass (one transaction), a third adopted as it was
    //    already there, the one in `remove` removed; packages come before files.
    w.commit(&[PKG_A, PKG_B, PKG_PRE], &[PKG_OLD], "first")?;
    let out = w.apply(true)?;
    ensure!(
        out.contains(&format!("backend={backend}"))
            || out.contains(&format!("backend=\"{backend}\"")),
        "the log does not say which backend ran:\n{out}"
    );
    for p in [PKG_A, PKG_B, PKG_PRE] {
        ensure!(
            w.installed(p)?,
            "{p} not installed after the first pass:\n{out}"
        );
    }
    ensure!(!w.installed(PKG_OLD)?, "{PKG_OLD} still installed:\n{out}");
    ensure!(out.contains("install=2 remove=1"), "not one batch:\n{out}");
    if backend == "PackageKit" {
        // PackageKit's own history: both packages went through the same transactions (the
        // simulation and the install), never one alone.
        let tx = node.exec_ok(&["pkcon", "get-transactions"])?;
        let installs = transactions(&tx, "install-packages");
        let touching: Vec<&String> = installs
            .iter()
            .filter(|t| t.contains(PKG_A) || t.contains(PKG_B))
            .collect();
        ensure!(
            !touching.is_empty()
                && touching
                    .iter()
                    .all(|t| t.contains(PKG_A) && t.contains(PKG_B)),
            "{PKG_A} and {PKG_B} were not installed in one transaction:\n{tx}"
        );
    }
    let r = w.report()?;
    w.expect(&r, PKG_A, "changed", &via)?;
    w.expect(&r, PKG_B, "changed", &via)?;
    w.expect(&r, PKG_PRE, "ok", "")?;
    w.expect(&r, PKG_OLD, "changed", &via)?;
    ensure!(
        node.read_file("/etc/plumb-test.conf")? == "made by plumb\n",
        "the file was not applied"
    );
    // Converged: a second pass changes nothing.
    w.apply(true)?;
    let r = w.report()?;
    for p in [PKG_A, PKG_B, PKG_PRE] {
        w.expect(&r, p, "ok", "")?;
    }

    // 2. Removed by hand -> reinstalled, reported as drift.
    node.exec_ok(&["dpkg", "-r", PKG_A])?;
    ensure!(!w.installed(PKG_A)?);
    w.apply(true)?;
    ensure!(w.installed(PKG_A)?, "{PKG_A} was not reinstalled");
    w.expect(
        &w.report()?,
        PKG_A,
        "drift-corrected",
        "removed on the host",
    )?;

    // 3. Leaving `install`: plumb's package is removed, the one there before plumb stays.
    w.commit(&[PKG_A], &[], "drop b and pre")?;
    w.apply(true)?;
    ensure!(
        !w.installed(PKG_B)?,
        "{PKG_B} left Git but is still installed"
    );
    ensure!(
        w.installed(PKG_PRE)?,
        "{PKG_PRE} was installed before plumb but was removed"
    );
    let r = w.report()?;
    w.expect(&r, PKG_B, "pruned", &via)?;
    ensure!(w.installed(PKG_A)?);

    // 4. An unknown name fails that package, with the backend's word; the rest still applies.
    w.repo.write(
        "hosts/n1/files/etc/plumb-test.conf",
        "changed by the third commit\n",
    )?;
    w.commit(&[PKG_A, PKG_B, UNKNOWN], &[], "unknown name")?;
    let out = w.apply(false)?;
    let r = w.report()?;
    ensure!(
        r.outcome == "failed",
        "outcome {} for an unknown package:\n{out}",
        r.outcome
    );
    w.expect(&r, UNKNOWN, "failed", "no package named")?;
    w.expect(&r, PKG_B, "changed", &via)?;
    ensure!(w.installed(PKG_B)?, "{PKG_B} held back by the unknown name");
    ensure!(
        node.read_file("/etc/plumb-test.conf")? == "changed by the third commit\n",
        "the file was not applied after the package failure"
    );

    // 5. A dependency conflict fails only the package that conflicts, with the backend's
    //    message; the package that shared its transaction is still installed.
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_CONFLICT], &[], "conflict")?;
    let out = w.apply(false)?;
    let r = w.report()?;
    w.expect(&r, PKG_CONFLICT, "failed", "")?;
    let (_, why) = &r.packages[PKG_CONFLICT];
    ensure!(
        why.contains(backend),
        "the failure does not say which backend: {why}"
    );
    w.expect(&r, PKG_C, "changed", &via)?;
    ensure!(
        w.installed(PKG_C)?,
        "{PKG_C} held back by the conflict:\n{out}"
    );
    ensure!(
        w.installed(PKG_A)?,
        "{PKG_A} was removed to make room:\n{out}"
    );
    ensure!(!w.installed(PKG_CONFLICT)?);

    // 6. A locked package database fails the package with the backend's own
    // message; the next pass, once the lock is gone, installs it.
    w.commit(&[PKG_A, PKG_B, PKG_C, PKG_OLD], &[], "while locked")?;
    node.exec_ok(&[
        "systemd-run",
        "--unit=hold-dpkg-lock",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        PKG_SLOW,
    ])?;
    let held = node.wait_until("the dpkg lock held", Duration::from_secs(60), || {
        Ok(node
            .exec(&["test", "-e", "/srv/holding-lock"])?
            .success()
            .then_some(()))
    });
    let out = held.and_then(|()| w.apply(false));
    node.write_file("/srv/release-lock", "")?;
    let out = out?;
    let r = w.report()?;
    w.expect(&r, PKG_OLD, "failed", "lock")?;
    ensure!(!w.installed(PKG_OLD)?, "installed despite the lock:\n{out}");
    node.wait_until(
        "apt-get to release the lock",
        Duration::from_secs(60),
        || Ok(w.installed(PKG_SLOW)?.then_some(())),
    )?;
    w.apply(true)?;
    ensure!(
        w.installed(PKG_OLD)?,
        "{PKG_OLD} not installed once the lock was gone"
    );

    // 7. detect mode: a package removed by hand is reported, not reinstalled.
    let config = node.read_file("/etc/plumb/agent.toml")?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!("{config}mode = \"detect\"\n"),
    )?;
    node.exec_ok(&["dpkg", "-r", PKG_C])?;
    let out = w.apply(true)?;
    w.expect(&w.report()?, PKG_C, "drifted", "reinstall")?;
    ensure!(
        !w.installed(PKG_C)?,
        "detect mode reinstalled {PKG_C}:\n{out}"
    );
    node.write_file("/etc/plumb/agent.toml", config)?;
    Ok(())
}

/// A node with the test repository, the fleet repo and plumb.
struct World {
    repo: FleetRepo,
    /// plumb.service's sandbox settings, as `systemd-run -p` properties.
    sandbox: Vec<String>,
    node: Node,
    _git: GitServer,
    _net: Network,
}

impl World {
    fn new(tag: &str) -> Result<World> {
        let image = NodeImage::ensure()?;
        let net = Network::new()?;
        let git = GitServer::start(&net)?;
        let repo = git.create_repo(&format!("fleet-{tag}.git"))?;
        let node = Node::boot(&image, &net, "n1")?;
        node.install_plumb()?;
        let debs = tempfile::tempdir()?;
        let index = build_repo(debs.path())?;
        for entry in std::fs::read_dir(debs.path())? {
            let p = entry?.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            node.write_file(&format!("/srv/repo/{name}"), std::fs::read(&p)?)?;
        }
        node.write_file("/srv/repo/Packages", index)?;
        node.write_file(
            "/etc/apt/sources.list.d/plumb-test.list",
            "deb [trusted=yes] file:/srv/repo ./\n",
        )?;
        // A flat test repo has no translations; apt would report each missing one.
        node.write_file(
            "/etc/apt/apt.conf.d/99plumb-test",
            "Acquire::Languages \"none\";\n",
        )?;
        // Installed by hand before plumb ever runs.
        for p in [PKG_PRE, PKG_OLD] {
            node.exec_ok(&["dpkg", "-i", &format!("/srv/repo/{p}_1.0_all.deb")])?;
        }
        node.write_file(
            "/etc/plumb/agent.toml",
            format!(
                "repo = \"{}\"\nhost = \"n1\"\ninterval = \"1h\"\n",
                git.url(&format!("fleet-{tag}.git"))
            ),
        )?;
        repo.write("hosts/n1/files/etc/plumb-test.conf", "made by plumb\n")?;
        Ok(World {
            repo,
            sandbox: support::sandbox_properties()?,
            node,
            _git: git,
            _net: net,
        })
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

    /// The installed version of `pkg` ("" when it is not installed).
    fn version(&self, pkg: &str) -> Result<String> {
        let out = self.node.exec(&[
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev}${Version}",
            pkg,
        ])?;
        Ok(out
            .stdout
            .strip_prefix("ii ")
            .map(String::from)
            .unwrap_or_default())
    }

    /// `plumb ARGS` in the node as `apply` runs it: (exit code, stdout and stderr).
    fn plumb(&self, args: &[&str]) -> Result<(Option<i32>, String)> {
        let mut argv = vec!["systemd-run", "--quiet", "--wait", "--pipe", "--collect"];
        for p in &self.sandbox {
            argv.extend(["-p", p]);
        }
        argv.push("/usr/local/bin/plumb");
        argv.extend(args);
        let out = self.node.exec(&argv)?;
        let text = format!("{}{}", out.stdout, out.stderr);
        eprintln!("--- plumb {args:?} ({})\n{text}", out.status);
        Ok((out.status.code(), text))
    }

    fn installed(&self, pkg: &str) -> Result<bool> {
        let out = self
            .node
            .exec(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg])?;
        Ok(out.success() && out.stdout.starts_with("ii"))
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

/// The bits of report.toml these tests look at.
struct Report {
    outcome: String,
    desired_commit: String,
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
        let desired_commit = value(head, "desired_commit").unwrap_or_default();
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
            desired_commit,
            packages,
            text: text.to_owned(),
        })
    }
}

/// Transactions of `role` in `pkcon get-transactions` output, each as its block of text.
fn transactions(text: &str, role: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("Transaction:") && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push(current);
    out.retain(|t| t.lines().any(|l| l.trim() == format!("Role: {role}")));
    out
}

/// Builds the test .debs into `dir` and returns the Packages index for them.
fn build_repo(dir: &Path) -> Result<String> {
    let mut index = String::new();
    let mut builds: Vec<(&str, &str)> = [
        PKG_A,
        PKG_B,
        PKG_PRE,
        PKG_OLD,
        PKG_C,
        PKG_CONFLICT,
        PKG_SLOW,
    ]
    .into_iter()
    .map(|n| (n, "1.0"))
    .collect();
    builds.extend(PKG_V_VERSIONS.iter().map(|v| (PKG_V, *v)));
    for (name, version) in builds {
        let src = tempfile::tempdir()?;
        let root = src.path();
        std::fs::create_dir_all(root.join("DEBIAN"))?;
        std::fs::create_dir_all(root.join("usr/share/plumb-test"))?;
        let control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: plumb tests <tests@example.invalid>\n\
             Description: plumb system-test package {name}\n{}",
            if name == PKG_CONFLICT {
                format!("Conflicts: {PKG_A}\n")
            } else {
                String::new()
            }
        );
        std::fs::write(root.join("DEBIAN/control"), &control)?;
        if name == PKG_SLOW {
            let preinst = root.join("DEBIAN/preinst");
            std::fs::write(
                &preinst,
                "#!/bin/sh\ntouch /srv/holding-lock\n\
                 while [ ! -e /srv/release-lock ]; do sleep 0.1; done\n",
            )?;
            std::fs::set_permissions(
                &preinst,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
        }
        std::fs::write(
            root.join(format!("usr/share/plumb-test/{name}")),
            format!("{name} {version}\n"),
        )?;
        let file = format!("{name}_{version}_all.deb");
        run(Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(root)
            .arg(dir.join(&file)))?
        .check("dpkg-deb --build")?;
        let bytes = std::fs::read(dir.join(&file))?;
        index.push_str(&control);
        index.push_str(&format!(
            "Filename: ./{file}\nSize: {}\nSHA256: {}\n\n",
            bytes.len(),
            hex::encode(Sha256::digest(&bytes))
        ));
    }
    Ok(index)
}
