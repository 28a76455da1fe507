//! Issue 14: secrets in Git, encrypted to each host's SSH host key — real Git repositories, keys
//! made with ssh-keygen, the real binary, temp roots.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const DB_PW: &str = "hunter2-db-SECRET-7f3a";
const TMPL_PW: &str = "tmpl-SECRET-42-c0ffee";

fn url(f: &Fleet) -> String {
    format!("file://{}", f.bare().display())
}

/// An ed25519 key made by ssh-keygen (like a host key); returns its path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(p.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// "ssh-ed25519 AAAA..." of a key (the comment dropped).
fn recipient(key: &Path) -> String {
    let text = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn host(name: &str, f: &Fleet, key: &Path) -> Host {
    Host::new(
        name,
        &url(f),
        &format!("[secrets]\nidentity = \"{}\"\n", key.display()),
    )
}

fn field(h: &Host, key: &str) -> String {
    h.status()
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// `plumb secret ARGS` (no agent config); asserts success, returns stdout.
fn secret(args: &[&str]) -> String {
    let out = Command::new(PLUMB)
        .arg("secret")
        .args(args)
        .args(["--config", "/nonexistent/agent.toml"])
        .env("PLUMB_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plumb secret {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Encrypts `plain` into the work tree at `rel` with extra `args` (--host, --role, ...).
fn encrypt(f: &Fleet, rel: &str, plain: &str, args: &[&str]) {
    let tmp = f.dir.path().join("plain.txt");
    std::fs::write(&tmp, plain).unwrap();
    let out = f.work().join(rel);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (u, d, o) = (url(f), f.work(), out);
    let mut all = vec!["encrypt", "--repo", &u, "--dir", d.to_str().unwrap()];
    all.extend(args);
    all.extend(["-o", o.to_str().unwrap(), tmp.to_str().unwrap()]);
    secret(&all);
    std::fs::remove_file(&tmp).unwrap();
}

/// `plumb apply` with debug logs; asserts the exit code; returns the whole output.
fn apply(h: &Host, code: i32) -> String {
    let out = Command::new(PLUMB)
        .args(["apply", "--config"])
        .arg(h.config())
        .env("PLUMB_LOG", "debug")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "plumb apply on {}: {text}",
        h.name
    );
    text
}

/// No file under `dir` holds any of the secrets.
fn assert_absent(what: &str, dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let data = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                for s in [DB_PW, TMPL_PW] {
                    assert!(!data.contains(s), "{what}: {} holds a secret", p.display());
                }
            }
        }
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [DB_PW, TMPL_PW] {
        assert!(!text.contains(s), "{what} shows a secret: {text}");
    }
}

fn mode(h: &Host, p: &str) -> u32 {
    std::fs::metadata(h.path(p)).unwrap().permissions().mode() & 0o777
}

/// Two hosts of a role decrypt; a third, not a recipient, is rejected and unchanged; no plaintext
/// in logs, plan, status or state_dir; a secrets.toml.age value in a template; a tampered file
/// rejected; `rekey` after a host joins the role; a rotated host key and its recovery.
#[test]
fn secrets_for_hosts_and_roles_rejections_rekey_and_rotation_issue_14() {
    let f = Fleet::new();
    let keys = tempfile::tempdir().unwrap();
    let (k1, k2, k3) = (
        keygen(keys.path(), "h1"),
        keygen(keys.path(), "h2"),
        keygen(keys.path(), "h3"),
    );
    let admin = keygen(keys.path(), "admin");
    f.write(
        "fleet.toml",
        &format!("[secrets]\nadmins = [\"{}\"]\n", recipient(&admin)),
    )
    .write("roles/app/host.toml", "")
    .write(
        "roles/app/files/etc/app/app.conf.tmpl",
        "user=app\npassword={{ secrets.db.password }}\n",
    )
    .write(
        "roles/app/units/app.service",
        "[Service]\nEnvironmentFile=/etc/app/db.env\nExecStart=/bin/true\n",
    )
    .write("hosts/h1/host.toml", "include = [\"roles/app\"]\n")
    .write("hosts/h2/host.toml", "include = [\"roles/app\"]\n")
    .write("hosts/h3/files/etc/plain", "plain\n");
    // Before any secret: the hosts publish their recipients.
    f.write("roles/app/files/etc/app/app.conf.tmpl", "user=app\n");
    f.commit("hosts");
    let (h1, h2, h3) = (
        host("h1", &f, &k1),
        host("h2", &f, &k2),
        host("h3", &f, &k3),
    );
    for (h, k) in [(&h1, &k1), (&h2, &k2), (&h3, &k3)] {
        h.apply_expect(0);
        assert_eq!(field(h, "age_recipient"), recipient(k), "{}", h.name);
    }
    // The role's secrets, encrypted to every host including it (plus the admin).
    encrypt(
        &f,
        "roles/app/files/etc/app/db.env.age",
        &format!("DB_PASSWORD={DB_PW}\n"),
        &["--role", "app"],
    );
    encrypt(
        &f,
        "roles/app/secrets.toml.age",
        &format!("[db]\npassword = \"{TMPL_PW}\"\n"),
        &["--host", "h1", "--host", "h2"],
    );
    f.write(
        "roles/app/files/etc/app/app.conf.tmpl",
        "user=app\npassword={{ secrets.db.password }}\n",
    );
    f.commit("secrets");
    let admin_view = secret(&[
        "decrypt",
        "--identity",
        admin.to_str().unwrap(),
        f.work()
            .join("roles/app/files/etc/app/db.env.age")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(admin_view, format!("DB_PASSWORD={DB_PW}\n"));

    // plan: hidden.
    let out = h1.plumb(&["plan"]);
    let plan = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(plan.contains("(secret: content hidden)"), "{plan}");
    assert_no_secret("plan", &plan);

    let mut logs = String::new();
    for h in [&h1, &h2] {
        logs += &apply(h, 0);
        assert_eq!(
            h.read("/etc/app/db.env").unwrap(),
            format!("DB_PASSWORD={DB_PW}\n")
        );
        assert_eq!(
            h.read("/etc/app/app.conf").unwrap(),
            format!("user=app\npassword={TMPL_PW}\n")
        );
        assert_eq!(mode(h, "/etc/app/db.env"), 0o600);
        assert_eq!(mode(h, "/etc/app/app.conf"), 0o600);
        // A second pass: nothing to do (the keyed hash matches).
        let again = h.plumb(&["plan"]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&again.stdout)
        );
    }

    // h3 is not a recipient of what it is given: rejected, unchanged, told why.
    encrypt(
        &f,
        "hosts/h3/files/etc/x.env.age",
        &format!("X={DB_PW}\n"),
        &["--host", "h1"],
    );
    let c = f.commit("h3 gets a secret that is not its own");
    let before = h3.snapshot();
    logs += &apply(&h3, 1);
    assert_eq!(h3.snapshot(), before);
    assert_eq!(field(&h3, "outcome"), "rejected");
    assert_eq!(field(&h3, "reason"), "cannot-decrypt");
    let msg = field(&h3, "message");
    assert!(msg.contains("hosts/h3/files/etc/x.env.age"), "{msg}");
    assert!(msg.contains(&recipient(&k3)), "{msg}");
    assert_eq!(field(&h3, "desired_commit"), c);

    // A tampered file: rejected, the host keeps the last good secret.
    let p = f.work().join("roles/app/files/etc/app/db.env.age");
    let mut data = std::fs::read(&p).unwrap();
    let n = data.len() - 10;
    data[n] ^= 0x55;
    std::fs::write(&p, &data).unwrap();
    f.remove("hosts/h3/files/etc/x.env.age");
    f.commit("tampered");
    logs += &apply(&h1, 1);
    assert_eq!(field(&h1, "reason"), "cannot-decrypt");
    assert!(field(&h1, "message").contains("roles/app/files/etc/app/db.env.age"));
    assert_eq!(
        h1.read("/etc/app/db.env").unwrap(),
        format!("DB_PASSWORD={DB_PW}\n")
    );

    // h3 joins the role: not a recipient yet (rejected), then `rekey` (with the admin's key)
    // makes it one.
    encrypt(
        &f,
        "roles/app/files/etc/app/db.env.age",
        &format!("DB_PASSWORD={DB_PW}\n"),
        &["--role", "app"],
    );
    f.write("hosts/h3/host.toml", "include = [\"roles/app\"]\n");
    f.commit("h3 joins app");
    logs += &apply(&h3, 1);
    assert_eq!(field(&h3, "reason"), "cannot-decrypt");
    let rekeyed = secret(&[
        "rekey",
        f.work().to_str().unwrap(),
        "--identity",
        admin.to_str().unwrap(),
        "--repo",
        &url(&f),
    ]);
    assert!(
        rekeyed.contains("roles/app/files/etc/app/db.env.age"),
        "{rekeyed}"
    );
    assert!(rekeyed.contains("roles/app/secrets.toml.age"), "{rekeyed}");
    f.commit("rekey");
    for h in [&h1, &h2, &h3] {
        logs += &apply(h, 0);
        assert_eq!(
            h.read("/etc/app/app.conf").unwrap(),
            format!("user=app\npassword={TMPL_PW}\n")
        );
    }
    // Nothing changed since: rekey leaves every file as it is.
    let again = secret(&[
        "rekey",
        f.work().to_str().unwrap(),
        "--identity",
        admin.to_str().unwrap(),
        "--repo",
        &url(&f),
    ]);
    assert!(again.contains("0 file(s) re-encrypted"), "{again}");

    // Rotation: h1's key is regenerated. It keeps its last good commit and says why, publishes
    // the new recipient; rekey + commit and it decrypts again.
    let old = recipient(&k1);
    keygen(keys.path(), "h1");
    let new = recipient(&k1);
    assert_ne!(old, new);
    f.write("roles/app/files/etc/app/other", "x\n");
    f.commit("a change after the rotation");
    logs += &apply(&h1, 1);
    assert_eq!(field(&h1, "reason"), "cannot-decrypt");
    assert!(field(&h1, "message").contains(&new));
    assert_eq!(field(&h1, "age_recipient"), new);
    assert_eq!(
        h1.read("/etc/app/db.env").unwrap(),
        format!("DB_PASSWORD={DB_PW}\n")
    );
    assert!(h1.read("/etc/app/other").is_none());
    secret(&[
        "rekey",
        f.work().to_str().unwrap(),
        "--identity",
        admin.to_str().unwrap(),
        "--repo",
        &url(&f),
    ]);
    f.commit("rekey after rotation");
    logs += &apply(&h1, 0);
    assert_eq!(h1.read("/etc/app/other").unwrap(), "x\n");

    // No plaintext in logs, status (file and branch), state_dir.
    assert_no_secret("logs", &logs);
    for h in [&h1, &h2, &h3] {
        assert_absent("state_dir", &h.state());
        let st = h.plumb(&["status", "--json"]);
        assert_no_secret("status", &String::from_utf8_lossy(&st.stdout));
        let branch = git(
            &f.bare(),
            &["show", &format!("refs/heads/status/{}:status.toml", h.name)],
        );
        assert_no_secret("status branch", &branch);
    }
}

/// Encrypting for a host that never reported names the host and what to do.
#[test]
fn encrypt_for_an_unknown_host_says_what_to_do_issue_14() {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/a", "a\n");
    f.commit("one");
    let tmp = f.dir.path().join("p");
    std::fs::write(&tmp, "x").unwrap();
    let out = Command::new(PLUMB)
        .args(["secret", "encrypt", "--repo", &url(&f), "--host", "h1"])
        .args(["--config", "/nonexistent", "-o", "/dev/null"])
        .arg(&tmp)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("host h1 has published no age_recipient"),
        "{err}"
    );
}
