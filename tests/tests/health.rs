//! Health checks and rollback (issue 7), in a real trixie node with plumb running as it ships:
//! a commit whose unit fails its `[[health]]` check is rolled back to the previous unit, which
//! runs again; the report says `failed` and names the check; the bad commit is not retried; a
//! newer commit clears it.

mod support;

use anyhow::{ensure, Result};
use std::time::Duration;
use support::World;

const GOOD: &str = "[Unit]\nDescription=plumb health test\n[Service]\nExecStart=/bin/sleep 200001\n[Install]\nWantedBy=multi-user.target\n";
/// Starts fine, then dies after a second: only the settle time of the check catches it.
const BAD: &str = "[Unit]\nDescription=plumb health test\n[Service]\nExecStart=/bin/sh -c 'sleep 1; echo app crashed; exit 3'\n[Install]\nWantedBy=multi-user.target\n";
const GOOD2: &str = "[Unit]\nDescription=plumb health test\n[Service]\nExecStart=/bin/sleep 200002\n[Install]\nWantedBy=multi-user.target\n";
const HEALTH: &str = "[[health]]\nunit = \"app.service\"\ntimeout = \"20s\"\n";

#[test]
fn failing_unit_check_rolls_back_to_the_previous_unit() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("hc1")?;
    w.put("units/app.service", GOOD)?;
    w.put("host.toml", HEALTH)?;
    let good = w.commit("good app")?;
    w.apply(true)?;
    ensure!(w.report_field("outcome")? == "changed", "{}", w.status()?);
    ensure!(w.report_field("last_good_commit")? == good);
    ensure!(w.systemctl("is-active", "app.service")? == "active");

    // The bad commit: applied, checked, rolled back.
    w.put("units/app.service", BAD)?;
    let bad = w.commit("bad app")?;
    w.apply(false)?;
    let status = w.status()?;
    ensure!(w.report_field("outcome")? == "failed", "{status}");
    let message = w.report_field("message")?;
    ensure!(
        message.contains("health check `unit app.service` failed")
            && message.contains(&format!(
                "rolled back from {} to the last good commit {}",
                &bad[..7],
                &good[..7]
            )),
        "{message}"
    );
    ensure!(w.report_field("desired_commit")? == bad, "{status}");
    ensure!(w.report_field("applied_commit")? == good, "{status}");
    ensure!(w.report_field("last_good_commit")? == good, "{status}");
    // The previous unit runs again.
    w.wait_active("app.service", "active")?;
    ensure!(w.prop("app.service", "ExecStart")?.contains("200001"));

    // Not retried on the next pass (nor after a restart: it is kept in state.json).
    w.apply(false)?;
    ensure!(
        w.report_field("message")?
            .contains("its health checks failed before"),
        "{}",
        w.status()?
    );
    ensure!(w.prop("app.service", "ExecStart")?.contains("200001"));
    ensure!(w.report_field("applied_commit")? == good);

    // A newer commit is applied, and becomes the last good one.
    w.put("units/app.service", GOOD2)?;
    let fixed = w.commit("fixed app")?;
    w.apply(true)?;
    ensure!(
        w.report_field("last_good_commit")? == fixed,
        "{}",
        w.status()?
    );
    w.wait_active("app.service", "active")?;
    ensure!(w.prop("app.service", "ExecStart")?.contains("200002"));
    Ok(())
}

/// D-Bus restarted under the running agent: the next pass opens a new connection and applies.
#[test]
fn dbus_restarted_under_the_running_agent() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("db1")?;
    w.put("units/app.service", GOOD)?;
    let c1 = w.commit("app")?;
    w.node.exec_ok(&[
        "systemd-run",
        "--unit=plumb-agent",
        "/usr/local/bin/plumb",
        "run",
    ])?;
    let applied = |want: &str| -> Result<Option<()>> {
        let status = w.node.exec(&["/usr/local/bin/plumb", "status"])?;
        Ok(status
            .stdout
            .contains(&format!("applied_commit = \"{want}\""))
            .then_some(()))
    };
    w.node
        .wait_until("the agent to apply c1", Duration::from_secs(60), || {
            applied(&c1)
        })?;
    w.wait_active("app.service", "active")?;
    let agent_pid = w.prop("plumb-agent.service", "MainPID")?;

    let bus_pid = w.prop("dbus.service", "MainPID")?;
    w.node.exec_ok(&["systemctl", "restart", "dbus.service"])?;
    w.wait_active("dbus.service", "active")?;
    ensure!(
        w.prop("dbus.service", "MainPID")? != bus_pid,
        "D-Bus did not restart"
    );

    w.put("units/app.service", GOOD2)?;
    let c2 = w.commit("app 2")?;
    w.node
        .exec_ok(&["systemctl", "kill", "-s", "HUP", "plumb-agent.service"])?;
    w.node
        .wait_until("the agent to apply c2", Duration::from_secs(60), || {
            applied(&c2)
        })?;
    ensure!(w.report_field("outcome")? == "changed", "{}", w.status()?);
    w.wait_active("app.service", "active")?;
    ensure!(w.prop("app.service", "ExecStart")?.contains("200002"));
    ensure!(
        w.prop("plumb-agent.service", "MainPID")? == agent_pid,
        "the agent restarted"
    );
    w.node.exec(&["systemctl", "stop", "plumb-agent.service"])?;
    Ok(())
}
