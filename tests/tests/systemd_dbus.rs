//! plumb's systemd layer (agent/src/host/systemd.rs) against a node's real systemd, driven from
//! the host through the node's bus socket.

use anyhow::{ensure, Result};
use plumb::host::systemd::{JobResult, Systemd};
use plumb_systest::{Network, Node, NodeImage};
use std::time::Instant;

const OK_UNIT: &str = "[Unit]
Description=plumb test: runs until stopped

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
";

const FAIL_UNIT: &str = "[Unit]
Description=plumb test: always fails

[Service]
Type=oneshot
ExecStart=/bin/false
";

const DEP_UNIT: &str = "[Unit]
Description=plumb test: needs the failing unit
Requires=plumb-fail.service
After=plumb-fail.service

[Service]
Type=oneshot
ExecStart=/bin/true
";

#[test]
fn systemd_layer_drives_a_real_systemd() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let node = Node::boot(&image, &net, "sd1")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(scenario(&node))
}

async fn scenario(node: &Node) -> Result<()> {
    let conn = zbus::connection::Builder::address(node.bus_address().as_str())
        .build()
        .await?;
    let sd = Systemd::new(&conn).await?;

    node.write_file("/etc/systemd/system/plumb-ok.service", OK_UNIT)?;
    node.write_file("/etc/systemd/system/plumb-fail.service", FAIL_UNIT)?;
    node.write_file("/etc/systemd/system/plumb-dep.service", DEP_UNIT)?;
    sd.reload().await?;

    // Enable: the WantedBy symlink appears, the unit file state follows after a reload.
    let st = sd.unit_state("plumb-ok.service").await?;
    ensure!(
        st.load_state == "loaded" && st.unit_file_state == "disabled",
        "{st:?}"
    );
    let changes = sd.enable(&["plumb-ok.service"]).await?;
    ensure!(
        changes
            .iter()
            .any(|c| c.kind == "symlink"
                && c.file.ends_with("multi-user.target.wants/plumb-ok.service")),
        "enable changes: {changes:?}"
    );
    sd.reload().await?;
    ensure!(sd.unit_state("plumb-ok.service").await?.is_enabled());
    ensure!(
        node.exec_ok(&["systemctl", "is-enabled", "plumb-ok.service"])?
            .trim()
            == "enabled"
    );

    // Start: the job is done, the service runs what its ExecStart says.
    let t = Instant::now();
    ensure!(sd.start("plumb-ok.service").await? == JobResult::Done);
    eprintln!("start job over D-Bus: {:.1?}", t.elapsed());
    let t = Instant::now();
    let st = sd.unit_state("plumb-ok.service").await?;
    eprintln!("unit_state over D-Bus: {:.1?}", t.elapsed());
    ensure!(st.is_active() && st.sub_state == "running", "{st:?}");
    let pid = st
        .main_pid
        .ok_or_else(|| anyhow::anyhow!("no main pid: {st:?}"))?;
    ensure!(
        st.exec_start == Some(vec![vec!["/bin/sleep".into(), "infinity".into()]]),
        "{st:?}"
    );
    ensure!(st.result.as_deref() == Some("success"), "{st:?}");
    ensure!(
        node.exec_ok(&["systemctl", "is-active", "plumb-ok.service"])?
            .trim()
            == "active"
    );

    // Starting what already runs is a no-op job; restart gives a new process.
    ensure!(sd.start("plumb-ok.service").await? == JobResult::Done);
    ensure!(sd.unit_state("plumb-ok.service").await?.main_pid == Some(pid));
    ensure!(sd.restart("plumb-ok.service").await? == JobResult::Done);
    let st = sd.unit_state("plumb-ok.service").await?;
    ensure!(
        st.is_active() && st.main_pid.is_some_and(|p| p != pid),
        "{st:?}"
    );

    // Stop and disable.
    ensure!(sd.stop("plumb-ok.service").await? == JobResult::Done);
    let st = sd.unit_state("plumb-ok.service").await?;
    ensure!(
        st.active_state == "inactive" && st.main_pid.is_none(),
        "{st:?}"
    );
    let changes = sd.disable(&["plumb-ok.service"]).await?;
    ensure!(
        changes.iter().any(|c| c.kind == "unlink"),
        "disable changes: {changes:?}"
    );
    sd.reload().await?;
    ensure!(sd.unit_state("plumb-ok.service").await?.unit_file_state == "disabled");

    // A failing unit: the job fails and the unit says why.
    ensure!(sd.start("plumb-fail.service").await? == JobResult::Failed);
    let st = sd.unit_state("plumb-fail.service").await?;
    ensure!(
        st.is_failed() && st.result.as_deref() == Some("exit-code"),
        "{st:?}"
    );
    ensure!(st.unit_file_state == "static", "{st:?}");
    // A unit that requires it fails by dependency.
    ensure!(sd.start("plumb-dep.service").await? == JobResult::Dependency);
    sd.reset_failed("plumb-fail.service").await?;
    ensure!(sd.unit_state("plumb-fail.service").await?.active_state == "inactive");

    // Masked units are reported as such, and cannot be started.
    node.sh_ok("ln -sf /dev/null /etc/systemd/system/plumb-masked.service")?;
    sd.reload().await?;
    ensure!(sd.is_masked("plumb-masked.service").await?);
    ensure!(!sd.is_masked("plumb-fail.service").await?);
    let err = sd.start("plumb-masked.service").await.unwrap_err();
    ensure!(format!("{err:#}").contains("masked"), "{err:#}");

    // A unit that does not exist.
    let st = sd.unit_state("plumb-nonesuch.service").await?;
    ensure!(
        st.load_state == "not-found" && st.main_pid.is_none(),
        "{st:?}"
    );
    ensure!(sd.start("plumb-nonesuch.service").await.is_err());
    Ok(())
}
