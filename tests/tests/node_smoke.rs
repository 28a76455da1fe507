//! Proves the harness: nodes boot, reach the host's git server, run podman, answer on D-Bus.

use anyhow::{ensure, Result};
use plumb_systest::{run, GitServer, Network, Node, NodeImage};
use std::process::Command;
use std::time::Instant;

#[test]
fn two_nodes_boot_and_reach_the_host() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let t = Instant::now();
    let image = NodeImage::ensure()?;
    eprintln!("image ready after {:.1?}", t.elapsed());
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let sha = repo.commit_files(&[("hosts/n1/files/etc/motd", "hello\n")], "first")?;

    let t = Instant::now();
    let nodes = Node::boot_many(&image, &net, &["n1", "n2"])?;
    eprintln!("two nodes booted in {:.1?}", t.elapsed());

    for node in &nodes {
        let state = node.exec(&["systemctl", "is-system-running"])?;
        ensure!(
            matches!(state.stdout.trim(), "running" | "degraded"),
            "{}: {state:?}",
            node.name()
        );
        ensure!(node.sh_ok("hostname")?.trim() == node.name());

        // The git server on the bridge, through the node's own network stack.
        let refs = node.exec_ok(&["git", "ls-remote", &git.url("fleet.git")])?;
        ensure!(
            refs.contains(&sha),
            "{}: ls-remote said {refs}",
            node.name()
        );

        // Files written by the harness land in the node's own view of the fs.
        node.write_file("/srv/hello.txt", "from the host\n")?;
        ensure!(node.read_file("/srv/hello.txt")? == "from the host\n");
    }

    // The nodes see each other on the bridge.
    let (n1, n2) = (&nodes[0], &nodes[1]);
    n1.exec_ok(&["ping", "-c1", "-W5", &n2.addr().to_string()])
        .or_else(|_| n1.exec_ok(&["busybox", "ping", "-c1", "-W5", &n2.addr().to_string()]))?;

    // podman with the image imported at build time; no registry involved.
    let t = Instant::now();
    let out = n1.exec_ok(&[
        "podman",
        "run",
        "--rm",
        "localhost/busybox",
        "echo",
        "hello from podman",
    ])?;
    ensure!(out.contains("hello from podman"), "podman said {out:?}");
    eprintln!("podman run took {:.1?}", t.elapsed());

    // PackageKit answers on the node's system bus, from the host and from inside.
    let t = Instant::now();
    let out = run(Command::new("busctl").args([
        &format!("--address={}", n2.bus_address()),
        "get-property",
        "org.freedesktop.PackageKit",
        "/org/freedesktop/PackageKit",
        "org.freedesktop.PackageKit",
        "BackendName",
    ]))?
    .check("busctl get-property BackendName")?;
    ensure!(out.contains("apt"), "PackageKit backend: {out}");
    eprintln!("PackageKit over D-Bus from the host: {:.1?}", t.elapsed());
    let out = n2.exec_ok(&["pkcon", "backend-details"])?;
    ensure!(out.contains("apt"), "pkcon backend-details: {out}");
    ensure!(n2.exec_ok(&["pkcon", "--version"])?.trim().starts_with('1'));
    Ok(())
}
