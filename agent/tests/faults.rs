//! Faults under a pass: SIGKILL at random points, a full disk under root, the git server gone,
//! the state directory deleted. Each leaves the host consistent (every managed file holds its old
//! or its new content, never a torn one), and the next pass converges.

mod common;

use common::trust::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// `n` files under hosts/h1/files/srv/data/, each `size` bytes of a pattern naming `version`.
fn write_version(fleet: &Fleet, version: &str, n: usize, size: usize) {
    for i in 0..n {
        fleet.write(
            &format!("hosts/h1/files/srv/data/{i:04}"),
            &content(version, i, size),
        );
    }
}

fn content(version: &str, i: usize, size: usize) -> String {
    let unit = format!("{version}-{i}|");
    unit.repeat(size / unit.len() + 1)[..size].to_string()
}

/// Every managed file holds one of the versions (or is not there yet, for a first write).
fn assert_untorn(root: &Path, versions: &[&str], n: usize, size: usize) -> usize {
    let mut present = 0;
    for i in 0..n {
        let p = root.join(format!("srv/data/{i:04}"));
        match std::fs::read_to_string(&p) {
            Ok(have) => {
                present += 1;
                assert!(
                    versions.iter().any(|v| have == content(v, i, size)),
                    "{} is torn: {} bytes, starts {:?}",
                    p.display(),
                    have.len(),
                    &have[..have.len().min(20)]
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    present
}

fn all_have(root: &Path, version: &str, n: usize, size: usize) -> bool {
    (0..n).all(|i| {
        std::fs::read_to_string(root.join(format!("srv/data/{i:04}"))).ok()
            == Some(content(version, i, size))
    })
}

#[test]
fn sigkill_at_random_points_never_tears_a_file() {
    let (n, size) = (400, 4096);
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    write_version(&fleet, "a", n, size);
    fleet.commit("a", None);
    let host = Host::new(tmp.path(), &fleet.url(), "");
    let start = Instant::now();
    host.converge();
    let full = start.elapsed();
    assert!(all_have(&host.root, "a", n, size));

    // Alternate between versions so every kill lands on a pass with work to do.
    let versions = ["b", "c"];
    let mut kills = 0;
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..12 {
        let v = versions[round % 2];
        write_version(&fleet, v, n, size);
        fleet.commit(v, None);
        let delay = full.mul_f64(rng.f64());
        let mut child = host.plumb(&["apply"]).spawn().unwrap();
        std::thread::sleep(delay); // the point of the test: a random moment of the pass
        if child.try_wait().unwrap().is_none() {
            // SIGKILL, by the pid of the process this test started.
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert_untorn(&host.root, &["a", "b", "c"], n, size);
    }
    assert!(
        kills >= 4,
        "only {kills} of 12 passes were killed mid-way (a full pass takes {full:?})"
    );

    // The next pass converges, and the one after it has nothing to do.
    let last = versions[11 % 2];
    let r = host.converge();
    assert!(
        matches!(r.outcome.as_str(), "changed" | "converged"),
        "{}",
        r.message
    );
    assert!(all_have(&host.root, last, n, size));
    assert_eq!(host.converge().outcome.as_str(), "converged");
    // No temp file of ours is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(host.root.join("srv/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".plumb-new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A tmpfs mounted on `dir` for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_the_pass_tears_nothing_and_recovers() {
    let (n, size) = (40, 32 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    let host = Host::new(tmp.path(), &fleet.url(), "");
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root, to mount a small tmpfs as the host's root");
    }
    let Some(disk) = Tmpfs::mount(&host.root, "1600k") else {
        panic!("mounting a tmpfs on {} failed", host.root.display());
    };
    write_version(&fleet, "a", n, size); // 1.25 MiB: fits
    fleet.commit("a", None);
    host.converge();
    assert!(all_have(&host.root, "a", n, size));

    // The new version needs a second copy of each file while it is written: the disk fills up.
    write_version(&fleet, "b", n, size);
    fleet.commit("b", None);
    let a = host.apply(&[]);
    let r = a.report.unwrap();
    assert_eq!(a.code, 1);
    assert_eq!(r.outcome.as_str(), "failed", "{}", r.message);
    assert!(
        r.resources
            .iter()
            .any(|x| x.detail.contains("No space left on device")),
        "{:?}",
        r.resources
    );
    assert_ne!(r.last_good_commit, r.desired_commit);
    assert_untorn(&host.root, &["a", "b"], n, size);
    let tmp_left = std::fs::read_dir(host.root.join("srv/data"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".plumb-new")
        })
        .count();
    assert_eq!(tmp_left, 0, "temp files left on the full disk");

    // Space is back: the next pass converges.
    disk.resize("8m");
    let r = host.converge();
    assert_eq!(r.outcome.as_str(), "changed", "{}", r.message);
    assert_eq!(r.last_good_commit, r.desired_commit);
    assert!(all_have(&host.root, "b", n, size));
    assert_eq!(host.converge().outcome.as_str(), "converged");
}

#[test]
fn git_server_gone_keeps_the_last_commit_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    fleet.write("hosts/h1/files/etc/motd", "v1\n");
    let c1 = fleet.commit("v1", None);
    let daemon = GitDaemon::start(tmp.path());
    let port = daemon.port;
    let host = Host::new(tmp.path(), &daemon.url("fleet.git"), "");
    assert_eq!(host.converge().applied_commit, c1);

    // The server goes away; someone edits a managed file.
    drop(daemon);
    std::fs::write(host.root.join("etc/motd"), "hacked\n").unwrap();
    for _ in 0..2 {
        let a = host.apply(&[]);
        let r = a.report.unwrap();
        assert!(r.message.contains("could not fetch"), "{}", r.message);
        assert_eq!(r.applied_commit, c1);
        assert_eq!(
            std::fs::read_to_string(host.root.join("etc/motd")).unwrap(),
            "v1\n"
        );
    }

    // It comes back, with a new commit.
    fleet.write("hosts/h1/files/etc/motd", "v2\n");
    let c2 = fleet.commit("v2", None);
    let _daemon = GitDaemon::start_on(tmp.path(), port);
    let r = host.converge();
    assert_eq!(
        (r.outcome.as_str(), r.applied_commit.as_str()),
        ("changed", c2.as_str())
    );
    assert!(!r.message.contains("could not fetch"), "{}", r.message);
    assert_eq!(
        std::fs::read_to_string(host.root.join("etc/motd")).unwrap(),
        "v2\n"
    );
}

#[test]
fn state_dir_deleted_next_pass_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    fleet.write("hosts/h1/files/etc/motd", "v1\n");
    fleet.write("hosts/h1/files/etc/issue", "plumb\n");
    let c1 = fleet.commit("v1", None);
    let host = Host::new(tmp.path(), &fleet.url(), "");
    std::fs::create_dir_all(host.root.join("etc")).unwrap();
    std::fs::write(host.root.join("etc/issue"), "original\n").unwrap();
    host.converge();
    let converged = snapshot(&host.root);

    std::fs::remove_dir_all(&host.state).unwrap();
    let r = host.converge();
    // Nothing is rewritten or duplicated: the files already match, plumb adopts them again, and
    // the applied commit comes back from the status branch.
    assert_eq!(r.outcome.as_str(), "converged", "{}", r.message);
    assert_eq!(
        (r.applied_commit.as_str(), r.last_good_commit.as_str()),
        (c1.as_str(), c1.as_str())
    );
    assert_eq!(snapshot(&host.root), converged);
    let inode = std::fs::metadata(host.root.join("etc/motd")).unwrap().ino();

    // Later commits apply and prune as usual. The backup of /etc/issue went with the state
    // directory: when Git drops the file, plumb deletes it instead of restoring "original".
    fleet.write("hosts/h1/files/etc/motd", "v2\n");
    fleet.remove("hosts/h1/files/etc/issue");
    fleet.commit("v2", None);
    let r = host.converge();
    assert_eq!(r.outcome.as_str(), "changed", "{}", r.message);
    assert_eq!(
        std::fs::read_to_string(host.root.join("etc/motd")).unwrap(),
        "v2\n"
    );
    assert_ne!(
        std::fs::metadata(host.root.join("etc/motd")).unwrap().ino(),
        inode
    );
    assert!(!host.root.join("etc/issue").exists());
}
