//! A real OCI registry (Debian's `docker-registry`) on the test bridge, for container updates:
//! storage in a temp dir, no auth, plain HTTP (nodes are told it is insecure). Stopped (our own
//! PID only) on Drop.

use crate::network::{NetInner, Network};
use crate::wait::wait_until;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const PROGRAM: &str = "/usr/bin/docker-registry";

pub struct Registry {
    dir: TempDir,
    gateway: Ipv4Addr,
    port: u16,
    child: Child,
    _net: Arc<NetInner>,
}

impl Registry {
    /// Starts the registry on the bridge's gateway address and a free port.
    pub fn start(net: &Network) -> Result<Registry> {
        if !std::path::Path::new(PROGRAM).exists() {
            bail!("{PROGRAM} is missing: install Debian's docker-registry package (scripts/test.sh does)");
        }
        let dir = tempfile::Builder::new()
            .prefix("plumb-systest-registry-")
            .tempdir()
            .context("creating the registry's dir")?;
        let gateway = net.gateway();
        let mut last = None;
        for _ in 0..5 {
            let port = free_port(gateway)?;
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {gateway}:{port}\n",
                    dir.path().join("data").display()
                ),
            )?;
            let mut child = spawn(&config, &dir.path().join("registry.log"))?;
            match wait_listening(&mut child, gateway, port) {
                Ok(()) => {
                    return Ok(Registry {
                        dir,
                        gateway,
                        port,
                        child,
                        _net: net.inner.clone(),
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some(e);
                }
            }
        }
        Err(last
            .expect("tried at least once")
            .context("starting docker-registry"))
    }

    /// `<gateway>:<port>`, the host part of image names nodes push and pull.
    pub fn host(&self) -> String {
        format!("{}:{}", self.gateway, self.port)
    }

    /// The digest the registry serves for `repo:tag` (its `Docker-Content-Digest`), read with
    /// curl from the host: what a node should report, found without asking podman.
    pub fn digest(&self, repo: &str, tag: &str) -> Result<String> {
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.host());
        let out = crate::cmd::run(
            Command::new("curl")
                .args(["-sfI", "--max-time", "10"])
                .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
                .args([
                    "-H",
                    "Accept: application/vnd.docker.distribution.manifest.v2+json",
                ])
                .arg(&url),
        )?;
        if !out.success() {
            bail!("curl -I {url} failed: {}", out.stderr);
        }
        out.stdout
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .with_context(|| format!("no Docker-Content-Digest from {url}"))
    }

    /// The registry's log (warnings and errors), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn free_port(gateway: Ipv4Addr) -> Result<u16> {
    let l = TcpListener::bind((gateway, 0)).context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Result<Child> {
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut c = Command::new(PROGRAM);
    c.arg("serve")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe. The registry dies with the test that started it.
    #[allow(unsafe_code)]
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn().context("spawning docker-registry")
}

fn wait_listening(child: &mut Child, gateway: Ipv4Addr, port: u16) -> Result<()> {
    wait_until(
        &format!("docker-registry on {gateway}:{port}"),
        Duration::from_secs(10),
        || {
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited: {status}");
            }
            let addr = SocketAddr::from((gateway, port));
            Ok(
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
                    .then_some(()),
            )
        },
    )
}
