//! The same figures with systemd units: plumb in a Debian node (systemd-nspawn, real systemd over
//! D-Bus, booted by the system-test harness) managing N files and M units, fetched over the test
//! bridge from `git daemon` on the host; then `puppet apply` and `ansible-pull` (Debian's puppet
//! and ansible-core, installed in a variant of the node image) converging the same files and
//! units in the same node.

use crate::fixture;
use crate::measure::{self, Stats};
use crate::peers::PeerFigures;
use anyhow::{bail, Context, Result};
use plumb_systest::{GitServer, Network, Node, NodeImage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "bench-units";
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct NodeFigures {
    pub files: usize,
    pub units: usize,
    pub first_wall_ms: Stats,
    pub first_rss_mib: Stats,
    pub noop_wall_ms: Stats,
    pub noop_cpu_ms: Stats,
    pub noop_rss_mib: Stats,
    pub idle_rss_mib: Stats,
    /// `puppet apply` on the same files and units in the same node, when peers run.
    pub puppet: Option<PeerFigures>,
    pub puppet_version: String,
    /// `ansible-pull` on the first `ansible.files` files and the same units, when peers run.
    pub ansible: Option<PeerFigures>,
    pub ansible_version: String,
}

/// The peers to run in the node after plumb.
pub struct NodePeers {
    pub puppet_runs: usize,
    pub ansible_runs: usize,
    /// Files ansible-pull converges (it takes ~1-2 s per file).
    pub ansible_files: usize,
}

/// A unit that stays running and is enabled.
fn unit(i: usize) -> String {
    format!(
        "[Unit]\nDescription=plumb benchmark unit {i}\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// plumb's figures in a node, then, with `peers`, puppet's and ansible-pull's on the same work in
/// the same node (in the image variant with both installed; plumb is then measured in it too).
pub fn run(
    plumb: &Path,
    files: usize,
    units: usize,
    runs: usize,
    interval_s: u64,
    peers: Option<NodePeers>,
) -> Result<NodeFigures> {
    std::env::set_var("PLUMB_BIN", plumb);
    let image = match peers {
        Some(_) => NodeImage::with_packages(&["puppet", "ansible-core"]),
        None => NodeImage::ensure(),
    }
    .context("building or finding the node image")?;
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
    if let Some(p) = &peers {
        fleet.write(
            "ansible/node.yml",
            playbook(p.ansible_files.min(files), units),
        )?;
    }
    fleet.commit("bench fleet with units")?;
    let node = Node::boot(&image, &net, HOST)?;
    // The node's resolver points to a server it cannot reach: resolve the host's own name like a
    // Debian install does, or every lookup of it (puppet makes several per run) waits 10 s.
    node.sh_ok(&format!("echo '127.0.1.1 {HOST}' >> /etc/hosts"))?;
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
        first_rss_mib: Stats::default(),
        noop_wall_ms: Stats::default(),
        noop_cpu_ms: Stats::default(),
        noop_rss_mib: Stats::default(),
        idle_rss_mib: Stats::default(),
        puppet: None,
        puppet_version: String::new(),
        ansible: None,
        ansible_version: String::new(),
    };
    let apply = || -> Result<measure::Run> {
        measure::run(&mut in_node(
            &node,
            &["env", "PLUMB_LOG=info", "/usr/local/bin/plumb", "apply"],
        ))?
        .expect_code("plumb apply in the node", &[0])
    };
    let r = apply()?;
    f.first_wall_ms.push(r.wall.as_secs_f64() * 1e3);
    f.first_rss_mib.push(mib(&r));
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
        f.noop_rss_mib.push(mib(&r));
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
    if let Some(p) = peers {
        eprintln!("puppet apply in the node ({files} files, {units} units)");
        f.puppet_version = node.exec_ok(&["puppet", "--version"])?.trim().to_string();
        f.puppet = Some(puppet(
            &node,
            &git.url("fleet.git"),
            files,
            units,
            p.puppet_runs,
        )?);
        let files = p.ansible_files.min(files);
        eprintln!("ansible-pull in the node ({files} files, {units} units)");
        f.ansible_version = node
            .exec_ok(&["ansible-pull", "--version"])?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        f.ansible = Some(ansible(
            &node,
            &git.url("fleet.git"),
            files,
            units,
            p.ansible_runs,
        )?);
    }
    Ok(f)
}

/// `argv` run inside the node by nsenter, measured from the host: nsenter forks the command in
/// the node's namespaces and waits for it, so wait4 on nsenter sees its time and peak RSS.
fn in_node(node: &Node, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t")
        .arg(node.leader().to_string())
        .args(["-a", "--"])
        .args(argv)
        .env_clear()
        .env("PATH", NODE_PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8");
    c
}

fn mib(r: &measure::Run) -> f64 {
    r.max_rss_kib as f64 / 1024.0
}

/// `puppet apply` in the node of a manifest with the same files and units, sourced from a clone
/// of the same repository (made once, not timed): `runs` first runs, each on a node cleared of
/// the files and units (plumb's, then puppet's), and `runs` no-op runs.
fn puppet(node: &Node, url: &str, files: usize, units: usize, runs: usize) -> Result<PeerFigures> {
    let checkout = "/root/puppet-checkout";
    node.exec_ok(&["git", "clone", "-q", "--depth", "1", url, checkout])?;
    let host_dir = PathBuf::from(format!("{checkout}/hosts/{HOST}"));
    let mut manifest = fixture::manifest(files, Path::new(""), &host_dir.join("files"));
    // systemd reads new unit files on a daemon-reload: once, after the unit files changed.
    manifest.push_str(
        "exec { 'systemctl daemon-reload': path => ['/usr/bin', '/bin'], refreshonly => true }\n",
    );
    for i in 0..units {
        let name = format!("bench-{i:02}.service");
        manifest.push_str(&format!(
            "file {{ '/etc/systemd/system/{name}': ensure => file, source => '{}/units/{name}', mode => '0644', owner => 'root', group => 'root', notify => Exec['systemctl daemon-reload'] }}\n\
             service {{ '{name}': ensure => running, enable => true, require => Exec['systemctl daemon-reload'] }}\n",
            host_dir.display()
        ));
    }
    node.write_file("/root/bench.pp", manifest)?;
    let apply = || {
        measure::run(&mut in_node(
            node,
            &["puppet", "apply", "--detailed-exitcodes", "/root/bench.pp"],
        ))
    };
    let mut f = PeerFigures {
        files,
        ..Default::default()
    };
    let root = PathBuf::from(format!("/proc/{}/root", node.leader()));
    for i in 0..runs {
        clear(node, units, "")?;
        eprintln!("  puppet apply in the node, first run {}/{runs}", i + 1);
        // --detailed-exitcodes: 2 = changes applied, 0 = nothing to do.
        let r = apply()?.expect_code("puppet apply in the node (first run)", &[2])?;
        crate::plumb::check_files(&root, files)?;
        check_units(node, units, "puppet")?;
        f.add(true, &r);
        eprintln!("  puppet apply in the node, no-op run {}/{runs}", i + 1);
        let r = apply()?.expect_code("puppet apply in the node (no-op run)", &[0])?;
        f.add(false, &r);
    }
    Ok(f)
}

fn unit_names(units: usize) -> Vec<String> {
    (0..units)
        .map(|i| format!("bench-{i:02}.service"))
        .collect()
}

/// Stops, disables and removes the benchmark's units and files (whoever made them), and
/// removes `also` (a peer's own state, so that its first run starts from nothing).
fn clear(node: &Node, units: usize, also: &str) -> Result<()> {
    let names = unit_names(units);
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("/etc/systemd/system/{n}"))
        .collect();
    node.sh_ok(&format!(
        "set -e; systemctl disable --now {}; rm -f {}; rm -rf /etc/bench {also}; systemctl daemon-reload",
        names.join(" "),
        paths.join(" ")
    ))?;
    Ok(())
}

/// The first and last units are enabled and active after `tool`'s first run.
fn check_units(node: &Node, units: usize, tool: &str) -> Result<()> {
    let names = unit_names(units);
    let (first, last) = (names[0].as_str(), names[units - 1].as_str());
    let states = node.exec(&["systemctl", "is-enabled", first, last])?.stdout
        + &node.exec(&["systemctl", "is-active", first, last])?.stdout;
    if states
        .lines()
        .any(|l| !matches!(l.trim(), "enabled" | "active"))
    {
        bail!("units not enabled and active after {tool}'s first run:\n{states}");
    }
    Ok(())
}

/// The playbook ansible-pull runs in the node, from the fleet repository: the first `files` files
/// and directories with `copy`, the unit files with `copy` notifying one daemon-reload (flushed
/// before the units start), and `systemd` enabled + started per unit.
fn playbook(files: usize, units: usize) -> String {
    let mut y = format!(
        "# Generated by plumb-bench: the same files and units plumb manages in the node.\n\
         - hosts: localhost\n  gather_facts: false\n  vars:\n    src: \"{{{{ playbook_dir }}}}/../hosts/{HOST}\"\n  tasks:\n\
         \x20   - name: directories\n      ansible.builtin.file:\n        path: \"/{{{{ item }}}}\"\n        state: directory\n        mode: \"0755\"\n      loop:\n"
    );
    for d in fixture::dirs(files) {
        y.push_str(&format!("        - {d}\n"));
    }
    y.push_str(
        "    - name: files\n      ansible.builtin.copy:\n        src: \"{{ src }}/files/{{ item }}\"\n        dest: \"/{{ item }}\"\n        mode: \"0644\"\n        owner: root\n        group: root\n      loop:\n",
    );
    for i in 0..files {
        y.push_str(&format!("        - {}\n", fixture::file_path(i)));
    }
    let names = unit_names(units);
    y.push_str(
        "    - name: unit files\n      ansible.builtin.copy:\n        src: \"{{ src }}/units/{{ item }}\"\n        dest: \"/etc/systemd/system/{{ item }}\"\n        mode: \"0644\"\n        owner: root\n        group: root\n      loop: &units\n",
    );
    for n in &names {
        y.push_str(&format!("        - {n}\n"));
    }
    y.push_str(
        "      notify: daemon-reload\n\
         \x20   - name: reload before starting\n      ansible.builtin.meta: flush_handlers\n\
         \x20   - name: units\n      ansible.builtin.systemd:\n        name: \"{{ item }}\"\n        enabled: true\n        state: started\n      loop: *units\n\
         \x20 handlers:\n    - name: daemon-reload\n      ansible.builtin.systemd:\n        daemon_reload: true\n",
    );
    y
}

/// `ansible-pull` in the node: clones the fleet repository from the git server on the bridge
/// (into a checkout removed before each first run) and runs `ansible/node.yml`; `runs` first
/// runs, each on a node cleared of the files and units, and `runs` no-op runs (changed=0).
fn ansible(node: &Node, url: &str, files: usize, units: usize, runs: usize) -> Result<PeerFigures> {
    let checkout = "/root/ansible-checkout";
    let apply = || {
        measure::run(&mut in_node(
            node,
            &[
                "env",
                "ANSIBLE_LOCALHOST_WARNING=False",
                "ANSIBLE_NOCOLOR=1",
                "ansible-pull",
                "-U",
                url,
                "-C",
                "main",
                "-d",
                checkout,
                "-i",
                "localhost,",
                "-c",
                "local",
                "ansible/node.yml",
            ],
        ))
    };
    let mut f = PeerFigures {
        files,
        ..Default::default()
    };
    let root = PathBuf::from(format!("/proc/{}/root", node.leader()));
    for i in 0..runs {
        clear(node, units, checkout)?;
        eprintln!("  ansible-pull in the node, first run {}/{runs}", i + 1);
        let r = apply()?.expect_code("ansible-pull in the node (first run)", &[0])?;
        crate::plumb::check_files(&root, files)?;
        check_units(node, units, "ansible-pull")?;
        f.add(true, &r);
        eprintln!("  ansible-pull in the node, no-op run {}/{runs}", i + 1);
        let r = apply()?.expect_code("ansible-pull in the node (no-op run)", &[0])?;
        if !r.stdout.contains("changed=0") {
            bail!(
                "ansible-pull's no-op run in the node changed something:\n{}",
                r.stdout
            );
        }
        f.add(false, &r);
    }
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
