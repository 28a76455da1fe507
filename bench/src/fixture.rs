//! The work every tool is given: a fleet repository with N small files for host `bench` (plus the
//! ansible playbook that copies them), thousands of other branches, and `git daemon` serving it.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HOST: &str = "bench";
/// Files go in directories of this many.
const PER_DIR: usize = 100;

/// Runs git with a fixed identity and no host or user config; stdout on success.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git_cmd(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.org")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.org");
    c
}

/// Feeds `input` to `git <args>` on stdin.
pub fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Result<()> {
    let mut child = git_cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running git {args:?}"))?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The relative path (under `/`) of file `i`: etc/bench/dNN/fileNNNN.conf.
pub fn file_path(i: usize) -> String {
    format!("etc/bench/d{:02}/file{i:04}.conf", i / PER_DIR)
}

pub fn file_content(i: usize) -> String {
    format!(
        "# managed by the benchmark, file {i}\nname = \"file{i}\"\nvalue = {}\n",
        i * 7
    )
}

/// The directories the first `n` files live in (relative, parents first).
pub fn dirs(n: usize) -> Vec<String> {
    let mut v = vec!["etc".to_string(), "etc/bench".to_string()];
    v.extend((0..n.div_ceil(PER_DIR)).map(|d| format!("etc/bench/d{d:02}")));
    v
}

/// Creates the bare fleet repository `fleet.git` under `base` (what the server serves): `files`
/// files for host `bench`, an ansible playbook for the first `ansible_files` of them, and
/// `other_branches` other branches (what a big fleet repo, or one that holds status branches too,
/// looks like to a protocol-v0 client).
pub fn create_fleet(
    base: &Path,
    files: usize,
    ansible_files: usize,
    other_branches: usize,
) -> Result<()> {
    let work = base.join("work");
    git(base, &["init", "-q", "--bare", "-b", "main", "fleet.git"])?;
    git(base, &["init", "-q", "-b", "main", "work"])?;
    for i in 0..files {
        let p = work.join(format!("hosts/{HOST}/files/{}", file_path(i)));
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(&p, file_content(i)).with_context(|| format!("writing {}", p.display()))?;
    }
    std::fs::create_dir_all(work.join("ansible"))?;
    std::fs::write(
        work.join("ansible/bench.yml"),
        playbook(ansible_files.min(files)),
    )?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "bench fleet"])?;
    git(&work, &["push", "-q", "../fleet.git", "HEAD:main"])?;
    let bare = base.join("fleet.git");
    if other_branches > 0 {
        let head = git(&bare, &["rev-parse", "main"])?;
        let mut input = String::new();
        for i in 0..other_branches {
            input.push_str(&format!(
                "create refs/heads/feature/team-{:03}/branch-{i:05} {head}\n",
                i % 100
            ));
        }
        git_stdin(&bare, &["update-ref", "--stdin"], input.as_bytes())?;
        git(&bare, &["pack-refs", "--all"])?;
    }
    Ok(())
}

/// The template of file `i`: renders to `file_content(i)` with the vars of `TEMPLATED_VARS`.
pub fn file_template(i: usize) -> String {
    format!(
        "# managed by the benchmark, file {i}\nname = \"{{{{ vars.prefix }}}}{i}\"\nvalue = {{{{ {i} * vars.step }}}}\n"
    )
}

pub const TEMPLATED_VARS: &str = "[vars]\nprefix = \"file\"\nstep = 7\n";

/// `fleet-tmpl.git` under `base`: the same `files` files for host `bench`, each a template
/// (`NAME.tmpl`) rendering to the same content.
pub fn create_templated_fleet(base: &Path, files: usize) -> Result<()> {
    let work = base.join("work-tmpl");
    git(
        base,
        &["init", "-q", "--bare", "-b", "main", "fleet-tmpl.git"],
    )?;
    git(base, &["init", "-q", "-b", "main", "work-tmpl"])?;
    for i in 0..files {
        let p = work.join(format!("hosts/{HOST}/files/{}.tmpl", file_path(i)));
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(&p, file_template(i)).with_context(|| format!("writing {}", p.display()))?;
    }
    std::fs::write(work.join(format!("hosts/{HOST}/host.toml")), TEMPLATED_VARS)?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "bench fleet, templated"])?;
    git(&work, &["push", "-q", "../fleet-tmpl.git", "HEAD:main"])?;
    Ok(())
}

/// The ansible playbook: the same files, with the copy module, under `{{ root }}`.
fn playbook(n: usize) -> String {
    let mut y = String::from(
        "# Generated by plumb-bench: the same files plumb manages, converged with the copy module.\n\
         - hosts: localhost\n  gather_facts: false\n  tasks:\n\
         \x20   - name: directories\n      ansible.builtin.file:\n        path: \"{{ root }}/{{ item }}\"\n        state: directory\n        mode: \"0755\"\n      loop:\n",
    );
    for d in dirs(n) {
        y.push_str(&format!("        - {d}\n"));
    }
    y.push_str(
        "    - name: files\n      ansible.builtin.copy:\n        src: \"{{ playbook_dir }}/../hosts/bench/files/{{ item }}\"\n        dest: \"{{ root }}/{{ item }}\"\n        mode: \"0644\"\n        owner: root\n        group: root\n      loop:\n",
    );
    for i in 0..n {
        y.push_str(&format!("        - {}\n", file_path(i)));
    }
    y
}

/// The puppet manifest: the same directories and files under `root`, sourced from `files_dir`
/// (a checkout's `hosts/<host>/files`).
pub fn manifest(n: usize, root: &Path, files_dir: &Path) -> String {
    let mut m = String::from("# Generated by plumb-bench: the same files plumb manages.\n");
    for d in dirs(n) {
        m.push_str(&format!(
            "file {{ '{}/{d}': ensure => directory, mode => '0755', owner => 'root', group => 'root' }}\n",
            root.display()
        ));
    }
    for i in 0..n {
        let p = file_path(i);
        m.push_str(&format!(
            "file {{ '{}/{p}': ensure => file, source => '{}/{p}', mode => '0644', owner => 'root', group => 'root' }}\n",
            root.display(),
            files_dir.display()
        ));
    }
    m
}

/// Bare repo `name` under `base` with `n` status branches `status/host-NNNNN`, each its own
/// commit of a status.toml (made with fast-import, so 10,000 take a second).
pub fn status_repo(base: &Path, name: &str, n: usize) -> Result<PathBuf> {
    git(base, &["init", "-q", "--bare", "-b", "main", name])?;
    let repo = base.join(name);
    let mut s = String::new();
    for i in 0..n {
        let body = format!("host = \"host-{i:05}\"\noutcome = \"converged\"\nchecked_at = \"2026-11-26T09:00:00Z\"\n");
        s.push_str(&format!(
            "commit refs/heads/status/host-{i:05}\ncommitter plumb <plumb@host-{i:05}> 1764147600 +0000\ndata 6\nstatus\nM 100644 inline status.toml\ndata {}\n{body}\n",
            body.len()
        ));
    }
    git_stdin(&repo, &["fast-import", "--quiet"], s.as_bytes())?;
    if n > 0 {
        git(&repo, &["pack-refs", "--all"])?;
    }
    Ok(repo)
}

/// `git daemon` on 127.0.0.1 at a free port, serving `base`, receive-pack enabled. Killed (by its
/// own pid) on drop.
pub struct GitDaemon {
    child: Child,
    pub addr: SocketAddr,
}

impl GitDaemon {
    pub fn start(base: &Path) -> Result<GitDaemon> {
        let exec_path = git(Path::new("/"), &["--exec-path"])?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // git-daemon itself, not the `git daemon` wrapper, so that our kill reaches it.
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting git daemon")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut d = GitDaemon { child, addr };
        crate::measure::wait_until("git daemon to listen", Duration::from_secs(20), || {
            TcpStream::connect(addr).is_ok()
        })?;
        if let Some(st) = d.child.try_wait()? {
            bail!("git daemon exited: {st}");
        }
        Ok(d)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
