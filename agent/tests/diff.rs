//! Issue 19: `plumb diff BASE HEAD` over a real Git checkout, with facts from real status
//! branches, and the real binary.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Publishes a status branch `status/<host>` with these facts into the checkout's repository.
fn publish_facts(f: &Fleet, host: &str, hostname: &str) {
    let scratch = f.dir.path().join(format!("status-{host}"));
    std::fs::create_dir_all(&scratch).unwrap();
    git(&scratch, &["init", "-q", "-b", "status"]);
    std::fs::write(
        scratch.join("status.toml"),
        format!(
            "host = \"{host}\"\nagent_version = \"0\"\noutcome = \"converged\"\n\
             checked_at = \"2026-01-01T00:00:00Z\"\n\n[facts]\nhostname = \"{hostname}\"\ncpus = 2\n"
        ),
    )
    .unwrap();
    git(&scratch, &["add", "-A"]);
    git(&scratch, &["commit", "-q", "-m", "status"]);
    let dest = format!("HEAD:refs/heads/status/{host}");
    git(
        &scratch,
        &["push", "-q", "-f", f.work().to_str().unwrap(), &dest],
    );
}

/// `plumb diff ARGS` in the checkout: (exit code, stdout).
fn diff(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(PLUMB)
        .arg("diff")
        .args(["--config", "/nonexistent/agent.toml", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1 || code == 2,
        "plumb diff {args:?}: exit {code}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

/// The lines of one host's block in the text output ("" when it is not listed).
fn block(out: &str, host: &str) -> String {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{host}: ")));
    let mut s = String::new();
    if let Some(first) = lines.next() {
        s.push_str(first);
        s.push('\n');
        for l in lines.take_while(|l| l.starts_with(' ')) {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

fn keygen(dir: &Path) -> String {
    let p = dir.join("admin");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(p.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn encrypt(f: &Fleet, recipient: &str, rel: &str, plain: &str) {
    let input = f.dir.path().join("plain.txt");
    std::fs::write(&input, plain).unwrap();
    let out = f.work().join(rel);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = Command::new(PLUMB)
        .args(["secret", "encrypt", "--config", "/nonexistent/agent.toml"])
        .args(["--recipient", recipient, "--dir"])
        .arg(f.work())
        .arg("-o")
        .arg(&out)
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&input).unwrap();
}

/// Two roles, five hosts with facts (two assigned by fleet.toml patterns and known only from
/// their status branches), one without facts.
fn fleet() -> (Fleet, String) {
    let f = Fleet::new();
    let admin = keygen(f.dir.path());
    f.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"edge-*\"]\ninclude = [\"roles/web\"]\n",
    )
    .write(
        "roles/web/host.toml",
        "[vars]\nport = 8080\n\n[packages]\ninstall = [\"nginx\"]\n\n\
         [units.\"web.service\"]\nrestart_on = [\"/etc/web/site.conf\"]\n\n\
         [[health]]\nunit = \"web.service\"\n",
    )
    .write(
        "roles/web/files/etc/web/site.conf.tmpl",
        "server_name {{ facts.hostname }};\nlisten {{ vars.port }};\n",
    )
    .write(
        "roles/web/units/web.service",
        "[Service]\nExecStart=/usr/bin/sleep infinity\n",
    )
    .write(
        "roles/db/host.toml",
        "[packages]\ninstall = [\"postgresql\"]\n",
    )
    .write("roles/db/files/etc/db/db.conf", "max_connections = 100\n")
    .write(
        "roles/db/units/db.service",
        "[Service]\nExecStart=/usr/bin/sleep infinity\n",
    )
    .write("hosts/web-1/host.toml", "include = [\"roles/web\"]\n")
    .write("hosts/web-2/host.toml", "include = [\"roles/web\"]\n")
    .write("hosts/db-1/host.toml", "include = [\"roles/db\"]\n")
    .write("hosts/new-1/host.toml", "include = [\"roles/web\"]\n");
    encrypt(
        &f,
        &admin,
        "roles/db/files/etc/db/password.age",
        "hunter2\n",
    );
    encrypt(
        &f,
        &admin,
        "roles/db/secrets.toml.age",
        "[db]\npw = \"tr0ub4dor\"\n",
    );
    f.write(
        "roles/db/files/etc/db/app.env.tmpl",
        "PASSWORD={{ secrets.db.pw }}\n",
    );
    f.commit("base");
    for h in ["web-1", "web-2", "edge-1", "edge-2", "db-1"] {
        publish_facts(&f, h, &format!("{h}.example"));
    }
    (f, admin)
}

#[test]
fn a_role_change_reaches_exactly_its_hosts() {
    let (f, admin) = fleet();
    let base = git(&f.work(), &["rev-parse", "HEAD"]);
    // Nothing changed: exit 0, every host counted.
    let (code, out) = diff(&f.work(), &[&base, &base]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 hosts changed"), "{out}");
    assert!(
        out.contains("new-1: not rendered: no facts"),
        "a host without facts is listed, not guessed: {out}"
    );

    // The web role's template: the four web hosts, and the unit restarts for its restart_on file.
    f.write(
        "roles/web/files/etc/web/site.conf.tmpl",
        "server_name {{ facts.hostname }};\nlisten {{ vars.port }};\ngzip on;\n",
    );
    let head = f.commit("gzip");
    let (code, out) = diff(&f.work(), &[&base, &head]);
    assert_eq!(code, 2, "{out}");
    for h in ["web-1", "web-2", "edge-1", "edge-2"] {
        let b = block(&out, h);
        assert!(b.contains("update file /etc/web/site.conf"), "{h}: {out}");
        assert!(b.contains("+gzip on;"), "{h}: {out}");
        assert!(
            b.contains("restart unit web.service: /etc/web/site.conf changed (restart_on)"),
            "{h}: {out}"
        );
        assert!(
            b.contains("run health unit web.service active"),
            "{h}: {out}"
        );
    }
    // Rendered with each host's own facts and vars.
    assert!(
        block(&out, "edge-2").contains(" server_name edge-2.example;"),
        "{out}"
    );
    assert_eq!(
        block(&out, "db-1"),
        "",
        "db-1 does not include roles/web: {out}"
    );
    assert!(
        out.contains("4 hosts changed, 0 rejected, 1 not rendered (no facts), 1 unchanged"),
        "{out}"
    );

    // --host narrows the hosts.
    let (code, out) = diff(&f.work(), &[&base, &head, "--host", "edge-*"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("2 hosts changed, 0 rejected, 0 not rendered (no facts), 0 unchanged"),
        "{out}"
    );

    // The db role: a package, and a secret re-encrypted with new content (never shown).
    f.write(
        "roles/db/host.toml",
        "[packages]\ninstall = [\"postgresql-16\"]\nremove = [\"telnet\"]\n",
    );
    encrypt(
        &f,
        &admin,
        "roles/db/files/etc/db/password.age",
        "correct horse\n",
    );
    let head2 = f.commit("db");
    // Only the secrets table a template reads.
    encrypt(
        &f,
        &admin,
        "roles/db/secrets.toml.age",
        "[db]\npw = \"n3w-pw\"\n",
    );
    let head3 = f.commit("db password");
    let (code, out) = diff(&f.work(), &[&head2, &head3]);
    assert_eq!(code, 2, "{out}");
    let b = block(&out, "db-1");
    assert!(
        b.contains("update file /etc/db/app.env\n      (secret: content hidden)"),
        "{out}"
    );
    assert!(
        !out.contains("n3w-pw") && !out.contains("tr0ub4dor"),
        "{out}"
    );
    assert!(out.contains("1 host changed"), "{out}");
    let (code, out) = diff(&f.work(), &[&head, &head2]);
    assert_eq!(code, 2, "{out}");
    let b = block(&out, "db-1");
    assert!(b.contains("update file /etc/db/password"), "{out}");
    assert!(b.contains("(secret: content hidden)"), "{out}");
    assert!(
        !out.contains("correct horse") && !out.contains("hunter2"),
        "{out}"
    );
    assert!(b.contains("install package postgresql-16"), "{out}");
    assert!(b.contains("unmanage package postgresql"), "{out}");
    assert!(b.contains("remove package telnet"), "{out}");
    assert!(out.contains("1 host changed"), "{out}");

    // --json for CI bots.
    let (code, json) = diff(&f.work(), &["--json", &base, &head]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["base"], base.as_str());
    assert_eq!(v["head"], head.as_str());
    assert_eq!(v["changed"], 4);
    assert_eq!(v["unchanged"], 1);
    assert_eq!(v["not_rendered"], 1);
    assert_eq!(v["rejected"], 0);
    let hosts = v["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["edge-1", "edge-2", "new-1", "web-1", "web-2"]);
    let web1 = &hosts[3];
    assert_eq!(web1["state"], "changed");
    let restart = web1["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "unit")
        .unwrap();
    assert_eq!(restart["action"], "restart");
    assert_eq!(restart["name"], "web.service");
    assert_eq!(hosts[2]["state"], "not-rendered");
}

#[test]
fn a_broken_template_on_one_host_is_a_rejection() {
    let (f, _) = fleet();
    let base = git(&f.work(), &["rev-parse", "HEAD"]);
    f.write(
        "hosts/web-2/files/etc/broken.tmpl",
        "{{ vars.nope.deeper }}\n",
    );
    let head = f.commit("broken");
    let (code, out) = diff(&f.work(), &[&base, &head]);
    assert_eq!(code, 1, "{out}");
    let b = block(&out, "web-2");
    assert!(b.starts_with("web-2: rejected [template-error]: "), "{out}");
    assert!(b.contains("hosts/web-2/files/etc/broken.tmpl"), "{out}");
    assert_eq!(block(&out, "web-1"), "", "{out}");
    let (code, json) = diff(&f.work(), &["--json", &base, &head]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["hosts"][1]["reason"], "template-error");
    // A host that leaves the fleet: its agent would reject the commit.
    f.remove("hosts/web-2/files/etc/broken.tmpl")
        .remove("hosts/db-1");
    let head2 = f.commit("db-1 leaves");
    let (code, out) = diff(&f.work(), &[&base, &head2]);
    assert_eq!(code, 1, "{out}");
    assert!(
        block(&out, "db-1").starts_with("db-1: rejected [invalid-spec]: hosts/db-1 does not exist"),
        "{out}"
    );
    assert!(out.contains("0 hosts changed, 1 rejected"), "{out}");
    // A commit that is not there: an error, not a diff.
    let out = Command::new(PLUMB)
        .args(["diff", "--dir"])
        .arg(f.work())
        .args([&base, "no-such-branch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-branch"));
}

/// The CI recipe: the comment it would post (printed without COMMENT_URL), and its exit code.
#[test]
fn ci_recipe_prints_the_comment() {
    let (f, _) = fleet();
    let base = git(&f.work(), &["rev-parse", "HEAD"]);
    f.write("roles/db/files/etc/db/db.conf", "max_connections = 200\n");
    let head = f.commit("db");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/diff-comment.sh");
    let bin_dir = Path::new(PLUMB).parent().unwrap();
    let run = |b: &str, h: &str| {
        let out = Command::new("sh")
            .arg(&script)
            .args([b, h])
            .current_dir(f.work())
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env_remove("COMMENT_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&base, &head);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("#### plumb diff: hosts change\n"), "{out}");
    assert!(out.contains("1 host changed, 0 rejected"), "{out}");
    assert!(out.contains("+max_connections = 200"), "{out}");
    f.write("hosts/db-1/files/etc/x.tmpl", "{{ nope }}\n");
    let bad = f.commit("broken");
    let (code, out) = run(&head, &bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("db-1: rejected [template-error]"), "{out}");
}

/// Facts from a separate status repository (`--status-repo`), shared or one per host (`{host}`).
#[test]
fn facts_from_a_status_repository() {
    let (f, _) = fleet();
    let base = git(&f.work(), &["rev-parse", "HEAD"]);
    f.write(
        "roles/web/files/etc/web/site.conf.tmpl",
        "server_name {{ facts.hostname }};\n",
    );
    let head = f.commit("web");
    // web-1's status branch in a repository of its own, and in a shared one.
    let shared = f.dir.path().join("status.git");
    let own = f.dir.path().join("status-web-1.git");
    for repo in [&shared, &own] {
        git(
            f.dir.path(),
            &["init", "-q", "--bare", repo.to_str().unwrap()],
        );
        git(
            &f.work(),
            &[
                "push",
                "-q",
                repo.to_str().unwrap(),
                "refs/heads/status/web-1:refs/heads/status/web-1",
            ],
        );
    }
    let shared_url = format!("file://{}", shared.display());
    let per_host = format!("file://{}/status-{{host}}.git", f.dir.path().display());
    for url in [&shared_url, &per_host] {
        let (code, out) = diff(&f.work(), &[&base, &head, "--status-repo", url]);
        assert_eq!(code, 2, "{url}: {out}");
        assert!(
            block(&out, "web-1").contains(" server_name web-1.example;\n      -listen 8080;"),
            "{url}: {out}"
        );
        assert!(
            block(&out, "web-2").contains("not rendered: no facts"),
            "{url}: {out}"
        );
        // edge-* hosts are known only from status branches: this repository has none.
        assert_eq!(block(&out, "edge-1"), "", "{url}: {out}");
        assert!(out.contains("1 host changed"), "{url}: {out}");
    }
}
