//! `[packages] upgrade` (issue 17): a trixie node with two local apt repositories built here, one
//! holding v1 and v2 of test packages, the other offering v2 of one of them as a security update
//! (its Release file says Suite trixie-security, Label Debian-Security). The status lists the
//! upgrades; "security" applies only that one, "all" the rest; a closed window applies nothing
//! and says when. Once through PackageKit (the node's default), once through apt-get.

use anyhow::{bail, ensure, Context, Result};
use plumb_systest::run;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

mod support;
use support::World;

const PKG_A: &str = "plumb-up-a";
const PKG_B: &str = "plumb-up-b";
/// v2 only in the security repository.
const PKG_SEC: &str = "plumb-up-sec";

#[test]
fn upgrades_via_packagekit() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = setup("n1")?;
    w.node.exec_ok(&["pkcon", "backend-details"])?;
    scenarios(&w, "PackageKit")
}

#[test]
fn upgrades_via_apt_get_without_packagekit() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = setup("n1")?;
    w.node
        .exec_ok(&["systemctl", "mask", "--now", "packagekit.service"])?;
    scenarios(&w, "apt-get")
}

fn scenarios(w: &World, backend: &str) -> Result<()> {
    let host_toml = |policy: &str| format!("[packages]\nupgrade = \"{policy}\"\n");

    // 1. upgrade = "none": the upgrades are listed, nothing changes.
    w.put("host.toml", &host_toml("none"))?;
    w.commit("report only")?;
    let out = w.apply(true)?;
    ensure!(
        out.contains("listing the upgrades"),
        "the first pass did not list the upgrades:\n{out}"
    );
    let u = upgrades(w)?;
    ensure!(
        u.count == 3 && u.security == 1,
        "count/security wrong: {u:?}\n{}",
        w.status()?
    );
    ensure!(
        u.names == [PKG_SEC, PKG_A, PKG_B],
        "names (security first): {:?}",
        u.names
    );
    ensure!(u.policy == "none" && u.next.is_empty(), "{u:?}");
    for p in [PKG_A, PKG_B, PKG_SEC] {
        ensure!(version(w, p)? == "1.0", "{p} changed with upgrade = none");
    }
    // Cheap: a pass with nothing changed runs no package tool to list them again.
    let out = w.apply(true)?;
    ensure!(
        !out.contains("listing the upgrades"),
        "a no-op pass listed the upgrades again:\n{out}"
    );
    ensure!(upgrades(w)?.count == 3);

    // 2. "security" with a closed window (it opens tomorrow): nothing upgraded, `next` says when.
    let tomorrow = weekday_tomorrow();
    w.repo.write(
        "fleet.toml",
        format!(
            "[[windows]]\nhosts = [\"n1\"]\ndays = [\"{tomorrow}\"]\nstart = \"00:00\"\nduration = \"1h\"\n"
        ),
    )?;
    w.put("host.toml", &host_toml("security"))?;
    w.commit("security, window closed")?;
    let out = apply_ignoring_rollout(w)?;
    let u = upgrades(w)?;
    ensure!(
        u.next == format!("when the window opens {tomorrow} 00:00 UTC"),
        "next: {:?}\n{out}",
        u.next
    );
    ensure!(u.policy == "security" && u.count == 3, "{u:?}");
    for p in [PKG_A, PKG_B, PKG_SEC] {
        ensure!(
            version(w, p)? == "1.0",
            "{p} upgraded while the window was closed:\n{out}"
        );
    }

    // 3. No window: the move to the new commit runs them; only the security update.
    w.repo.remove("fleet.toml")?;
    w.commit("security, no window")?;
    let out = w.apply(true)?;
    ensure!(
        version(w, PKG_SEC)? == "2.0",
        "the security update was not applied:\n{out}"
    );
    for p in [PKG_A, PKG_B] {
        ensure!(
            version(w, p)? == "1.0",
            "{p} upgraded with upgrade = security:\n{out}"
        );
    }
    ensure!(
        out.contains(&format!("backend={backend}"))
            || out.contains(&format!("backend=\"{backend}\"")),
        "not upgraded with {backend}:\n{out}"
    );
    let u = upgrades(w)?;
    ensure!(
        u.count == 2 && u.security == 0 && u.names == [PKG_A, PKG_B],
        "after the security upgrade: {u:?}"
    );
    ensure!(!u.last_run.is_empty(), "no last_run: {u:?}");
    ensure!(
        u.next.contains("once a day"),
        "next without a window: {:?}",
        u.next
    );
    ensure!(w.report_field("outcome")? == "changed");
    ensure!(
        w.report_field("message")?
            .contains(&format!("upgraded 1 package(s) via {backend}")),
        "{}",
        w.status()?
    );
    // Converged: the next pass upgrades nothing more (ran today for this commit).
    let out = w.apply(true)?;
    ensure!(w.report_field("outcome")? == "converged", "{out}");
    ensure!(version(w, PKG_A)? == "1.0");

    // 4. "all", with a disruption slot and a health check that the upgrade breaks: the rest is
    //    upgraded, the check fails, the report says so (upgrade-unhealthy) and the slot stays held.
    w.repo
        .write("fleet.toml", "[disruption]\nmax_parallel = 1\n")?;
    w.put(
        "host.toml",
        &format!(
            "{}\n[[health]]\ncommand = [\"/bin/sh\", \"-c\", \"dpkg-query -W {PKG_B} | grep -qx '{PKG_B}.1.0'\"]\n",
            host_toml("all")
        ),
    )?;
    w.commit("all, a check the upgrade breaks")?;
    let out = w.apply(false)?;
    for p in [PKG_A, PKG_B, PKG_SEC] {
        ensure!(version(w, p)? == "2.0", "{p} not upgraded by all:\n{out}");
    }
    ensure!(
        w.report_field("outcome")? == "failed" && w.report_field("reason")? == "upgrade-unhealthy",
        "{}",
        w.status()?
    );
    // Slots are refs/heads/locks/<n> in the status repository (here the fleet repository).
    let locks = || {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(w.repo.bare_path())
            .args(["for-each-ref", "--format=%(refname)", "refs/heads/locks/"]))?
        .check("git for-each-ref")
    };
    let held = locks()?;
    ensure!(
        !held.trim().is_empty(),
        "no disruption slot held after the failed check:\n{out}"
    );
    let lock = w.repo.show(held.trim(), "lock.toml")?;
    ensure!(lock.contains("host = \"n1\""), "{lock}");
    // Still failed, still held, on the next pass.
    w.apply(false)?;
    ensure!(w.report_field("reason")? == "upgrade-unhealthy");
    ensure!(!locks()?.trim().is_empty());

    // 5. The check fixed in Git: the checks pass, the slot is released, nothing left to upgrade.
    w.put("host.toml", &host_toml("all"))?;
    w.commit("all, check dropped")?;
    let out = w.apply(true)?;
    ensure!(
        locks()?.trim().is_empty(),
        "the slot was not released:\n{out}"
    );
    ensure!(w.report_field("reason")?.is_empty(), "{}", w.status()?);
    let u = upgrades(w)?;
    ensure!(u.count == 0 && u.names.is_empty(), "{u:?}");
    Ok(())
}

/// A node with both repositories, v1 of the test packages installed, plumb pointed at the fleet.
fn setup(host: &str) -> Result<World> {
    let w = World::new(host)?;
    let node = &w.node;
    let main = tempfile::tempdir()?;
    let security = tempfile::tempdir()?;
    let mut index = String::new();
    for (name, v) in [
        (PKG_A, "1.0"),
        (PKG_A, "2.0"),
        (PKG_B, "1.0"),
        (PKG_B, "2.0"),
        (PKG_SEC, "1.0"),
    ] {
        index.push_str(&build_deb(main.path(), name, v)?);
    }
    let sec_index = build_deb(security.path(), PKG_SEC, "2.0")?;
    for (dir, to) in [
        (main.path(), "/srv/repo"),
        (security.path(), "/srv/security"),
    ] {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            node.write_file(&format!("{to}/{name}"), std::fs::read(&p)?)?;
        }
    }
    node.write_file("/srv/repo/Packages", &index)?;
    node.write_file("/srv/security/Packages", &sec_index)?;
    node.write_file(
        "/srv/security/Release",
        format!(
            "Origin: Debian\nLabel: Debian-Security\nSuite: trixie-security\nCodename: trixie-security\n\
             Date: Mon, 30 Nov 2026 00:00:00 UTC\nArchitectures: all amd64\n\
             Description: plumb test security updates\nSHA256:\n {} {} Packages\n",
            hex::encode(Sha256::digest(sec_index.as_bytes())),
            sec_index.len()
        ),
    )?;
    node.write_file(
        "/etc/apt/sources.list.d/plumb-test.list",
        "deb [trusted=yes] file:/srv/repo ./\ndeb [trusted=yes] file:/srv/security ./\n",
    )?;
    node.write_file(
        "/etc/apt/apt.conf.d/99plumb-test",
        "Acquire::Languages \"none\";\n",
    )?;
    for p in [PKG_A, PKG_B, PKG_SEC] {
        node.exec_ok(&["dpkg", "-i", &format!("/srv/repo/{p}_1.0_all.deb")])?;
    }
    // The system's own refresh (apt-daily) would do this: the lists now offer v2.
    node.exec_ok(&["apt-get", "update", "-q"])?;
    let sim = node.exec_ok(&["apt-get", "-s", "upgrade"])?;
    ensure!(
        sim.contains("(2.0 Debian-Security:trixie-security"),
        "the security repository's Release file is not read:\n{sim}"
    );
    Ok(w)
}

/// Builds `name` `version` into `dir`; its Packages stanza.
fn build_deb(dir: &Path, name: &str, version: &str) -> Result<String> {
    let src = tempfile::tempdir()?;
    let root = src.path();
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::create_dir_all(root.join("usr/share/plumb-test"))?;
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: plumb tests <tests@example.invalid>\n\
         Description: plumb upgrade test package {name}\n"
    );
    std::fs::write(root.join("DEBIAN/control"), &control)?;
    std::fs::write(root.join(format!("usr/share/plumb-test/{name}")), version)?;
    let file = format!("{name}_{version}_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zgzip"])
        .arg(root)
        .arg(dir.join(&file)))?
    .check("dpkg-deb --build")?;
    let bytes = std::fs::read(dir.join(&file))?;
    Ok(format!(
        "{control}Filename: ./{file}\nSize: {}\nSHA256: {}\n\n",
        bytes.len(),
        hex::encode(Sha256::digest(&bytes))
    ))
}

/// `[upgrades]` of the last report.
#[derive(Debug, Default)]
struct Upgrades {
    count: i64,
    security: i64,
    names: Vec<String>,
    policy: String,
    last_run: String,
    next: String,
}

fn upgrades(w: &World) -> Result<Upgrades> {
    let text = w.status()?;
    let v: toml::Value = toml::from_str(&text).context("parsing plumb status")?;
    let Some(u) = v.get("upgrades") else {
        bail!("no [upgrades] in the report:\n{text}");
    };
    let s = |k: &str| {
        u.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let n = |k: &str| u.get(k).and_then(|x| x.as_integer()).unwrap_or(-1);
    Ok(Upgrades {
        count: n("count"),
        security: n("security"),
        names: u
            .get("names")
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        policy: s("policy"),
        last_run: s("last_run"),
        next: s("next"),
    })
}

fn version(w: &World, pkg: &str) -> Result<String> {
    Ok(w.node
        .exec_ok(&["dpkg-query", "-W", "-f", "${Version}", pkg])?
        .trim()
        .to_string())
}

/// `plumb apply --ignore-rollout` in plumb.service's sandbox (moves past the closed window; the
/// upgrades still wait for it).
fn apply_ignoring_rollout(w: &World) -> Result<String> {
    let sandbox = support::sandbox_properties()?;
    let mut argv = vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect"];
    for p in &sandbox {
        argv.extend(["-p", p.as_str()]);
    }
    argv.extend(["/usr/local/bin/plumb", "apply", "--ignore-rollout"]);
    let out = w.node.exec(&argv)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!("--- plumb apply --ignore-rollout\n{text}");
    ensure!(
        out.success(),
        "plumb apply --ignore-rollout failed:\n{text}"
    );
    Ok(text)
}

/// "tue" when today is Monday (UTC).
fn weekday_tomorrow() -> &'static str {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400;
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    DAYS[((days + 1 + 3) % 7) as usize]
}
