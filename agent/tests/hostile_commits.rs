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

impl Env {
    /// A signed commit on top of HEAD with one more file at `path` (any depth or name length:
    /// built by `git fast-import`, not in the work tree), pushed to main.
    fn import(&self, path: &str, content: &str) -> String {
        let w = &self.fleet.work;
        let head = run(git(w).args(["rev-parse", "HEAD"]));
        let script = format!(
            "commit refs/plumb/import\ncommitter Ops <{EMAIL}> 0 +0000\ndata 6\nimport\nfrom {head}\nM 100644 inline {path}\ndata {}\n{content}\n",
            content.len()
        );
        let mut child = git(w)
            .args(["fast-import", "--quiet", "--force"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let tree = run(git(w).args(["rev-parse", "refs/plumb/import^{tree}"]));
        let mut c = git(w);
        c.arg("-c")
            .arg("gpg.format=ssh")
            .arg("-c")
            .arg(format!("user.signingkey={}", self.good.private.display()))
            .args(["commit-tree", "-S", "-p", "HEAD", "-m", "import", &tree]);
        let commit = run(&mut c);
        // git itself refuses trees deeper than core.maxTreeDepth (4096): the attacker's server
        // does not.
        run(git(&self.dir).arg("--git-dir").arg(&self.fleet.bare).args([
            "config",
            "core.maxTreeDepth",
            "100000",
        ]));
        run(git(w).args([
            "-c",
            "core.maxTreeDepth=100000",
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
    /// The stable reason code of the report (docs/reasons.md); every row names one.
    code: &'static str,
}

impl Expect {
    fn code(self, code: &'static str) -> Expect {
        Expect { code, ..self }
    }
}

fn rejected(head: &str, reason: &str) -> Expect {
    Expect {
        outcome: "rejected",
        prefix: format!("rejected {}: ", short(head)),
        reason: reason.into(),
        code: "",
    }
}

/// Every pass of a row must end within this: no input may keep plumb busy for minutes.
const PASS_BOUND: std::time::Duration = std::time::Duration::from_secs(20);

type Act = fn(&Env) -> Expect;

fn cases() -> Vec<(&'static str, Act)> {
    vec![
        ("unsigned commit", |e| {
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("unsigned", None);
            rejected(&c, &format!("commit {c} is not signed")).code("unsigned-commit")
        }),
        ("signed by an unknown key", |e| {
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("other key", Some(&e.other));
            rejected(&c, "which is not in allowed_signers").code("untrusted-signature")
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
            rejected(&c, &format!("commit {c} has a bad signature")).code("untrusted-signature")
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
            .code("unsigned-commit")
        }),
        ("expired key", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} valid-before=\"20200101\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("expired", Some(&e.other));
            rejected(&c, "has expired (allowed_signers line 2: valid-before)")
                .code("untrusted-signature")
        }),
        ("key not valid yet", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} valid-after=\"20990101\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("early", Some(&e.other));
            rejected(&c, "is not valid yet").code("untrusted-signature")
        }),
        ("key allowed for another namespace", |e| {
            append(
                &e.signers,
                &format!("{EMAIL} namespaces=\"file\" {}\n", e.other.public),
            );
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("ns", Some(&e.other));
            rejected(&c, "does not allow namespace \"git\"").code("untrusted-signature")
        }),
        ("key of another principal", |e| {
            append(&e.signers, &format!("dev@example.org {}\n", e.other.public));
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("principal", Some(&e.other));
            rejected(
                &c,
                "allows principals \"dev@example.org\", not the committer <ops@example.org>",
            )
            .code("untrusted-signature")
        }),
        ("allowed_signers missing", |e| {
            std::fs::remove_file(&e.signers).unwrap();
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let c = e.signed("fine");
            rejected(&c, "reading trust.allowed_signers").code("untrusted-signature")
        }),
        ("allowed_signers empty", |e| {
            std::fs::write(&e.signers, "# nobody\n").unwrap();
            e.fleet.write("hosts/h1/files/etc/motd", "v2\n");
            let c = e.signed("fine");
            rejected(&c, "lists no key").code("untrusted-signature")
        }),
        ("force-push to an older commit", |e| {
            run(git(&e.fleet.work).args(["reset", "-q", "--hard", &e.c0]));
            let c = e.fleet.push();
            rejected(
                &c,
                &format!("does not descend from the applied commit {}", e.c1),
            )
            .code("not-fast-forward")
        }),
        ("unrelated history", |e| {
            let w = &e.fleet.work;
            run(git(w).args(["checkout", "-q", "--orphan", "other"]));
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.signed("unrelated");
            rejected(&c, "plumb only moves forward").code("not-fast-forward")
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
            rejected(&c, "`..`").code("invalid-path")
        }),
        ("include with `..`", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"../../etc\"]\n");
            let c = e.signed("dotdot include");
            rejected(
                &c,
                "hosts/h1/host.toml: include \"../../etc\": path components `.`, `..`",
            )
            .code("invalid-path")
        }),
        ("absolute include", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"/etc\"]\n");
            let c = e.signed("absolute include");
            rejected(&c, "must be a relative path").code("invalid-path")
        }),
        ("symlink escaping root", |e| {
            e.fleet
                .symlink("hosts/h1/files/etc/evil", "../../../../../etc/shadow");
            let c = e.signed("escape");
            rejected(&c, "hosts/h1/files/etc/evil: symlink target \"../../../../../etc/shadow\" escapes the root")
            .code("invalid-path")
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
                code: "",
            }
            .code("apply-failed")
        }),
        ("oversize file", |e| {
            e.fleet.write("hosts/h1/files/var/big", &"x".repeat(5000));
            let c = e.signed("big");
            rejected(&c, "hosts/h1: files/var/big is 5000 bytes, over the limit of 4096 bytes (limits.max_file_size in agent.toml) [size-limit]")
            .code("size-limit")
        }),
        ("too many files", |e| {
            for i in 0..25 {
                e.fleet.write(&format!("hosts/h1/files/var/many/{i}"), "x");
            }
            let c = e.signed("many");
            rejected(
                &c,
                "more than 20 files for this host (limits.max_files in agent.toml)",
            )
            .code("size-limit")
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
            .code("size-limit")
        }),
        ("oversize unit file", |e| {
            e.fleet.write(
                "hosts/h1/units/big.service",
                &format!("[Service]\n#{}\n", "x".repeat(5000)),
            );
            let c = e.signed("big unit");
            rejected(&c, "limits.max_file_size").code("size-limit")
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
            .code("invalid-spec")
        }),
        ("unit file without a unit suffix", |e| {
            e.fleet.write("hosts/h1/units/app.exe", "[Service]\n");
            let c = e.signed("unit");
            rejected(&c, "\"app.exe\" is not a unit name").code("invalid-spec")
        }),
        ("unit file that is a symlink", |e| {
            e.fleet.symlink("hosts/h1/units/app.service", "/dev/null");
            let c = e.signed("masked");
            rejected(&c, "unit files must be regular files, not symlinks").code("invalid-spec")
        }),
        ("invalid Quadlet kind", |e| {
            e.fleet
                .write("hosts/h1/containers/web.txt", "[Container]\n");
            let c = e.signed("quadlet");
            rejected(&c, "hosts/h1/containers/web.txt: not a Quadlet file").code("invalid-spec")
        }),
        ("invalid Quadlet name", |e| {
            e.fleet
                .write("hosts/h1/containers/.hidden.container", "[Container]\n");
            let c = e.signed("quadlet");
            rejected(&c, "\".hidden.container\" is not a valid name").code("invalid-spec")
        }),
        ("package name with shell characters", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[packages]\ninstall = [\"curl; rm -rf /\"]\n",
            );
            let c = e.signed("pkg");
            rejected(
                &c,
                "hosts/h1/host.toml: [packages] install: \"curl; rm -rf /\" is not a valid package name",
            )
            .code("invalid-spec")
        }),
        ("package version pin with shell characters", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[packages]\ninstall = [\"curl=8.0;id\"]\n",
            );
            let c = e.signed("pin");
            rejected(
                &c,
                "hosts/h1/host.toml: [packages] install: \"curl=8.0;id\": the version \"8.0;id\" has ';'",
            )
            .code("invalid-spec")
        }),
        ("owner with shell characters", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[files.\"/etc/app/app.conf\"]\nowner = \"$(id)\"\n",
            );
            let c = e.signed("owner");
            rejected(&c, "is not a valid user or group name").code("invalid-spec")
        }),
        ("invalid UTF-8 file name", |e| {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
            let p = e.fleet.work.join("hosts/h1/files/etc").join(name);
            std::fs::write(p, "x").unwrap();
            let c = e.signed("latin1");
            rejected(&c, "is not UTF-8").code("invalid-path")
        }),
        ("malformed TOML", |e| {
            e.fleet.write("hosts/h1/host.toml", "include = [\n");
            let c = e.signed("toml");
            rejected(&c, "hosts/h1/host.toml: TOML parse error").code("invalid-spec")
        }),
        ("unknown key", |e| {
            e.fleet.write("hosts/h1/host.toml", "packagez = [\"x\"]\n");
            let c = e.signed("typo");
            rejected(&c, "unknown field `packagez`").code("invalid-spec")
        }),
        ("missing include", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"roles/nope\"]\n");
            let c = e.signed("include");
            rejected(&c, "hosts/h1: include \"roles/nope\" does not exist").code("invalid-spec")
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
            .code("invalid-spec")
        }),
        ("file vs directory conflict", |e| {
            e.fleet.write("roles/r/files/etc/motd/x", "y\n");
            e.fleet
                .write("hosts/h1/host.toml", "include = [\"roles/r\"]\n");
            let c = e.signed("conflict");
            rejected(&c, "/etc/motd is a file in hosts/h1/files/etc/motd but a directory in roles/r/files/etc/motd/x")
            .code("invalid-spec")
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
            .code("invalid-spec")
        }),
        ("submodule", |e| {
            let c = e.graft(
                "hosts/h1/files/etc",
                &format!("160000 commit {}\tsub", e.c0),
            );
            rejected(&c, "submodules are not supported").code("invalid-spec")
        }),
        ("relative health command", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[[health]]\ncommand = [\"curl\", \"localhost\"]\n",
            );
            let c = e.signed("health");
            rejected(&c, "`command` must start with an absolute program path").code("invalid-spec")
        }),
        // Issue 12, part A: hostile input that still hurt.
        ("8,000 levels deep", |e| {
            let c = e.import(&format!("hosts/h1/files/{}f", "a/".repeat(8000)), "x");
            rejected(
                &c,
                "directories nest deeper than 32 levels (limits.max_depth in agent.toml)",
            )
            .code("size-limit")
        }),
        ("40 levels deep", |e| {
            e.fleet
                .write(&format!("hosts/h1/files/{}f", "d/".repeat(40)), "x");
            let c = e.signed("deep");
            rejected(&c, "(limits.max_depth in agent.toml)").code("size-limit")
        }),
        ("a name over NAME_MAX", |e| {
            let c = e.import(&format!("hosts/h1/files/etc/{}", "n".repeat(300)), "x");
            rejected(&c, "is 300 bytes long, over NAME_MAX (255): shorten it").code("invalid-path")
        }),
        ("a path over PATH_MAX", |e| {
            let name = "p".repeat(250);
            let path = vec![name.as_str(); 20].join("/");
            let c = e.import(&format!("hosts/h1/files/{path}"), "x");
            rejected(&c, "over PATH_MAX (4096): shorten it").code("invalid-path")
        }),
        ("a file named like plumb's temp file for another", |e| {
            e.fleet
                .write("hosts/h1/files/etc/.motd.plumb-new", "evil\n");
            let c = e.signed("temp name");
            rejected(&c, "hosts/h1/files/etc/.motd.plumb-new: \".motd.plumb-new\": names of the form .*.plumb-new are plumb's temp files").code("invalid-path")
        }),
        ("/proc/sysrq-trigger", |e| {
            e.fleet.write("hosts/h1/files/proc/sysrq-trigger", "b\n");
            let c = e.signed("reboot");
            rejected(
                &c,
                "hosts/h1/files/proc/sysrq-trigger: /proc is a kernel or runtime file system",
            )
            .code("invalid-path")
        }),
        ("/sys knob", |e| {
            e.fleet.write(
                "hosts/h1/files/sys/kernel/mm/transparent_hugepage/enabled",
                "never\n",
            );
            let c = e.signed("sys");
            rejected(&c, "/sys is a kernel or runtime file system").code("invalid-path")
        }),
        ("/dev/sda", |e| {
            e.fleet.write("hosts/h1/files/dev/sda", "\0\0\0\0");
            let c = e.signed("wipe");
            rejected(&c, "/dev is a kernel or runtime file system").code("invalid-path")
        }),
        ("/run", |e| {
            e.fleet
                .symlink("hosts/h1/files/run/systemd/notify", "/dev/null");
            let c = e.signed("run");
            rejected(&c, "/run is a kernel or runtime file system").code("invalid-path")
        }),
        ("more roles than limits.max_includes", |e| {
            let mut inc = Vec::new();
            for i in 0..130 {
                e.fleet.write(&format!("roles/r{i}/host.toml"), "");
                inc.push(format!("\"roles/r{i}\""));
            }
            e.fleet.write(
                "hosts/h1/host.toml",
                &format!("include = [{}]\n", inc.join(", ")),
            );
            let c = e.signed("roles");
            rejected(
                &c,
                "hosts/h1: includes more than 128 roles (limits.max_includes in agent.toml)",
            )
            .code("size-limit")
        }),
        ("health timeout of 99999999999d", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"99999999999d\"\n",
            );
            let c = e.signed("timeout");
            rejected(&c, "hosts/h1/host.toml: [[health]] #1: `timeout`").code("invalid-spec")
        }),
        ("health timeout of 18446744073709551615s", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"18446744073709551615s\"\n",
            );
            let c = e.signed("timeout");
            rejected(&c, "hosts/h1/host.toml: [[health]] #1: `timeout`").code("invalid-spec")
        }),
        ("health timeout of 0s", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"0s\"\n",
            );
            let c = e.signed("timeout");
            rejected(&c, "`timeout`: \"0s\" is out of range: use 1s to 1h").code("invalid-spec")
        }),
        ("plumb.service stopped", |e| {
            e.fleet.write(
                "hosts/h1/host.toml",
                "[units.\"plumb.service\"]\nstate = \"stopped\"\n",
            );
            let c = e.signed("stop plumb");
            rejected(
                &c,
                "stops plumb.service: that would cut plumb off from this host",
            )
            .code("self-protection")
        }),
        ("plumb.service masked", |e| {
            e.fleet.symlink(
                "hosts/h1/files/etc/systemd/system/plumb.service",
                "/dev/null",
            );
            let c = e.signed("mask plumb");
            rejected(
                &c,
                "/etc/systemd/system/plumb.service replaces or masks plumb.service",
            )
            .code("self-protection")
        }),
        ("plumb.service drop-in", |e| {
            e.fleet.write(
                "hosts/h1/units/plumb.service.d/off.conf",
                "[Service]\nExecStart=\nExecStart=/bin/true\n",
            );
            let c = e.signed("neuter plumb");
            rejected(&c, "plumb.service").code("self-protection")
        }),
        ("Quadlet file generating plumb.service", |e| {
            e.fleet.write(
                "hosts/h1/containers/plumb.container",
                "[Container]\nImage=localhost/x\n",
            );
            let c = e.signed("shadow plumb");
            rejected(&c, "containers/plumb.container generates plumb.service")
                .code("self-protection")
        }),
        ("symlink target over PATH_MAX", |e| {
            // Longer than a file system takes: built as a Git object.
            let b = blob(&e.fleet.work, &format!("/{}", "t/".repeat(2100)));
            let c = e.graft("hosts/h1/files/etc", &format!("120000 blob {b}\tlong"));
            rejected(
                &c,
                "hosts/h1/files/etc/long: symlink target of 4201 bytes, over PATH_MAX",
            )
            .code("invalid-path")
        }),
        ("a host.toml of one 400 KB line", |e| {
            let line = format!("include = {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
            e.fleet.write("hosts/h1/host.toml", &line);
            let c = e.signed("nested");
            rejected(&c, "hosts/h1/host.toml: TOML parse error").code("invalid-spec")
        }),
        ("plumb package removed", |e| {
            e.fleet
                .write("hosts/h1/host.toml", "[packages]\nremove = [\"plumb\"]\n");
            let c = e.signed("remove plumb");
            rejected(&c, "removes plumb").code("self-protection")
        }),
        ("allowed_signers pattern that backtracks", |e| {
            // Matched on the committer's email: exponential with a backtracking matcher.
            let pattern = format!("{}x", "*o".repeat(24));
            append(&e.signers, &format!("{pattern} {}\n", e.other.public));
            e.fleet.write("hosts/h1/files/etc/motd", "evil\n");
            let c = e.fleet.commit("backtrack", Some(&e.other));
            rejected(&c, "allows principals").code("untrusted-signature")
        }),
        ("host directory deleted", |e| {
            e.fleet.remove("hosts/h1");
            e.fleet.write("hosts/other/host.toml", "");
            let c = e.signed("gone");
            rejected(&c, "hosts/h1 does not exist in commit").code("invalid-spec")
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
            let started = std::time::Instant::now();
            let a = e.host.apply(&[]);
            let took = started.elapsed();
            let Some(r) = a.report.as_ref() else {
                failures.push(format!(
                    "{name} (pass {}): no report: {}",
                    round + 1,
                    a.stderr
                ));
                break;
            };
            let code = r.reason.map(|c| c.as_str()).unwrap_or("none");
            let problems: Vec<String> = [
                (a.code != 1).then(|| format!("exit code {} (want 1)", a.code)),
                (took > PASS_BOUND).then(|| format!("took {took:?} (bound {PASS_BOUND:?})")),
                (r.message.len() > 4096)
                    .then(|| format!("a message of {} bytes (bound 4096)", r.message.len())),
                (expect.code.is_empty() || code != expect.code)
                    .then(|| format!("reason {code} (want {:?})", expect.code)),
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

// Memory: a 400 MB blob of zeros is ~400 KB on the wire. Each case pushes one, runs the real
// `plumb apply` against a git daemon (so the server's memory is not the child's), and reads the
// child's peak RSS from wait4's rusage.

/// Most `plumb apply` (and the git it runs) may hold for a hostile commit.
const MAX_RSS_KIB: i64 = 64 * 1024;
const HUGE: u64 = 400_000_000;

/// Writes a blob of `size` zero bytes into the repository at `w` with git fast-import, which
/// streams blobs over core.bigFileThreshold (hash-object would hold all of it in memory); the
/// zeros are generated into the pipe, never held here.
fn zero_blob(w: &Path, size: u64) -> String {
    use std::io::Write;
    let marks = w.join("zero.marks");
    let mut child = git(w)
        .args(["-c", "core.bigFileThreshold=1m", "fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write!(stdin, "blob\nmark :1\ndata {size}\n").unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stdin.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let m = std::fs::read_to_string(&marks).unwrap();
    m.trim().strip_prefix(":1 ").unwrap().to_string()
}

/// Runs `cmd` with `input` on its stdin; its stdout, trimmed.
fn run_with_input(cmd: &mut std::process::Command, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `plumb apply`: its exit code and its peak RSS in KiB, with the git it runs. A small python3
/// process forks it and reads RUSAGE_CHILDREN: a child spawned straight from this test process
/// (vfork + exec) would inherit the test process's own peak (hundreds of MB while other tests
/// of this binary run) as its ru_maxrss.
fn apply_measured(host: &Host) -> (i32, i64) {
    let cmd = host.plumb(&["apply"]);
    let mut argv = vec![cmd.get_program().to_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_owned()));
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)\n\
             print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        )
        .args(argv)
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()
        .expect("running python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace().map(|x| x.parse::<i64>().unwrap());
    let (code, rss) = (f.next().unwrap(), f.next().unwrap());
    (code as i32, rss)
}

/// A converged host on a git daemon; the fleet repo's git streams big blobs (as a server would
/// be configured to; else the test machine, not plumb, holds 400 MB).
fn memory_env() -> (Env, GitDaemon) {
    let e = Env::new();
    for dir in [&e.fleet.bare, &e.fleet.work] {
        run(git(dir).args(["config", "core.bigFileThreshold", "1m"]));
    }
    let daemon = GitDaemon::start(&e.dir);
    e.host
        .configure(&daemon.url("fleet.git"), &trust(&e.signers));
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
    (e, daemon)
}

/// Commits (signed with `key`, if any) the blob `oid` at `path`, with `git update-index`: the
/// 400 MB are never checked out.
fn commit_blob(e: &Env, path: &str, oid: &str, key: Option<&Key>) -> String {
    let w = &e.fleet.work;
    run(git(w).args([
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("100644,{oid},{path}"),
    ]));
    commit_index(e, key)
}

/// Commits the fleet work tree's index as it is (signed with `key`, if any) and pushes it.
fn commit_index(e: &Env, key: Option<&Key>) -> String {
    let mut c = git(&e.fleet.work);
    if let Some(k) = key {
        c.arg("-c")
            .arg("gpg.format=ssh")
            .arg("-c")
            .arg(format!("user.signingkey={}", k.private.display()))
            .args(["commit", "-q", "-S", "-m", "huge"]);
    } else {
        c.args(["commit", "-q", "-m", "huge"]);
    }
    run(&mut c);
    e.fleet.push()
}

/// Runs `plumb apply` on a huge commit and checks the bound, the exit code, the report and that
/// nothing changed.
fn check_huge(e: &Env, head: &str, code: i32, outcome: &str, reason: &str) {
    let before = e.snapshot();
    let (got, rss) = apply_measured(&e.host);
    let r = e.host.report().unwrap();
    assert!(
        rss <= MAX_RSS_KIB,
        "peak RSS {rss} KiB, over {MAX_RSS_KIB} KiB"
    );
    assert_eq!(got, code, "exit code; report: {}", r.message);
    assert_eq!(r.outcome.as_str(), outcome, "{}", r.message);
    assert_eq!(r.desired_commit, head);
    assert!(
        r.message.contains(reason),
        "{:?} lacks {reason:?}",
        r.message
    );
    assert_eq!(r.applied_commit, e.c1);
    assert_eq!(e.snapshot(), before, "the host changed");
}

#[test]
fn huge_blob_in_this_hosts_directory_is_rejected_in_bounded_memory() {
    let (e, _daemon) = memory_env();
    let oid = zero_blob(&e.fleet.work, HUGE);
    let c = commit_blob(&e, "hosts/h1/files/var/big", &oid, Some(&e.good));
    check_huge(
        &e,
        &c,
        1,
        "rejected",
        &format!(
            "rejected {}: hosts/h1: files/var/big is {HUGE} bytes, over the limit of 4096 bytes (limits.max_file_size in agent.toml) [size-limit]",
            short(&c)
        ),
    );
}

#[test]
fn huge_blob_in_another_hosts_directory_costs_this_host_nothing() {
    // Not this host's file: the commit is applied (nothing of h1 changed), the blob never read.
    let (e, _daemon) = memory_env();
    let oid = zero_blob(&e.fleet.work, HUGE);
    let c = commit_blob(&e, "hosts/h2/files/var/big", &oid, Some(&e.good));
    let before = e.snapshot();
    let (code, rss) = apply_measured(&e.host);
    let r = e.host.report().unwrap();
    assert!(
        rss <= MAX_RSS_KIB,
        "peak RSS {rss} KiB, over {MAX_RSS_KIB} KiB"
    );
    assert_eq!(
        (code, r.outcome.as_str()),
        (0, "converged"),
        "{}",
        r.message
    );
    assert_eq!(r.applied_commit, c);
    assert_eq!(e.snapshot(), before, "the host changed");
}

#[test]
fn huge_blob_in_an_unsigned_commit_is_rejected_before_it_is_read() {
    let (e, _daemon) = memory_env();
    let oid = zero_blob(&e.fleet.work, HUGE);
    let c = commit_blob(&e, "hosts/h1/files/var/big", &oid, None);
    check_huge(
        &e,
        &c,
        1,
        "rejected",
        &format!("rejected {}: commit {c} is not signed", short(&c)),
    );
}

/// Issue 13: a template that doubles a string in a loop (a few bytes in Git) is stopped by its
/// fuel, which counts the bytes it makes, before it holds much memory.
#[test]
fn template_doubling_a_string_is_rejected_in_bounded_memory() {
    let (e, _daemon) = memory_env();
    e.fleet.write(
        "hosts/h1/files/etc/bomb.tmpl",
        "{% set ns = namespace(s=\"x\") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s[:3] }}\n",
    );
    let c = e.signed("bomb");
    check_huge(
        &e,
        &c,
        1,
        "rejected",
        "hosts/h1/files/etc/bomb.tmpl:1: ran out of fuel",
    );
    let r = e.host.report().unwrap();
    assert_eq!(r.reason.map(|c| c.as_str()), Some("template-error"));
}

/// Issue 12: a commit with 100,000 (tiny) files under this host's directory, with the default
/// limits. It was rejected, but only after every entry was read (66 MB peak, release build); the
/// walk now stops at the entry over `max_files`.
#[test]
fn hundred_thousand_files_are_rejected_in_bounded_memory() {
    let (e, daemon) = memory_env();
    let signers = e.signers.display().to_string();
    e.host.configure(
        &daemon.url("fleet.git"),
        &format!("[trust]\nallowed_signers = {signers:?}\n"),
    );
    let w = &e.fleet.work;
    let blob = run_with_input(git(w).args(["hash-object", "-w", "--stdin"]), b"x\n");
    let index: String = (0..100_000)
        .map(|i| {
            format!(
                "100644 {blob}\thosts/h1/files/var/many/{:03}/{i:06}\n",
                i / 1000
            )
        })
        .collect();
    run_with_input(
        git(w).args(["update-index", "--index-info"]),
        index.as_bytes(),
    );
    let c = commit_index(&e, Some(&e.good));
    check_huge(
        &e,
        &c,
        1,
        "rejected",
        "more than 20000 files for this host (limits.max_files in agent.toml)",
    );
    let r = e.host.report().unwrap();
    assert_eq!(r.reason.map(|c| c.as_str()), Some("size-limit"));
}

/// Issue 12: 7 roles each including the next 20 times used to expand 20^7 times (minutes at
/// 100% CPU); each role is read once now.
#[test]
fn roles_included_many_times_expand_once() {
    let e = Env::new();
    for i in 0..6 {
        let next = vec![format!("\"roles/r{}\"", i + 1); 20].join(", ");
        e.fleet.write(
            &format!("roles/r{i}/host.toml"),
            &format!("include = [{next}]\n"),
        );
    }
    e.fleet.write("roles/r6/files/etc/deep", "r6\n");
    e.fleet.write(
        "hosts/h1/host.toml",
        "include = [\"roles/r0\", \"roles/r0\"]\n",
    );
    e.signed("dag");
    let t = std::time::Instant::now();
    let r = e.host.converge();
    assert!(t.elapsed() < PASS_BOUND, "took {:?}", t.elapsed());
    assert_eq!(r.outcome.as_str(), "changed", "{}", r.message);
    assert_eq!(
        std::fs::read_to_string(e.host.root.join("etc/deep")).unwrap(),
        "r6\n"
    );
}

/// A name of 250 bytes is legal: plumb's temp name for it must fit NAME_MAX too.
#[test]
fn a_250_byte_name_is_applied() {
    let e = Env::new();
    let name = "n".repeat(250);
    e.fleet
        .write(&format!("hosts/h1/files/etc/{name}"), "long\n");
    e.signed("long name");
    let r = e.host.converge();
    assert_eq!(r.outcome.as_str(), "changed", "{}", r.message);
    assert_eq!(
        std::fs::read_to_string(e.host.root.join("etc").join(&name)).unwrap(),
        "long\n"
    );
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
}

/// A managed file turning into a directory (and back) in one commit converges in one pass, and
/// no pass leaves the path in neither state.
#[test]
fn file_to_directory_and_back_in_one_pass() {
    let e = Env::new();
    let motd = e.host.root.join("etc/motd");
    e.fleet.remove("hosts/h1/files/etc/motd");
    e.fleet.write("hosts/h1/files/etc/motd/a", "a\n");
    e.fleet.write("hosts/h1/files/etc/motd/b", "b\n");
    e.signed("file to dir");
    let a = e.host.apply(&[]);
    assert_eq!(a.code, 0, "{}\n{:?}", a.stderr, a.report);
    assert_eq!(a.report.unwrap().outcome.as_str(), "changed");
    assert_eq!(std::fs::read_to_string(motd.join("a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(motd.join("b")).unwrap(), "b\n");
    assert_eq!(e.host.converge().outcome.as_str(), "converged");

    e.fleet.remove("hosts/h1/files/etc/motd");
    e.fleet.write("hosts/h1/files/etc/motd", "file again\n");
    e.signed("dir to file");
    let a = e.host.apply(&[]);
    assert_eq!(a.code, 0, "{}\n{:?}", a.stderr, a.report);
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "file again\n");
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
}

/// With root other than "/" (an image build), units and Quadlet files are written under root and
/// no service of the host's systemd is touched; the report says so.
#[test]
fn units_under_another_root_are_files_only() {
    let e = Env::new();
    e.fleet.write(
        "hosts/h1/units/plumb-test-image.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    );
    e.fleet.write(
        "hosts/h1/containers/web.container",
        "[Container]\nImage=localhost/x\n",
    );
    e.signed("units in an image");
    let a = e.host.apply(&[]);
    let r = a
        .report
        .unwrap_or_else(|| panic!("no report: {}", a.stderr));
    assert_eq!(a.code, 0, "{}\n{r:?}", a.stderr);
    let unit = r
        .resources
        .iter()
        .find(|x| x.name == "plumb-test-image.service")
        .expect("the unit is reported");
    assert!(
        unit.detail.contains("unit and Quadlet files written only"),
        "{}",
        unit.detail
    );
    assert!(e
        .host
        .root
        .join("etc/systemd/system/plumb-test-image.service")
        .is_file());
    assert!(e
        .host
        .root
        .join("etc/containers/systemd/web.container")
        .is_file());
    // Nothing was enabled (no wants symlink).
    assert!(!e
        .host
        .root
        .join("etc/systemd/system/multi-user.target.wants")
        .exists());
    assert_eq!(e.host.converge().outcome.as_str(), "converged");

    // A drop-in comes and goes; then the unit and the container leave Git: their files are
    // removed as on a live host (issue 12), and what plumb did not write stays.
    let sys = e.host.root.join("etc/systemd/system");
    e.fleet.write(
        "hosts/h1/units/plumb-test-image.service.d/env.conf",
        "[Service]\nEnvironment=A=1\n",
    );
    e.signed("drop-in");
    assert_eq!(e.host.converge().outcome.as_str(), "changed");
    assert!(sys.join("plumb-test-image.service.d/env.conf").is_file());
    e.fleet
        .remove("hosts/h1/units/plumb-test-image.service.d/env.conf");
    e.signed("drop-in gone");
    assert_eq!(e.host.converge().outcome.as_str(), "changed");
    assert!(!sys.join("plumb-test-image.service.d").exists());
    assert!(sys.join("plumb-test-image.service").is_file());

    std::fs::write(sys.join("not-plumbs.service"), "[Service]\n").unwrap();
    e.fleet.remove("hosts/h1/units/plumb-test-image.service");
    e.fleet.remove("hosts/h1/containers/web.container");
    e.signed("units gone");
    let plan = e.host.plumb(&["plan"]).output().unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(
        text.contains("would remove plumb-test-image.service")
            && text.contains("would remove web.container"),
        "{text}"
    );
    let r = e.host.converge();
    assert_eq!(r.outcome.as_str(), "changed", "{}", r.message);
    let pruned: Vec<&str> = r
        .resources
        .iter()
        .filter(|x| x.state == plumb::status::report::ResourceState::Pruned)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(pruned, ["plumb-test-image.service", "web.container"]);
    assert!(!sys.join("plumb-test-image.service").exists());
    assert!(!e
        .host
        .root
        .join("etc/containers/systemd/web.container")
        .exists());
    assert!(sys.join("not-plumbs.service").is_file());
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
}

/// /tmp is private to plumb.service: a file there is applied, with a warning.
#[test]
fn a_file_under_tmp_warns() {
    let e = Env::new();
    e.fleet.write("hosts/h1/files/tmp/x", "x\n");
    e.signed("tmp");
    let a = e.host.apply(&[]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stderr.contains("private /tmp"), "{}", a.stderr);
}
