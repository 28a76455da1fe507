//! Secrets in a real node (issue 14): the identity is the node's /etc/ssh/ssh_host_ed25519_key,
//! read by plumb under plumb.service's sandbox; the node publishes its recipient, a secret
//! encrypted to it (with `plumb secret encrypt --host`, reading that status) lands 0600, and a
//! unit that needs it starts. The plaintext is nowhere in the report or in /var/lib/plumb.

mod support;

use anyhow::{ensure, Context, Result};
use support::World;

const PASSWORD: &str = "node-s3cr3t-9b1e";

#[test]
fn a_secret_for_the_node_host_key_lands_0600_and_its_unit_starts() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("sc1")?;
    // The image has no sshd: give the node a host key, as openssh-server's postinst would.
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("ssh_host_ed25519_key");
    let o = plumb_systest::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "root@sc1", "-f"])
            .arg(&key),
    )?;
    ensure!(o.success(), "ssh-keygen: {}", o.stderr);
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let recipient: String = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    w.node.exec_ok(&["mkdir", "-p", "/etc/ssh"])?;
    w.node
        .write_file_mode("/etc/ssh/ssh_host_ed25519_key", std::fs::read(&key)?, 0o600)?;
    w.node.write_file_mode(
        "/etc/ssh/ssh_host_ed25519_key.pub",
        public.as_bytes(),
        0o644,
    )?;

    // A first pass publishes the recipient on the status branch.
    w.commit("before secrets")?;
    w.apply(true)?;
    ensure!(
        w.report_field("age_recipient")? == recipient,
        "{}",
        w.status()?
    );

    // The operator encrypts to the host by name: plumb reads its recipient from its status.
    let plain = keys.path().join("db.env");
    std::fs::write(&plain, format!("DB_PASSWORD={PASSWORD}\n"))?;
    let out = keys.path().join("db.env.age");
    let o = plumb_systest::run(
        std::process::Command::new(plumb_systest::plumb_bin()?)
            .args([
                "secret",
                "encrypt",
                "--config",
                "/nonexistent",
                "--host",
                "sc1",
            ])
            .arg("--repo")
            .arg(format!("file://{}", w.repo.bare_path().display()))
            .arg("-o")
            .arg(&out)
            .arg(&plain),
    )?;
    ensure!(o.success(), "plumb secret encrypt: {}", o.stderr);
    w.repo
        .write("hosts/sc1/files/etc/app/db.env.age", std::fs::read(&out)?)?;
    w.put(
        "units/app.service",
        &format!(
            "[Unit]\nDescription=needs the secret\n[Service]\nEnvironmentFile=/etc/app/db.env\n\
             ExecStartPre=/bin/sh -c 'test \"$DB_PASSWORD\" = {PASSWORD}'\nExecStart=/bin/sleep 100004\n\
             [Install]\nWantedBy=multi-user.target\n"
        ),
    )?;
    w.commit("a secret and the unit using it")?;
    let log = w.apply(true)?;
    ensure!(
        !log.contains(PASSWORD),
        "the pass's output shows the secret: {log}"
    );
    w.wait_active("app.service", "active")?;
    let st = w
        .node
        .exec_ok(&["stat", "-c", "%a %U", "/etc/app/db.env"])?;
    ensure!(st.trim() == "600 root", "mode and owner: {st}");
    ensure!(
        w.node.read_file("/etc/app/db.env")?.contains(PASSWORD),
        "the installed secret"
    );
    let report = w.status()?;
    ensure!(!report.contains(PASSWORD), "status shows the secret");
    let grep = w
        .node
        .exec(&["grep", "-r", "-l", PASSWORD, "/var/lib/plumb"])
        .context("grep in the node")?;
    ensure!(
        !grep.success() && grep.stdout.trim().is_empty(),
        "the plaintext is in state_dir: {}",
        grep.stdout
    );
    let journal = w.node.journal(None, 2000);
    ensure!(!journal.contains(PASSWORD), "the journal shows the secret");
    Ok(())
}
