//! The operator's story end to end (issue 6): the packages built by `packaging/build.sh`
//! installed in real trixie nodes, plumb.service run by systemd, the fleet repo served by a git
//! server on the host. Each test follows docs/packaging.md's commands.
//!
//! The packages are built once per test run (release binary + .deb + .rpm, see `packages()`).

use anyhow::{bail, ensure, Context, Result};
use plumb::status::report::{Kind, Outcome, Report, ResourceState};
use plumb_systest::{run, FleetRepo, GitServer, Network, Node, NodeImage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The agents' poll interval in these tests.
const INTERVAL: Duration = Duration::from_secs(5);

/// Which resource kinds the agent applies on main so far. The fleet repo always holds a file, a
/// unit, a Quadlet container and a package; the assertions for a kind are on once its lane lands.
const UNITS_LANDED: bool = true;
const CONTAINERS_LANDED: bool = true;
const PACKAGES_LANDED: bool = true;
/// Status branches and `plumb fleet`; until then the node's local report (`plumb status`) is read.
const STATUS_LANDED: bool = true;

/// "Within one interval": the interval with its +10 % jitter, plus the time a pass takes on a
/// loaded 2-core machine (fetch, package install, container start).
fn one_interval() -> Duration {
    INTERVAL.mul_f64(1.1) + Duration::from_secs(40)
}

// ---------------------------------------------------------------------------------------------
// The packages, built once per run

struct Packages {
    deb: PathBuf,
    /// The same build with a higher version, for the upgrade test.
    deb_next: PathBuf,
    rpm: PathBuf,
}

/// Builds the packages once per test binary run (cargo's own caching makes a rebuild with no
/// source change take seconds); a lock file keeps concurrent runs from writing the same files.
fn packages() -> Result<&'static Packages> {
    static PACKAGES: OnceLock<std::result::Result<Packages, String>> = OnceLock::new();
    PACKAGES
        .get_or_init(|| build_packages().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the packages failed: {e}"))
}

fn build_packages() -> Result<Packages> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate sits in the workspace")?;
    let target = target_dir()?;
    // Not target/packages, where the README tells operators to look: the test builds an N+1 too.
    let out = target.join("e2e-packages");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let lock = std::fs::File::create(out.join(".build.lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the package build")?;

    let version = env!("CARGO_PKG_VERSION");
    let next = format!("{version}+1");
    let build = |extra: &[&str]| -> Result<()> {
        let t = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(workspace.join("packaging/build.sh"))
            .args(extra)
            .arg("--out")
            .arg(&out)
            .env("CARGO_TARGET_DIR", &target);
        // Without the variables cargo set for this test (CARGO_PKG_NAME=plumb-systest, ...):
        // crates that read them with env!() would otherwise look changed to cargo, and the
        // release binary would be built once for the tests and again by a build.sh run by hand.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(cargo_set_for_tests) {
                cmd.env_remove(key);
            }
        }
        run(&mut cmd)?.check("packaging/build.sh")?;
        eprintln!(
            "e2e: packaging/build.sh {} took {:.1?}",
            extra.join(" "),
            t.elapsed()
        );
        Ok(())
    };
    build(&[])?;
    build(&["--version", &next])?;
    let find = |name: &str| -> Result<PathBuf> {
        let p = out.join(name);
        ensure!(p.exists(), "build.sh did not make {}", p.display());
        Ok(p)
    };
    Ok(Packages {
        deb: find(&format!("plumb_{version}-1_amd64.deb"))?,
        deb_next: find(&format!("plumb_{next}-1_amd64.deb"))?,
        rpm: find(&format!("plumb-{version}-1.x86_64.rpm"))?,
    })
}

/// The environment variables cargo sets for a test process (not the user's own CARGO_HOME,
/// CARGO_TARGET_DIR or CARGO_PROFILE_* settings).
fn cargo_set_for_tests(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(
            key,
            "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// The cargo target dir this test binary was built in: <target>/<profile>/deps/<binary>.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .with_context(|| format!("no target dir above {}", exe.display()))
}

// ---------------------------------------------------------------------------------------------
// What an operator does on a node (docs/packaging.md, "Operator quickstart")

/// Copies the .deb into the node's /srv and installs it with apt, as an operator would.
fn apt_install(node: &Node, deb: &Path) -> Result<()> {
    let name = deb.file_name().context("a file name")?.to_string_lossy();
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    node.write_file(&format!("/srv/{name}"), bytes)?;
    package_op(
        node,
        &format!("cd /srv && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{name}"),
    )?;
    Ok(())
}

/// Runs a package operation (apt, dpkg, rpm) in the node: it must succeed, and its output must
/// show no maintainer-script trouble. dpkg and rpm carry on past a failing command in a script
/// that does not `set -e` (issue 18: every install printed `/var/lib/dpkg/info/plumb.postinst:
/// 33: below: not found` and exited 0), so the exit status alone proves nothing.
fn package_op(node: &Node, script: &str) -> Result<String> {
    let out = node.sh(script)?;
    let all = format!("{}{}", out.stdout, out.stderr);
    let bad = maintainer_script_errors(&all);
    ensure!(
        bad.is_empty(),
        "{}: `{script}` printed maintainer-script errors:\n{}\n\nfull output:\n{all}",
        node.name(),
        bad.join("\n")
    );
    out.check(&format!("{}: {script}", node.name()))
}

/// The lines of dpkg/apt/rpm output that tell of an error in a maintainer script or scriptlet.
fn maintainer_script_errors(output: &str) -> Vec<&str> {
    const SIGNS: &[&str] = &[
        "/var/lib/dpkg/info/",
        "not found",
        "scriptlet failed",
        "warning: %",
        "error:",
        "Error:",
        "No such file or directory",
        "Permission denied",
        "command not found",
    ];
    output
        .lines()
        .filter(|l| {
            // apt fetching a local .deb as root rather than as _apt is a note, not an error.
            !l.starts_with("N: ") && (SIGNS.iter().any(|s| l.contains(s)) || l.starts_with("E: "))
        })
        .collect()
}

fn agent_toml(git: &GitServer) -> String {
    format!(
        "repo = \"{}\"\ninterval = \"{}s\"\n",
        git.url("fleet.git"),
        INTERVAL.as_secs()
    )
}

/// Writes agent.toml and starts the agent: the quickstart's last two steps.
fn configure_and_start(node: &Node, git: &GitServer) -> Result<()> {
    node.write_file("/etc/plumb/agent.toml", agent_toml(git))?;
    node.exec_ok(&["systemctl", "enable", "--now", "plumb"])?;
    Ok(())
}

fn unit_prop(node: &Node, unit: &str, prop: &str) -> Result<String> {
    Ok(node
        .exec_ok(&["systemctl", "show", "-P", prop, unit])?
        .trim()
        .to_string())
}

/// The node's latest report: from its status branch once that lane landed, else `plumb status`.
fn report(node: &Node, repo: &FleetRepo) -> Result<Option<Report>> {
    let text = if STATUS_LANDED {
        let branch = format!("status/{}", node.name());
        if repo.rev(&branch)?.is_none() {
            return Ok(None);
        }
        repo.show(&branch, "status.toml")?
    } else {
        let out = node.exec(&["plumb", "status"])?;
        if !out.success() {
            return Ok(None);
        }
        out.stdout
    };
    Ok(Some(Report::from_toml(&text)?))
}

/// Waits until the node reports `converged` with `commit` applied.
fn wait_converged(node: &Node, repo: &FleetRepo, commit: &str) -> Result<Report> {
    let t = Instant::now();
    let r = node.wait_until(
        &format!("{} converged at {commit}", node.name()),
        one_interval(),
        || {
            Ok(report(node, repo)?.filter(|r| {
                r.outcome == Outcome::Converged
                    && r.applied_commit == commit
                    && r.desired_commit == commit
            }))
        },
    )?;
    eprintln!(
        "e2e: {} converged at {} after {:.1?}",
        node.name(),
        &commit[..12],
        t.elapsed()
    );
    Ok(r)
}

fn resource_state(r: &Report, kind: Kind, name: &str) -> Option<ResourceState> {
    r.resources
        .iter()
        .find(|x| x.kind == kind && x.name == name)
        .map(|x| x.state)
}

// ---------------------------------------------------------------------------------------------
// The fleet repository

const FILE: &str = "/etc/plumb-e2e/motd";
const UNIT: &str = "e2e-app.service";
const CONTAINER: &str = "e2e-web";
const PACKAGE: &str = "plumb-e2e-hello";

fn unit_text(version: u32) -> String {
    format!(
        "[Unit]\nDescription=plumb e2e app v{version}\n\n[Service]\nEnvironment=E2E_VERSION={version}\n\
         ExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

const CONTAINER_TEXT: &str = "[Container]\nImage=localhost/busybox:latest\nExec=httpd -f -p 8080\n\
    StopTimeout=1\n\n[Install]\nWantedBy=multi-user.target\n";

/// One host's directory: a file, a unit, a Quadlet container and a package.
fn write_host(repo: &FleetRepo, host: &str, motd: &str, unit_version: u32) -> Result<()> {
    let dir = format!("hosts/{host}");
    repo.write(&format!("{dir}/files{FILE}"), motd)?;
    repo.write(&format!("{dir}/units/{UNIT}"), unit_text(unit_version))?;
    repo.write(
        &format!("{dir}/containers/{CONTAINER}.container"),
        CONTAINER_TEXT,
    )?;
    repo.write(
        &format!("{dir}/host.toml"),
        format!("[packages]\ninstall = [\"{PACKAGE}\"]\n"),
    )?;
    Ok(())
}

/// A local apt repository in the node's /srv/repo with one tiny package, as PackageKit needs.
fn add_local_apt_repo(node: &Node) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::create_dir_all(root.join("usr/share/plumb-e2e"))?;
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {PACKAGE}\nVersion: 1.0\nArchitecture: all\nMaintainer: plumb tests <t@example.invalid>\n\
             Description: plumb e2e test package\n"
        ),
    )?;
    std::fs::write(root.join("usr/share/plumb-e2e/hello"), "hello\n")?;
    let deb = dir.path().join(format!("{PACKAGE}_1.0_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb))?
    .check("dpkg-deb --build")?;
    serve_debs(node, &[&deb])
}

/// Checks that the node runs what `write_host(.., motd, unit_version)` asked for.
fn check_host(node: &Node, motd: &str, unit_version: u32) -> Result<()> {
    ensure!(node.read_file(FILE)? == motd, "{FILE} on {}", node.name());
    if UNITS_LANDED {
        ensure!(
            unit_prop(node, UNIT, "ActiveState")? == "active",
            "{UNIT} active"
        );
        let env = unit_prop(node, UNIT, "Environment")?;
        ensure!(
            env.contains(&format!("E2E_VERSION={unit_version}")),
            "{UNIT} runs v{unit_version}: {env}"
        );
    }
    if CONTAINERS_LANDED {
        let svc = format!("{CONTAINER}.service");
        ensure!(
            unit_prop(node, &svc, "ActiveState")? == "active",
            "{svc} active"
        );
    }
    if PACKAGES_LANDED {
        let st = node.exec_ok(&["dpkg-query", "-W", "-f", "${Status}", PACKAGE])?;
        ensure!(st == "install ok installed", "{PACKAGE}: {st}");
    }
    Ok(())
}

fn boot(image: &NodeImage, net: &Network, name: &str) -> Result<Node> {
    let t = Instant::now();
    let node = Node::boot(image, net, name)?;
    eprintln!("e2e: node {name} booted in {:.1?}", t.elapsed());
    Ok(node)
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Stories 1-4 on one node: install + configure + converge, change in Git, drift, revert.
#[test]
fn deb_install_converge_change_drift_revert() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let node = boot(&image, &net, "op-1")?;
    add_local_apt_repo(&node)?;

    // 1. Install on a fresh node: the unit is enabled but skipped while agent.toml names no repo.
    apt_install(&node, &pkgs.deb)?;
    ensure!(node.exec_ok(&["systemctl", "is-enabled", "plumb"])?.trim() == "enabled");
    let state = unit_prop(&node, "plumb.service", "ActiveState")?;
    ensure!(
        state == "inactive",
        "unconfigured plumb.service is {state}, want inactive"
    );

    write_host(&repo, "op-1", "v1\n", 1)?;
    let c1 = repo.commit("op-1: file, unit, container, package")?;
    let t = Instant::now();
    configure_and_start(&node, &git)?;
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "active");
    let r = wait_converged(&node, &repo, &c1)?;
    eprintln!(
        "e2e: story 1 converged {:.1?} after enable --now",
        t.elapsed()
    );
    check_host(&node, "v1\n", 1)?;
    ensure!(
        resource_state(&r, Kind::File, FILE).is_some(),
        "{FILE} reported: {r:?}"
    );

    // 2. The operator changes the file and the unit in Git: applied, the unit restarted.
    let invocation = UNITS_LANDED
        .then(|| unit_prop(&node, UNIT, "InvocationID"))
        .transpose()?;
    write_host(&repo, "op-1", "v2\n", 2)?;
    let c2 = repo.commit("op-1: v2")?;
    wait_converged(&node, &repo, &c2)?;
    check_host(&node, "v2\n", 2)?;
    if let Some(before) = invocation {
        ensure!(
            unit_prop(&node, UNIT, "InvocationID")? != before,
            "{UNIT} was restarted"
        );
    }

    // 3. Drift by hand: the file edited, the unit stopped -> put back and reported.
    node.write_file(FILE, "edited by hand\n")?;
    if UNITS_LANDED {
        node.exec_ok(&["systemctl", "stop", UNIT])?;
    }
    let t = Instant::now();
    let r = node.wait_until("drift corrected and reported", one_interval(), || {
        Ok(report(&node, &repo)?
            .filter(|r| resource_state(r, Kind::File, FILE) == Some(ResourceState::DriftCorrected)))
    })?;
    eprintln!("e2e: drift corrected after {:.1?}", t.elapsed());
    if UNITS_LANDED {
        ensure!(
            resource_state(&r, Kind::Unit, UNIT) == Some(ResourceState::DriftCorrected),
            "{UNIT} reported drift-corrected: {r:?}"
        );
    }
    check_host(&node, "v2\n", 2)?;

    // 4. git revert of the last change: back to v1.
    repo.git(&["revert", "--no-edit", "HEAD"])?;
    repo.git(&["push", "-q", "origin", "HEAD:refs/heads/main"])?;
    let c3 = repo.head()?;
    wait_converged(&node, &repo, &c3)?;
    check_host(&node, "v1\n", 1)?;
    Ok(())
}

/// Story 5: three nodes, each its own host directory and status branch, `plumb fleet` on the host.
#[test]
fn three_nodes_report_to_their_own_status_branches() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let names = ["fleet-a", "fleet-b", "fleet-c"];
    for name in names {
        repo.write(&format!("hosts/{name}/files{FILE}"), format!("{name}\n"))?;
    }
    let commit = repo.commit("three hosts")?;
    let t = Instant::now();
    let nodes = Node::boot_many(&image, &net, &names)?;
    eprintln!("e2e: three nodes booted in {:.1?}", t.elapsed());
    for node in &nodes {
        apt_install(node, &pkgs.deb)?;
        configure_and_start(node, &git)?;
    }
    for node in &nodes {
        wait_converged(node, &repo, &commit)?;
        ensure!(node.read_file(FILE)? == format!("{}\n", node.name()));
    }
    if STATUS_LANDED {
        for name in names {
            ensure!(
                repo.rev(&format!("status/{name}"))?.is_some(),
                "status/{name}"
            );
        }
        // The release binary that went into the packages, run on the host like an operator.
        let plumb = target_dir()?.join("release/plumb");
        let out = run(Command::new(plumb).args(["fleet", "--repo", &git.local_url("fleet.git")]))?
            .check("plumb fleet")?;
        for name in names {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .with_context(|| format!("{name} in plumb fleet:\n{out}"))?;
            ensure!(
                line.contains("converged")
                    && line.contains(&commit[..7])
                    && line.contains("current"),
                "plumb fleet line for {name}: {line}"
            );
        }
    }
    Ok(())
}

/// Story 6: upgrade N -> N+1 restarts the agent and keeps state and the edited config; remove
/// stops and disables it and keeps the config; purge removes everything. Also: the watchdog.
#[test]
fn deb_upgrade_remove_purge() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let node = boot(&image, &net, "up-1")?;
    repo.write(&format!("hosts/up-1/files{FILE}"), "up\n")?;
    let commit = repo.commit("up-1")?;

    apt_install(&node, &pkgs.deb)?;
    let edited = format!("# edited by the operator\n{}", agent_toml(&git));
    node.write_file("/etc/plumb/agent.toml", &edited)?;
    node.exec_ok(&["systemctl", "enable", "--now", "plumb"])?;
    wait_converged(&node, &repo, &commit)?;

    // The agent feeds the watchdog at the shipped ratio (WatchdogSec=2min, interval 60 s: waits
    // shorter than the ping period), scaled to WatchdogSec=4s and interval 2s, for 90 s: ~45
    // passes and ~22 watchdog periods, any one of which would kill an agent that missed a ping
    // (issue 20: the shipped unit killed plumb every few minutes).
    node.write_file(
        "/etc/systemd/system/plumb.service.d/watchdog.conf",
        "[Service]\nWatchdogSec=4s\n",
    )?;
    node.write_file(
        "/etc/plumb/agent.toml",
        edited.replace(
            &format!("interval = \"{}s\"", INTERVAL.as_secs()),
            "interval = \"2s\"",
        ),
    )?;
    node.exec_ok(&["systemctl", "daemon-reload"])?;
    node.exec_ok(&["systemctl", "restart", "plumb"])?;
    let pid = unit_prop(&node, "plumb.service", "MainPID")?;
    let started = Instant::now();
    let mut pings = Vec::new();
    node.wait_until(
        "90 s of watchdog pings with no restart",
        Duration::from_secs(150),
        || {
            let restarts = unit_prop(&node, "plumb.service", "NRestarts")?;
            ensure!(
                restarts == "0",
                "plumb.service restarted {restarts} time(s) after {:.0?}: {}",
                started.elapsed(),
                node.exec(&["journalctl", "-u", "plumb", "-n", "20", "--no-pager"])?
                    .stdout
            );
            let ts = unit_prop(&node, "plumb.service", "WatchdogTimestampMonotonic")?;
            if pings.last() != Some(&ts) {
                pings.push(ts);
            }
            Ok((started.elapsed() >= Duration::from_secs(90)).then_some(()))
        },
    )?;
    ensure!(
        pings.len() >= 20,
        "only {} watchdog pings seen in 90 s",
        pings.len()
    );
    ensure!(
        unit_prop(&node, "plumb.service", "MainPID")? == pid,
        "not restarted by the watchdog"
    );
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "active");
    node.exec_ok(&["rm", "/etc/systemd/system/plumb.service.d/watchdog.conf"])?;
    node.write_file("/etc/plumb/agent.toml", &edited)?;
    node.exec_ok(&["systemctl", "daemon-reload"])?;
    node.exec_ok(&["systemctl", "restart", "plumb"])?;

    // Upgrade to N+1: restarted, config and state kept.
    let pid = unit_prop(&node, "plumb.service", "MainPID")?;
    apt_install(&node, &pkgs.deb_next)?;
    let version = node.exec_ok(&["dpkg-query", "-W", "-f", "${Version}", "plumb"])?;
    ensure!(version.contains("+1"), "upgraded to N+1: {version}");
    let new_pid = unit_prop(&node, "plumb.service", "MainPID")?;
    ensure!(
        new_pid != pid && new_pid != "0",
        "restarted on upgrade: {pid} -> {new_pid}"
    );
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "active");
    ensure!(
        node.read_file("/etc/plumb/agent.toml")? == edited,
        "edited config kept"
    );
    let state = node.read_file("/var/lib/plumb/state.json")?;
    ensure!(state.contains(&commit), "state kept: {state}");
    wait_converged(&node, &repo, &commit)?;

    // Remove: stopped and disabled, config and state kept.
    package_op(
        &node,
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q plumb",
    )?;
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "inactive");
    let wants = "/etc/systemd/system/multi-user.target.wants/plumb.service";
    ensure!(
        !node.exec(&["test", "-L", wants])?.success(),
        "{wants} left behind"
    );
    ensure!(!node.exec(&["test", "-e", "/usr/bin/plumb"])?.success());
    ensure!(
        node.read_file("/etc/plumb/agent.toml")? == edited,
        "config kept on remove"
    );
    ensure!(node
        .read_file("/var/lib/plumb/state.json")?
        .contains(&commit));
    ensure!(node.read_file(FILE)? == "up\n", "managed files stay");

    // Purge: config and state gone.
    package_op(
        &node,
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q plumb",
    )?;
    for gone in ["/etc/plumb/agent.toml", "/var/lib/plumb"] {
        ensure!(
            !node.exec(&["test", "-e", gone])?.success(),
            "{gone} after purge"
        );
    }
    let status = node.exec(&["dpkg-query", "-W", "-f", "${Status}", "plumb"])?;
    ensure!(!status.stdout.contains("installed"), "purged: {status:?}");
    Ok(())
}

/// Story 7: the .rpm in a trixie node with Debian's rpm; rpmlint on the host.
#[test]
fn rpm_install_erase_and_lint() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    rpmlint(&pkgs.rpm)?;
    lintian(&pkgs.deb)?;

    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let node = boot(&image, &net, "rpm-1")?;
    let bytes = std::fs::read(&pkgs.rpm)?;
    node.write_file("/srv/plumb.rpm", bytes)?;
    package_op(&node, "rpm -i --nodeps /srv/plumb.rpm")?;
    ensure!(node.exec_ok(&["systemctl", "is-enabled", "plumb"])?.trim() == "enabled");
    // Enabled, but not started by the package, and not failed.
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "inactive");
    let config = node.exec_ok(&["rpm", "-qc", "plumb"])?;
    ensure!(
        config.lines().any(|l| l == "/etc/plumb/agent.toml"),
        "rpm -qc: {config}"
    );
    ensure!(node
        .exec_ok(&["plumb", "--version"])?
        .contains(env!("CARGO_PKG_VERSION")));
    ensure!(node
        .exec(&["test", "-s", "/usr/share/man/man1/plumb.1.gz"])?
        .success());

    let edited = "# edited\nrepo = \"git://192.0.2.1/fleet.git\"\n";
    node.write_file("/etc/plumb/agent.toml", edited)?;
    package_op(&node, "rpm -e plumb")?;
    ensure!(
        node.read_file("/etc/plumb/agent.toml.rpmsave")? == edited,
        "edited config kept as .rpmsave"
    );
    ensure!(!node.exec(&["test", "-e", "/usr/bin/plumb"])?.success());
    let enabled = node.exec(&["systemctl", "is-enabled", "plumb"])?;
    ensure!(
        !enabled.success(),
        "still enabled after rpm -e: {enabled:?}"
    );
    Ok(())
}

/// Installs a Debian package on the host with apt when `program` is missing.
fn ensure_tool(program: &str, package: &str) -> Result<()> {
    if !run(Command::new("sh").args(["-c", &format!("command -v {program}")]))?.success() {
        run(Command::new("apt-get").args(["update", "-q"]))?.check("apt-get update")?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))?
        .check(&format!("apt-get install {package}"))?;
    }
    Ok(())
}

/// lintian (installed on the host with apt when missing) finds no error and no warning in the
/// .deb. The tags the package overrides, and why, are in packaging/debian/lintian-overrides
/// (shipped as /usr/share/lintian/overrides/plumb, where lintian reads them).
fn lintian(deb: &Path) -> Result<()> {
    ensure_tool("lintian", "lintian")?;
    let out = run(Command::new("lintian")
        // Not `--fail-on warning`: with --show-overrides that counts overridden warnings too.
        .args(["--fail-on", "error", "--show-overrides"])
        .arg(deb))?;
    eprintln!("e2e: lintian:\n{}{}", out.stdout, out.stderr);
    let flagged: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    ensure!(
        out.success() && flagged.is_empty(),
        "lintian found errors or warnings in {}:\n{}",
        deb.display(),
        flagged.join("\n")
    );
    // The overrides are read: each one is reported as overridden ("O:"), so none is stale.
    let overridden = out.stdout.lines().filter(|l| l.starts_with("O: ")).count();
    ensure!(
        overridden == 2,
        "lintian used {overridden} of packaging/debian/lintian-overrides' 2 overrides:\n{}",
        out.stdout
    );
    Ok(())
}

/// rpmlint (installed on the host with apt when missing) finds no errors, with the project's
/// rpmlintrc (headers cargo-generate-rpm cannot write, and no signature).
fn rpmlint(rpm: &Path) -> Result<()> {
    ensure_tool("rpmlint", "rpmlint")?;
    // The filters and why: packaging/rpm/plumb.rpmlintrc.
    let rc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/rpm/plumb.rpmlintrc");
    let out = run(Command::new("rpmlint").arg("-r").arg(rc).arg(rpm))?;
    eprintln!("e2e: rpmlint:\n{}{}", out.stdout, out.stderr);
    if !out.success() || out.stdout.contains(": E: ") {
        bail!("rpmlint found errors in {}", rpm.display());
    }
    Ok(())
}

/// The detector catches what issue 18's install printed, and passes a clean apt run.
#[test]
fn maintainer_script_errors_are_caught() {
    let broken = "Setting up plumb (0.1.0-1) ...\n\
        /var/lib/dpkg/info/plumb.postinst: 33: below: not found\n";
    assert_eq!(
        maintainer_script_errors(broken),
        ["/var/lib/dpkg/info/plumb.postinst: 33: below: not found"]
    );
    let rpm = "warning: %post(plumb-0.1.0-1.x86_64) scriptlet failed, exit status 1\n";
    assert_eq!(maintainer_script_errors(rpm).len(), 1);
    let clean = "Note, selecting 'plumb' instead of './plumb_0.1.0-1_amd64.deb'\n\
        Setting up plumb (0.1.0-1) ...\n\
        Created symlink '/etc/systemd/system/multi-user.target.wants/plumb.service' → '/usr/lib/systemd/system/plumb.service'.\n\
        N: Download is performed unsandboxed as root as file '/srv/plumb_0.1.0-1_amd64.deb' couldn't be accessed by user '_apt'. - pkgAcquire::Run (13: Permission denied)\n\
        warning: /etc/plumb/agent.toml saved as /etc/plumb/agent.toml.rpmsave\n";
    assert!(maintainer_script_errors(clean).is_empty());
}

/// Issue 16, from the .deb: `journalctl -x -u plumb` explains a rejected commit with the text of
/// the catalog the package installs, and with node_exporter's textfile collector directory on the
/// host the packaged defaults (no `[metrics]` in agent.toml) write the metrics there.
#[test]
fn deb_journal_catalog_and_node_exporter_textfile_issue_16() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let node = boot(&image, &net, "obs-1")?;
    // The directory Debian's prometheus-node-exporter reads `*.prom` files from.
    node.exec_ok(&[
        "install",
        "-d",
        "-m",
        "0755",
        "/var/lib/prometheus/node-exporter",
    ])?;
    apt_install(&node, &pkgs.deb)?;
    node.exec_ok(&["test", "-f", "/usr/lib/systemd/catalog/plumb.catalog"])?;

    repo.write("hosts/obs-1/files/etc/obs-motd", "hello\n")?;
    let good = repo.commit("obs-1: motd")?;
    configure_and_start(&node, &git)?;
    wait_converged(&node, &repo, &good)?;
    const PROM: &str = "/var/lib/prometheus/node-exporter/plumb.prom";
    let metric = |line: &'static str| {
        node.wait_until(&format!("{line} in {PROM}"), one_interval(), || {
            Ok(node
                .read_file(PROM)
                .ok()
                .filter(|t| t.lines().any(|l| l == line)))
        })
    };
    metric("plumb_outcome{outcome=\"converged\"} 1")?;

    repo.write("hosts/obs-1/host.toml", "packagez = 1\n")?;
    let bad = repo.commit("obs-1: a typo")?;
    node.wait_until("obs-1 rejects the typo", one_interval(), || {
        Ok(report(&node, &repo)?
            .filter(|r| r.outcome == Outcome::Rejected && r.desired_commit == bad))
    })?;
    let text = metric("plumb_reason_info{reason=\"invalid-spec\"} 1")?;
    ensure!(
        text.contains("plumb_outcome{outcome=\"rejected\"} 1"),
        "{text}"
    );

    let explained = node.exec_ok(&["journalctl", "-x", "-u", "plumb", "--no-pager"])?;
    ensure!(
        explained.contains(&format!("plumb rejected commit {bad}: invalid-spec")),
        "no catalog subject for the rejected commit in journalctl -x:\n{explained}"
    );
    ensure!(
        explained.contains("Nothing of it was written to this host"),
        "no catalog text in journalctl -x:\n{explained}"
    );
    let by_id = node.exec_ok(&[
        "journalctl",
        "-u",
        "plumb",
        "-o",
        "cat",
        "--no-pager",
        &format!("MESSAGE_ID={}", plumb::logging::id::COMMIT_REJECTED),
    ])?;
    ensure!(
        by_id.contains("not applying commit") && by_id.contains("packagez"),
        "{by_id}"
    );
    Ok(())
}

/// Issue 17: plumb upgrades itself when Git pins a new version of its own package. The pass that
/// sees the pin finishes and pushes its report (the old version's, saying the upgrade comes
/// after it); then the install runs outside plumb.service, the package restarts the agent, and
/// the new version reports the package at the pinned version.
#[test]
fn deb_self_upgrade_pinned_in_git_issue_17() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let pkgs = packages()?;
    let image = NodeImage::ensure()?;
    let net = Network::new()?;
    let git = GitServer::start(&net)?;
    let repo = git.create_repo("fleet.git")?;
    let node = boot(&image, &net, "self-1")?;
    apt_install(&node, &pkgs.deb)?;
    let old = node.exec_ok(&["dpkg-query", "-W", "-f", "${Version}", "plumb"])?;
    serve_debs(&node, &[&pkgs.deb_next])?;
    let next = deb_version(&pkgs.deb_next)?;
    ensure!(next != old, "two versions to move between: {old} {next}");

    repo.write("hosts/self-1/files/etc/plumb-e2e/motd", "self\n")?;
    repo.write(
        "hosts/self-1/host.toml",
        format!("[packages]\ninstall = [\"plumb={next}\"]\n"),
    )?;
    let commit = repo.commit("pin plumb to the next version")?;
    configure_and_start(&node, &git)?;
    let pid = unit_prop(&node, "plumb.service", "MainPID")?;

    // The old version's report, pushed before anything restarted it.
    let before = node.wait_until(
        "the old version's report of the upgrade to come",
        one_interval(),
        || {
            Ok(report(&node, &repo)?.filter(|r| {
                r.applied_commit == commit
                    && r.resources.iter().any(|x| {
                        x.kind == Kind::Package
                            && x.name == "plumb"
                            && x.detail.contains("after this pass's report")
                    })
            }))
        },
    )?;
    eprintln!("e2e: report before the upgrade: {}", before.to_toml());

    // The new version runs, and reports the package at the pinned version.
    let after = node.wait_until("the new version's report", one_interval() * 2, || {
        let version = node.exec_ok(&["dpkg-query", "-W", "-f", "${Version}", "plumb"])?;
        if version != next {
            return Ok(None);
        }
        Ok(report(&node, &repo)?.filter(|r| {
            r.outcome == Outcome::Converged
                && r.checked_at > before.checked_at
                && resource_state(r, Kind::Package, "plumb") == Some(ResourceState::Ok)
        }))
    })?;
    ensure!(after.applied_commit == commit, "{}", after.to_toml());
    let new_pid = unit_prop(&node, "plumb.service", "MainPID")?;
    ensure!(
        new_pid != pid && new_pid != "0",
        "plumb.service restarted by its package: {pid} -> {new_pid}"
    );
    ensure!(unit_prop(&node, "plumb.service", "ActiveState")? == "active");
    ensure!(
        unit_prop(&node, "plumb.service", "NRestarts")? == "0",
        "a clean restart, not a crash"
    );
    // The install ran as its own unit, and its maintainer scripts said nothing wrong.
    let log = node.exec_ok(&[
        "journalctl",
        "-u",
        "plumb-self-upgrade",
        "--no-pager",
        "-o",
        "cat",
    ])?;
    ensure!(
        log.contains("Setting up plumb"),
        "the install ran in plumb-self-upgrade.service:\n{log}"
    );
    let bad = maintainer_script_errors(&log);
    ensure!(
        bad.is_empty(),
        "maintainer-script errors:\n{}",
        bad.join("\n")
    );
    ensure!(
        !node
            .exec(&["test", "-e", "/var/lib/plumb/self-upgrade.json"])?
            .success(),
        "the new version settled the upgrade: {}",
        node.read_file("/var/lib/plumb/self-upgrade.json")
            .unwrap_or_default()
    );
    // Its first pass waited for the install that restarted it to end, and said what runs; no
    // pass took the upgrade for one that did not take.
    let journal = node.exec_ok(&["journalctl", "-u", "plumb", "--no-pager", "-o", "cat"])?;
    ensure!(
        journal.contains(&format!("plumb's own package is now {next}")),
        "the new version said it runs:\n{journal}"
    );
    ensure!(
        !journal.contains("did not take"),
        "a pass took the upgrade for failed:\n{journal}"
    );
    Ok(())
}

/// The version in a .deb's control file.
fn deb_version(deb: &Path) -> Result<String> {
    Ok(run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Version"))?
    .check("dpkg-deb -f")?
    .trim()
    .to_string())
}

/// Serves `debs` to the node as a local apt repository (/srv/repo, with its Packages index).
fn serve_debs(node: &Node, debs: &[&Path]) -> Result<()> {
    let mut index = String::new();
    for deb in debs {
        let name = deb.file_name().context("a file name")?.to_string_lossy();
        let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
        let control = run(Command::new("dpkg-deb").arg("-f").arg(deb))?.check("dpkg-deb -f")?;
        let sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        index.push_str(control.trim_end());
        index.push_str(&format!(
            "\nFilename: ./{name}\nSize: {}\nSHA256: {sha256}\n\n",
            bytes.len()
        ));
        node.write_file(&format!("/srv/repo/{name}"), bytes)?;
    }
    node.write_file("/srv/repo/Packages", index)?;
    node.write_file(
        "/etc/apt/sources.list.d/plumb-e2e.list",
        "deb [trusted=yes] file:/srv/repo ./\n",
    )?;
    node.write_file(
        "/etc/apt/apt.conf.d/99plumb-e2e",
        "Acquire::Languages \"none\";\n",
    )?;
    node.exec_ok(&["apt-get", "update", "-q"])?;
    Ok(())
}
