//! Issue 2: a host's files converge from Git — real repositories (file://, local path, git://),
//! the real binary, a temp root.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn mode(h: &Host, p: &str) -> u32 {
    std::fs::symlink_metadata(h.path(p))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn outcome(h: &Host) -> String {
    h.status()["outcome"].as_str().unwrap().to_string()
}

fn resource_state(h: &Host, name: &str) -> String {
    let st = h.status();
    let res = st["resources"].as_array().unwrap();
    let r = res
        .iter()
        .find(|r| r["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in report"));
    r["state"].as_str().unwrap().to_string()
}

fn base_fleet() -> Fleet {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/motd", "hello\n")
        .write("hosts/h1/files/etc/app/app.conf", "port = 80\n")
        .write("hosts/h1/files/usr/local/bin/tool", "#!/bin/sh\necho hi\n")
        .symlink("hosts/h1/files/etc/motd.link", "motd")
        .write("roles/base/files/etc/issue", "base\n")
        .write(
            "hosts/h1/host.toml",
            "include = [\"roles/base\"]\n[files.\"/etc/app/app.conf\"]\nmode = \"0600\"\n",
        );
    std::fs::set_permissions(
        f.work().join("hosts/h1/files/usr/local/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    f
}

#[test]
fn first_apply_change_drift_prune_restore() {
    let f = base_fleet();
    let c1 = f.commit("first");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    // A file that exists before plumb claims it is kept and restored later.
    std::fs::create_dir_all(h.path("/etc")).unwrap();
    std::fs::write(h.path("/etc/issue"), "original issue\n").unwrap();
    std::fs::set_permissions(h.path("/etc/issue"), std::fs::Permissions::from_mode(0o640)).unwrap();

    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "hello\n");
    assert_eq!(h.read("/etc/issue").unwrap(), "base\n");
    assert_eq!(mode(&h, "/etc/motd"), 0o644);
    assert_eq!(mode(&h, "/etc/app/app.conf"), 0o600);
    assert_eq!(mode(&h, "/usr/local/bin/tool"), 0o755);
    assert_eq!(
        std::fs::read_link(h.path("/etc/motd.link"))
            .unwrap()
            .to_str(),
        Some("motd")
    );
    let st = h.status();
    assert_eq!(st["outcome"].as_str(), Some("changed"));
    assert_eq!(st["desired_commit"].as_str(), Some(c1.as_str()));
    assert_eq!(st["applied_commit"].as_str(), Some(c1.as_str()));
    assert_eq!(st["last_good_commit"].as_str(), Some(c1.as_str()));

    // Nothing new: converged, nothing touched.
    let before = h.snapshot();
    h.apply_expect(0);
    assert_eq!(outcome(&h), "converged");
    assert_eq!(h.snapshot(), before);

    // A new commit changes a file.
    f.write("hosts/h1/files/etc/motd", "hello v2\n");
    f.commit("v2");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "hello v2\n");
    assert_eq!(resource_state(&h, "/etc/motd"), "changed");

    // Drift: edited, chmod-ed, deleted by hand -> put back, reported.
    std::fs::write(h.path("/etc/motd"), "hacked\n").unwrap();
    std::fs::set_permissions(
        h.path("/etc/app/app.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::remove_file(h.path("/usr/local/bin/tool")).unwrap();
    h.apply_expect(0);
    assert_eq!(outcome(&h), "drifted");
    assert_eq!(h.read("/etc/motd").unwrap(), "hello v2\n");
    assert_eq!(mode(&h, "/etc/app/app.conf"), 0o600);
    assert!(h.path("/usr/local/bin/tool").exists());
    for p in ["/etc/motd", "/etc/app/app.conf", "/usr/local/bin/tool"] {
        assert_eq!(resource_state(&h, p), "drift-corrected", "{p}");
    }

    // Prune: files that leave Git are deleted with the directories plumb made; the original comes back.
    f.remove("hosts/h1/files/etc/app")
        .remove("hosts/h1/files/usr")
        .remove("hosts/h1/host.toml");
    f.commit("prune");
    h.apply_expect(0);
    assert!(
        !h.path("/etc/app").exists(),
        "created dir removed with its last file"
    );
    assert!(
        !h.path("/usr").exists(),
        "/usr/local/bin created by plumb, removed again"
    );
    assert_eq!(h.read("/etc/issue").unwrap(), "original issue\n");
    assert_eq!(mode(&h, "/etc/issue"), 0o640);
    assert_eq!(resource_state(&h, "/etc/issue"), "pruned");
    assert_eq!(h.read("/etc/motd").unwrap(), "hello v2\n");
}

#[test]
fn untouched_paths_stay() {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/a/managed", "m\n");
    f.commit("one");
    let h = Host::new("h1", f.bare().to_str().unwrap(), ""); // a local path, not a URL
    std::fs::create_dir_all(h.path("/etc/a")).unwrap();
    std::fs::write(h.path("/etc/a/mine"), "mine\n").unwrap();
    h.apply_expect(0);
    f.remove("hosts/h1/files/etc/a/managed")
        .write("hosts/h1/files/etc/b", "b\n");
    f.commit("two");
    h.apply_expect(0);
    assert_eq!(
        h.read("/etc/a/mine").unwrap(),
        "mine\n",
        "plumb never touches what Git does not name"
    );
    assert!(
        h.path("/etc/a").is_dir(),
        "a directory plumb did not create stays"
    );
    assert!(!h.path("/etc/a/managed").exists());
}

#[test]
fn detect_and_suspend_change_nothing() {
    let f = base_fleet();
    f.commit("one");
    let url = format!("file://{}", f.bare().display());
    let h = Host::new("h1", &url, "mode = \"detect\"");
    let before = h.snapshot();
    h.apply_expect(0);
    assert_eq!(h.snapshot(), before, "detect changes nothing");
    assert_eq!(resource_state(&h, "/etc/motd"), "drifted");

    h.configure(&url, "");
    h.apply_expect(0);
    std::fs::write(h.path("/etc/motd"), "hacked\n").unwrap();
    h.configure(&url, "mode = \"detect\"");
    h.apply_expect(0);
    assert_eq!(outcome(&h), "drifted");
    assert_eq!(h.read("/etc/motd").unwrap(), "hacked\n");

    h.configure(&url, "mode = \"suspend\"");
    f.write("hosts/h1/files/etc/new", "n\n");
    let c2 = f.commit("two");
    h.apply_expect(0);
    assert!(!h.path("/etc/new").exists());
    assert_eq!(h.status()["desired_commit"].as_str(), Some(c2.as_str()));
    assert!(h.status()["message"].as_str().unwrap().contains("suspend"));
}

#[test]
fn plan_exit_codes_and_diff() {
    let f = base_fleet();
    let c1 = f.commit("one");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    let out = h.plumb(&["-v", "plan"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}{log}");
    // Issue 18: the plan on stdout in the future tense, logs on stderr, one count in both.
    assert!(text.contains("would create file /etc/motd\n"), "{text}");
    assert!(
        !text.contains("(created)") && !log.contains("would create"),
        "{text}{log}"
    );
    let n = text.lines().filter(|l| l.starts_with("would ")).count();
    assert!(n >= 2, "{text}");
    assert!(
        text.contains(&format!("plan for h1 at {}: {n} changes;", &c1[..12])),
        "{text}"
    );
    assert!(log.contains(&format!("changes={n} ")), "{log}");
    assert!(
        log.contains(&format!(
            "plan done: would change at {}, {n} changes",
            &c1[..7]
        )),
        "nothing changed, the log says what would: {log}"
    );
    assert!(
        !log.contains("pending") && !text.contains("pending"),
        "{text}{log}"
    );
    assert!(text.contains("+hello"), "diff shown: {text}");
    assert!(
        !text.contains("port = 80"),
        "secret content never shown: {text}"
    );
    assert!(h.snapshot().is_empty(), "plan changes nothing");

    h.apply_expect(0);
    let out = h.plumb(&["plan"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("no changes: the host matches Git\n"),
        "{text}"
    );

    f.write("hosts/h1/host.toml", "bogus = 1\n");
    f.commit("bad");
    let out = h.plumb(&["plan"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn served_by_git_daemon_and_server_outage() {
    let f = base_fleet();
    let c1 = f.commit("one");
    let d = GitDaemon::start(f.dir.path());
    let url = d.url("fleet.git");
    let h = Host::new("h1", &url, "");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "hello\n");

    // The server goes away: the host stays on the last fetched commit, corrects drift, and says why.
    let (base, port) = d.stop();
    std::fs::write(h.path("/etc/motd"), "hacked\n").unwrap();
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "hello\n");
    let st = h.status();
    assert!(
        st["message"].as_str().unwrap().contains("could not fetch"),
        "{st:?}"
    );
    assert_eq!(st["applied_commit"].as_str(), Some(c1.as_str()));

    // It comes back with a new commit: applied.
    f.write("hosts/h1/files/etc/motd", "back\n");
    let c2 = f.commit("two");
    let _d = GitDaemon::start_on(&base, port);
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "back\n");
    assert_eq!(h.status()["applied_commit"].as_str(), Some(c2.as_str()));
}

#[test]
fn fetch_is_shallow() {
    let f = Fleet::new();
    for i in 0..5 {
        f.write("hosts/h1/files/etc/n", &format!("{i}\n"));
        f.commit(&format!("c{i}"));
    }
    let d = GitDaemon::start(f.dir.path());
    let h = Host::new("h1", &d.url("fleet.git"), "");
    h.apply_expect(0);
    let count = git(
        &h.state().join("repo.git"),
        &["rev-list", "--count", "--all"],
    );
    assert_eq!(count, "1", "only the tip commit is fetched");
}

/// Each bad commit is rejected before anything is written: the host keeps the last good commit.
#[test]
fn bad_commits_are_rejected_and_change_nothing() {
    let f = base_fleet();
    let good = f.commit("good");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    h.apply_expect(0);
    let converged = h.snapshot();

    type Breaker = fn(&Fleet);
    fn noop(_: &Fleet) {}
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "malformed TOML",
            |f| noop(f.write("hosts/h1/host.toml", "include = [")),
            "hosts/h1/host.toml",
        ),
        (
            "unknown key",
            |f| noop(f.write("hosts/h1/host.toml", "pakages = {}\n")),
            "unknown field `pakages`",
        ),
        (
            "missing include",
            |f| noop(f.write("hosts/h1/host.toml", "include = [\"roles/nope\"]\n")),
            "roles/nope",
        ),
        (
            "include with ..",
            |f| noop(f.write("hosts/h1/host.toml", "include = [\"../x\"]\n")),
            "`..`",
        ),
        (
            "escaping symlink",
            |f| noop(f.symlink("hosts/h1/files/etc/evil", "../../../../../etc/shadow")),
            "escapes the root",
        ),
        (
            "file and directory on one path",
            |f| noop(f.write("roles/base/files/etc/motd/x", "x")),
            "a file in",
        ),
        (
            "two roles, different content",
            |f| {
                f.write("roles/other/files/etc/issue", "other\n");
                f.write(
                    "hosts/h1/host.toml",
                    "include = [\"roles/base\", \"roles/other\"]\n",
                );
            },
            "with different content",
        ),
        (
            "host directory gone",
            |f| noop(f.remove("hosts/h1")),
            "hosts/h1 does not exist",
        ),
        (
            "bad mode",
            |f| {
                noop(f.write(
                    "hosts/h1/host.toml",
                    "[files.\"/etc/motd\"]\nmode = \"rw\"\n",
                ))
            },
            "mode",
        ),
        (
            "unexpected entry",
            |f| noop(f.write("hosts/h1/notes.txt", "x")),
            "unexpected entry",
        ),
        (
            "bad unit name",
            |f| noop(f.write("hosts/h1/units/no suffix", "x")),
            "not a valid name",
        ),
        (
            "bad package name",
            |f| {
                noop(f.write(
                    "hosts/h1/host.toml",
                    "[packages]\ninstall = [\"x; rm -rf /\"]\n",
                ))
            },
            "package name",
        ),
        (
            "non-UTF-8 name",
            |f| {
                use std::os::unix::ffi::OsStrExt;
                let p = f
                    .work()
                    .join("hosts/h1/files/etc")
                    .join(std::ffi::OsStr::from_bytes(b"bad\xff"));
                std::fs::write(p, "x").unwrap();
            },
            "not UTF-8",
        ),
    ];
    for (name, breaker, needle) in cases {
        git(&f.work(), &["reset", "-q", "--hard", &good]);
        git(&f.work(), &["clean", "-qfdx"]);
        f.write("hosts/h1/files/etc/motd", "should not land\n");
        breaker(&f);
        let bad = f.commit(name);
        h.apply_expect(1);
        let st = h.status();
        assert_eq!(st["outcome"].as_str(), Some("rejected"), "{name}");
        let msg = st["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} lacks {needle:?}"
        );
        assert!(
            msg.contains(&bad[..7]),
            "{name}: message names the commit: {msg}"
        );
        assert_eq!(st["desired_commit"].as_str(), Some(bad.as_str()), "{name}");
        assert_eq!(st["applied_commit"].as_str(), Some(good.as_str()), "{name}");
        assert_eq!(h.snapshot(), converged, "{name}: the host did not change");
    }
    // Back to a good commit: applies again.
    git(&f.work(), &["reset", "-q", "--hard", &good]);
    f.write("hosts/h1/files/etc/motd", "fixed\n");
    f.commit("fixed");
    h.apply_expect(0);
    assert_eq!(h.read("/etc/motd").unwrap(), "fixed\n");
}

/// A rejected commit does not stop drift correction on the last good one.
#[test]
fn drift_is_corrected_while_a_bad_commit_waits() {
    let f = base_fleet();
    f.commit("good");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    h.apply_expect(0);
    f.write("hosts/h1/host.toml", "nope = true\n");
    f.commit("bad");
    std::fs::write(h.path("/etc/motd"), "hacked\n").unwrap();
    h.apply_expect(1);
    assert_eq!(h.read("/etc/motd").unwrap(), "hello\n");
}

#[test]
fn config_errors_name_the_file() {
    let h = Host::new("h1", "/nonexistent", "");
    std::fs::write(
        h.config(),
        "repo = \"x\"\nhost = \"h1\"\nintervall = \"5s\"\n",
    )
    .unwrap();
    let out = h.plumb(&["apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("agent.toml") && err.contains("intervall"),
        "{err}"
    );
    let out = std::process::Command::new(PLUMB)
        .args(["--config", "/nonexistent/agent.toml", "plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn validate_a_checkout() {
    let f = base_fleet();
    f.write("hosts/h2/host.toml", "include = [\"roles/missing\"]\n");
    let out = std::process::Command::new(PLUMB)
        .arg("validate")
        .arg(f.work())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hosts/h1: ok"), "{text}");
    assert!(
        text.contains("hosts/h2: error") && text.contains("roles/missing"),
        "{text}"
    );
    let out = std::process::Command::new(PLUMB)
        .arg("validate")
        .arg(f.work())
        .args(["--host", "h1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// Issue 12: `plumb validate` refuses in CI what the host would refuse as self-protection (checked
/// against the packaged paths), not only what fails to parse.
#[test]
fn validate_runs_the_self_protection_guard() {
    let f = base_fleet();
    f.write("hosts/h2/files/etc/plumb/deploy_key", "not a key\n");
    f.write(
        "hosts/h3/units/plumb.service.d/off.conf",
        "[Service]\nExecStart=\n",
    );
    let out = std::process::Command::new(PLUMB)
        .arg("validate")
        .arg(f.work())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hosts/h1: ok"), "{text}");
    for h in ["h2", "h3"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("hosts/{h}:")))
            .unwrap_or_default();
        assert!(
            line.contains("error") && line.contains("cut plumb off"),
            "{h}: {text}"
        );
    }
    assert!(text.contains("/etc/plumb/deploy_key"), "{text}");
}

/// SIGKILL while writing many files: no managed path is ever torn, and the next pass converges.
#[test]
fn killed_pass_leaves_no_torn_file() {
    let f = Fleet::new();
    let big = |tag: &str| format!("{tag}\n{}", "x".repeat(64 * 1024));
    for i in 0..300 {
        f.write(&format!("hosts/h1/files/srv/data/f{i:03}"), &big("v1"));
    }
    f.commit("v1");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    h.apply_expect(0);
    for i in 0..300 {
        f.write(&format!("hosts/h1/files/srv/data/f{i:03}"), &big("v2"));
    }
    f.commit("v2");
    for delay_ms in [5u64, 20, 60] {
        let mut child = std::process::Command::new(PLUMB)
            .args(["apply", "--config"])
            .arg(h.config())
            .env("PLUMB_LOG", "error")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for i in 0..300 {
            let p = format!("/srv/data/f{i:03}");
            let c = h.read(&p).unwrap();
            assert!(
                c == big("v1") || c == big("v2"),
                "{p} is torn after a kill at {delay_ms} ms ({} bytes)",
                c.len()
            );
        }
    }
    h.apply_expect(0);
    for i in 0..300 {
        let c = h.read(&format!("/srv/data/f{i:03}")).unwrap();
        assert!(
            c == big("v2"),
            "f{i:03} not converged: starts {:?}",
            &c[..3]
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(h.path("/srv/data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

/// `plumb run`: SIGUSR1 triggers a pass now; SIGTERM stops it cleanly.
#[test]
fn daemon_passes_on_signal_and_stops_on_term() {
    let f = base_fleet();
    f.commit("one");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    h.configure(&format!("file://{}", f.bare().display()), "");
    let cfg = std::fs::read_to_string(h.config())
        .unwrap()
        .replace("interval = \"1s\"", "interval = \"1h\"");
    std::fs::write(h.config(), cfg).unwrap();
    let mut child = std::process::Command::new(PLUMB)
        .args(["run", "--config"])
        .arg(h.config())
        .env("PLUMB_LOG", "warn")
        .spawn()
        .unwrap();
    wait_until("the first pass", Duration::from_secs(30), || {
        h.read("/etc/motd").is_some()
    });
    f.write("hosts/h1/files/etc/motd", "signalled\n");
    f.commit("two");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    wait_until("a pass on SIGUSR1", Duration::from_secs(30), || {
        h.read("/etc/motd").as_deref() == Some("signalled\n")
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    wait_until("exit on SIGTERM", Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
}

/// Issue 20 item 7: the journal's message text carries the essentials, not only its fields.
#[test]
fn log_lines_say_what_was_done_issue_20() {
    let f = Fleet::new();
    f.write("hosts/h1/files/etc/motd", "hello\n");
    let commit = f.commit("one");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    let out = h.plumb(&["-v", "apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = |start: &str| {
        stderr
            .lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no line with {start:?} in {stderr}"))
            .to_string()
    };
    let applied = line("applied: ");
    assert!(
        applied.contains("applied: create file /etc/motd") && applied.contains("name="),
        "{applied}"
    );
    let done = line("pass done: ");
    assert!(
        done.contains(&format!("pass done: changed at {}, 1 change", &commit[..7]))
            && done.contains("outcome=\"changed\""),
        "{done}"
    );
}
