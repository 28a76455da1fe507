//! Status branches against a real `git daemon` on 127.0.0.1: hosts push their reports, only on
//! change or heartbeat, with bounded history, surviving lost state and refusing servers; and
//! `plumb fleet` reads them all.

mod common;

use common::{git, Fleet, GitDaemon};
use plumb::config::Settings;
use plumb::engine::{Agent, PassOptions};
use plumb::status::report::{Outcome, Report};
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A served fleet repo (and maybe a separate status repo), and simulated hosts.
struct World {
    tmp: tempfile::TempDir,
    fleet: Fleet,
    daemon: GitDaemon,
}

struct HostOpts<'a> {
    status_repo: Option<&'a str>,
    heartbeat: &'a str,
    history: u32,
}

impl Default for HostOpts<'_> {
    fn default() -> Self {
        HostOpts {
            status_repo: None,
            heartbeat: "1h",
            history: 100,
        }
    }
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let fleet = Fleet::new();
        let daemon = GitDaemon::start(fleet.dir.path());
        World { tmp, fleet, daemon }
    }

    /// The directory the daemon serves: fleet.git and any status repositories.
    fn srv(&self) -> PathBuf {
        self.fleet.dir.path().to_path_buf()
    }

    /// A bare repository served beside fleet.git.
    fn bare(&self, name: &str) -> PathBuf {
        git(&self.srv(), &["init", "-q", "--bare", "-b", "main", name]);
        self.srv().join(name)
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.tmp.path().join("hosts").join(host)
    }

    /// Writes the host's agent.toml and returns its path.
    fn config(&self, host: &str, o: &HostOpts) -> PathBuf {
        let dir = self.host_dir(host);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let status_repo = match o.status_repo {
            Some(name) => format!("repo = \"{}\"\n", self.daemon.url(name)),
            None => String::new(),
        };
        let text = format!(
            "repo = \"{}\"\nhost = \"{host}\"\nroot = \"{}\"\nstate_dir = \"{}\"\n[status]\n{status_repo}heartbeat = \"{}\"\nhistory = {}\n",
            self.daemon.url("fleet.git"),
            dir.join("root").display(),
            dir.join("state").display(),
            o.heartbeat,
            o.history
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn agent(&self, host: &str, o: &HostOpts) -> Agent {
        let path = self.config(host, o);
        Agent::new(Settings::load(&path).unwrap()).unwrap()
    }

    /// The status branch head in the served repo `repo`, if it exists.
    fn head(&self, repo: &str, host: &str) -> Option<String> {
        let out = Command::new("git")
            .arg(format!("--git-dir={}", self.srv().join(repo).display()))
            .args(["rev-parse", "--verify", "-q"])
            .arg(format!("refs/heads/status/{host}"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn git_in(&self, repo: &str, args: &[&str]) -> String {
        let gd = format!("--git-dir={}", self.srv().join(repo).display());
        let mut all = vec![gd.as_str()];
        all.extend_from_slice(args);
        git(Path::new("/"), &all)
    }

    /// The report on the served status branch.
    fn report(&self, repo: &str, host: &str) -> Report {
        let text = self.git_in(
            repo,
            &["show", &format!("refs/heads/status/{host}:status.toml")],
        );
        Report::from_toml(&text).unwrap()
    }

    fn count(&self, repo: &str, host: &str) -> usize {
        self.git_in(
            repo,
            &["rev-list", "--count", &format!("refs/heads/status/{host}")],
        )
        .parse()
        .unwrap()
    }
}

fn pass(agent: &mut Agent) -> plumb::engine::PassResult {
    agent.pass(PassOptions::default()).unwrap()
}

fn plumb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "plumb failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn hostname(i: usize) -> String {
    format!("h{i:02}")
}

#[test]
fn two_then_twenty_hosts_report() {
    let w = World::new();
    for i in 1..=20 {
        let h = hostname(i);
        w.fleet.write(
            &format!("hosts/{h}/files/etc/motd"),
            &format!("hello {h}\n"),
        );
    }
    let head = w.fleet.commit("twenty hosts");
    w.bare("status.git");
    let o = HostOpts {
        status_repo: Some("status.git"),
        ..Default::default()
    };

    for i in 1..=2 {
        let h = hostname(i);
        let r = pass(&mut w.agent(&h, &o));
        assert_eq!(
            r.report.outcome,
            Outcome::Changed,
            "{h}: {}",
            r.report.message
        );
        let pushed = w.report("status.git", &h);
        assert_eq!(pushed.host, h);
        assert_eq!(pushed.outcome, Outcome::Changed);
        assert_eq!(pushed.applied_commit, head);
        let msg = w.git_in(
            "status.git",
            &["log", "-1", "--format=%s", &format!("status/{h}")],
        );
        assert_eq!(msg, format!("{h}: changed at {}, 1 changed", &head[..7]));
    }
    let branches = |repo: &str| {
        w.git_in(
            repo,
            &["for-each-ref", "--format=%(refname)", "refs/heads/status/"],
        )
        .lines()
        .count()
    };
    assert_eq!(branches("status.git"), 2);
    // The separate status repo keeps the fleet repo free of status branches.
    assert_eq!(branches("fleet.git"), 0);

    for i in 3..=20 {
        pass(&mut w.agent(&hostname(i), &o));
    }
    assert_eq!(branches("status.git"), 20);
    for i in 1..=20 {
        let h = hostname(i);
        let r = w.report("status.git", &h);
        assert_eq!(
            (r.host.as_str(), r.applied_commit.as_str()),
            (h.as_str(), head.as_str())
        );
        let motd = std::fs::read_to_string(w.host_dir(&h).join("root/etc/motd")).unwrap();
        assert_eq!(motd, format!("hello {h}\n"));
    }

    // `plumb fleet` with a host's config: status branches from the status repo, head from the fleet repo.
    let cfg = w.host_dir("h01").join("agent.toml");
    let out = stdout(&plumb(&[
        "fleet",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ]));
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(lines.len(), 20, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["host"], hostname(i + 1));
        assert_eq!(l["outcome"], "changed");
        assert_eq!(l["commit"], "current", "{l}");
        assert_eq!(l["stale"], false);
    }
    // From a laptop: both repositories named, no config.
    let none = w.tmp.path().join("no-such-agent.toml");
    let (status_url, fleet_url) = (w.daemon.url("status.git"), w.daemon.url("fleet.git"));
    let out = stdout(&plumb(&[
        "fleet",
        "--config",
        none.to_str().unwrap(),
        "--repo",
        &status_url,
        "--fleet-repo",
        &fleet_url,
    ]));
    assert_eq!(out.lines().count(), 22, "{out}");
    assert_eq!(out.matches(" current ").count(), 20, "{out}");
}

/// `{host}` in `[status] repo`: each host pushes to a repository of its own (so a push receives
/// only its own branch, whatever the fleet size), and `plumb fleet` reads them all.
#[test]
fn one_status_repository_per_host() {
    let w = World::new();
    for h in ["h1", "h2", "h3", "h4"] {
        w.fleet.write(
            &format!("hosts/{h}/files/etc/motd"),
            &format!("hello {h}\n"),
        );
    }
    let head = w.fleet.commit("three hosts");
    w.bare("status-h1.git");
    w.bare("status-h2.git");
    // h4's repository exists but h4 never reported (issue 16: listed, not left out).
    w.bare("status-h4.git");
    // h3's repository was never created: it shows as unreadable, with the server's answer.
    let o = HostOpts {
        status_repo: Some("status-{host}.git"),
        ..Default::default()
    };
    for h in ["h1", "h2"] {
        let r = pass(&mut w.agent(h, &o));
        assert_eq!(
            r.report.outcome,
            Outcome::Changed,
            "{h}: {}",
            r.report.message
        );
        let repo = format!("status-{h}.git");
        assert_eq!(w.report(&repo, h).applied_commit, head);
        let refs = w.git_in(&repo, &["for-each-ref", "--format=%(refname)"]);
        assert_eq!(
            refs,
            format!("refs/heads/status/{h}"),
            "only its own branch"
        );
    }

    let cfg = w.host_dir("h1").join("agent.toml");
    // Twice: the second run takes h1's and h2's reports from the cache of the first.
    let cache = w.tmp.path().join("cache");
    let run = || {
        stdout(
            &Command::new(env!("CARGO_BIN_EXE_plumb"))
                .args(["fleet", "--config", cfg.to_str().unwrap(), "--json"])
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("XDG_CACHE_HOME", &cache)
                .output()
                .unwrap(),
        )
    };
    let out = run();
    // (Ages move on between the runs: compared without them.)
    let outcomes = |out: &str| {
        let v: Vec<serde_json::Value> = serde_json::from_str(out).unwrap();
        v.iter()
            .map(|l| {
                (
                    l["host"].to_string(),
                    l["outcome"].to_string(),
                    l["message"].to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&run()), outcomes(&out));
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let hosts: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["host"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("h1", "changed"),
            ("h2", "changed"),
            ("h3", "unreadable"),
            ("h4", "never-reported")
        ],
        "{out}"
    );
    assert_eq!(lines[0]["commit"], "current", "{out}");
    assert!(
        lines[2]["message"]
            .as_str()
            .unwrap()
            .contains("status-h3.git"),
        "{out}"
    );
}

#[test]
fn pushes_on_change_and_not_on_an_unchanged_pass() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "one\n");
    let c1 = w.fleet.commit("one");
    let mut a = w.agent("web-01", &HostOpts::default());

    assert_eq!(pass(&mut a).report.outcome, Outcome::Changed);
    let first = w.head("fleet.git", "web-01").expect("first report pushed");
    // Converged now: a change of meaning, pushed.
    assert_eq!(pass(&mut a).report.outcome, Outcome::Converged);
    let second = w.head("fleet.git", "web-01").unwrap();
    assert_ne!(second, first);
    assert_eq!(
        w.git_in("fleet.git", &["rev-parse", &format!("{second}^")]),
        first
    );
    let msg = w.git_in("fleet.git", &["log", "-1", "--format=%s", &second]);
    assert_eq!(msg, format!("web-01: converged at {}", &c1[..7]));

    // Same meaning, heartbeat (1h) not due: nothing pushed.
    for _ in 0..2 {
        let r = pass(&mut a);
        assert_eq!(r.report.outcome, Outcome::Converged);
        assert_eq!(w.head("fleet.git", "web-01").unwrap(), second);
    }
    assert_eq!(w.count("fleet.git", "web-01"), 2);

    // A new commit: `plan` (a dry run) pushes nothing, the next pass pushes on top.
    w.fleet.write("hosts/web-01/files/etc/motd", "two\n");
    let c2 = w.fleet.commit("two");
    let plan = a
        .pass(PassOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert!(plan.has_changes());
    assert_eq!(w.head("fleet.git", "web-01").unwrap(), second);
    assert_eq!(pass(&mut a).report.outcome, Outcome::Changed);
    let third = w.head("fleet.git", "web-01").unwrap();
    assert_eq!(
        w.git_in("fleet.git", &["rev-parse", &format!("{third}^")]),
        second
    );
    assert_eq!(w.report("fleet.git", "web-01").applied_commit, c2);
}

#[test]
fn heartbeat_pushes_when_due() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "one\n");
    w.fleet.commit("one");
    let o = HostOpts {
        heartbeat: "1s",
        ..Default::default()
    };
    let mut a = w.agent("web-01", &o);
    pass(&mut a);
    pass(&mut a);
    let before = w.head("fleet.git", "web-01").unwrap();
    let before_report = w.report("fleet.git", "web-01");
    assert_eq!(before_report.outcome, Outcome::Converged);
    // Unchanged passes until the heartbeat is due: then a push with the same meaning.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        assert_eq!(pass(&mut a).report.outcome, Outcome::Converged);
        let now = w.head("fleet.git", "web-01").unwrap();
        if now != before {
            break now;
        }
        assert!(Instant::now() < deadline, "no heartbeat push within 20s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        w.git_in("fleet.git", &["rev-parse", &format!("{after}^")]),
        before
    );
    let mut hb = w.report("fleet.git", "web-01");
    // Facts come from the running system: another test's network namespace appearing meanwhile
    // changes `interfaces`, which is a change of report, not of the heartbeat's meaning.
    let mut before_report = before_report;
    hb.facts = None;
    before_report.facts = None;
    assert!(hb.same_meaning(&before_report), "{hb:?}\n{before_report:?}");
    assert!(
        hb.checked_at >= before_report.checked_at,
        "{} vs {}",
        hb.checked_at,
        before_report.checked_at
    );
}

#[test]
fn history_is_trimmed_at_the_limit() {
    let w = World::new();
    let o = HostOpts {
        history: 4,
        ..Default::default()
    };
    let mut a = w.agent("web-01", &o);
    let mut commits = vec![];
    let mut counts = vec![];
    for i in 0..7 {
        w.fleet
            .write("hosts/web-01/files/etc/motd", &format!("{i}\n"));
        commits.push(w.fleet.commit(&format!("motd {i}")));
        assert_eq!(pass(&mut a).report.outcome, Outcome::Changed);
        counts.push(w.count("fleet.git", "web-01"));
    }
    // Never more than 4; at the limit the newest half is kept (and the new report on top).
    assert_eq!(counts, [1, 2, 3, 4, 3, 4, 3]);
    assert_eq!(w.report("fleet.git", "web-01").applied_commit, commits[6]);
    // The root holds the oldest kept report.
    let root = w.git_in(
        "fleet.git",
        &["rev-list", "--max-parents=0", "refs/heads/status/web-01"],
    );
    let root_report =
        Report::from_toml(&w.git_in("fleet.git", &["show", &format!("{root}:status.toml")]))
            .unwrap();
    assert_eq!(root_report.applied_commit, commits[4]);
    let subjects = w.git_in(
        "fleet.git",
        &["log", "--format=%s", "refs/heads/status/web-01"],
    );
    let want: Vec<String> = commits[4..]
        .iter()
        .rev()
        .map(|c| format!("web-01: changed at {}, 1 changed", &c[..7]))
        .collect();
    assert_eq!(subjects.lines().collect::<Vec<_>>(), want);
}

#[test]
fn a_host_whose_state_was_wiped_resumes_its_branch() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "one\n");
    w.fleet.commit("one");
    pass(&mut w.agent("web-01", &HostOpts::default()));
    let old = w.head("fleet.git", "web-01").unwrap();

    std::fs::remove_dir_all(w.host_dir("web-01").join("state")).unwrap();
    let mut a = w.agent("web-01", &HostOpts::default());
    pass(&mut a);
    let new = w.head("fleet.git", "web-01").unwrap();
    assert_ne!(new, old);
    assert_eq!(
        w.git_in("fleet.git", &["rev-parse", &format!("{new}^")]),
        old
    );
    assert_eq!(w.count("fleet.git", "web-01"), 2);

    // Another writer moved the branch (here: an operator deleted it): the next push follows.
    w.git_in(
        "fleet.git",
        &["update-ref", "-d", "refs/heads/status/web-01"],
    );
    w.fleet.write("hosts/web-01/files/etc/motd", "two\n");
    w.fleet.commit("two");
    pass(&mut a);
    let memo =
        std::fs::read_to_string(w.host_dir("web-01").join("state/status-push.json")).unwrap();
    assert!(w.head("fleet.git", "web-01").is_some(), "{memo}");
    assert_eq!(w.count("fleet.git", "web-01"), 1);
}

#[test]
fn a_server_refusing_pushes_leaves_reconciling_unaffected() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "one\n");
    let c1 = w.fleet.commit("one");
    let refusing = w.bare("refusing.git");
    let hook = refusing.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho no reports here >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = HostOpts {
        status_repo: Some("refusing.git"),
        ..Default::default()
    };
    let cfg = w.config("web-01", &o);
    let cfg = cfg.to_str().unwrap();

    let out = plumb(&["apply", "--config", cfg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let motd = w.host_dir("web-01").join("root/etc/motd");
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "one\n");
    assert_eq!(w.head("refusing.git", "web-01"), None);

    let status = stdout(&plumb(&["status", "--config", cfg]));
    let doc: toml::Table = toml::from_str(&status).unwrap();
    assert_eq!(doc["outcome"].as_str(), Some("changed"), "{status}");
    assert_eq!(doc["applied_commit"].as_str(), Some(c1.as_str()));
    let err = doc["push"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("pre-receive hook declined"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&plumb(&["status", "--config", cfg, "--json"]))).unwrap();
    assert!(
        json["push"]["last_error"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{json}"
    );

    // Drift is still corrected while pushes fail; a dead server costs no time either.
    std::fs::write(&motd, "changed by hand\n").unwrap();
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        &w.daemon.url("refusing.git"),
        &format!("git://127.0.0.1:{}/gone.git", common::free_port()),
    );
    std::fs::write(cfg, text).unwrap();
    let t = Instant::now();
    let out = plumb(&["apply", "--config", cfg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "one\n");
    let status = stdout(&plumb(&["status", "--config", cfg]));
    let doc: toml::Table = toml::from_str(&status).unwrap();
    assert_eq!(doc["outcome"].as_str(), Some("drifted"), "{status}");
    assert!(
        doc["push"]["last_error"]
            .as_str()
            .unwrap()
            .contains("gone.git"),
        "{status}"
    );
}

#[test]
fn fleet_lists_hosts_with_outcome_and_staleness() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "web\n");
    w.fleet.write("hosts/web-02/host.toml", "no_such_key = 1\n");
    let c1 = w.fleet.commit("one");
    let r1 = pass(&mut w.agent("web-01", &HostOpts::default()));
    assert_eq!(r1.report.outcome, Outcome::Changed);
    let r2 = pass(&mut w.agent("web-02", &HostOpts::default()));
    assert_eq!(r2.report.outcome, Outcome::Rejected);
    let msg = w.git_in("fleet.git", &["log", "-1", "--format=%s", "status/web-02"]);
    assert!(
        msg.starts_with(&format!("web-02: rejected {}: ", &c1[..7])),
        "{msg}"
    );
    assert!(msg.contains("no_such_key"), "{msg}");

    w.fleet.write("hosts/db-1/files/etc/motd", "db\n");
    // Issue 16: a host the fleet repository names that never reported is listed too.
    w.fleet.write("hosts/new-9/files/etc/motd", "new\n");
    let c2 = w.fleet.commit("two");
    pass(&mut w.agent("db-1", &HostOpts::default()));

    // A host that went silent three hours ago.
    let mut old = w.report("fleet.git", "db-1");
    old.host = "old-1".into();
    old.outcome = Outcome::Converged;
    old.checked_at = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - Duration::from_secs(3 * 3600),
    )
    .to_string();
    let blob_file = w.tmp.path().join("old.toml");
    std::fs::write(&blob_file, old.to_toml()).unwrap();
    let blob = w.git_in(
        "fleet.git",
        &["hash-object", "-w", blob_file.to_str().unwrap()],
    );
    let tree = {
        let mut c = Command::new("git");
        c.arg(format!("--git-dir={}", w.srv().join("fleet.git").display()))
            .arg("mktree");
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        writeln!(
            child.stdin.take().unwrap(),
            "100644 blob {blob}\tstatus.toml"
        )
        .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let commit = w.git_in(
        "fleet.git",
        &["commit-tree", &tree, "-m", "old-1: converged"],
    );
    w.git_in(
        "fleet.git",
        &["update-ref", "refs/heads/status/old-1", &commit],
    );

    // From a laptop: no config, no state.
    let url = w.daemon.url("fleet.git");
    let none = w.tmp.path().join("no-such-agent.toml");
    let base = [
        "fleet",
        "--config",
        none.to_str().unwrap(),
        "--repo",
        url.as_str(),
    ];
    let json = stdout(&plumb(&[&base[..], &["--json"]].concat()));
    let lines: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let got: Vec<(String, String, String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["host"].as_str().unwrap().into(),
                l["outcome"].as_str().unwrap().into(),
                l["commit"].as_str().unwrap().into(),
                l["stale"].as_bool().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        [
            (s("db-1"), s("changed"), s("current"), false),
            (s("new-9"), s("never-reported"), s("unknown"), true),
            (s("old-1"), s("converged"), s("current"), true),
            (s("web-01"), s("changed"), s("behind"), false),
            (s("web-02"), s("rejected"), s("unknown"), false),
        ],
        "{json}"
    );
    assert_eq!(lines[3]["applied_commit"], c1.as_str());
    assert_eq!(lines[0]["applied_commit"], c2.as_str());
    assert!(lines[4]["message"]
        .as_str()
        .unwrap()
        .contains("no_such_key"));
    assert_eq!(lines[4]["reason"], "invalid-spec");
    assert_eq!(lines[0]["wave"], "all");
    assert!(lines[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("never reported"));
    assert!(lines[2]["age_seconds"].as_u64().unwrap() >= 3 * 3600);

    let table = stdout(&plumb(&base));
    let row = |host: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{host} ")))
            .unwrap_or_else(|| panic!("no {host} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        table.starts_with(&format!("fleet head: {}\nHOST", &c2[..7])),
        "{table}"
    );
    assert_eq!(
        row("db-1")[..4],
        [s("db-1"), s("changed"), c2[..7].to_string(), s("current")]
    );
    assert_eq!(
        row("web-01")[..4],
        [s("web-01"), s("changed"), c1[..7].to_string(), s("behind")]
    );
    assert_eq!(row("old-1")[4..6], [s("3h"), s("stale")], "{table}");
    assert_ne!(
        row("web-01").get(5).map(String::as_str),
        Some("stale"),
        "{table}"
    );
    assert_eq!(row("web-02")[1..4], [s("rejected"), s("-"), s("unknown")]);
    assert_eq!(
        row("new-9")[1..5],
        [s("never-reported"), s("-"), s("unknown"), s("?")]
    );
}

#[test]
fn a_hanging_server_is_given_up_after_the_push_timeout() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let t = tempfile::tempdir().unwrap();
    let publisher = plumb::status::publish::Publisher {
        dir: t.path().join("status.git"),
        endpoint: plumb::status::remote::Endpoint {
            url: format!("git://127.0.0.1:{port}/fleet.git"),
            ssh_key: None,
            token_file: None,
            known_hosts: None,
        },
        branch: "status/web-01".into(),
        history: 100,
        host: "web-01".into(),
        timeout: Duration::from_secs(2),
        signing_key: None,
    };
    let report = Report {
        host: "web-01".into(),
        agent_version: "0.1.0".into(),
        outcome: Outcome::Converged,
        desired_commit: String::new(),
        applied_commit: String::new(),
        last_good_commit: String::new(),
        applied_at: String::new(),
        waiting: String::new(),
        reboot_required: None,
        last_reboot: None,
        checked_at: "2026-11-26T10:00:00Z".into(),
        message: String::new(),
        reason: None,
        age_recipient: None,
        container_updates: vec![],
        facts: None,
        upgrades: None,
        resources: vec![],
    };
    let start = Instant::now();
    let err = format!("{:#}", publisher.push(&report).unwrap_err());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(err.contains("did not finish within 2s"), "{err}");
}

/// Kills the daemon we started (by its pid) when the test ends, also on failure.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_pushes_after_its_passes() {
    let w = World::new();
    w.fleet.write("hosts/web-01/files/etc/motd", "one\n");
    let c1 = w.fleet.commit("one");
    let cfg = w.config("web-01", &HostOpts::default());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("interval = \"1s\"\n{text}")).unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reported = |commit: &str, outcome: Outcome| {
        w.head("fleet.git", "web-01").is_some() && {
            let r = w.report("fleet.git", "web-01");
            r.applied_commit == commit && r.outcome == outcome
        }
    };
    common::wait_until("the first report", Duration::from_secs(30), || {
        reported(&c1, Outcome::Converged)
    });
    w.fleet.write("hosts/web-01/files/etc/motd", "two\n");
    let c2 = w.fleet.commit("two");
    common::wait_until(
        "the report of the new commit",
        Duration::from_secs(30),
        || reported(&c2, Outcome::Converged),
    );
    // changed, converged, changed, converged: the unchanged passes in between pushed nothing.
    let subjects = w.git_in(
        "fleet.git",
        &["log", "--format=%s", "refs/heads/status/web-01"],
    );
    assert_eq!(subjects.lines().count(), 4, "{subjects}");
}
