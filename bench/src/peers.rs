//! The same files converged by the tools users would pick instead: `ansible-pull` (copy module,
//! pulling the same repository from the same server) and `puppet apply` (file resources sourced
//! from a checkout of the same repository).

use crate::fixture::{self, git};
use crate::measure::{self, Run, Stats};
use crate::plumb::check_files;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// First run (empty root) and no-op runs (converged root) of one tool.
#[derive(Default)]
pub struct PeerFigures {
    pub files: usize,
    pub first_wall_s: Stats,
    pub first_rss_mib: Stats,
    pub noop_wall_s: Stats,
    pub noop_rss_mib: Stats,
}

impl PeerFigures {
    pub(crate) fn add(&mut self, first: bool, r: &Run) {
        let (wall, rss) = if first {
            (&mut self.first_wall_s, &mut self.first_rss_mib)
        } else {
            (&mut self.noop_wall_s, &mut self.noop_rss_mib)
        };
        wall.push(r.wall.as_secs_f64());
        rss.push(r.max_rss_kib as f64 / 1024.0);
    }
}

/// `ansible-pull` of the same repository (through `url`), `runs` first runs and `runs` no-op runs.
pub fn ansible(
    ansible_pull: &Path,
    url: &str,
    work: &Path,
    files: usize,
    runs: usize,
) -> Result<PeerFigures> {
    let mut f = PeerFigures {
        files,
        ..Default::default()
    };
    let home = work.join("ansible-home");
    std::fs::create_dir_all(&home)?;
    let python = ansible_pull.with_file_name("python3");
    let command = |dir: &Path| -> Command {
        let mut c = Command::new(ansible_pull);
        c.args(["-U", url, "-C", "main", "-d"])
            .arg(dir.join("checkout"))
            .args(["-i", "localhost,", "-c", "local", "-e"])
            .arg(format!("root={}", dir.join("root").display()))
            .arg("-e")
            .arg(format!("ansible_python_interpreter={}", python.display()))
            .arg("ansible/bench.yml")
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        c
    };
    for i in 0..runs {
        let dir = work.join(format!("ansible-{i}"));
        std::fs::create_dir_all(dir.join("root"))?;
        eprintln!("  ansible-pull first run {}/{runs} ({files} files)", i + 1);
        let r = measure::run(&mut command(&dir))?.expect_code("ansible-pull (first run)", &[0])?;
        check_files(&dir.join("root"), files)?;
        f.add(true, &r);
        eprintln!("  ansible-pull no-op run {}/{runs}", i + 1);
        let r = measure::run(&mut command(&dir))?.expect_code("ansible-pull (no-op run)", &[0])?;
        if !r.stdout.contains("changed=0") {
            bail!("ansible-pull's second run changed something:\n{}", r.stdout);
        }
        f.add(false, &r);
    }
    Ok(f)
}

/// `puppet apply` of a manifest with the same directories and files, sourced from a clone of the
/// same repository; `runs` first runs and `runs` no-op runs. The clone is made once, outside the
/// measured time (puppet has no fetch of its own).
pub fn puppet(
    puppet: &Path,
    url: &str,
    work: &Path,
    files: usize,
    runs: usize,
) -> Result<PeerFigures> {
    let mut f = PeerFigures {
        files,
        ..Default::default()
    };
    let checkout = work.join("puppet-checkout");
    git(
        work,
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            url,
            &checkout.display().to_string(),
        ],
    )?;
    let pdir = work.join("puppet-dirs");
    let command = |manifest: &Path| -> Command {
        let mut c = Command::new(puppet);
        c.arg("apply").arg("--detailed-exitcodes");
        for (opt, sub) in [
            ("--confdir", "conf"),
            ("--vardir", "var"),
            ("--codedir", "code"),
            ("--logdir", "log"),
            ("--rundir", "run"),
        ] {
            c.arg(opt).arg(pdir.join(sub));
        }
        c.arg(manifest);
        c
    };
    for i in 0..runs {
        let root: PathBuf = work.join(format!("puppet-{i}"));
        std::fs::create_dir_all(&root)?;
        let manifest = work.join(format!("puppet-{i}.pp"));
        std::fs::write(
            &manifest,
            fixture::manifest(
                files,
                &root,
                &checkout.join(format!("hosts/{}/files", fixture::HOST)),
            ),
        )
        .context("writing the puppet manifest")?;
        eprintln!("  puppet apply first run {}/{runs}", i + 1);
        // --detailed-exitcodes: 2 = changes applied, 0 = nothing to do.
        let r =
            measure::run(&mut command(&manifest))?.expect_code("puppet apply (first run)", &[2])?;
        check_files(&root, files)?;
        f.add(true, &r);
        eprintln!("  puppet apply no-op run {}/{runs}", i + 1);
        let r =
            measure::run(&mut command(&manifest))?.expect_code("puppet apply (no-op run)", &[0])?;
        f.add(false, &r);
    }
    Ok(f)
}
