//! Issue 5 on real nodes: agents on two Debian nodes (host name from the machine, default
//! config) push their reports from inside the node to `status/<host>` on the host's git server,
//! and `plumb fleet` on the host lists them, current or behind.

use anyhow::{ensure, Context, Result};
use plumb_systest::{plumb_bin, run, GitServer, Network, Node, NodeImage};
use std::process::Command;

/// `plumb apply` in the node, as a transient unit like the service runs it.
fn apply(node: &Node) -> Result<()> {
    let out = node.exec(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--collect",
        "/usr/local/bin/plumb",
        "apply",
    ])?;
    ensure!(
        out.success(),
        "{}: plumb apply: {}{}",
        node.name(),
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// `plumb fleet --json` from the host, as (host, outcome, commit state, stale).
fn fleet(git: &GitServer) -> Result<Vec<(String, String, String, bool)>> {
    let out = run(Command::new(plumb_bin()?).args([
        "fleet",
        "--config",
        "/nonexistent/agent.toml",
        "--repo",
        &git.local_url("fleet.git"),
        "--json",
    ]))?
    .check("plumb fleet")?;
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out).context("plumb fleet --json")?;
    Ok(lines
        .iter()
        .map(|l| {
            (
                l["host"].as_str().unwrap_or_default().to_string(),
                l["outcome"].as_str().unwrap_or_default().to_string(),
                l["commit"].as_str().unwrap_or_default().to_string(),
                l["stale"].as_bool().unwrap_or(true),
            )
        })
        .collect())
}

#[test]
fn nodes_push_status_branches_and_plumb_fleet_lists_them() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let names = ["stat-a", "stat-b"];
    let files = |a: &'static str| {
        vec![
            ("hosts/stat-a/files/etc/motd", a),
            ("hosts/stat-b/files/etc/motd", "b\n"),
        ]
    };
    let c1 = repo.commit_files(&files("a1\n"), "first")?;
    let nodes = Node::boot_many(&image, &net, &names)?;
    for node in &nodes {
        node.install_plumb()?;
        // No `host`: the machine's host name names the directory and the status branch.
        node.write_file(
            "/etc/plumb/agent.toml",
            format!("repo = \"{}\"\n", git.url("fleet.git")),
        )?;
        apply(node)?;
        let report = repo.show(&format!("status/{}", node.name()), "status.toml")?;
        ensure!(
            report.contains(&format!("host = \"{}\"", node.name()))
                && report.contains(&format!("applied_commit = \"{c1}\""))
                && report.contains("outcome = \"changed\""),
            "{}: {report}",
            node.name()
        );
        let status = node.exec_ok(&["plumb", "status"])?;
        ensure!(
            status.contains("[push]") && !status.contains("last_error"),
            "{}: {status}",
            node.name()
        );
    }
    let s = |x: &str| x.to_string();
    let got = fleet(&git)?;
    ensure!(
        got == [
            (s("stat-a"), s("changed"), s("current"), false),
            (s("stat-b"), s("changed"), s("current"), false),
        ],
        "{got:?}"
    );

    // A new commit that only stat-a has applied yet.
    repo.commit_files(&files("a2\n"), "second")?;
    apply(&nodes[0])?;
    ensure!(nodes[0].read_file("/etc/motd")? == "a2\n");
    let got = fleet(&git)?;
    ensure!(
        got == [
            (s("stat-a"), s("changed"), s("current"), false),
            (s("stat-b"), s("changed"), s("behind"), false),
        ],
        "{got:?}"
    );
    let log = run(Command::new("git")
        .arg("--git-dir")
        .arg(repo.bare_path())
        .args(["log", "--format=%s", "status/stat-a"]))?
    .check("git log")?;
    ensure!(
        log.lines().count() == 2 && log.starts_with("stat-a: changed at "),
        "{log}"
    );
    Ok(())
}
