//! systemd units (issue 3): plumb inside a real trixie node installs unit files and drop-ins,
//! enables, starts, restarts, corrects drift and prunes over D-Bus; asserted with the node's own
//! systemctl.

mod support;

use anyhow::{ensure, Result};
use std::time::Duration;
use support::World;

const HELLO: &str = "[Unit]\nDescription=plumb test\n[Service]\nExecStart=/bin/sleep 100001\n[Install]\nWantedBy=multi-user.target\n";
const HELLO2: &str = "[Unit]\nDescription=plumb test\n[Service]\nExecStart=/bin/sleep 100002\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn units_installed_restarted_corrected_and_pruned() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("u1")?;

    // Added: enabled and active.
    w.put("units/hello.service", HELLO)?;
    w.commit("add hello")?;
    // `plan` shows the unit's actions and changes nothing.
    let plan = w.node.exec(&["/usr/local/bin/plumb", "plan"])?;
    ensure!(plan.status.code() == Some(2), "plan: {plan:?}");
    ensure!(
        plan.stdout.contains("would start unit hello.service"),
        "plan: {}",
        plan.stdout
    );
    ensure!(w.systemctl("is-active", "hello.service")? == "inactive");
    let out = w.apply(true)?;
    ensure!(
        out.contains("hello.service"),
        "apply did not mention the unit:\n{out}"
    );
    ensure!(w.systemctl("is-active", "hello.service")? == "active");
    ensure!(w.systemctl("is-enabled", "hello.service")? == "enabled");
    ensure!(w.resource("unit", "hello.service")?.0 == "changed");
    let pid1 = w.prop("hello.service", "MainPID")?;

    // Nothing new: converged, nothing restarted.
    w.apply(true)?;
    ensure!(w.report_field("outcome")? == "converged", "{}", w.status()?);
    ensure!(
        w.prop("hello.service", "MainPID")? == pid1,
        "restarted without a change"
    );

    // Edited in Git: restarted with the new ExecStart.
    w.put("units/hello.service", HELLO2)?;
    w.commit("edit hello")?;
    w.apply(true)?;
    let pid2 = w.prop("hello.service", "MainPID")?;
    ensure!(
        pid2 != pid1 && pid2 != "0",
        "not restarted: MainPID {pid1} -> {pid2}"
    );
    ensure!(w.prop("hello.service", "ExecStart")?.contains("100002"));

    // A drop-in: installed and applied through a restart.
    w.put(
        "units/hello.service.d/env.conf",
        "[Service]\nEnvironment=GREETING=plumb\n",
    )?;
    w.commit("drop-in")?;
    w.apply(true)?;
    ensure!(w
        .prop("hello.service", "Environment")?
        .contains("GREETING=plumb"));
    let pid3 = w.prop("hello.service", "MainPID")?;
    ensure!(pid3 != pid2, "not restarted for its drop-in");
    ensure!(w
        .node
        .read_file("/etc/systemd/system/hello.service.d/env.conf")?
        .contains("GREETING"));

    // A managed file named in restart_on restarts the unit when it changes.
    w.put("files/etc/hello.conf", "one\n")?;
    w.put(
        "host.toml",
        "[units.\"hello.service\"]\nrestart_on = [\"/etc/hello.conf\"]\n",
    )?;
    w.commit("restart_on")?;
    w.apply(true)?;
    let pid4 = w.prop("hello.service", "MainPID")?;
    w.put("files/etc/hello.conf", "two\n")?;
    w.commit("conf changed")?;
    w.apply(true)?;
    ensure!(
        w.prop("hello.service", "MainPID")? != pid4,
        "not restarted for /etc/hello.conf"
    );

    // Drift: stopped by hand.
    w.node.exec_ok(&["systemctl", "stop", "hello.service"])?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "hello.service")? == "active");
    ensure!(
        w.resource("unit", "hello.service")?.0 == "drift-corrected",
        "{}",
        w.status()?
    );
    ensure!(w.report_field("outcome")? == "drifted");

    // Drift: disabled by hand.
    w.node.exec_ok(&["systemctl", "disable", "hello.service"])?;
    w.apply(true)?;
    ensure!(w.systemctl("is-enabled", "hello.service")? == "enabled");
    ensure!(w.resource("unit", "hello.service")?.0 == "drift-corrected");

    // Drift: disabled by hand without a daemon-reload, after a converged pass kept the unit
    // file states (issue 8: they are reused while nothing they depend on changed).
    w.apply(true)?;
    ensure!(w.report_field("outcome")? == "converged", "{}", w.status()?);
    w.node.exec_ok(&[
        "rm",
        "/etc/systemd/system/multi-user.target.wants/hello.service",
    ])?;
    w.apply(true)?;
    ensure!(w.systemctl("is-enabled", "hello.service")? == "enabled");
    ensure!(
        w.resource("unit", "hello.service")?.0 == "drift-corrected",
        "{}",
        w.status()?
    );

    // Drift: the unit file edited by hand (and loaded): put back and restarted.
    w.node.write_file(
        "/etc/systemd/system/hello.service",
        "[Service]\nExecStart=/bin/sleep 666\n",
    )?;
    w.node.exec_ok(&["systemctl", "daemon-reload"])?;
    w.apply(true)?;
    ensure!(w.node.read_file("/etc/systemd/system/hello.service")? == HELLO2);
    ensure!(w.prop("hello.service", "ExecStart")?.contains("100002"));
    ensure!(w.systemctl("is-active", "hello.service")? == "active");
    ensure!(w.resource("unit", "hello.service")?.0 == "drift-corrected");

    // Detect mode only reports drift.
    w.node.exec_ok(&["systemctl", "stop", "hello.service"])?;
    let conf = w.node.read_file("/etc/plumb/agent.toml")?;
    w.node.write_file(
        "/etc/plumb/agent.toml",
        format!("{conf}mode = \"detect\"\n"),
    )?;
    w.apply(true)?;
    ensure!(
        w.systemctl("is-active", "hello.service")? != "active",
        "detect mode started it"
    );
    ensure!(w.resource("unit", "hello.service")?.0 == "drifted");
    w.node.write_file("/etc/plumb/agent.toml", conf)?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "hello.service")? == "active");

    // A timer and its service: the timer runs, its service is left to it.
    w.put(
        "units/tick.timer",
        "[Timer]\nOnCalendar=2099-01-01\n[Install]\nWantedBy=timers.target\n",
    )?;
    w.put(
        "units/tick.service",
        "[Service]\nType=oneshot\nExecStart=/bin/touch /srv/ticked\n",
    )?;
    w.commit("timer")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "tick.timer")? == "active");
    ensure!(w.systemctl("is-enabled", "tick.timer")? == "enabled");
    ensure!(
        w.node.exec(&["test", "-e", "/srv/ticked"])?.status.code() == Some(1),
        "the timer's service was started"
    );

    // A socket whose service runs: changed in Git, the socket restarts (its service stops
    // first, as systemd refuses to start a socket while its service runs).
    let sock = |mode: &str| {
        format!("[Socket]\nListenStream=/run/plumb-echo.sock\nSocketMode={mode}\n[Install]\nWantedBy=sockets.target\n")
    };
    w.put("units/echo.socket", &sock("0600"))?;
    w.put(
        "units/echo.service",
        "[Service]\nExecStart=/bin/sleep 100005\n",
    )?;
    w.commit("socket")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "echo.socket")? == "active");
    ensure!(
        w.systemctl("is-active", "echo.service")? == "inactive",
        "the socket's service was started"
    );
    w.node.exec_ok(&["systemctl", "start", "echo.service"])?;
    w.put("units/echo.socket", &sock("0660"))?;
    w.commit("socket mode")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "echo.socket")? == "active");
    ensure!(w.prop("echo.socket", "SocketMode")? == "0660");

    // A unit someone else installed (as a package would), managed by host.toml only, masked by
    // hand: reported, not unmasked.
    w.node
        .write_file("/usr/lib/systemd/system/pkgd.service", HELLO)?;
    w.node.exec_ok(&["systemctl", "daemon-reload"])?;
    w.put("host.toml", "[units.\"hello.service\"]\nrestart_on = [\"/etc/hello.conf\"]\n[units.\"pkgd.service\"]\nenabled = true\n")?;
    w.commit("pkgd")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "pkgd.service")? == "active");
    ensure!(w.systemctl("is-enabled", "pkgd.service")? == "enabled");
    w.node
        .exec_ok(&["systemctl", "mask", "--now", "pkgd.service"])?;
    w.apply(true)?;
    let (state, detail) = w.resource("unit", "pkgd.service")?;
    ensure!(
        state == "drifted" && detail.contains("masked"),
        "{state}: {detail}"
    );
    ensure!(w.systemctl("is-enabled", "pkgd.service")? == "masked");
    ensure!(w.systemctl("is-active", "pkgd.service")? == "inactive");
    w.node.exec_ok(&["systemctl", "unmask", "pkgd.service"])?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "pkgd.service")? == "active");

    // Removed from Git: stopped, disabled, files gone.
    w.del("units")?;
    w.del("host.toml")?;
    w.commit("remove units")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "hello.service")? == "inactive");
    ensure!(
        w.node
            .exec(&["test", "-e", "/etc/systemd/system/hello.service"])?
            .status
            .code()
            == Some(1)
    );
    ensure!(
        w.node
            .exec(&["test", "-e", "/etc/systemd/system/hello.service.d"])?
            .status
            .code()
            == Some(1)
    );
    ensure!(
        w.node
            .exec(&[
                "test",
                "-e",
                "/etc/systemd/system/multi-user.target.wants/hello.service"
            ])?
            .status
            .code()
            == Some(1)
    );
    ensure!(w.systemctl("is-active", "tick.timer")? == "inactive");
    ensure!(w.prop("hello.service", "LoadState")? == "not-found");
    // A unit plumb did not install is left as it is.
    ensure!(w.systemctl("is-active", "pkgd.service")? == "active");
    ensure!(w.resource("unit", "hello.service")?.0 == "pruned");
    w.apply(true)?;
    ensure!(w.report_field("outcome")? == "converged", "{}", w.status()?);
    Ok(())
}

#[test]
fn invalid_unit_rejected_and_failing_unit_reported() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("u2")?;
    w.put("units/keep.service", HELLO)?;
    let good = w.commit("good")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "keep.service")? == "active");
    let pid = w.prop("keep.service", "MainPID")?;

    // Invalid: the commit is rejected, nothing changes on the node.
    w.put("units/keep.service", "[Service]\nType=bogus\n")?;
    let bad = w.commit("bad unit")?;
    w.apply(false)?;
    ensure!(w.report_field("outcome")? == "rejected");
    let msg = w.report_field("message")?;
    ensure!(
        msg.contains("keep.service") && msg.contains("Type"),
        "message: {msg}"
    );
    ensure!(w.report_field("desired_commit")? == bad);
    ensure!(w.report_field("applied_commit")? == good);
    ensure!(w.node.read_file("/etc/systemd/system/keep.service")? == HELLO);
    ensure!(
        w.prop("keep.service", "MainPID")? == pid,
        "the old unit was touched"
    );

    // A unit missing its binary is still valid (a package may bring it); one that fails to
    // start is reported failed with its Result and its log.
    w.put("units/keep.service", HELLO)?;
    w.put(
        "units/boom.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo boom-marker-42; exit 3'\n",
    )?;
    w.put("units/later.service", "[Unit]\nRequires=not-there-yet.service\n[Service]\nExecStart=/usr/local/bin/not-installed-yet\n")?;
    w.put(
        "host.toml",
        "[units.\"later.service\"]\nstate = \"stopped\"\n",
    )?;
    w.commit("failing unit")?;
    w.apply(false)?;
    ensure!(w.report_field("outcome")? == "failed", "{}", w.status()?);
    let (state, detail) = w.resource("unit", "boom.service")?;
    ensure!(state == "failed", "{state}: {detail}");
    ensure!(
        detail.contains("exit-code") && detail.contains("boom-marker-42"),
        "detail: {detail}"
    );
    ensure!(w
        .node
        .exec(&["test", "-e", "/etc/systemd/system/later.service"])?
        .status
        .success());
    ensure!(w.prop("keep.service", "MainPID")? == pid);

    // systemd's start limit guards against crash loops, not against plumb putting a unit back.
    w.del("units/boom.service")?;
    w.put(
        "units/limited.service",
        "[Unit]\nStartLimitBurst=1\nStartLimitIntervalSec=1h\n[Service]\nExecStart=/bin/sleep 100003\n",
    )?;
    w.commit("limited")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "limited.service")? == "active");
    w.put(
        "units/limited.service",
        "[Unit]\nStartLimitBurst=1\nStartLimitIntervalSec=1h\n[Service]\nExecStart=/bin/sleep 100004\n",
    )?;
    w.commit("limited, edited")?;
    let out = w.apply(true)?;
    ensure!(
        out.contains("start limit hit"),
        "the start limit was not hit:\n{out}"
    );
    ensure!(w.systemctl("is-active", "limited.service")? == "active");
    ensure!(w.prop("limited.service", "ExecStart")?.contains("100004"));
    ensure!(w.resource("unit", "limited.service")?.0 == "changed");

    // The daemon runs its passes on its runtime's blocking pool: D-Bus jobs work from there too.
    w.put("units/daemon.service", HELLO)?;
    w.commit("for the daemon")?;
    w.start_daemon()?;
    let active = w.node.wait_until(
        "the daemon to start daemon.service",
        Duration::from_secs(120),
        || Ok((w.systemctl("is-active", "daemon.service")? == "active").then_some(())),
    );
    let journal = w.node.journal(Some("plumb-test.service"), 50);
    w.node.exec(&["systemctl", "stop", "plumb-test.service"])?;
    active.map_err(|e| e.context(format!("plumb run's journal:\n{journal}")))?;
    ensure!(w.systemctl("is-enabled", "daemon.service")? == "enabled");
    Ok(())
}

/// A unit whose reload (ExecReload) appends the config it reads to a log: each reload leaves
/// one line there, the main process stays.
fn reloader(sleep: &str) -> String {
    format!(
        "[Service]\nExecStart=/bin/sleep {sleep}\n\
         ExecReload=/bin/sh -c \"cat /etc/reloader.conf >> /run/reloader.log\"\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Issue 20 item 3: a change to a file in `reload_on` reloads the running unit (ReloadUnit, the
/// same main process); a restart in the same pass wins over the reload; a unit that is not
/// running is started, not reloaded.
#[test]
fn reload_on_reloads_instead_of_restarting() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("rl1")?;
    let reloads = || -> Result<String> {
        Ok(w.node
            .exec(&["cat", "/run/reloader.log"])?
            .stdout
            .trim()
            .to_string())
    };
    w.put("units/reloader.service", &reloader("100005"))?;
    w.put("files/etc/reloader.conf", "one\n")?;
    w.put(
        "host.toml",
        "[units.\"reloader.service\"]\nreload_on = [\"/etc/reloader.conf\"]\n",
    )?;
    w.commit("reloader")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "reloader.service")? == "active");
    ensure!(reloads()?.is_empty(), "reloaded on its first start");
    let pid = w.prop("reloader.service", "MainPID")?;

    // The file changes: `plan` names the reload; apply reloads, same main process.
    w.put("files/etc/reloader.conf", "two\n")?;
    w.commit("conf two")?;
    let plan = w.node.exec(&["/usr/local/bin/plumb", "plan"])?;
    let line = "reload unit reloader.service (/etc/reloader.conf changed)";
    ensure!(
        plan.stdout.contains(&format!("would {line}")),
        "plan:\n{}",
        plan.stdout
    );
    let out = w.apply(true)?;
    ensure!(out.contains(line), "apply:\n{out}");
    ensure!(
        w.prop("reloader.service", "MainPID")? == pid,
        "restarted, not reloaded"
    );
    ensure!(
        reloads()? == "two",
        "the reload did not run: {:?}",
        reloads()?
    );
    let (state, detail) = w.resource("unit", "reloader.service")?;
    ensure!(
        state == "changed" && detail == "reloaded (/etc/reloader.conf changed)",
        "{state}: {detail}"
    );
    ensure!(w.report_field("outcome")? == "changed", "{}", w.status()?);

    // The file and the unit file change in one commit: restarted, not reloaded.
    w.put("files/etc/reloader.conf", "three\n")?;
    w.put("units/reloader.service", &reloader("100006"))?;
    w.commit("conf three and a new unit file")?;
    w.apply(true)?;
    let pid2 = w.prop("reloader.service", "MainPID")?;
    ensure!(
        pid2 != pid && pid2 != "0",
        "not restarted: MainPID {pid} -> {pid2}"
    );
    ensure!(w.prop("reloader.service", "ExecStart")?.contains("100006"));
    ensure!(reloads()? == "two", "reloaded as well: {:?}", reloads()?);
    let (state, detail) = w.resource("unit", "reloader.service")?;
    ensure!(
        state == "changed" && detail.ends_with("restarted"),
        "{state}: {detail}"
    );

    // Stopped, then the file changes: started, not reloaded.
    w.node.exec_ok(&["systemctl", "stop", "reloader.service"])?;
    w.put("files/etc/reloader.conf", "four\n")?;
    w.commit("conf four")?;
    w.apply(true)?;
    ensure!(w.systemctl("is-active", "reloader.service")? == "active");
    ensure!(
        reloads()? == "two",
        "a stopped unit reloaded: {:?}",
        reloads()?
    );
    let (state, detail) = w.resource("unit", "reloader.service")?;
    ensure!(
        state == "drift-corrected" && detail.ends_with("started"),
        "{state}: {detail}"
    );
    Ok(())
}
