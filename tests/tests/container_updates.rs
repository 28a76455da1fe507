//! Container image updates (issue 17): a Quadlet container with `AutoUpdate=registry` follows a
//! real registry (Debian's docker-registry on the test bridge). Images are built in the node from
//! the local busybox image and pushed to it: v1 runs; v2 pushed to the same tag is updated inside
//! the window holding a disruption slot; v3, which fails the host's health check, is rolled back
//! to v2 and not tried again; v5, which does not start, is rolled back by podman; with the window
//! closed, v4 waits and the status says until when.

mod support;

use anyhow::{ensure, Context, Result};
use plumb_systest::Registry;
use std::time::Duration;
use support::World;

const URL: &str = "http://127.0.0.1:8080/";

/// Builds image `version` in the node (serving `version` at /, and /health when `healthy`) and
/// pushes it to the registry as `web:latest`, then forgets it.
/// `extra` ends the Containerfile.
fn push(w: &World, reg: &str, version: &str, healthy: bool, extra: &str) -> Result<()> {
    let dir = format!("/srv/build-{version}");
    w.node
        .write_file(&format!("{dir}/www/index.html"), format!("{version}\n"))?;
    if healthy {
        w.node.write_file(&format!("{dir}/www/health"), "ok\n")?;
    }
    w.node.write_file(
        &format!("{dir}/Containerfile"),
        format!("FROM localhost/busybox\nCOPY www/ /var/www/\n{extra}"),
    )?;
    let build = format!("localhost/web-build:{version}");
    w.node
        .exec_ok(&["podman", "build", "-q", "-t", &build, &dir])?;
    w.node.exec_ok(&[
        "podman",
        "push",
        "-q",
        "--tls-verify=false",
        &build,
        &format!("docker://{reg}/web:latest"),
    ])?;
    // As if built elsewhere: the node gets it from the registry only (with the registry's digest).
    w.node.exec_ok(&["podman", "rmi", &build])?;
    Ok(())
}

fn quadlet(reg: &str) -> String {
    format!(
        "[Container]\nImage={reg}/web:latest\nAutoUpdate=registry\nNetwork=host\n\
         Exec=httpd -f -p 8080 -h /var/www\nStopTimeout=1\n"
    )
}

/// The host's health check: /health answers within 5 s.
const HOST_TOML: &str = r#"[[health]]
command = ["/bin/sh", "-c", "for i in $(seq 50); do busybox wget -q -O /dev/null http://127.0.0.1:8080/health 2>/dev/null && exit 0; sleep 0.1; done; echo no /health; exit 1"]
timeout = "30s"
"#;

/// `[[container_updates]]` of the last report, as (field -> value) tables.
fn updates(w: &World) -> Result<Vec<toml::Table>> {
    let v: toml::Table = toml::from_str(&w.status()?).context("parsing plumb status")?;
    Ok(v.get("container_updates")
        .and_then(|u| u.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_table().cloned()).collect())
        .unwrap_or_default())
}

fn field<'a>(t: &'a toml::Table, k: &str) -> &'a str {
    t.get(k).and_then(|v| v.as_str()).unwrap_or_default()
}

/// The id of the running container.
fn container_id(w: &World) -> Result<String> {
    Ok(w.node
        .exec_ok(&[
            "podman",
            "container",
            "inspect",
            "--format",
            "{{.Id}}",
            "systemd-web",
        ])?
        .trim()
        .to_string())
}

/// The registry digest (`<reg>/web@sha256:...` in RepoDigests) of the image the container runs.
fn running_digest(w: &World, reg: &str) -> Result<String> {
    let image = w.node.exec_ok(&[
        "podman",
        "container",
        "inspect",
        "--format",
        "{{.Image}}",
        "systemd-web",
    ])?;
    let digests = w.node.exec_ok(&[
        "podman",
        "image",
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{.}} {{end}}",
        image.trim(),
    ])?;
    let prefix = format!("{reg}/web@");
    Ok(digests
        .split_whitespace()
        .find_map(|d| d.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string())
}

/// The median wall time of 3 no-op `plumb apply` runs (with systemd-run's own start).
fn noop_pass(w: &World) -> Result<Duration> {
    let mut times = vec![];
    for _ in 0..3 {
        let t = std::time::Instant::now();
        w.apply(true)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[1])
}

/// `plumb apply ARGS` in plumb.service's sandbox, like `World::apply`.
fn apply_with(w: &World, args: &[&str]) -> Result<String> {
    let sandbox = support::sandbox_properties()?;
    let mut argv = vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect"];
    for p in &sandbox {
        argv.extend(["-p", p.as_str()]);
    }
    argv.extend(["/usr/local/bin/plumb", "apply"]);
    argv.extend(args);
    let out = w.node.exec(&argv)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!(
        "--- plumb apply {args:?} (success: {})\n{text}",
        out.success()
    );
    ensure!(out.success(), "plumb apply {args:?} failed:\n{text}");
    Ok(text)
}

#[test]
fn container_follows_its_registry_inside_the_window() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("cu1")?;
    let registry = Registry::start(w.net())?;
    let reg = registry.host();
    w.node.write_file(
        "/etc/containers/registries.conf.d/50-plumb-test.conf",
        format!("[[registry]]\nlocation = \"{reg}\"\ninsecure = true\n"),
    )?;

    // The cost of following a registry, against a pass with no container to follow (printed).
    w.commit("base")?;
    w.apply(true)?;
    eprintln!(
        "measured: a no-op pass without followed containers: {:?}",
        noop_pass(&w)?
    );

    // v1 runs.
    push(&w, &reg, "v1", true, "")?;
    w.put("containers/web.container", &quadlet(&reg))?;
    w.put("host.toml", HOST_TOML)?;
    w.repo.write(
        "fleet.toml",
        "[disruption]\nmax_parallel = 1\nlock_ttl = \"30m\"\n",
    )?;
    w.commit("web follows the registry")?;
    w.apply(true)?;
    w.wait_served(URL, "v1\n")?;
    let v1 = registry.digest("web", "latest")?;
    ensure!(
        running_digest(&w, &reg)? == v1,
        "runs {} (registry: {v1}): {}",
        running_digest(&w, &reg)?,
        w.node.sh_ok("podman images --digests --no-trunc; podman image inspect --format '{{.Id}} {{.Digest}} {{.RepoDigests}}' $(podman images -q)")?
    );
    ensure!(updates(&w)?.is_empty(), "{}", w.status()?);

    // Nothing newer: nothing restarts.
    let id = container_id(&w)?;
    eprintln!(
        "measured: a no-op pass with one followed container: {:?}",
        noop_pass(&w)?
    );
    ensure!(container_id(&w)? == id, "restarted without a newer image");
    ensure!(w.report_field("outcome")? == "converged", "{}", w.status()?);

    // v2 pushed to the same tag: updated, holding a slot that is given back.
    push(&w, &reg, "v2", true, "")?;
    let out = w.apply(true)?;
    w.wait_served(URL, "v2\n")?;
    let v2 = registry.digest("web", "latest")?;
    ensure!(
        running_digest(&w, &reg)? == v2,
        "runs {} (registry: {v2}): {}",
        running_digest(&w, &reg)?,
        w.node
            .exec_ok(&["podman", "images", "--digests", "--no-trunc"])?
    );
    ensure!(v2 != v1 && v2.starts_with("sha256:"), "{v1} -> {v2}");
    let u = updates(&w)?;
    ensure!(u.len() == 1, "{}", w.status()?);
    ensure!(field(&u[0], "container") == "web.container");
    ensure!(field(&u[0], "state") == "updated", "{:?}", u[0]);
    ensure!(field(&u[0], "image") == format!("{reg}/web:latest"));
    ensure!(field(&u[0], "old_digest") == v1, "{:?} vs {v1}", u[0]);
    ensure!(field(&u[0], "new_digest") == v2, "{:?} vs {v2}", u[0]);
    ensure!(w.report_field("outcome")? == "changed", "{}", w.status()?);
    ensure!(
        out.contains("took disruption slot") && out.contains("released disruption slot"),
        "{out}"
    );
    let locks = w.repo.git(&["ls-remote", "origin", "refs/heads/locks/*"])?;
    ensure!(locks.trim().is_empty(), "a slot is still held: {locks}");

    // v3 fails the health check: v2 runs again, the pass says why.
    push(&w, &reg, "v3", false, "")?;
    w.apply(false)?;
    ensure!(w.report_field("outcome")? == "failed", "{}", w.status()?);
    ensure!(w.report_field("reason")? == "container-update-failed");
    let msg = w.report_field("message")?;
    ensure!(
        msg.contains("web.container") && msg.contains("no /health"),
        "{msg}"
    );
    w.wait_served(URL, "v2\n")?;
    ensure!(running_digest(&w, &reg)? == v2);
    let u = updates(&w)?;
    ensure!(field(&u[0], "state") == "rolled-back", "{:?}", u[0]);
    ensure!(field(&u[0], "old_digest") == v2, "{:?}", u[0]);
    let v3 = registry.digest("web", "latest")?;
    ensure!(field(&u[0], "new_digest") == v3 && v3 != v2, "{:?}", u[0]);

    // The failed image is not tried again while the registry offers it.
    let id = container_id(&w)?;
    w.apply(true)?;
    ensure!(container_id(&w)? == id, "v3 was tried again");
    ensure!(field(&updates(&w)?[0], "state") == "rolled-back");
    w.wait_served(URL, "v2\n")?;

    // v5 does not even start: podman itself puts v2 back; plumb says so and does not retry v5.
    push(&w, &reg, "v5", true, "ENTRYPOINT [\"/no/such/program\"]\n")?;
    w.apply(false)?;
    ensure!(w.report_field("reason")? == "container-update-failed");
    let u = updates(&w)?;
    ensure!(field(&u[0], "state") == "rolled-back", "{:?}", u[0]);
    ensure!(
        field(&u[0], "detail").contains("did not start"),
        "{:?}",
        u[0]
    );
    let v5 = registry.digest("web", "latest")?;
    ensure!(field(&u[0], "new_digest") == v5, "{:?} vs {v5}", u[0]);
    w.wait_served(URL, "v2\n")?;
    ensure!(running_digest(&w, &reg)? == v2);
    let id = container_id(&w)?;
    w.apply(true)?;
    ensure!(container_id(&w)? == id, "v5 was tried again");

    // A closed window (it opens in 12 h): v4 waits; status says until when.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let hour = (secs / 3600 + 12) % 24;
    w.repo.write(
        "fleet.toml",
        format!(
            "[disruption]\nmax_parallel = 1\nlock_ttl = \"30m\"\n\n[[windows]]\nhosts = [\"*\"]\n\
             start = \"{hour:02}:00\"\nduration = \"1h\"\ntimezone = \"UTC\"\n"
        ),
    )?;
    w.commit("a window")?;
    apply_with(&w, &["--ignore-rollout"])?;
    push(&w, &reg, "v4", true, "")?;
    let id = container_id(&w)?;
    w.apply(true)?;
    let u = updates(&w)?;
    ensure!(field(&u[0], "state") == "waiting", "{}", w.status()?);
    let detail = field(&u[0], "detail");
    ensure!(
        detail.contains("window opens") && detail.contains(&format!("{hour:02}:00 UTC")),
        "{detail}"
    );
    ensure!(container_id(&w)? == id, "updated with the window closed");
    w.wait_served(URL, "v2\n")?;
    drop(registry);
    Ok(())
}

#[test]
fn docker_registry_is_reachable_from_a_node() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("cu2")?;
    let registry = Registry::start(w.net())?;
    let out = w.node.exec_ok(&[
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{}/v2/", registry.host()),
    ])?;
    ensure!(out.trim() == "{}", "{out}\n{}", registry.log());
    // The node's wait: a registry that is gone is seen as gone.
    let host = registry.host();
    drop(registry);
    w.node
        .wait_until("the registry to stop", Duration::from_secs(10), || {
            Ok((!w
                .node
                .exec(&[
                    "busybox",
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    &format!("http://{host}/v2/"),
                ])?
                .success())
            .then_some(()))
        })?;
    Ok(())
}
