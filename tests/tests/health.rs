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
        w.report_field("message")?.contains("it stays rolled back"),
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

/// The agent as it runs in production for the issue 20 tests: `plumb run` as plumb-test.service.
fn start_agent(w: &World) -> Result<()> {
    w.start_daemon()?;
    w.wait_active("plumb-test.service", "active")
}

/// The node's report says `applied_commit = want`.
fn applied(w: &World, want: &str) -> Result<Option<()>> {
    let status = w.node.exec(&["/usr/local/bin/plumb", "status"])?;
    Ok(status
        .stdout
        .contains(&format!("applied_commit = \"{want}\""))
        .then_some(()))
}

/// state.json's list of commits marked bad.
fn bad_commits(w: &World) -> Result<String> {
    let state: serde_json::Value =
        serde_json::from_str(&w.node.read_file("/var/lib/plumb/state.json")?)?;
    Ok(state["bad_commits"].to_string())
}

/// Issue 20, item 8: D-Bus restarted while a health check reads the unit's state is a fault
/// (could not check), never a verdict: the commit is not rolled back or marked bad.
#[test]
fn issue_20_dbus_restart_during_a_health_check_is_not_a_verdict() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("hc-bus")?;
    w.put("units/app.service", GOOD)?;
    w.put("host.toml", HEALTH)?;
    let c1 = w.commit("app")?;
    start_agent(&w)?;
    w.node
        .wait_until("c1 applied", Duration::from_secs(60), || applied(&w, &c1))?;

    w.put("units/app.service", GOOD2)?;
    let c2 = w.commit("app 2")?;
    w.node
        .exec_ok(&["systemctl", "kill", "-s", "HUP", "plumb-test.service"])?;
    // The new unit runs: the agent is now inside the check's settle time (3 s).
    w.node.wait_until(
        "app.service restarted with the new unit",
        Duration::from_secs(30),
        || {
            Ok((w.prop("app.service", "ExecStart")?.contains("200002")
                && w.systemctl("is-active", "app.service")? == "active")
                .then_some(()))
        },
    )?;
    w.node.exec_ok(&["systemctl", "restart", "dbus.service"])?;
    w.node
        .wait_until("c2 applied", Duration::from_secs(60), || applied(&w, &c2))?;
    w.node.wait_until(
        "the health check of c2 passed",
        Duration::from_secs(60),
        || Ok((w.report_field("last_good_commit")? == c2).then_some(())),
    )?;
    ensure!(bad_commits(&w)? == "[]", "c2 marked bad: {}", w.status()?);
    ensure!(w.prop("app.service", "ExecStart")?.contains("200002"));
    w.node.exec(&["systemctl", "stop", "plumb-test.service"])?;
    Ok(())
}

/// Issue 20, item 9: the agent killed (SIGKILL) after writing a commit, before its health check:
/// the next pass still checks it, and a failing commit is rolled back, never made "last good".
#[test]
fn issue_20_sigkill_between_write_and_check_still_checks() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("hc-kill")?;
    w.put("units/app.service", GOOD)?;
    w.put("host.toml", HEALTH)?;
    let good = w.commit("good app")?;
    start_agent(&w)?;
    w.node
        .wait_until("good applied", Duration::from_secs(60), || {
            applied(&w, &good)
        })?;

    w.put("units/app.service", BAD)?;
    let bad = w.commit("bad app")?;
    w.node
        .exec_ok(&["systemctl", "kill", "-s", "HUP", "plumb-test.service"])?;
    w.node
        .wait_until("the bad unit file written", Duration::from_secs(30), || {
            Ok(w.node
                .read_file("/etc/systemd/system/app.service")?
                .contains("app crashed")
                .then_some(()))
        })?;
    w.node
        .exec_ok(&["systemctl", "kill", "-s", "KILL", "plumb-test.service"])?;
    w.wait_active("plumb-test.service", "failed")?;

    // The next pass (a plain `plumb apply`, as after a reboot) checks the commit and rolls back.
    w.apply(false)?;
    let status = w.status()?;
    ensure!(w.report_field("outcome")? == "failed", "{status}");
    ensure!(
        w.report_field("reason")? == "health-check-failed",
        "{status}"
    );
    ensure!(w.report_field("applied_commit")? == good, "{status}");
    ensure!(w.report_field("last_good_commit")? == good, "{status}");
    ensure!(bad_commits(&w)?.contains(&bad), "{}", bad_commits(&w)?);
    w.wait_active("app.service", "active")?;
    ensure!(w.prop("app.service", "ExecStart")?.contains("200001"));
    Ok(())
}

/// Issue 20, item 10: a unit stopped by hand during its check is not the commit's fault: the report
/// says the unit was stopped, not crashed, and the commit is tried again after a cool-down.
#[test]
fn issue_20_a_unit_stopped_by_hand_during_its_check_is_retried() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("hc-hand")?;
    // A short interval: the cool-down before a retry is a few intervals.
    let cfg = w
        .node
        .read_file("/etc/plumb/agent.toml")?
        .replace("interval = \"1h\"", "interval = \"2s\"");
    w.node.write_file("/etc/plumb/agent.toml", cfg)?;
    w.put("units/app.service", GOOD)?;
    w.put("host.toml", HEALTH)?;
    let c1 = w.commit("app")?;
    w.apply(true)?;
    ensure!(w.report_field("last_good_commit")? == c1);

    w.put("units/app.service", GOOD2)?;
    let c2 = w.commit("app 2")?;
    // One pass in the background; the operator stops the unit during its check.
    let mut argv = vec!["systemd-run", "--unit=plumb-once", "--collect"];
    let sandbox = support::sandbox_properties()?;
    for p in &sandbox {
        argv.extend(["-p", p.as_str()]);
    }
    argv.extend(["/usr/local/bin/plumb", "apply"]);
    w.node.exec_ok(&argv)?;
    w.node.wait_until(
        "app.service restarted with the new unit",
        Duration::from_secs(30),
        || {
            Ok((w.prop("app.service", "ExecStart")?.contains("200002")
                && w.systemctl("is-active", "app.service")? == "active")
                .then_some(()))
        },
    )?;
    w.node.exec_ok(&["systemctl", "stop", "app.service"])?;
    w.node
        .wait_until("the pass to end", Duration::from_secs(60), || {
            Ok((w.systemctl("is-active", "plumb-once.service")? != "active").then_some(()))
        })?;
    let status = w.status()?;
    ensure!(w.report_field("outcome")? == "failed", "{status}");
    let message = w.report_field("message")?;
    ensure!(
        message.contains("stopped") && message.contains("retr"),
        "the report says the unit was stopped, not crashed, and that the commit is retried: {message}"
    );
    ensure!(w.report_field("last_good_commit")? == c1, "{status}");

    // After the cool-down the same commit is tried again, and passes.
    w.node
        .wait_until("c2 retried and good", Duration::from_secs(120), || {
            let _ = w.apply_quiet()?;
            Ok((w.report_field("last_good_commit")? == c2).then_some(()))
        })?;
    ensure!(bad_commits(&w)? == "[]", "{}", bad_commits(&w)?);
    w.wait_active("app.service", "active")?;
    ensure!(w.prop("app.service", "ExecStart")?.contains("200002"));
    Ok(())
}
