//! Templates in a real node (issue 13): a unit's environment comes from a template whose vars
//! are set by fleet.toml [[assign]], a role and the host; changing a var in Git changes the
//! rendered drop-in and restarts the unit. The facts the node publishes are its own.

mod support;

use anyhow::{ensure, Result};
use support::World;

const APP: &str = "[Unit]\nDescription=plumb template test\n[Service]\nExecStart=/bin/sleep 100003\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn unit_environment_from_a_template_follows_its_vars() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("tm1")?;
    w.repo.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"tm*\"]\ninclude = [\"roles/app\"]\nvars = { app = { port = 1, region = \"eu\" } }\n",
    )?;
    w.repo.write("roles/app/units/app.service", APP)?;
    w.repo.write(
        "roles/app/units/app.service.d/env.conf.tmpl",
        "[Service]\nEnvironment=PORT={{ vars.app.port }} REGION={{ vars.app.region }} NAME={{ facts.hostname }} MID={{ facts.machine_id }}\n",
    )?;
    w.repo
        .write("roles/app/host.toml", "[vars]\napp = { port = 2 }\n")?;
    w.put("host.toml", "[vars]\napp = { port = 8080 }\n")?;
    w.commit("templated unit environment")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "app.service")? == "active");
    let machine_id = w.node.read_file("/etc/machine-id")?.trim().to_string();
    let status = w.status()?;
    let report: toml::Table = toml::from_str(&status)?;
    let facts = report
        .get("facts")
        .and_then(|f| f.as_table())
        .ok_or_else(|| anyhow::anyhow!("no [facts] in {status}"))?;
    ensure!(
        facts.get("machine_id").and_then(|v| v.as_str()) == Some(machine_id.as_str()),
        "facts: {facts:?}"
    );
    let hostname = facts
        .get("hostname")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    ensure!(!hostname.is_empty(), "facts: {facts:?}");
    let env = w.prop("app.service", "Environment")?;
    ensure!(
        env.contains("PORT=8080")
            && env.contains("REGION=eu")
            && env.contains(&format!("NAME={hostname}"))
            && env.contains(&format!("MID={machine_id}")),
        "Environment={env}"
    );
    ensure!(
        w.node
            .read_file("/etc/systemd/system/app.service.d/env.conf")?
            .contains("PORT=8080"),
        "the rendered drop-in"
    );
    let pid1 = w.prop("app.service", "MainPID")?;

    // Nothing new: nothing re-rendered into a change, nothing restarted.
    w.apply(true)?;
    ensure!(w.report_field("outcome")? == "converged", "{}", w.status()?);
    ensure!(
        w.prop("app.service", "MainPID")? == pid1,
        "restarted without a change"
    );

    // The host's var changes in Git: the drop-in is rendered anew and the unit restarts with it.
    w.put("host.toml", "[vars]\napp = { port = 9090 }\n")?;
    w.commit("port 9090")?;
    w.apply(true)?;
    let pid2 = w.prop("app.service", "MainPID")?;
    ensure!(
        pid2 != pid1 && pid2 != "0",
        "not restarted: MainPID {pid1} -> {pid2}"
    );
    ensure!(
        w.prop("app.service", "Environment")?.contains("PORT=9090"),
        "Environment={}",
        w.prop("app.service", "Environment")?
    );

    // A template that does not render: the commit is rejected, the unit keeps running as it was.
    w.put("host.toml", "[vars]\napp = { prt = 1 }\n")?;
    w.repo.write(
        "roles/app/units/app.service.d/env.conf.tmpl",
        "[Service]\nEnvironment=PORT={{ vars.app.portt }}\n",
    )?;
    w.commit("typo")?;
    w.apply(false)?;
    ensure!(
        w.report_field("reason")? == "template-error",
        "{}",
        w.status()?
    );
    ensure!(
        w.prop("app.service", "MainPID")? == pid2,
        "restarted by a rejected commit"
    );
    ensure!(w.prop("app.service", "Environment")?.contains("PORT=9090"));
    Ok(())
}
