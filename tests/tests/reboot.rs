//! Coordinated reboots (issue 17, DESIGN section 13) on a real node: plumb.service installs a
//! package whose postinst asks for a reboot (as Debian's kernels do: /run/reboot-required), and
//! reports `reboot_required` whatever `[reboot] when` says. With a closed window it waits and
//! says why; with `when = "never"` it never reboots; with `when = "required"` in an open window
//! and `[disruption] max_parallel = 1` it takes the slot, pushes its report, reboots the node
//! (nspawn boots it again), and the first pass after the boot releases the slot and reports
//! `last_reboot`. A reboot that does not clear the need is not repeated in the same window; health
//! checks that fail after the boot keep the slot until they pass.

use anyhow::{ensure, Context, Result};
use plumb::status::report::Report;
use plumb_systest::{run, FleetRepo, GitServer, Network, Node, NodeImage};
use sha2::{Digest, Sha256};
use std::process::Command;
use std::time::Duration;

mod support;

const HOST: &str = "rb-1";
const PKG: &str = "plumb-test-kernel";
const SLOT: &str = "refs/heads/locks/0";

/// A .deb whose postinst asks for a reboot, as a local apt repository in the node.
fn add_kernel_repo(node: &Node) -> Result<()> {
    let src = tempfile::tempdir()?;
    let root = src.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::create_dir_all(root.join("usr/share/plumb-test"))?;
    let control = format!(
        "Package: {PKG}\nVersion: 1.0\nArchitecture: all\nMaintainer: plumb tests <tests@example.invalid>\n\
         Description: plumb system-test package that needs a reboot\n"
    );
    std::fs::write(root.join("DEBIAN/control"), &control)?;
    let postinst = root.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        format!(
            "#!/bin/sh\nset -e\ntouch /run/reboot-required\necho {PKG} >> /run/reboot-required.pkgs\n"
        ),
    )?;
    std::fs::set_permissions(
        &postinst,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::write(root.join(format!("usr/share/plumb-test/{PKG}")), PKG)?;
    let file = format!("{PKG}_1.0_all.deb");
    let deb = src.path().join(&file);
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zgzip"])
        .arg(&root)
        .arg(&deb))?
    .check("dpkg-deb --build")?;
    let bytes = std::fs::read(&deb)?;
    let index = format!(
        "{control}Filename: ./{file}\nSize: {}\nSHA256: {}\n\n",
        bytes.len(),
        hex::encode(Sha256::digest(&bytes))
    );
    node.write_file(&format!("/srv/repo/{file}"), bytes)?;
    node.write_file("/srv/repo/Packages", index)?;
    node.write_file(
        "/etc/apt/sources.list.d/plumb-test.list",
        "deb [trusted=yes] file:/srv/repo ./\n",
    )?;
    node.write_file(
        "/etc/apt/apt.conf.d/99plumb-test",
        "Acquire::Languages \"none\";\n",
    )?;
    Ok(())
}

/// plumb.service as shipped (enabled, so it comes back after a reboot), not started yet.
fn install_service(node: &Node, git: &GitServer) -> Result<()> {
    node.install_plumb()?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!(
            "repo = \"{}\"\nhost = \"{HOST}\"\ninterval = \"2s\"\n",
            git.url("fleet.git")
        ),
    )?;
    let unit = include_str!("../../systemd/plumb.service")
        .replace("/usr/bin/plumb", "/usr/local/bin/plumb");
    node.write_file("/etc/systemd/system/plumb.service", unit)?;
    node.exec_ok(&["systemctl", "daemon-reload"])?;
    node.exec_ok(&["systemctl", "enable", "plumb.service"])?;
    Ok(())
}

/// host.toml and fleet.toml: the package, `[reboot] when`, a health check, and one window for
/// the host (open now or not) with one disruption slot for the fleet.
fn commit(repo: &FleetRepo, when: &str, window_open: bool, msg: &str) -> Result<String> {
    repo.write(
        &format!("hosts/{HOST}/host.toml"),
        format!(
            "[packages]\ninstall = [\"{PKG}\"]\n\n[reboot]\nwhen = \"{when}\"\n\n\
             [[health]]\ncommand = [\"/usr/bin/test\", \"-e\", \"/usr/share/plumb-test/{PKG}\"]\n"
        ),
    )?;
    repo.write(
        &format!("hosts/{HOST}/files/etc/plumb-test.conf"),
        format!("{msg}\n"),
    )?;
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 3600
        % 24) as i64;
    // Open: from the start of the previous hour for 3 hours. Closed: 12 hours away.
    let start = if window_open {
        (hour + 23) % 24
    } else {
        (hour + 12) % 24
    };
    repo.write(
        "fleet.toml",
        format!(
            "[[windows]]\nhosts = [\"rb-*\"]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
             start = \"{start:02}:00\"\nduration = \"{}\"\ntimezone = \"UTC\"\n\n\
             [disruption]\nmax_parallel = 1\nlock_ttl = \"30m\"\n",
            if window_open { "3h" } else { "1h" }
        ),
    )?;
    repo.commit(msg)
}

/// The host's report on its status branch.
fn pushed(repo: &FleetRepo) -> Result<Option<Report>> {
    if repo.rev(&format!("refs/heads/status/{HOST}"))?.is_none() {
        return Ok(None);
    }
    Ok(Some(Report::from_toml(
        &repo.show(&format!("status/{HOST}"), "status.toml")?,
    )?))
}

/// The last report written in the node (every pass writes it, pushed or not).
fn local(node: &Node) -> Result<Report> {
    Report::from_toml(&node.exec_ok(&["/usr/local/bin/plumb", "status"])?)
}

/// Waits until two more passes ran in the node (its local report's `checked_at` moved twice).
fn two_more_passes(node: &Node) -> Result<Report> {
    let mut seen = vec![local(node)?.checked_at];
    node.wait_until("two more passes", Duration::from_secs(60), || {
        let r = local(node)?;
        if !seen.contains(&r.checked_at) {
            seen.push(r.checked_at.clone());
        }
        Ok((seen.len() >= 3).then_some(r))
    })
}

#[test]
fn a_package_that_needs_a_reboot_reboots_the_node_inside_the_window_holding_a_slot() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let mut node = Node::boot(&image, &net, HOST)?;
    add_kernel_repo(&node)?;
    install_service(&node, &git)?;
    let boot0 = node.boot_id()?;

    // 1. The window is closed: an operator's `apply --ignore-rollout` puts the commit on the
    // host (the window holds moves too); the package asks for a reboot, which waits.
    let c1 = commit(&repo, "required", false, "closed window")?;
    let mut argv = vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect"];
    let sandbox = support::sandbox_properties()?;
    for p in &sandbox {
        argv.extend(["-p", p.as_str()]);
    }
    argv.extend(["/usr/local/bin/plumb", "apply", "--ignore-rollout"]);
    let out = node.exec(&argv)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!("--- plumb apply --ignore-rollout\n{text}");
    ensure!(out.success(), "plumb apply failed:\n{text}");
    ensure!(
        node.exec(&["test", "-e", "/run/reboot-required"])?
            .success(),
        "the postinst did not ask for a reboot"
    );
    let r = local(&node)?;
    ensure!(r.applied_commit == c1, "{r:?}");
    ensure!(r.reboot_required == Some(true), "{r:?}");
    ensure!(
        r.waiting.contains("reboot waits: window opens"),
        "waiting: {:?}",
        r.waiting
    );
    ensure!(r.last_reboot.is_none(), "{r:?}");
    ensure!(
        repo.rev(SLOT)?.is_none(),
        "a slot is held with the window closed"
    );

    // 2. `when = "never"` in an open window: the daemon moves to it, reports the need, and
    // never reboots.
    node.exec_ok(&["systemctl", "start", "plumb.service"])?;
    let c2 = commit(&repo, "never", true, "never")?;
    node.wait_until(
        "the status branch to show the `never` commit",
        Duration::from_secs(120),
        || {
            Ok(pushed(&repo)?
                .filter(|r| r.applied_commit == c2 && r.reboot_required == Some(true))
                .map(|_| ()))
        },
    )?;
    let r = two_more_passes(&node)?;
    ensure!(r.applied_commit == c2 && r.waiting.is_empty(), "{r:?}");
    ensure!(
        node.boot_id()? == boot0,
        "the node rebooted with when = never"
    );
    ensure!(
        repo.rev(SLOT)?.is_none(),
        "the move's slot was not released"
    );

    // 3. `when = "required"` in the open window: the node reboots, plumb comes back.
    let c3 = commit(&repo, "required", true, "reboot")?;
    node.wait_rebooted(&boot0, Duration::from_secs(180))?;
    let r = node.wait_until(
        "the report after the reboot",
        Duration::from_secs(120),
        || {
            Ok(pushed(&repo)?.filter(|r| {
                r.applied_commit == c3
                    && r.last_reboot.is_some()
                    && r.reboot_required == Some(false)
            }))
        },
    )?;
    let last = r.last_reboot.as_ref().context("last_reboot")?;
    ensure!(
        last.why.contains("/run/reboot-required") && last.why.contains(PKG),
        "last_reboot: {last:?}"
    );
    ensure!(r.outcome.as_str() != "failed", "{r:?}");
    ensure!(
        repo.rev(SLOT)?.is_none(),
        "the slot was not released after the boot"
    );
    // Before it rebooted, the host pushed a report saying so (the slot was held then).
    let log = run(Command::new("git")
        .arg("--git-dir")
        .arg(repo.bare_path())
        .args(["log", "-p", &format!("status/{HOST}")]))?
    .check("git log")?;
    ensure!(
        log.contains("rebooting once this report is pushed"),
        "no report announced the reboot:\n{log}"
    );
    // `plumb run` got SIGTERM from the reboot and exited cleanly; the new boot's first pass
    // checked the host and gave the slot back.
    let before = node.exec_ok(&[
        "journalctl",
        "-b",
        "-1",
        "-u",
        "plumb.service",
        "-o",
        "cat",
        "--no-pager",
    ])?;
    ensure!(
        before.contains("rebooting: /run/reboot-required")
            && before.contains("plumb stopping")
            && before.contains("Deactivated successfully"),
        "plumb.service before the reboot:\n{before}"
    );
    // Asked for the reboot, then ran no further pass while the host shut down.
    let tail = &before[before.rfind("rebooting: ").unwrap_or(0)..];
    ensure!(
        !tail.contains("pass done") && !before.contains("panicked"),
        "plumb.service after asking for the reboot:\n{tail}"
    );
    let after = node.exec_ok(&[
        "journalctl",
        "-b",
        "0",
        "-u",
        "plumb.service",
        "-o",
        "cat",
        "--no-pager",
    ])?;
    ensure!(
        after.contains("back from the reboot") && after.contains("released disruption slot"),
        "plumb.service after the reboot:\n{after}"
    );

    // 4. Loop guard: a unit (from Git) that asks for a reboot at every boot, ordered before
    // plumb. The need comes back: plumb reboots once, the reboot does not clear the need, and it
    // does not reboot again in this window occurrence; it says why.
    let boot1 = node.boot_id()?;
    repo.write(
        &format!("hosts/{HOST}/units/plumb-test-needs-reboot.service"),
        "[Unit]\nBefore=plumb.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/usr/bin/touch /run/reboot-required\n[Install]\nWantedBy=multi-user.target\n",
    )?;
    let c4 = repo.commit("a unit that asks for a reboot at every boot")?;
    node.wait_rebooted(&boot1, Duration::from_secs(180))?;
    let boot2 = node.boot_id()?;
    let r = node.wait_until(
        "the loop guard to say why it does not reboot again",
        Duration::from_secs(120),
        || {
            Ok(pushed(&repo)?
                .filter(|r| r.applied_commit == c4 && r.waiting.contains("did not clear the need")))
        },
    )?;
    ensure!(r.reboot_required == Some(true), "{r:?}");
    ensure!(
        r.last_reboot.as_ref() != Some(last),
        "last_reboot not updated: {r:?}"
    );
    two_more_passes(&node)?;
    ensure!(
        node.boot_id()? == boot2,
        "rebooted again in the same window"
    );
    ensure!(
        repo.rev(SLOT)?.is_none(),
        "a slot is held while the guard waits"
    );

    // 5. Health checks that fail after the boot keep the slot (no other host reboots) and say
    // so; once they pass, the slot is released. The check needs a file in /run, which the
    // reboot empties. The unit goes, the need is cleared by hand (the guard ends with it).
    node.exec_ok(&["touch", "/run/plumb-test-up"])?;
    node.exec_ok(&[
        "rm",
        "-f",
        "/run/reboot-required",
        "/run/reboot-required.pkgs",
    ])?;
    repo.remove(&format!(
        "hosts/{HOST}/units/plumb-test-needs-reboot.service"
    ))?;
    repo.write(
        &format!("hosts/{HOST}/host.toml"),
        format!(
            "[packages]\ninstall = [\"{PKG}\"]\n\n[reboot]\nwhen = \"required\"\n\n\
             [[health]]\ncommand = [\"/usr/bin/test\", \"-e\", \"/run/plumb-test-up\"]\n"
        ),
    )?;
    let c5 = repo.commit("a health check the reboot breaks")?;
    node.wait_until(
        "the need to clear on the status branch",
        Duration::from_secs(120),
        || {
            Ok(pushed(&repo)?
                .filter(|r| r.applied_commit == c5 && r.reboot_required == Some(false))
                .map(|_| ()))
        },
    )?;
    let before = pushed(&repo)?.context("a report")?.last_reboot;
    node.exec_ok(&["touch", "/run/reboot-required"])?;
    node.wait_rebooted(&boot2, Duration::from_secs(180))?;
    let r = node.wait_until(
        "the failed health check after the reboot",
        Duration::from_secs(120),
        || Ok(pushed(&repo)?.filter(|r| r.outcome.as_str() == "failed")),
    )?;
    ensure!(
        r.reason.map(|x| x.as_str()) == Some("reboot-health-failed"),
        "{r:?}"
    );
    ensure!(r.message.contains("/run/plumb-test-up"), "{}", r.message);
    ensure!(
        repo.rev(SLOT)?.is_some(),
        "the slot was released after a failed check"
    );
    ensure!(
        r.last_reboot == before,
        "last_reboot moved on a failed check: {r:?}"
    );
    node.exec_ok(&["touch", "/run/plumb-test-up"])?;
    let r = node.wait_until(
        "the slot to be released once the checks pass",
        Duration::from_secs(120),
        || Ok(pushed(&repo)?.filter(|r| r.outcome.as_str() != "failed" && r.last_reboot != before)),
    )?;
    ensure!(r.reason.is_none(), "{r:?}");
    ensure!(repo.rev(SLOT)?.is_none(), "the slot is still held");

    // 6. A SIGTERM between the decision and the request (plumb stopped, its state left as the
    // pass wrote it): the next pass forgets the decision, gives the hold up, and decides again
    // on what it finds (no need now: no reboot).
    node.exec_ok(&["systemctl", "stop", "plumb.service"])?;
    let boot3 = node.boot_id()?;
    node.write_file(
        "/var/lib/plumb/reboot.json",
        format!(
            r#"{{"pending":{{"boot_id":"{}","at":"2026-01-01T00:00:00Z","at_secs":0,"why":"/run/reboot-required","occurrence":0,"requested":false,"error":null}}}}"#,
            boot3.replace('-', "")
        ),
    )?;
    node.write_file("/var/lib/plumb/maintenance-hold", "reboot")?;
    node.exec_ok(&["systemctl", "start", "plumb.service"])?;
    node.wait_until(
        "the stale decision to be dropped",
        Duration::from_secs(60),
        || {
            let held = node
                .exec(&["test", "-e", "/var/lib/plumb/maintenance-hold"])?
                .success();
            let rec = node.read_file("/var/lib/plumb/reboot.json")?;
            Ok((!held && rec.contains(r#""pending":null"#)).then_some(()))
        },
    )?;
    two_more_passes(&node)?;
    ensure!(node.boot_id()? == boot3, "rebooted on a stale decision");
    let r = local(&node)?;
    ensure!(r.reboot_required == Some(false), "{r:?}");
    // Seen as this boot's own decision, not as a reboot that happened (the record written
    // above has no `last`; a reboot taken as done would report one at 2026-01-01).
    ensure!(r.last_reboot.is_none(), "{r:?}");

    // 7. A reboot asked for long ago in this very boot did not happen: reported once as
    // reboot-failed, the hold given up; the next pass is back to normal (no need now).
    node.exec_ok(&["systemctl", "stop", "plumb.service"])?;
    node.write_file(
        "/var/lib/plumb/reboot.json",
        format!(
            r#"{{"pending":{{"boot_id":"{}","at":"2026-01-01T00:00:00Z","at_secs":0,"why":"/run/reboot-required","occurrence":0,"requested":true,"error":null}}}}"#,
            boot3.replace('-', "")
        ),
    )?;
    node.write_file("/var/lib/plumb/maintenance-hold", "reboot")?;
    node.exec_ok(&["systemctl", "start", "plumb.service"])?;
    let r = node.wait_until(
        "reboot-failed on the status branch",
        Duration::from_secs(60),
        || Ok(pushed(&repo)?.filter(|r| r.outcome.as_str() == "failed")),
    )?;
    ensure!(
        r.reason.map(|x| x.as_str()) == Some("reboot-failed")
            && r.message.contains("did not happen"),
        "{r:?}"
    );
    ensure!(!node
        .exec(&["test", "-e", "/var/lib/plumb/maintenance-hold"])?
        .success());
    node.wait_until("a normal pass again", Duration::from_secs(60), || {
        Ok(pushed(&repo)?
            .filter(|r| r.outcome.as_str() == "converged")
            .map(|_| ()))
    })?;
    ensure!(node.boot_id()? == boot3, "rebooted");
    Ok(())
}
