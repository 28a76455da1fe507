//! Hostile or broken commits, table-driven. Each case starts from a host converged on a good,
//! signed commit, pushes something bad to a real repository served over file://, runs the real
//! `plumb apply`, and checks the exact outcome, that the message names the commit and the reason,
//! that the applied commit did not move, and that nothing under root (or outside it) changed.

mod common;

use common::trust::*;
use std::path::{Path, PathBuf};

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fleet: Fleet,
    host: Host,
    good: Key,
    other: Key,
    signers: PathBuf,
    /// A directory beside root that nothing may ever write to.
    outside: PathBuf,
    /// The commit before the applied one, and the applied one.
    c0: String,
    c1: String,
}

const LIMITS: &str = "[limits]\nmax_file_size = 4096\nmax_total_size = 40000\nmax_files = 20\n";

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let good = keygen(&dir, "good");
        let other = keygen(&dir, "other");
        let signers = dir.join("allowed_signers");
        std::fs::write(
            &signers,
            format!("{EMAIL} namespaces=\"git\" {}\n", good.public),
        )
        .unwrap();
        let outside = dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("app.conf"), "outside\n").unwrap();
        let fleet = Fleet::new(&dir);
        fleet
            .write("hosts/h1/files/etc/motd", "v0\n")
            .write("hosts/h1/files/etc/app/app.conf", "port=1\n")
            .write(
                "hosts/h1/host.toml",
                "[files.\"/etc/app/app.conf\"]\nmode = \"0640\"\n",
            );
        let c0 = fleet.commit("base", Some(&good));
        fleet.write("hosts/h1/files/etc/motd", "v1\n");
        let c1 = fleet.commit("v1", Some(&good));
        let host = Host::new(&dir, &fleet.url(), &trust(&signers));
        let r = host.converge();
        assert_eq!(r.applied_commit, c1);
        assert_eq!(r.outcome.as_str(), "changed");
        let r = host.converge();
        assert_eq!(r.outcome.as_str(), "converged", "{}", r.message);
        Env {
            _tmp: tmp,
            dir,
            fleet,
            host,
            good,
            other,
            signers,
            outside,
            c0,
            c1,
        }
    }

    /// Commits signed by the trusted key.
    fn signed(&self, msg: &str) -> String {
        self.fleet.commit(msg, Some(&self.good))
    }

    /// The host and the directory beside it.
    fn snapshot(
        &self,
    ) -> (
        std::collections::BTreeMap<String, String>,
        std::collections::BTreeMap<String, String>,
    ) {
        (snapshot(&self.host.root), snapshot(&self.outside))
    }

    /// Builds a commit (signed) whose tree is HEAD's with `line` (an `ls-tree` line) added to the
    /// tree at `dir`: how to get names into Git that `git add` refuses.
    fn graft(&self, dir: &str, line: &str) -> String {
        let w = &self.fleet.work;
        let new_tree = graft_tree(w, "HEAD^{tree}", dir, line);
        let mut c = git(w);
        c.arg("-c")
            .arg("gpg.format=ssh")
            .arg("-c")
            .arg(format!("user.signingkey={}", self.good.private.display()))
            .args(["commit-tree", "-S", "-p", "HEAD", "-m", "graft", &new_tree]);
        let commit = run(&mut c);
        run(git(w).args([
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{commit}:refs/heads/main"),
        ]));
        commit
    }
}

fn trust(signers: &Path) -> String {
    format!(
        "[trust]\nallowed_signers = {:?}\n{LIMITS}",
        signers.display().to_string()
    )
}

fn graft_tree(w: &Path, tree: &str, dir: &str, line: &str) -> String {
    let listing = run(git(w).args(["ls-tree", tree]));
    let mut lines: Vec<String> = listing.lines().map(String::from).collect();
    match dir.split_once('/') {
        None if dir.is_empty() => lines.push(line.to_string()),
        _ => {
            let (first, rest) = dir.split_once('/').unwrap_or((dir, ""));
            let sub = run(git(w).args(["rev-parse", &format!("{tree}:{first}")]));
            let new_sub = graft_tree(w, &sub, rest, line);
            lines.retain(|l| !l.ends_with(&format!("\t{first}")));
            lines.push(format!("040000 tree {new_sub}\t{first}"));
        }
    }
    let mut c = git(w);
    c.arg("mktree");
    let input = lines.join("\n") + "\n";
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn blob(w: &Path, content: &str) -> String {
    let mut child = git(w)
        .args(["hash-object", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

/// What a case expects of the pass that follows its action.
struct Expect {
    outcome: &'static str,
    /// The message must start with this (it names the commit) ...
    prefix: String,
    /// ... and contain this (the reason).
    reason: String,
}

fn rejected(head: &str, reason: &str) -> Expect {
    Expect {
        outcome: "rejected",
        prefix: format!("rejected {}: ", short(head)),
        reason: reason.into(),
    }
}

type Act = fn(&Env) -> Expect;

fn cases() -> Vec<(&'static str, Act)> {
    vec![
        ("unsigned commit", |e| {
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("unsigned", None);
            rejected(&c, &format!("commit {c} is not signed"))
        }),
        ("signed by an unknown key", |e| {
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("other key", Some(&e.other));
            rejected(&c, "which is not in allowed_signers")
        }),
        ("signature over tampered content", |e| {
            let w = &e.fleet.work;
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            run(git(w).args(["add", "-A"]));
            run(git(w).args(["commit", "-q", "-m", "evil"]));
            let evil_tree = run(git(w).args(["rev-parse", "HEAD^{tree}"]));
            run(git(w).args(["reset", "-q", "--hard", "HEAD~1"]));
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let signed = e.signed("v2");
            let good_tree = run(git(w).args(["rev-parse", "HEAD^{tree}"]));
            let raw = run(git(w).args(["cat-file", "commit", &signed]));
            let forged = raw.replacen(
                &format!("tree {good_tree}"),
                &format!("tree {evil_tree}"),
                1,
            ) + "\n";
            let mut child = git(w)
                .args(["hash-object", "-t", "commit", "-w", "--stdin"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(forged.as_bytes())
                .unwrap();
            let c = String::from_utf8(child.wait_with_output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_string();
            run(git(w).args(["reset", "-q", "--hard", &c]));
            e.fleet.push();
            rejected(&c, &format!("commit {c} has a bad signature"))
        }),
        ("unsigned commit under a signed head", |e| {
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let mid = e.fleet.commit("sneaky", None);
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let c = e.signed("looks fine");
            rejected(
                &c,
                &format!("commit {mid} (1 before the head {c}) is not signed"),
            )
        }),
        ("expired key", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} valid-before=\"20200101\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("expired", Some(&e.other));
            rejected(&c, "has expired (allowed_signers line 2: valid-before)")
        }),
        ("key not valid yet", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} valid-after=\"20990101\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("early", Some(&e.other));
            rejected(&c, "is not valid yet")
        }),
        ("key allowed for another namespace", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} namespaces=\"file\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("ns", Some(&e.other));
            rejected(&c, "does not allow namespace \"git\"")
        }),
        ("key of another principal", |e| {
            append(&e.signers, &format!("dev@example.org {}\n", e.other.public));
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("principal", Some(&e.other));
            rejected(
                &c,
                "allows principals \"dev@example.org\", not the committer <ops@example.org>",
            )
        }),
        ("allowed_signers missing", |e| {
            std::fs::remove_file(&e.signers).unwrap();
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let c = e.signed("fine");
            rejected(&c, "reading trust.allowed_signers")
        }),
        ("allowed_signers empty", |e| {
            std::fs::write(&e.signers, "# nobody\n").unwrap();
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let c = e.signed("fine");
            rejected(&c, "lists no key")
        }),
        ("force-push to an older commit", |e| {
            run(git(&e.fleet.work).args(["reset", "-q", "--hard", &e.c0]));
            let c = e.fleet.push();
            rejected(
                &c,
                &format!("does not descend from the applied commit {}", e.c1),
            )
        }),
        ("unrelated history", |e| {
            let w = &e.fleet.work;
            run(git(w).args(["checkout", "-q", "--orphan", "other"]));
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.signed("unrelated");
            rejected(&c, "plumb only moves forward")
        }),
        ("`..` in a tree entry", |e| {
            let w = &e.fleet.work;
            let b = blob(w, "root::0:0:::\n");
            let inner = graft_tree(
                w,
                &run(git(w).args(["mktree"]).stdin(std::process::Stdio::null())),
                "",
                &format!("100644 blob {b}\tshadow"),
            );
            let c = e.graft("hosts/h1/files", &format!("040000 tree {inner}\t.."));
            rejected(&c, "`..`")
        }),
        ("include with `..`", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"../../etc\"]\n");
            let c = e.signed("dotdot include");
            rejected(
                &c,
                "hosts/h1/host.toml: include \"../../etc\": path components `.`, `..`",
            )
        }),
        ("absolute include", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"/etc\"]\n");
            let c = e.signed("absolute include");
            rejected(&c, "must be a relative path")
        }),
        ("symlink escaping root", |e| {
            e.fleet
                .symlink("hosts/h1/files/etc/evil", "../../../../../etc/shadow");
            let c = e.signed("escape");
            rejected(&c, "hosts/h1/files/etc/evil: symlink target \"../../../../../etc/shadow\" escapes the root")
        }),
        ("symlink swapped in on the host", |e| {
            let app = e.host.root.join("etc/app");
            std::fs::remove_dir_all(&app).unwrap();
            std::os::unix::fs::symlink(&e.outside, &app).unwrap();
            e.fleet.write("hosts/h1/files/etc/app/app.conf", "port=2\n");
            let c = e.signed("port 2");
            let _ = c;
            Expect {
                outcome: "failed",
                prefix: String::new(),
                reason: "1 resource(s) failed".into(),
            }
        }),
        ("oversize file", |e| {
            e.fleet.write("hosts/h1/files/var/big", &"x".repeat(5000));
            let c = e.signed("big");
            rejected(&c, "hosts/h1/files/var/big: /var/big is larger than the limit of 4096 bytes (limits.max_file_size in agent.toml)")
        }),
        ("too many files", |e| {
            for i in 0..25 {
                e.fleet.write(&format!("hosts/h1/files/var/many/{i}"), "x");
            }
            let c = e.signed("many");
            rejected(
                &c,
                "27 files exceed the limit of 20 (limits.max_files in agent.toml)",
            )
        }),
        ("too many bytes in total", |e| {
            for i in 0..12 {
                e.fleet
                    .write(&format!("hosts/h1/files/var/fat/{i}"), &"x".repeat(4000));
            }
            let c = e.signed("fat");
            rejected(
                &c,
                "over the limit of 40000 (limits.max_total_size in agent.toml)",
            )
        }),
        ("oversize unit file", |e| {
            e.fleet.write(
                "hosts/h1/units/big.service",
                &format!("[Service]\n#{}\n", "x".repeat(5000)),
            );
            let c = e.signed("big unit");
            rejected(&c, "limits.max_file_size")
        }),
        ("invalid unit name", |e| {
            e.fleet.write(
                "hosts/h1/units/bad name.service",
                "[Service]\nExecStart=/bin/true\n",
            );
            let c = e.signed("unit");
            rejected(
                &c,
                "hosts/h1/units/bad name.service: \"bad name.service\" is not a valid name",
            )
        }),
        ("unit file without a unit suffix", |e| {
            e.fleet.write("hosts/h1/units/app.exe", "[Service]\n");
            let c = e.signed("unit");
            rejected(&c, "\"app.exe\" is not a unit name")
        }),
        ("unit file that is a symlink", |e| {
            e.fleet.symlink("hosts/h1/units/app.service", "/dev/null");
            let c = e.signed("masked");
            rejected(&c, "unit files must be regular files, not symlinks")
        }),
        ("invalid Quadlet kind", |e| {
            e.fleet
                .write("hosts/h1/containers/web.txt", "[Container]\n");
            let c = e.signed("quadlet");
            rejected(&c, "hosts/h1/containers/web.txt: not a Quadlet file")
        }),
        ("invalid Quadlet name", |e| {
            e.fleet
                .write("hosts/h1/containers/.hidden.container", "[Container]\n");
            let c = e.signed("quadlet");
            rejected(&c, "\".hidden.container\" is not a valid name")
        }),
        ("package name with shell characters", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[packages]\ninstall = [\"curl; rm -rf /\"]\n",
            );
            let c = e.signed("pkg");
            rejected(
                &c,
                "hosts/h1/host.toml: [packages]: \"curl; rm -rf /\" is not a valid package name",
            )
        }),
        ("owner with shell characters", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[files.\"/etc/app/app.conf\"]\nowner = \"$(id)\"\n",
            );
            let c = e.signed("owner");
            rejected(&c, "is not a valid user or group name")
        }),
        ("invalid UTF-8 file name", |e| {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
            let p = e.fleet.work.join("hosts/h1/files/etc").join(name);
            std::fs::write(p, "x").unwrap();
            let c = e.signed("latin1");
            rejected(&c, "is not UTF-8")
        }),
        ("malformed TOML", |e| {
            e.fleet.write("hosts/h1/host.toml", "include = [\n");
            let c = e.signed("toml");
            rejected(&c, "hosts/h1/host.toml: TOML parse error")
        }),
        ("unknown key", |e| {
            e.fleet.write("hosts/h1/host.toml", "packagez = [\"x\"]\n");
            let c = e.signed("typo");
            rejected(&c, "unknown field `packagez`")
        }),
        ("missing include", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"roles/nope\"]\n");
            let c = e.signed("include");
            rejected(&c, "hosts/h1: include \"roles/nope\" does not exist")
        }),
        ("include cycle", |e| {
            e.fleet
                .write("roles/a/host.toml", "include = [\"roles/b\"]\n");
            e.fleet
                .write("roles/b/host.toml", "include = [\"roles/a\"]\n");
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"roles/a\"]\n");
            let c = e.signed("cycle");
            rejected(
                &c,
                "include cycle: hosts/h1 -> roles/a -> roles/b -> roles/a",
            )
        }),
        ("file vs directory conflict", |e| {
            e.fleet.write("roles/r/files/etc/motd/x", "y\n");
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"roles/r\"]\n");
            let c = e.signed("conflict");
            rejected(&c, "/etc/motd is a file in hosts/h1/files/etc/motd but a directory in roles/r/files/etc/motd/x")
        }),
        ("two roles with different content", |e| {
            e.fleet.write("roles/a/files/etc/issue", "a\n");
            e.fleet.write("roles/b/files/etc/issue", "b\n");
            e.fleet.write(
                "hosts/h1/host.toml",
                "include = [\"roles/a\", \"roles/b\"]\n",
            );
            let c = e.signed("roles");
            rejected(&c, "/etc/issue is claimed by roles/a/files/etc/issue and by roles/b/files/etc/issue with different content")
        }),
        ("submodule", |e| {
            let c = e.graft(
                "hosts/h1/files/etc",
                &format!("160000 commit {}\tsub", e.c0),
            );
            rejected(&c, "submodules are not supported")
        }),
        ("relative health command", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[[health]]\ncommand = [\"curl\", \"localhost\"]\n",
            );
            let c = e.signed("health");
            rejected(&c, "`command` must start with an absolute program path")
        }),
        ("host directory deleted", |e| {
            e.fleet.remove("hosts/h1");
            e.fleet.write("hosts/other/host.toml", "");
            let c = e.signed("gone");
            rejected(&c, "hosts/h1 does not exist in commit")
        }),
    ]
}

fn append(path: &Path, line: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(line);
    std::fs::write(path, s).unwrap();
}

// The table, in four parts that run in parallel.
#[test]
fn hostile_commits_change_nothing_1() {
    check_cases(0);
}
#[test]
fn hostile_commits_change_nothing_2() {
    check_cases(1);
}
#[test]
fn hostile_commits_change_nothing_3() {
    check_cases(2);
}
#[test]
fn hostile_commits_change_nothing_4() {
    check_cases(3);
}

const PARTS: usize = 4;

fn check_cases(part: usize) {
    let all = cases();
    assert!(all.len() >= 20);
    let cases: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % PARTS == part)
        .map(|(_, c)| c)
        .collect();
    let mut failures = Vec::new();
    for (name, act) in &cases {
        let e = Env::new();
        let expect = act(&e);
        let before = e.snapshot();
        // Twice: a rejection is stable, and the agent keeps running on the applied commit.
        for round in 0..2 {
            let a = e.host.apply(&[]);
            let r = a.report.as_ref().expect("a report");
            let problems: Vec<String> = [
                (a.code != 1).then(|| format!("exit code {} (want 1)", a.code)),
                (r.outcome.as_str() != expect.outcome)
                    .then(|| format!("outcome {} (want {})", r.outcome.as_str(), expect.outcome)),
                (!r.message.starts_with(&expect.prefix) || !r.message.contains(&expect.reason))
                    .then(|| {
                        format!(
                            "message {:?} (want {:?} ... {:?})",
                            r.message, expect.prefix, expect.reason
                        )
                    }),
                (expect.outcome == "rejected" && r.applied_commit != e.c1)
                    .then(|| format!("applied_commit moved to {}", r.applied_commit)),
                (r.last_good_commit != e.c1)
                    .then(|| format!("last_good_commit moved to {}", r.last_good_commit)),
                (e.snapshot() != before).then(|| "the host changed".to_string()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !problems.is_empty() {
                failures.push(format!(
                    "{name} (pass {}): {}",
                    round + 1,
                    problems.join("; ")
                ));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn host_name_with_a_slash_is_a_config_error() {
    let e = Env::new();
    let before = e.snapshot();
    let report_before = e.host.report();
    std::fs::write(
        &e.host.config,
        std::fs::read_to_string(&e.host.config)
            .unwrap()
            .replace("host = \"h1\"", "host = \"../h1\""),
    )
    .unwrap();
    let a = e.host.apply(&[]);
    assert_eq!(a.code, 1);
    assert!(
        a.stderr.contains("agent.toml: key `host`")
            && a.stderr.contains("host name \"../h1\" is invalid"),
        "{}",
        a.stderr
    );
    assert_eq!(e.snapshot(), before);
    assert_eq!(e.host.report(), report_before);
}

#[test]
fn a_fixed_history_is_applied_and_rewind_needs_the_flag() {
    let e = Env::new();
    // An unsigned commit is rejected; replacing it with a signed one on top of the applied commit works.
    e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
    e.fleet.commit("unsigned", None);
    assert_eq!(
        e.host.apply(&[]).report.unwrap().outcome.as_str(),
        "rejected"
    );
    run(git(&e.fleet.work).args(["reset", "-q", "--hard", &e.c1]));
    e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
    let c2 = e.signed("v2");
    let r = e.host.converge();
    assert_eq!(
        (r.outcome.as_str(), r.applied_commit.as_str()),
        ("changed", c2.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(e.host.root.join("etc/motd")).unwrap(),
        "v2\n"
    );

    // Back to c0: rejected, then accepted with --allow-rewind.
    run(git(&e.fleet.work).args(["reset", "-q", "--hard", &e.c0]));
    e.fleet.push();
    assert_eq!(
        e.host.apply(&[]).report.unwrap().outcome.as_str(),
        "rejected"
    );
    let a = e.host.apply(&["--allow-rewind"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let r = a.report.unwrap();
    assert_eq!(
        (r.outcome.as_str(), r.applied_commit.as_str()),
        ("changed", e.c0.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(e.host.root.join("etc/motd")).unwrap(),
        "v0\n"
    );
    // An unsigned head stays rejected even with --allow-rewind.
    e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
    let bad = e.fleet.commit("unsigned", None);
    let r = e.host.apply(&["--allow-rewind"]).report.unwrap();
    assert_eq!(r.outcome.as_str(), "rejected");
    assert!(
        r.message.contains(&format!("commit {bad} is not signed")),
        "{}",
        r.message
    );
}

#[test]
fn wiping_state_dir_does_not_reopen_a_rewind() {
    let e = Env::new();
    // The agent published status.toml on status/h1 (status.repo defaults to the fleet repo).
    let status = run(git(&e.dir)
        .arg("--git-dir")
        .arg(&e.fleet.bare)
        .args(["show", "status/h1:status.toml"]));
    assert!(
        status.contains(&format!("applied_commit = \"{}\"", e.c1)),
        "{status}"
    );
    std::fs::remove_dir_all(&e.host.state).unwrap();
    run(git(&e.fleet.work).args(["reset", "-q", "--hard", &e.c0]));
    let c = e.fleet.push();
    let before = e.snapshot();
    let a = e.host.apply(&[]);
    let r = a
        .report
        .unwrap_or_else(|| panic!("no report: {}", a.stderr));
    assert_eq!(r.outcome.as_str(), "rejected", "{}", r.message);
    assert!(
        r.message.contains(&format!(
            "{c} does not descend from the applied commit {}",
            e.c1
        )),
        "{}",
        r.message
    );
    assert_eq!(e.snapshot(), before);
}

#[test]
fn long_history_is_walked_over_git_daemon() {
    let e = Env::new();
    let daemon = GitDaemon::start(&e.dir);
    e.host
        .configure(&daemon.url("fleet.git"), &trust(&e.signers));
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
    // 40 signed commits: the shallow clone must be deepened to walk back to c1.
    let mut last = String::new();
    for i in 0..40 {
        e.fleet
            .write("hosts/h1/files/etc/motd", &format!("v{}\n", i + 2));
        last = e.signed(&format!("v{}", i + 2));
    }
    let r = e.host.converge();
    assert_eq!(
        (r.outcome.as_str(), r.applied_commit.as_str()),
        ("changed", last.as_str()),
        "{}",
        r.message
    );
    assert_eq!(
        std::fs::read_to_string(e.host.root.join("etc/motd")).unwrap(),
        "v41\n"
    );
    // One unsigned commit deep in a new batch of 30 is found.
    let mut bad = String::new();
    for i in 0..30 {
        e.fleet.write("hosts/h1/files/etc/motd", &format!("w{i}\n"));
        let key = if i == 3 { None } else { Some(&e.good) };
        let c = e.fleet.commit(&format!("w{i}"), key);
        if i == 3 {
            bad = c;
        }
    }
    let before = e.snapshot();
    let r = e.host.apply(&[]).report.unwrap();
    assert_eq!(r.outcome.as_str(), "rejected");
    assert!(
        r.message
            .contains(&format!("commit {bad} (26 before the head")),
        "{}",
        r.message
    );
    assert_eq!(e.snapshot(), before);
}
