//! Real services run unattended (issue 20): nginx from Debian's own packages in a trixie node,
//! managed by plumb as an operator would: a config `check` before any restart, `validate` on the
//! staged file, `reload_on` instead of a restart, the package's service held until its config is
//! written, and a removal that leaves no dependency or enabled unit behind.

mod support;

use anyhow::{ensure, Result};
use support::World;

const SITE: &str = "/etc/nginx/conf.d/site.conf";
const EXTRA: &str = "/etc/nginx/conf.d/extra.conf";
const NGINX_CONF: &str = "/etc/nginx/nginx.conf";
const URL: &str = "http://127.0.0.1:8080/";

/// A server on 8080 answering `body`.
fn site(body: &str) -> String {
    format!("server {{\n    listen 8080;\n    location / {{ return 200 \"{body}\\n\"; }}\n}}\n")
}

/// nginx with its `check` and `reload_on`; `restart_on` nginx.conf once that is managed too,
/// with `extra` (a `[files]` table) after it.
fn host_toml(manage_conf: bool, extra: &str) -> String {
    let restart_on = if manage_conf {
        format!("restart_on = [\"{NGINX_CONF}\"]\n")
    } else {
        String::new()
    };
    format!(
        "[packages]\ninstall = [\"nginx\"]\n\n\
         [units.\"nginx.service\"]\n\
         check = [\"/usr/sbin/nginx\", \"-t\"]\n\
         {restart_on}\
         reload_on = [\"{SITE}\"]\n{extra}"
    )
}

/// Install with the service held until its config is in place (item 4); a config change reloads
/// instead of restarting (item 3); a broken file outside restart_on/reload_on is caught by
/// `check` and put back before anything restarts (item 2); `validate` refuses a bad nginx.conf
/// with nothing written.
#[test]
fn nginx_held_checked_reloaded_and_validated() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("ngx1")?;
    w.add_debian_repo()?;
    ensure!(!w.installed("nginx")?, "nginx is not in the image");

    // 1. Install: nginx starts once, with plumb's site in place (never with Debian's defaults).
    w.put("host.toml", &host_toml(false, ""))?;
    w.put(&format!("files{SITE}"), &site("v1"))?;
    let c1 = w.commit("nginx with a site")?;
    w.apply(true)?;
    ensure!(w.installed("nginx")?);
    w.wait_active("nginx.service", "active")?;
    ensure!(w.http_get(URL)?.as_deref() == Some("v1\n"), "site v1");
    let starts = w.starts("nginx.service")?;
    ensure!(
        starts == 1,
        "nginx.service started {starts} times: the package's own start was not held\n{}",
        w.node.journal(Some("nginx.service"), 20)
    );
    ensure!(w.report_field("last_good_commit")? == c1);
    let pid = w.prop("nginx.service", "MainPID")?;

    // 2. A site change is a reload: same main process, new content served.
    w.put(&format!("files{SITE}"), &site("v2"))?;
    let c2 = w.commit("site v2")?;
    let out = w.apply(true)?;
    ensure!(out.contains("reload"), "plan/apply names the reload: {out}");
    w.wait_served(URL, "v2\n")?;
    ensure!(
        w.prop("nginx.service", "MainPID")? == pid,
        "nginx was restarted, not reloaded"
    );
    ensure!(w.report_field("last_good_commit")? == c2);

    // 3. A broken file that triggers no restart: `check` catches it, the file is put back, nothing
    //    restarts, the commit is marked bad (check-failed), the last good commit stays.
    w.put(&format!("files{EXTRA}"), "this is not nginx syntax\n")?;
    let c3 = w.commit("broken extra.conf")?;
    w.apply(false)?;
    let status = w.status()?;
    ensure!(w.report_field("outcome")? == "failed", "{status}");
    ensure!(w.report_field("reason")? == "check-failed", "{status}");
    ensure!(
        w.report_field("message")?.contains("nginx -t") || status.contains("/usr/sbin/nginx -t"),
        "the message names the check: {status}"
    );
    ensure!(w.report_field("applied_commit")? == c2, "{status}");
    ensure!(w.report_field("last_good_commit")? == c2, "{status}");
    ensure!(
        !w.node.exec(&["test", "-e", EXTRA])?.success(),
        "{EXTRA} was not put back"
    );
    ensure!(
        w.prop("nginx.service", "MainPID")? == pid,
        "nginx restarted"
    );
    ensure!(
        w.http_get(URL)?.as_deref() == Some("v2\n"),
        "still serving v2"
    );
    let _ = c3;

    // 4. `validate` on nginx.conf: a broken one is refused before it is written.
    let conf = w.node.read_file(NGINX_CONF)?;
    let validate = format!(
        "\n[files.\"{NGINX_CONF}\"]\nvalidate = [\"/usr/sbin/nginx\", \"-t\", \"-q\", \"-c\", \"%s\"]\n"
    );
    w.put("host.toml", &host_toml(true, &validate))?;
    w.del(&format!("files{EXTRA}"))?;
    w.put(
        &format!("files{NGINX_CONF}"),
        &format!("{conf}\nnot nginx syntax\n"),
    )?;
    w.commit("broken nginx.conf")?;
    w.apply(false)?;
    let status = w.status()?;
    ensure!(w.report_field("reason")? == "validate-failed", "{status}");
    ensure!(
        w.node.read_file(NGINX_CONF)? == conf,
        "nginx.conf was changed"
    );
    ensure!(
        w.prop("nginx.service", "MainPID")? == pid,
        "nginx restarted"
    );

    // 5. The fix: validated, written, nginx restarted (restart_on), the commit is good.
    w.put(
        &format!("files{NGINX_CONF}"),
        &format!("{conf}\n# managed by plumb\n"),
    )?;
    let c5 = w.commit("nginx.conf managed")?;
    w.apply(true)?;
    ensure!(w.report_field("last_good_commit")? == c5, "{}", w.status()?);
    w.wait_active("nginx.service", "active")?;
    ensure!(w.prop("nginx.service", "MainPID")? != pid, "restart_on");
    ensure!(w.http_get(URL)?.as_deref() == Some("v2\n"));
    Ok(())
}

/// Removal (item 5): what plumb's install brought is removed again (nginx and the dependencies
/// nothing else uses), no enabled unit of a removed package stays; what was there before stays.
#[test]
fn nginx_removed_with_what_its_install_brought() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("ngx2")?;
    w.add_debian_repo()?;
    let before = w
        .node
        .exec_ok(&["dpkg-query", "-W", "-f", "${Package}\\n"])?;
    w.put("host.toml", "[packages]\ninstall = [\"nginx\"]\n")?;
    w.commit("nginx")?;
    w.apply(true)?;
    ensure!(w.installed("nginx")? && w.installed("nginx-common")?);
    // host.toml names no unit: the package's own service, held during the install, is started
    // by plumb once, as the package would have.
    w.wait_active("nginx.service", "active")?;
    let starts = w.starts("nginx.service")?;
    ensure!(starts == 1, "nginx.service started {starts} times");
    ensure!(
        !w.node
            .exec(&["test", "-e", "/usr/sbin/policy-rc.d"])?
            .success(),
        "the hold on service starts was left in place"
    );

    // A hold a killed pass left behind goes at the start of the next pass, even one that
    // installs nothing.
    w.node.write_file(
        "/usr/sbin/policy-rc.d",
        "#!/bin/sh\n# plumb: service starts held while plumb installs packages; removed when it is done.\nexit 101\n",
    )?;
    w.node.exec_ok(&["chmod", "755", "/usr/sbin/policy-rc.d"])?;

    w.put("host.toml", "")?;
    w.commit("no nginx")?;
    w.apply(true)?;
    ensure!(
        !w.node
            .exec(&["test", "-e", "/usr/sbin/policy-rc.d"])?
            .success(),
        "a stale hold on service starts was not cleared"
    );
    let status = w.status()?;
    ensure!(
        status.contains("nginx-common"),
        "the report says what went with nginx: {status}"
    );
    for pkg in ["nginx", "nginx-common"] {
        ensure!(!w.installed(pkg)?, "{pkg} left installed");
    }
    let after = w
        .node
        .exec_ok(&["dpkg-query", "-W", "-f", "${Package}\\n"])?;
    ensure!(
        after == before,
        "packages differ from before the install:\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(
        w.systemctl("is-enabled", "nginx.service")? != "enabled",
        "nginx.service still enabled"
    );
    ensure!(
        !w.node
            .exec(&[
                "test",
                "-e",
                "/etc/systemd/system/multi-user.target.wants/nginx.service"
            ])?
            .success(),
        "an enabled-unit link is left"
    );
    ensure!(w.systemctl("is-active", "nginx.service")? != "active");
    Ok(())
}
