//! The same figures with systemd units: plumb in a Debian node (systemd-nspawn, real systemd over
//! D-Bus, booted by the system-test harness) managing N files and M units, fetched over the test
//! bridge from `git daemon` on the host.

use crate::fixture;
use crate::measure::{self, Stats};
use anyhow::{bail, Context, Result};
use plumb_systest::{GitServer, Network, Node, NodeImage};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "bench-units";

pub struct NodeFigures {
    pub files: usize,
    pub units: usize,
    pub first_wall_ms: Stats,
    pub noop_wall_ms: Stats,
    pub noop_cpu_ms: Stats,
    pub idle_rss_mib: Stats,
}

/// A unit that stays running and is enabled.
fn unit(i: usize) -> String {
    format!(
        "[Unit]\nDescription=plumb benchmark unit {i}\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

pub fn run(
    plumb: &Path,
    files: usize,
    units: usize,
    runs: usize,
    interval_s: u64,
) -> Result<NodeFigures> {
    std::env::set_var("PLUMB_BIN", plumb);
    let image = NodeImage::ensure().context("building or finding the node image")?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let fleet = git.create_repo("fleet.git")?;
    git.create_repo("status.git")?;
    for i in 0..files {
        fleet.write(
            &format!("hosts/{HOST}/files/{}", fixture::file_path(i)),
            fixture::file_content(i),
        )?;
    }
    for i in 0..units {
        fleet.write(&format!("hosts/{HOST}/units/bench-{i:02}.service"), unit(i))?;
    }
    fleet.commit("bench fleet with units")?;
    let node = Node::boot(&image, &net, HOST)?;
    node.install_plumb()?;
    node.write_file(
        "/etc/plumb/agent.toml",
        format!(
            "repo = \"{}\"\ninterval = \"{interval_s}s\"\n[status]\nrepo = \"{}\"\n",
            git.url("fleet.git"),
            git.url("status.git")
        ),
    )?;
    let mut f = NodeFigures {
        files,
        units,
        first_wall_ms: Stats::default(),
        noop_wall_ms: Stats::default(),
        noop_cpu_ms: Stats::default(),
        idle_rss_mib: Stats::default(),
    };
    // Measured from the host: nsenter forks plumb inside the node and waits for it.
    let apply = || -> Result<measure::Run> {
        measure::run(
            Command::new("nsenter")
                .arg("-t")
                .arg(node.leader().to_string())
                .args([
                    "-a",
                    "--",
                    "env",
                    "PLUMB_LOG=info",
                    "/usr/local/bin/plumb",
                    "apply",
                ]),
        )?
        .expect_code("plumb apply in the node", &[0])
    };
    let r = apply()?;
    f.first_wall_ms.push(r.wall.as_secs_f64() * 1e3);
    let last = format!("bench-{:02}.service", units - 1);
    let active = node.exec(&["systemctl", "is-active", "bench-00.service", &last])?;
    if active.stdout.lines().any(|l| l.trim() != "active") {
        bail!(
            "units not active after the first apply: {}\nplumb apply said:\n{}",
            active.stdout,
            r.stderr
        );
    }
    apply()?; // converged report pushed; not counted
    for _ in 0..runs {
        let r = apply()?;
        if !r.stderr.contains("converged") {
            bail!("a no-op pass in the node did not converge:\n{}", r.stderr);
        }
        f.noop_wall_ms.push(r.wall.as_secs_f64() * 1e3);
        f.noop_cpu_ms.push(r.cpu.as_secs_f64() * 1e3);
    }
    // plumb run as a transient service, like plumb.service; sampled from the host's /proc.
    node.exec_ok(&[
        "systemd-run",
        "--unit=plumb-bench",
        "--collect",
        "/usr/local/bin/plumb",
        "run",
    ])?;
    let pid_in_node: u32 = node
        .exec_ok(&["systemctl", "show", "-P", "MainPID", "plumb-bench.service"])?
        .trim()
        .parse()
        .context("reading plumb-bench's MainPID")?;
    let pid = host_pid(pid_in_node, node.leader())?;
    // Let it make 4 passes, then sample: a pass takes well under a second of each interval, so
    // the median of the samples is the idle RSS.
    let interval = Duration::from_secs(interval_s);
    std::thread::sleep(interval * 4);
    let end = Instant::now() + interval * 2;
    while Instant::now() < end {
        f.idle_rss_mib
            .push(measure::proc_status_kib(pid, "VmRSS")? as f64 / 1024.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = node.exec(&["systemctl", "stop", "plumb-bench.service"]);
    Ok(f)
}

/// The host PID of the node's process `pid` (its PID namespace is the leader's).
fn host_pid(pid: u32, leader: i32) -> Result<u32> {
    let ns = std::fs::read_link(format!("/proc/{leader}/ns/pid"))?;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(host) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{host}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap_or_default();
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
        if nspid.and_then(|v| v.split_whitespace().last()) == Some(&pid.to_string()) {
            return Ok(host);
        }
    }
    bail!("no host process for pid {pid} of the node")
}
