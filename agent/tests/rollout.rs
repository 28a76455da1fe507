//! Rollouts without a server (DESIGN section 11), several hosts (temp roots, the real binary)
//! against one fleet repository served by a real `git daemon`, whose status branches they read:
//! waves, soak, success, quarantine, windows, `--ignore-rollout`, disruption slots.

mod common;

use common::{wait_until, Fleet, GitDaemon, Host};
use plumb::status::report::Report;
use std::time::{Duration, Instant};

struct World {
    fleet: Fleet,
    daemon: GitDaemon,
}

impl World {
    fn new() -> World {
        let fleet = Fleet::new();
        let daemon = GitDaemon::start(fleet.dir.path());
        World { fleet, daemon }
    }

    fn host(&self, name: &str) -> Host {
        Host::new(name, &self.daemon.url("fleet.git"), "")
    }

    /// hosts/<h>/files/etc/motd for each host, plus fleet.toml.
    fn commit(&self, hosts: &[&Host], motd: &str, fleet_toml: &str, msg: &str) -> String {
        for h in hosts {
            self.fleet
                .write(&format!("hosts/{}/files/etc/motd", h.name), motd);
        }
        self.fleet.write("fleet.toml", fleet_toml);
        self.fleet.commit(msg)
    }

    /// Whether a ref exists in the served repository.
    fn has_ref(&self, name: &str) -> bool {
        let out = std::process::Command::new("git")
            .arg(format!("--git-dir={}", self.fleet.bare().display()))
            .args(["rev-parse", "--verify", "-q", name])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        out.status.success()
    }
}

fn report(h: &Host) -> Report {
    let text = std::fs::read_to_string(h.state().join("report.toml")).unwrap();
    Report::from_toml(&text).unwrap()
}

/// `plumb apply` (exit 0 expected) and the report it wrote.
fn apply(h: &Host, args: &[&str]) -> Report {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let out = h.plumb(&all);
    assert!(
        out.status.success(),
        "{}: plumb apply: {}",
        h.name,
        String::from_utf8_lossy(&out.stderr)
    );
    report(h)
}

fn motd(h: &Host) -> String {
    h.read("/etc/motd").unwrap_or_default()
}

const WAVES: &str = "[rollout]\nwaves = [[\"canary-*\"], [\"store-*\"], [\"*\"]]\nsoak = \"2s\"\nsuccess = \"50%\"\n";

#[test]
fn a_commit_moves_wave_by_wave_with_soak_and_success() {
    let w = World::new();
    let canary = w.host("canary-1");
    let s1 = w.host("store-1");
    let s2 = w.host("store-2");
    let web = w.host("web-1");
    // web-1 writes metrics: plumb_rollout_waiting says when a gate holds it (issue 16).
    let prom = web.dir.path().join("plumb.prom");
    web.configure(
        &w.daemon.url("fleet.git"),
        &format!("[metrics]\ntextfile = {:?}\n", prom.display().to_string()),
    );
    let waiting_metric = || {
        std::fs::read_to_string(&prom)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("plumb_rollout_waiting "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let all = [&canary, &s1, &s2, &web];
    let a = w.commit(&all, "A\n", "", "A: no rollout settings");
    for h in all {
        assert_eq!(apply(h, &[]).applied_commit, a);
    }
    let b = w.commit(&all, "B\n", WAVES, "B: waves");

    // Later waves wait for the canary; nothing of B reaches them.
    let r = apply(&web, &[]);
    assert_eq!(
        (
            r.desired_commit.as_str(),
            r.applied_commit.as_str(),
            r.outcome.as_str()
        ),
        (b.as_str(), a.as_str(), "converged")
    );
    assert_eq!(
        r.waiting,
        format!(
            "wave 3 waits for wave 2: 0/2 hosts on {} (needs 1)",
            &b[..7]
        )
    );
    assert_eq!(waiting_metric(), "plumb_rollout_waiting 1");
    let r = apply(&s1, &[]);
    assert_eq!(
        r.waiting,
        format!(
            "wave 2 waits for wave 1: 0/1 hosts on {} (needs 1)",
            &b[..7]
        )
    );
    assert_eq!(motd(&s1), "A\n");

    // The canary moves at once, and says when.
    let r = apply(&canary, &[]);
    assert_eq!(
        (r.applied_commit.as_str(), r.waiting.as_str()),
        (b.as_str(), "")
    );
    assert!(!r.applied_at.is_empty());
    assert_eq!(motd(&canary), "B\n");
    let canary_at = Instant::now();

    // The canary alone does not let wave 3 on: it never skips the stores.
    let r = apply(&web, &[]);
    assert!(
        r.waiting.starts_with("wave 3 waits for wave 2: 0/2"),
        "{}",
        r.waiting
    );

    // store-1 waits for the soak, then moves.
    let r = apply(&s1, &[]);
    assert!(
        r.waiting.contains("1/1 hosts") && r.waiting.contains("soak"),
        "{}",
        r.waiting
    );
    assert_eq!(motd(&s1), "A\n");
    wait_until(
        "store-1 to move after the soak",
        Duration::from_secs(30),
        || apply(&s1, &[]).applied_commit == b,
    );
    assert!(
        canary_at.elapsed() >= Duration::from_secs(1),
        "moved before the soak"
    );
    assert_eq!(motd(&s1), "B\n");

    // success = "50%": one of the two stores is enough for web-1 (after its soak).
    wait_until(
        "web-1 to move with half the stores",
        Duration::from_secs(30),
        || apply(&web, &[]).applied_commit == b,
    );
    assert_eq!(motd(&web), "B\n");
    assert_eq!(waiting_metric(), "plumb_rollout_waiting 0");
    assert_eq!(motd(&s2), "A\n");
    assert_eq!(report(&s2).applied_commit, a);
}

fn health_toml(h: &Host) -> String {
    format!(
        "[[health]]\ncommand = [\"/bin/sh\", \"-c\", \"grep -q ok {}\"]\ntimeout = \"10s\"\n",
        h.path("/etc/motd").display()
    )
}

#[test]
fn a_commit_rolled_back_on_the_canary_is_quarantined_and_a_fix_flows() {
    let w = World::new();
    let c1 = w.host("canary-1");
    let c2 = w.host("canary-2");
    let s1 = w.host("store-1");
    let all = [&c1, &c2, &s1];
    let rollout = "[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\n";
    for h in all {
        w.fleet
            .write(&format!("hosts/{}/host.toml", h.name), &health_toml(h));
    }
    let good = w.commit(&all, "ok 1\n", "", "good");
    for h in all {
        assert_eq!(apply(h, &[]).applied_commit, good);
    }
    let bad = w.commit(&all, "bad\n", rollout, "bad: fails its health check");
    // canary-1 applies it, its check fails, it rolls back.
    let out = c1.plumb(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&c1);
    assert_eq!(r.reason.map(|r| r.as_str()), Some("health-check-failed"));
    assert_eq!(motd(&c1), "ok 1\n");
    // Nobody else applies it: not the other canary, not the later wave.
    for h in [&c2, &s1] {
        let r = apply(h, &[]);
        assert_eq!(r.applied_commit, good, "{}", h.name);
        assert_eq!(
            r.waiting,
            format!(
                "quarantined: {} was rolled back on canary-1 (health-check-failed); push a fix (a newer commit)",
                &bad[..7]
            )
        );
        assert_eq!(motd(h), "ok 1\n");
    }
    // A fixed, newer commit flows: canaries first, then the rest.
    let fixed = w.commit(&all, "ok 2\n", rollout, "fixed");
    let r = apply(&s1, &[]);
    assert!(
        r.waiting.starts_with("wave 2 waits for wave 1: 0/2"),
        "{}",
        r.waiting
    );
    for h in [&c1, &c2] {
        let r = apply(h, &[]);
        assert_eq!(
            (r.applied_commit.as_str(), r.waiting.as_str()),
            (fixed.as_str(), "")
        );
    }
    assert_eq!(apply(&s1, &[]).applied_commit, fixed);
    assert_eq!(motd(&s1), "ok 2\n");
}

#[test]
fn a_closed_window_holds_and_ignore_rollout_overrides_it() {
    let w = World::new();
    let web = w.host("web-1");
    let a = w.commit(&[&web], "A\n", "", "A");
    assert_eq!(apply(&web, &[]).applied_commit, a);
    // A window that opens 12 hours from now.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 12)
        % 24;
    let window = format!(
        "[[windows]]\nhosts = [\"web-*\"]\nstart = \"{hour:02}:00\"\nduration = \"1h\"\ntimezone = \"UTC\"\n"
    );
    let b = w.commit(&[&web], "B\n", &window, "B in a window");
    let r = apply(&web, &[]);
    assert_eq!(r.applied_commit, a);
    assert!(
        r.waiting.starts_with("window opens ") && r.waiting.ends_with(&format!("{hour:02}:00 UTC")),
        "{}",
        r.waiting
    );
    // `plan` says so too, and plans nothing of B.
    let plan = web.plumb(&["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "waiting: not moving to {} yet: window opens",
            &b[..12]
        )),
        "{text}"
    );
    // Drift correction of the current commit runs outside the window.
    std::fs::write(web.path("/etc/motd"), "edited by hand\n").unwrap();
    let r = apply(&web, &[]);
    assert_eq!(r.outcome.as_str(), "drifted");
    assert_eq!(motd(&web), "A\n");
    // An emergency fix goes in now.
    let r = apply(&web, &["--ignore-rollout"]);
    assert_eq!(
        (r.applied_commit.as_str(), r.waiting.as_str()),
        (b.as_str(), "")
    );
    assert_eq!(motd(&web), "B\n");
}

#[test]
fn a_bad_rollout_setting_rejects_the_commit() {
    let w = World::new();
    let web = w.host("web-1");
    let a = w.commit(&[&web], "A\n", "", "A");
    assert_eq!(apply(&web, &[]).applied_commit, a);
    for (toml, needle) in [
        (
            "[rollout]\nwaves = [[\"canray-*\"], [\"*\"]]\n",
            "[rollout] waves: \"canray-*\" match no host",
        ),
        (
            "[[windows]]\nhosts = [\"*\"]\nstart = \"24:00\"\nduration = \"1h\"\n",
            "fleet.toml: [[windows]] #1: start = \"24:00\"",
        ),
        ("[rollout]\nwave = []\n", "unknown field `wave`"),
        ("[rollout\n", "fleet.toml"),
    ] {
        let bad = w.commit(&[&web], "bad\n", toml, "bad rollout settings");
        let out = web.plumb(&["apply"]);
        assert_eq!(out.status.code(), Some(1), "{toml}");
        let r = report(&web);
        assert_eq!(
            (
                r.outcome.as_str(),
                r.reason.map(|r| r.as_str()),
                r.desired_commit.as_str()
            ),
            ("rejected", Some("invalid-spec"), bad.as_str()),
            "{toml}"
        );
        assert!(r.message.contains(needle), "{toml}: {}", r.message);
        assert_eq!(motd(&web), "A\n");
    }
}

/// A health check that holds the pass (and its slot) until `go` exists.
fn held_health(go: &std::path::Path) -> String {
    format!(
        "[[health]]\ncommand = [\"/bin/sh\", \"-c\", \"for i in $(seq 600); do [ -e {} ] && exit 0; sleep 0.05; done; exit 1\"]\ntimeout = \"60s\"\n",
        go.display()
    )
}

#[test]
fn disruption_slots_are_exclusive_and_expire() {
    let w = World::new();
    let h1 = w.host("web-1");
    let h2 = w.host("web-2");
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let slots = "[disruption]\nmax_parallel = 1\nlock_ttl = \"3s\"\n";
    for h in [&h1, &h2] {
        w.fleet
            .write(&format!("hosts/{}/host.toml", h.name), &held_health(&go));
    }
    std::fs::write(&go, "").unwrap();
    let a = w.commit(&[&h1, &h2], "A\n", slots, "A");
    for h in [&h1, &h2] {
        assert_eq!(apply(h, &[]).applied_commit, a);
    }
    assert!(!w.has_ref("refs/heads/locks/0"), "slots are released");

    // web-1 holds the only slot while its health check runs: web-2 waits.
    std::fs::remove_file(&go).unwrap();
    let b = w.commit(&[&h1, &h2], "B\n", slots, "B");
    let mut holder = std::process::Command::new(common::PLUMB)
        .args(["apply", "--config"])
        .arg(h1.config())
        .env("PLUMB_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("web-1 to take the slot", Duration::from_secs(30), || {
        w.has_ref("refs/heads/locks/0")
    });
    let r = apply(&h2, &[]);
    assert_eq!(r.applied_commit, a);
    assert!(
        r.waiting
            .starts_with("waiting for a disruption slot (1 of 1 held: web-1 until "),
        "{}",
        r.waiting
    );
    std::fs::write(&go, "").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(!w.has_ref("refs/heads/locks/0"), "web-1 released its slot");
    assert_eq!(apply(&h2, &[]).applied_commit, b);

    // A holder killed while it holds the slot: the slot frees after lock_ttl.
    std::fs::remove_file(&go).unwrap();
    let c = w.commit(&[&h1, &h2], "C\n", slots, "C");
    let mut holder = std::process::Command::new(common::PLUMB)
        .args(["apply", "--config"])
        .arg(h1.config())
        .env("PLUMB_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("web-1 to take the slot", Duration::from_secs(30), || {
        w.has_ref("refs/heads/locks/0")
    });
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed_at = Instant::now();
    let r = apply(&h2, &[]);
    assert!(
        r.waiting.starts_with("waiting for a disruption slot"),
        "{}",
        r.waiting
    );
    std::fs::write(&go, "").unwrap(); // web-2's own check passes at once
    wait_until(
        "the dead holder's slot to expire",
        Duration::from_secs(30),
        || apply(&h2, &[]).applied_commit == c,
    );
    assert!(killed_at.elapsed() >= Duration::from_secs(1));
    assert_eq!(motd(&h2), "C\n");
}

/// An ed25519 key made by ssh-keygen: (private key path, public key line).
fn keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let private = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    (private, public.trim().to_string())
}

/// A compromised host's forgery: `status/<victim>` saying `commit` is applied, healthy, long
/// soaked, signed with `key` (not the victim's).
fn forge(w: &World, victim: &str, commit: &str, key: &std::path::Path) {
    let tmp = tempfile::tempdir().unwrap();
    let r = Report {
        host: victim.into(),
        agent_version: "0.1.0".into(),
        outcome: plumb::status::report::Outcome::Converged,
        desired_commit: commit.into(),
        applied_commit: commit.into(),
        last_good_commit: commit.into(),
        applied_at: "2001-01-01T00:00:00Z".into(),
        waiting: String::new(),
        reboot_required: None,
        last_reboot: None,
        checked_at: plumb::status::report::now_rfc3339(),
        message: String::new(),
        reason: None,
        facts: None,
        upgrades: None,
        age_recipient: None,
        container_updates: vec![],
        resources: vec![],
    };
    std::fs::write(tmp.path().join("status.toml"), r.to_toml()).unwrap();
    let g = |args: &[&str]| common::git(tmp.path(), args);
    g(&["init", "-q"]);
    g(&["add", "status.toml"]);
    g(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={}", key.display()),
        "commit",
        "-q",
        "-S",
        "-m",
        "forged",
    ]);
    g(&[
        "push",
        "-q",
        "-f",
        w.fleet.bare().to_str().unwrap(),
        &format!("HEAD:refs/heads/status/{victim}"),
    ]);
}

fn fleet_rollout(w: &World) -> String {
    let out = std::process::Command::new(common::PLUMB)
        .args(["fleet", "--rollout", "--repo", &w.daemon.url("fleet.git")])
        .args(["--config", "/nonexistent/agent.toml"])
        .env("PLUMB_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn forged_status_opens_no_gate_when_host_keys_are_pinned() {
    let w = World::new();
    let tmp = tempfile::tempdir().unwrap();
    let (canary_key, canary_pub) = keygen(tmp.path(), "canary");
    let (web_key, web_pub) = keygen(tmp.path(), "web");
    let with_key = |name: &str, key: &std::path::Path| {
        Host::new(
            name,
            &w.daemon.url("fleet.git"),
            &format!("[status]\nsigning_key = {:?}\n", key.display().to_string()),
        )
    };
    let canary = with_key("canary-1", &canary_key);
    let web = with_key("web-1", &web_key);
    w.fleet.write("hosts/canary-1/host_key.pub", &canary_pub);
    w.fleet.write("hosts/web-1/host_key.pub", &web_pub);
    let waves = "[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\n";
    let a = w.commit(&[&canary, &web], "A\n", waves, "A");
    for h in [&canary, &web] {
        assert_eq!(apply(h, &[]).applied_commit, a);
    }
    let b = w.commit(&[&canary, &web], "B\n", waves, "B");
    // web-1, compromised, forges the canary's branch with its own key: no gate opens.
    forge(&w, "canary-1", &b, &web_key);
    let r = apply(&web, &[]);
    assert_eq!(r.applied_commit, a);
    assert!(
        r.waiting.starts_with("wave 2 waits for wave 1: 0/1"),
        "{}",
        r.waiting
    );
    let shown = fleet_rollout(&w);
    assert!(
        shown.contains("host keys pinned in the fleet repo"),
        "{shown}"
    );
    assert!(
        shown.contains("canary-1: signed by another key than the pinned one"),
        "{shown}"
    );
    // Nor one signed by a key nobody pinned.
    let (unpinned, _) = keygen(tmp.path(), "other");
    forge(&w, "canary-1", &b, &unpinned);
    assert_eq!(apply(&web, &[]).applied_commit, a);
    // The canary's own, signed status does (it rebuilds its branch on the forged one).
    assert_eq!(apply(&canary, &[]).applied_commit, b);
    assert_eq!(apply(&web, &[]).applied_commit, b);
    let shown = fleet_rollout(&w);
    assert!(!shown.contains("untrusted status"), "{shown}");
    assert!(
        shown.contains("wave 1 canary-*: 1/1 applied, 1 healthy, 0 failed"),
        "{shown}"
    );
}

#[test]
fn without_pinned_keys_the_status_server_is_trusted_and_fleet_says_so() {
    let w = World::new();
    let tmp = tempfile::tempdir().unwrap();
    let (web_key, _) = keygen(tmp.path(), "web");
    let canary = w.host("canary-1");
    let web = w.host("web-1");
    let waves = "[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\n";
    let a = w.commit(&[&canary, &web], "A\n", waves, "A");
    for h in [&canary, &web] {
        assert_eq!(apply(h, &[]).applied_commit, a);
    }
    let b = w.commit(&[&canary, &web], "B\n", waves, "B");
    // The same forgery goes through: only the server's access control could have stopped it.
    forge(&w, "canary-1", &b, &web_key);
    assert_eq!(apply(&web, &[]).applied_commit, b);
    let shown = fleet_rollout(&w);
    assert!(
        shown.contains("no host keys pinned; the status server's access control protects"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("rollout of {}", &b[..7])),
        "{shown}"
    );
}

#[test]
fn with_a_status_repository_per_host_the_gate_reads_each() {
    let w = World::new();
    for h in ["canary-1", "web-1"] {
        common::git(
            w.fleet.dir.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &format!("status-{h}.git"),
            ],
        );
    }
    let extra = format!(
        "[status]\nrepo = \"{}\"\n",
        w.daemon.url("status-{host}.git")
    );
    let canary = Host::new("canary-1", &w.daemon.url("fleet.git"), &extra);
    let web = Host::new("web-1", &w.daemon.url("fleet.git"), &extra);
    let waves = "[rollout]\nwaves = [[\"canary-*\"], [\"*\"]]\n";
    let a = w.commit(&[&canary, &web], "A\n", "", "A");
    for h in [&canary, &web] {
        assert_eq!(apply(h, &[]).applied_commit, a);
    }
    let b = w.commit(&[&canary, &web], "B\n", waves, "B");
    let r = apply(&web, &[]);
    assert_eq!(r.applied_commit, a);
    assert!(
        r.waiting.starts_with("wave 2 waits for wave 1: 0/1"),
        "{}",
        r.waiting
    );
    assert_eq!(apply(&canary, &[]).applied_commit, b);
    assert_eq!(apply(&web, &[]).applied_commit, b);
}
