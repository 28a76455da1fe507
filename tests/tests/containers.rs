//! Podman Quadlet containers (issue 3): plumb inside a real trixie node installs Quadlet files,
//! starts the generated services with the locally imported busybox image (no registry), restarts
//! them on change, recreates a container removed by hand, and removes what leaves Git.

mod support;

use anyhow::{ensure, Result};
use std::time::Duration;
use support::World;

fn web(arg: &str) -> String {
    format!("[Container]\nImage=localhost/busybox\nExec=sleep {arg}\nStopTimeout=1\n")
}

/// The ID and command of the running container `name`, if podman has it running.
fn running(w: &World, name: &str) -> Result<Option<(String, String)>> {
    let out = w.node.exec(&[
        "podman",
        "ps",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.ID}} {{.Command}}",
    ])?;
    Ok(out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .map(|(id, cmd)| (id.to_string(), cmd.to_string())))
}

#[test]
fn quadlet_container_lifecycle() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("c1")?;

    // Added: the generated service runs the container.
    w.put("containers/web.container", &web("100001"))?;
    w.commit("add web")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "web.service")? == "active");
    let (id1, cmd) = running(&w, "systemd-web")?.ok_or_else(|| {
        anyhow::anyhow!("not running: {}", w.node.journal(Some("web.service"), 20))
    })?;
    ensure!(cmd.contains("100001"), "{cmd}");
    ensure!(w.resource("container", "web.container")?.0 == "changed");

    // Edited: restarted with the new spec.
    w.put("containers/web.container", &web("100002"))?;
    w.commit("edit web")?;
    w.apply(true)?;
    let (id2, cmd) =
        running(&w, "systemd-web")?.ok_or_else(|| anyhow::anyhow!("not running after edit"))?;
    ensure!(
        id2 != id1 && cmd.contains("100002"),
        "{id1} -> {id2}: {cmd}"
    );

    // Removed by hand: recreated.
    w.node
        .exec_ok(&["podman", "rm", "-f", "-t", "0", "systemd-web"])?;
    // plumb learns it from the service, which ends with its container.
    w.node.wait_until(
        "systemd to see the container gone",
        Duration::from_secs(30),
        || Ok((w.systemctl("is-active", "web.service")? != "active").then_some(())),
    )?;
    w.apply(true)?;
    let (id3, _) =
        w.node
            .wait_until("the container to be back", Duration::from_secs(30), || {
                running(&w, "systemd-web")
            })?;
    ensure!(id3 != id2);
    ensure!(
        w.resource("container", "web.container")?.0 == "drift-corrected",
        "{}",
        w.status()?
    );

    // Invalid Quadlet file: rejected, the running container untouched.
    w.put(
        "containers/web.container",
        "[Container]\nImag=localhost/busybox\n",
    )?;
    w.commit("bad quadlet")?;
    w.apply(false)?;
    ensure!(w.report_field("outcome")? == "rejected");
    let msg = w.report_field("message")?;
    ensure!(
        msg.contains("web.container") && msg.contains("Imag"),
        "message: {msg}"
    );
    ensure!(running(&w, "systemd-web")?.map(|r| r.0) == Some(id3.clone()));

    // Removed from Git: stopped and gone.
    w.del("containers")?;
    w.commit("remove web")?;
    w.apply(true)?;
    ensure!(running(&w, "systemd-web")?.is_none(), "still running");
    ensure!(
        w.node
            .exec(&["test", "-e", "/etc/containers/systemd/web.container"])?
            .status
            .code()
            == Some(1)
    );
    ensure!(w.prop("web.service", "LoadState")? == "not-found");
    ensure!(w.resource("container", "web.container")?.0 == "pruned");
    Ok(())
}
