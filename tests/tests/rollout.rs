//! Issue 15 on real nodes: four trixie nodes running plumb.service (systemd, `plumb run`) read
//! each other's status branches and move a commit through fleet.toml's waves: the canary, then
//! the two stores, then the last host. The order is checked from their status branches
//! (`applied_at`, and the `waiting` the later waves reported while they waited).

use anyhow::{ensure, Context, Result};
use plumb::rollout::gate::parse_time;
use plumb::status::report::Report;
use plumb_systest::{run, FleetRepo, GitServer, Network, Node, NodeImage};
use std::process::Command;
use std::time::Duration;

const HOSTS: [&str; 4] = ["ro-canary", "ro-store-1", "ro-store-2", "ro-last"];
const SOAK: i64 = 3;

fn report(repo: &FleetRepo, host: &str) -> Result<Option<Report>> {
    if repo.rev(&format!("refs/heads/status/{host}"))?.is_none() {
        return Ok(None);
    }
    let text = repo.show(&format!("status/{host}"), "status.toml")?;
    Ok(Some(Report::from_toml(&text)?))
}

/// Waits until every host reports `commit` applied; returns their reports.
fn wait_all_on(node: &Node, repo: &FleetRepo, commit: &str) -> Result<Vec<Report>> {
    node.wait_until(
        &format!("all hosts on {}", &commit[..7]),
        Duration::from_secs(180),
        || {
            let mut all = Vec::new();
            for h in HOSTS {
                match report(repo, h)? {
                    Some(r) if r.applied_commit == commit && r.waiting.is_empty() => all.push(r),
                    _ => return Ok(None),
                }
            }
            Ok(Some(all))
        },
    )
}

/// plumb.service as shipped, running the agent copied to /usr/local/bin.
fn start_service(node: &Node, git: &GitServer) -> Result<()> {
    node.install_plumb()?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!(
            "repo = \"{}\"\nhost = \"{}\"\ninterval = \"2s\"\n",
            git.url("fleet.git"),
            node.name()
        ),
    )?;
    let unit = include_str!("../../systemd/plumb.service")
        .replace("/usr/bin/plumb", "/usr/local/bin/plumb");
    node.write_file("/etc/systemd/system/plumb.service", unit)?;
    node.exec_ok(&["systemctl", "daemon-reload"])?;
    node.exec_ok(&["systemctl", "start", "plumb.service"])?;
    Ok(())
}

#[test]
fn a_commit_moves_canary_then_two_then_one() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let motd = |v: &str| -> Vec<(String, String)> {
        HOSTS
            .iter()
            .map(|h| (format!("hosts/{h}/files/etc/motd"), v.to_string()))
            .collect()
    };
    let files = |v: &str, fleet: &str| -> Result<String> {
        for (p, c) in motd(v) {
            repo.write(&p, c)?;
        }
        repo.write("fleet.toml", fleet)?;
        repo.commit(&format!("motd {v}"))
    };
    let c1 = files("v1\n", "")?;
    let nodes = Node::boot_many(&image, &net, &HOSTS)?;
    for n in &nodes {
        start_service(n, &git)?;
    }
    wait_all_on(&nodes[0], &repo, &c1)?;

    let waves = format!(
        "[rollout]\nwaves = [[\"ro-canary\"], [\"ro-store-*\"], [\"*\"]]\nsoak = \"{SOAK}s\"\nsuccess = \"100%\"\n"
    );
    let c2 = files("v2\n", &waves)?;
    let reports = wait_all_on(&nodes[0], &repo, &c2)?;
    for n in &nodes {
        ensure!(n.read_file("/etc/motd")? == "v2\n", "{}", n.name());
    }
    let at: Vec<i64> = reports
        .iter()
        .map(|r| parse_time(&r.applied_at).context("applied_at"))
        .collect::<Result<_>>()?;
    let (canary, s1, s2, last) = (at[0], at[1], at[2], at[3]);
    ensure!(
        canary + SOAK <= s1.min(s2) && s1.max(s2) + SOAK <= last,
        "order from applied_at: canary {canary}, stores {s1} {s2}, last {last}"
    );
    // While they waited, the later waves said why on their branches.
    let log = |host: &str| -> Result<String> {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(repo.bare_path())
            .args(["log", "-p", &format!("status/{host}")]))?
        .check("git log")
    };
    ensure!(
        log("ro-last")?.contains("wave 3 waits for wave 2"),
        "ro-last never waited for the stores"
    );
    ensure!(
        log("ro-store-1")?.contains("wave 2 waits for wave 1"),
        "ro-store-1 never waited for the canary"
    );
    eprintln!(
        "rollout: stores {}s and {}s after the canary, the last host {}s after the later store",
        s1 - canary,
        s2 - canary,
        last - s1.max(s2)
    );
    Ok(())
}
