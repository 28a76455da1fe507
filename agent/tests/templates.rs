//! Issue 13: templates, vars, host facts and hosts assigned by pattern — real Git repositories,
//! the real binary, a temp root.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn url(f: &Fleet) -> String {
    format!("file://{}", f.bare().display())
}

fn field(h: &Host, key: &str) -> String {
    h.status()
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// The first interface with a global IPv4 address, as `ip` sees it (not plumb's own reader).
fn some_interface() -> Option<(String, String)> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let addr = f.get(3)?.split('/').next()?.to_string();
    Some((f.get(1)?.trim_end_matches(':').to_string(), addr))
}

/// Vars from fleet.toml [[assign]], a role and the host, merged deeply in that order; facts read
/// from the host (its name from /etc/hostname under root, an interface address) and published.
#[test]
fn vars_precedence_deep_merge_and_facts() {
    let f = Fleet::new();
    let iface = some_interface();
    let iface_line = match &iface {
        Some((name, _)) => format!("addr={{{{ facts.interfaces[\"{name}\"].ipv4 }}}}\n"),
        None => String::new(),
    };
    f.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"store-*\"]\ninclude = [\"roles/store\"]\n\
         vars = { region = \"eu-west\", db = { host = \"db-eu\", port = 5432, user = \"app\" } }\n\
         [[assign]]\nhosts = [\"web-*\"]\nvars = { region = \"us\" }\n\
         [[assign]]\nhosts = [\"store-0[0-4]*\"]\nvars = { batch = \"early\", db = { pool = 4 } }\n",
    )
    .write(
        "roles/store/host.toml",
        "[vars]\nbatch = \"role\"\ndb = { port = 6432 }\nlist = [1, 2]\n",
    )
    .write(
        "roles/store/files/etc/store/app.conf.tmpl",
        &format!(
            "host={{{{ host }}}} name={{{{ facts.hostname }}}}\nregion={{{{ vars.region }}}} batch={{{{ vars.batch }}}}\n\
             db={{{{ vars.db.user }}}}@{{{{ vars.db.host }}}}:{{{{ vars.db.port }}}} pool={{{{ vars.db.pool }}}}\n\
             list={{{{ vars.list | join(\",\") }}}}\n{iface_line}"
        ),
    )
    .write(
        "hosts/store-001/host.toml",
        "[vars]\ndb = { host = \"db-local\" }\nlist = [3]\n",
    );
    f.commit("templates");
    let h = Host::new("store-001", &url(&f), "");
    std::fs::create_dir_all(h.path("/etc")).unwrap();
    std::fs::write(h.path("/etc/hostname"), "store-001.example\n").unwrap();
    h.apply_expect(0);
    let want = format!(
        "host=store-001 name=store-001.example\nregion=eu-west batch=role\n\
         db=app@db-local:6432 pool=4\nlist=3\n{}",
        iface
            .as_ref()
            .map(|(_, a)| format!("addr={a}\n"))
            .unwrap_or_default()
    );
    assert_eq!(h.read("/etc/store/app.conf").unwrap(), want);
    // No `.tmpl` name on the host.
    assert!(h.read("/etc/store/app.conf.tmpl").is_none());

    // The facts are in the status.
    let st = h.status();
    let facts = st["facts"].as_table().expect("a [facts] table");
    assert_eq!(facts["hostname"].as_str(), Some("store-001.example"));
    assert!(facts["cpus"].as_integer().unwrap() >= 1);
    if let Some((name, addr)) = &iface {
        assert_eq!(
            facts["interfaces"][name.as_str()]["ipv4"].as_str(),
            Some(addr.as_str())
        );
    }

    // A no-op pass renders nothing again and rewrites nothing.
    let before = std::fs::metadata(h.path("/etc/store/app.conf")).unwrap();
    let cache = h.state().join("render-cache");
    let cache_before = std::fs::metadata(&cache)
        .expect("render cache saved")
        .mtime_nsec();
    h.apply_expect(0);
    assert_eq!(field(&h, "outcome"), "converged");
    let after = std::fs::metadata(h.path("/etc/store/app.conf")).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    assert_eq!(
        std::fs::metadata(&cache).unwrap().mtime_nsec(),
        cache_before
    );

    // A var changes in Git: the file follows.
    f.write(
        "hosts/store-001/host.toml",
        "[vars]\ndb = { host = \"db-new\" }\nlist = [3]\n",
    );
    f.commit("new db");
    h.apply_expect(0);
    assert!(h
        .read("/etc/store/app.conf")
        .unwrap()
        .contains("db=app@db-new:6432"));
}

/// A template that does not render rejects the commit: the host keeps the last good one, the
/// status names the template, the line and the undefined name, with reason template-error.
#[test]
fn template_errors_reject_the_commit_and_leave_the_host_unchanged() {
    let f = Fleet::new();
    f.write("hosts/h1/host.toml", "[vars]\nport = 80\n")
        .write("hosts/h1/files/etc/app.conf.tmpl", "port={{ vars.port }}\n")
        .write("roles/t/templates/part.j2", "part {{ vars.port }}\n");
    let good = f.commit("good");
    let h = Host::new("h1", &url(&f), "");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/app.conf").unwrap(), "port=80\n");
    let snap = h.snapshot();

    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "undefined",
            "port={{ vars.port }}\nhost={{ vars.hostname }}\n",
            &["hosts/h1/files/etc/app.conf.tmpl:2", "vars.hostname"],
        ),
        (
            "escaping include",
            "{% include \"../../../etc/passwd\" %}\n",
            &[
                "hosts/h1/files/etc/app.conf.tmpl:1",
                "../../../etc/passwd",
                "escapes",
            ],
        ),
        (
            "absolute include",
            "{% include \"/etc/passwd\" %}\n",
            &["hosts/h1/files/etc/app.conf.tmpl:1", "absolute"],
        ),
        (
            "syntax",
            "{% if vars.port %}\n",
            &["hosts/h1/files/etc/app.conf.tmpl", "syntax error"],
        ),
        (
            "type error",
            "{{ vars.port + \"x\" }}\n",
            &["hosts/h1/files/etc/app.conf.tmpl:1", "invalid operation"],
        ),
    ];
    for (what, src, needles) in cases {
        f.write("hosts/h1/files/etc/app.conf.tmpl", src);
        let bad = f.commit(what);
        h.apply_expect(1);
        let st = h.status();
        assert_eq!(st["outcome"].as_str(), Some("rejected"), "{what}");
        assert_eq!(st["reason"].as_str(), Some("template-error"), "{what}");
        let msg = st["message"].as_str().unwrap();
        for n in needles {
            assert!(msg.contains(n), "{what}: {msg:?} should name {n:?}");
        }
        assert!(msg.contains(&bad[..7]), "{what}: {msg}");
        assert_eq!(st["applied_commit"].as_str(), Some(good.as_str()));
        assert_eq!(h.snapshot(), snap, "{what}: the host changed");
    }
    // An include inside the repo works.
    f.write(
        "hosts/h1/files/etc/app.conf.tmpl",
        "{% include \"roles/t/templates/part.j2\" %}",
    );
    f.commit("include");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/app.conf").unwrap(), "part 80\n");
}

/// `template = false` keeps a `.tmpl` file literal; templates work for units and drop-ins too
/// (rendered and installed under root, no systemd driven for another root).
#[test]
fn literal_tmpl_and_unit_templates() {
    let f = Fleet::new();
    f.write(
        "hosts/h1/host.toml",
        "[vars]\nport = 8080\n[files.\"/usr/share/app/page.tmpl\"]\ntemplate = false\n",
    )
    .write(
        "hosts/h1/files/usr/share/app/page.tmpl",
        "{{ left as is }}\n",
    )
    .write(
        "hosts/h1/units/app.service.d/env.conf.tmpl",
        "[Service]\nEnvironment=PORT={{ vars.port }}\n",
    );
    f.commit("literal");
    let h = Host::new("h1", &url(&f), "");
    h.apply_expect(0);
    assert_eq!(
        h.read("/usr/share/app/page.tmpl").unwrap(),
        "{{ left as is }}\n"
    );
    assert!(h.read("/usr/share/app/page").is_none());
    assert_eq!(
        h.read("/etc/systemd/system/app.service.d/env.conf")
            .unwrap(),
        "[Service]\nEnvironment=PORT=8080\n"
    );
    // `template = false` on a file that is not a template is a mistake, said as such.
    f.write(
        "hosts/h1/host.toml",
        "[vars]\nport = 1\n[files.\"/usr/share/app/page.tmpl\"]\ntemplate = false\n[files.\"/etc/x\"]\ntemplate = false\n",
    )
    .write("hosts/h1/files/etc/x", "x\n");
    f.commit("misused");
    h.apply_expect(1);
    let msg = field(&h, "message");
    assert!(msg.contains("[files.\"/etc/x\"] template = false"), "{msg}");
}

/// A host with no directory, configured through fleet.toml [[assign]] alone; a host matched by no
/// entry and without a directory is still rejected; a bad fleet.toml names itself.
#[test]
fn host_configured_only_through_assign() {
    let f = Fleet::new();
    f.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"store-*\"]\ninclude = [\"roles/store\"]\nvars = { motd = \"store fleet\" }\n",
    )
    .write("roles/store/files/etc/motd.tmpl", "{{ vars.motd }} {{ host }}\n")
    .write("roles/store/host.toml", "[packages]\ninstall = []\n");
    f.commit("assign");
    let h = Host::new("store-777", &url(&f), "");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "store fleet store-777\n");

    let other = Host::new("web-9", &url(&f), "");
    other.apply_expect(1);
    let msg = field(&other, "message");
    assert!(msg.contains("hosts/web-9 does not exist"), "{msg}");
    assert!(msg.contains("fleet.toml [[assign]]"), "{msg}");

    f.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"store-*\"]\nrolez = []\n",
    );
    f.commit("typo");
    h.apply_expect(1);
    let msg = field(&h, "message");
    assert!(msg.contains("fleet.toml") && msg.contains("rolez"), "{msg}");
    assert_eq!(h.read("/etc/motd").unwrap(), "store fleet store-777\n");
}

/// `plumb render` and `plumb validate --facts` on a checkout, as an operator's CI runs them.
#[test]
fn render_and_validate_a_checkout() {
    let f = Fleet::new();
    f.write(
        "fleet.toml",
        "[[assign]]\nhosts = [\"store-*\"]\ninclude = [\"roles/store\"]\n",
    )
    .write(
        "roles/store/files/etc/store.conf.tmpl",
        "{% import \"roles/store/templates/m.j2\" as m %}{{ m.line(facts.hostname, facts.os.id) }}\n",
    )
    .write(
        "roles/store/templates/m.j2",
        "{% macro line(h, os) %}{{ h }} runs {{ os }}{% endmacro %}",
    )
    .write("hosts/store-1/host.toml", "");
    let dir = f.work();
    let facts = dir.join("../facts.toml");
    // The [facts] of a status.toml works as a facts file.
    std::fs::write(
        &facts,
        "host = \"store-1\"\n[facts]\nhostname = \"s1\"\n[facts.os]\nid = \"debian\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(PLUMB)
            .args(args)
            .arg("--config")
            .arg("/nonexistent/agent.toml")
            .env("PLUMB_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let d = dir.to_str().unwrap();
    let fa = facts.to_str().unwrap();
    for path in ["/etc/store.conf", "roles/store/files/etc/store.conf.tmpl"] {
        let (code, out, err) = run(&[
            "render", "--dir", d, "--host", "store-1", "--facts", fa, path,
        ]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, "s1 runs debian\n");
    }
    // Another store, without a directory: through fleet.toml alone.
    let (code, out, err) = run(&[
        "render",
        "--dir",
        d,
        "--host",
        "store-2",
        "--facts",
        fa,
        "/etc/store.conf",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "s1 runs debian\n"), "{err}");
    let (code, out, _) = run(&["validate", d, "--host", "store-1", "--facts", fa]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("hosts/store-1: ok (1 files"), "{out}");

    // Facts without os.id: the template fails, naming the fact; validate says so and exits 1.
    std::fs::write(&facts, "hostname = \"s1\"\n").unwrap();
    let (code, out, _) = run(&["validate", d, "--facts", fa]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("hosts/store-1: error: roles/store/files/etc/store.conf.tmpl:1")
            && out.contains("`facts.os` is undefined"),
        "{out}"
    );
    let (code, _, err) = run(&[
        "render",
        "--dir",
        d,
        "--host",
        "store-1",
        "--facts",
        fa,
        "/etc/store.conf",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("facts.os"), "{err}");
    // A file that is not a facts file is refused by name.
    std::fs::write(&facts, "hostnme = \"s1\"\n").unwrap();
    let (code, _, err) = run(&["validate", d, "--facts", fa]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("facts.toml") && err.contains("hostnme"),
        "{err}"
    );
    // A path the host does not use.
    std::fs::write(&facts, "hostname = \"s1\"\n[os]\nid = \"debian\"\n").unwrap();
    let (code, _, err) = run(&[
        "render",
        "--dir",
        d,
        "--host",
        "store-1",
        "--facts",
        fa,
        "/etc/none",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("/etc/none: host store-1 has no such file"),
        "{err}"
    );
}
