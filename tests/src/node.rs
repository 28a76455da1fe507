//! A Debian node: a clone of the golden image booted with systemd-nspawn on a test bridge.

use crate::cmd::{self, CmdOutput};
use crate::image::NodeImage;
use crate::network::{NetInner, Network};
use crate::wait::wait_until;
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A booted node. Drop powers it off (SIGTERM to our nspawn, SIGKILL after 30 s), removes its
/// cgroups and deletes its files; that also runs when a test panics.
///
/// Drop a node on the thread that booted it: nspawn gets SIGTERM when that thread exits
/// (PR_SET_PDEATHSIG), so a killed test run does not leave nodes behind.
pub struct Node {
    name: String,
    /// nspawn's machine name (host-side names: veth, cgroups); the same after a reboot.
    machine: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    nspawn: Option<Child>,
    leader: i32,
    cgroups: Vec<PathBuf>,
    started: Instant,
    _net: Arc<NetInner>,
}

impl Node {
    /// Clones `image`, attaches the clone to `net` with the next free address and boots it,
    /// returning once `systemctl is-system-running` says running or degraded. `name` becomes
    /// the node's hostname (so the agent's default host name).
    pub fn boot(image: &NodeImage, net: &Network, name: &str) -> Result<Node> {
        let mut node = Self::start(image, net, name)?;
        node.wait_ready()?;
        Ok(node)
    }

    /// Boots several nodes at once (faster than one after the other); same as `boot` otherwise.
    /// No threads: a node must stay on the thread that started it (see the type's docs).
    pub fn boot_many(image: &NodeImage, net: &Network, names: &[&str]) -> Result<Vec<Node>> {
        let mut nodes = names
            .iter()
            .map(|n| Self::start(image, net, n))
            .collect::<Result<Vec<_>>>()?;
        for n in &mut nodes {
            n.wait_ready()?;
        }
        Ok(nodes)
    }

    fn start(image: &NodeImage, net: &Network, name: &str) -> Result<Node> {
        let inner = net.inner.clone();
        // Host-side names (veth vb-<machine>, cgroups) must not collide across test binaries.
        let machine = format!("p{}-{name}", inner.index());
        let mut node = Node {
            name: name.to_owned(),
            machine: machine.clone(),
            addr: inner.alloc_addr()?,
            dir: inner.workdir().join(name),
            nspawn: None,
            leader: 0,
            cgroups: Vec::new(),
            started: Instant::now(),
            _net: inner,
        };
        // From here on, Drop undoes whatever part of the boot happened.
        node.prepare_root(image)?;
        node.start_nspawn(&machine)?;
        Ok(node)
    }

    fn wait_ready(&mut self) -> Result<()> {
        self.leader = self.find_leader()?;
        self.wait_booted()?;
        eprintln!(
            "plumb-systest: node {} ({}) up in {:.1?}",
            self.name,
            self.addr,
            self.started.elapsed()
        );
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the node's current boot (its /proc/sys/kernel/random/boot_id).
    pub fn boot_id(&self) -> Result<String> {
        Ok(self
            .read_file("/proc/sys/kernel/random/boot_id")?
            .trim()
            .to_string())
    }

    /// Waits until the node rebooted itself and is up again: systemd-nspawn exits with 133 when
    /// the container reboots; the node is then booted again on the same root (same name,
    /// address and machine-id), its new init found, and its boot id checked to differ from
    /// `old_boot_id`. Any other exit of nspawn is an error. Commands run in the new boot after.
    pub fn wait_rebooted(&mut self, old_boot_id: &str, timeout: Duration) -> Result<()> {
        let name = self.name.clone();
        let mut child = self
            .nspawn
            .take()
            .ok_or_else(|| anyhow!("{name}: systemd-nspawn is not running"))?;
        let waited = wait_until(
            &format!("node {name} to reboot (systemd-nspawn exiting with 133)"),
            timeout,
            || Ok(child.try_wait()?),
        );
        let status = match waited {
            Ok(s) => s,
            Err(e) => {
                self.nspawn = Some(child);
                let journal = self.journal(None, 40);
                return Err(e.context(format!("journal tail of {name}:\n{journal}")));
            }
        };
        if status.code() != Some(133) {
            return Err(self.with_log(anyhow!(
                "systemd-nspawn of {name} exited with {status}, not 133 (a reboot)"
            )));
        }
        eprintln!("plumb-systest: node {name} rebooted itself; booting it again");
        self.started = Instant::now();
        for cg in std::mem::take(&mut self.cgroups) {
            remove_cgroup(&cg)?;
        }
        let machine = self.machine.clone();
        self.start_nspawn(&machine)?;
        self.wait_ready()?;
        let new = self.boot_id()?;
        if new == old_boot_id {
            bail!("{name}: booted again but its boot id is still {old_boot_id}");
        }
        Ok(())
    }

    /// The node's address on the test bridge.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// PID (in the host's namespace) of the node's systemd.
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// D-Bus address of the node's system bus, usable from the host
    /// (`busctl --address=...`, `zbus::connection::Builder::address`).
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.leader
        )
    }

    /// Runs `argv` inside the node (all namespaces, as root, clean environment).
    /// A non-zero exit is not an error; see `exec_ok`.
    pub fn exec(&self, argv: &[&str]) -> Result<CmdOutput> {
        cmd::run(&mut self.nsenter(argv))
    }

    /// Runs `argv` inside the node; its stdout, or an error if it exits non-zero.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        self.exec(argv)?
            .check(&format!("{}: {}", self.name, argv.join(" ")))
    }

    /// Runs `argv` inside the node with `input` on its stdin.
    pub fn exec_stdin(&self, argv: &[&str], input: &[u8]) -> Result<CmdOutput> {
        cmd::run_with_stdin(&mut self.nsenter(argv), input)
    }

    /// Runs a shell script inside the node (`/bin/sh -c`).
    pub fn sh(&self, script: &str) -> Result<CmdOutput> {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Runs a shell script inside the node; its stdout, or an error if it exits non-zero.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        self.exec_ok(&["/bin/sh", "-c", script])
    }

    /// Writes a file (mode 0644, parents created) inside the node, atomically.
    pub fn write_file(&self, path: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        self.write_file_mode(path, contents, 0o644)
    }

    /// Writes a file with `mode` inside the node, atomically. It is written from within the
    /// node's namespaces, not through /proc/PID/root, so the node's own mounts (the tmpfs on
    /// /tmp) and absolute symlinks resolve as the node sees them.
    pub fn write_file_mode(&self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        if !path.starts_with('/') {
            bail!(
                "{}: write_file needs an absolute path, not {path}",
                self.name
            );
        }
        let script = r#"set -e; mkdir -p "$(dirname "$1")"; t="$1.plumb-systest.$$"
            cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1""#;
        let mode = format!("{mode:o}");
        self.exec_stdin(
            &["/bin/sh", "-c", script, "sh", path, &mode],
            contents.as_ref(),
        )?
        .check(&format!("{}: writing {path}", self.name))?;
        Ok(())
    }

    /// A file's contents inside the node.
    pub fn read_file(&self, path: &str) -> Result<String> {
        self.exec_ok(&["cat", "--", path])
    }

    /// Polls `check` until it returns Some; on timeout the error includes the node's journal tail.
    pub fn wait_until<T>(
        &self,
        desc: &str,
        timeout: Duration,
        check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        wait_until(desc, timeout, check).map_err(|e| {
            let journal = self.journal(None, 40);
            e.context(format!("on node {}; journal tail:\n{journal}", self.name))
        })
    }

    /// The last `lines` journal lines of the node, or of one unit; never fails (for diagnostics).
    pub fn journal(&self, unit: Option<&str>, lines: u32) -> String {
        let n = lines.to_string();
        let mut argv = vec!["journalctl", "--no-pager", "-n", &n];
        if let Some(u) = unit {
            argv.extend(["-u", u]);
        }
        match self.exec(&argv) {
            Ok(o) => o.stdout,
            Err(e) => format!("(journalctl failed: {e:#})"),
        }
    }

    /// Copies the host-built agent (see `plumb_bin`) to /usr/local/bin/plumb in the node.
    pub fn install_plumb(&self) -> Result<()> {
        let bin = plumb_bin()?;
        let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        self.write_file_mode("/usr/local/bin/plumb", bytes, 0o755)
    }

    fn nsenter(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.leader.to_string())
            .arg("-a")
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        c
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn prepare_root(&self, image: &NodeImage) -> Result<()> {
        if self.dir.exists() {
            bail!(
                "node dir {} already exists: two nodes named {}?",
                self.dir.display(),
                self.name
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let root = self.root();
        cmd::run_ok(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(image.root())
                .arg(&root),
        )?;
        let net = &self._net;
        let files = [
            ("etc/machine-id", format!("{}\n", new_machine_id()?)),
            ("etc/hostname", format!("{}\n", self.name)),
            (
                "etc/systemd/network/10-host0.network",
                format!(
                    "[Match]\nName=host0\n\n[Network]\nAddress={}/24\nGateway={}\n\
                     LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
                    self.addr,
                    net.gateway()
                ),
            ),
        ];
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("has a parent"))?;
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    fn start_nspawn(&mut self, machine: &str) -> Result<()> {
        self.cgroups = make_cgroups(&format!("plumb-systest-{machine}"))?;
        let procs: Vec<CString> = self
            .cgroups
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()))
            .collect::<Result<_, _>>()?;
        let log = self.dir.join("nspawn.log");
        // Appended to: a node that reboots keeps the log of its earlier boots.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut c = Command::new("systemd-nspawn");
        c.args(["-b", "-q", "-D"])
            .arg(self.root())
            .args(["-M", machine, "--hostname", &self.name])
            .args(["--register=no", "--keep-unit", "--console=passive"])
            .arg(format!("--network-bridge={}", self._net.bridge()))
            .arg("--system-call-filter=bpf keyctl add_key request_key")
            // Several nodes collide in the host's cgroups unless each runs in its own.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: between fork and exec we only make async-signal-safe syscalls on memory
        // prepared before the fork.
        #[allow(unsafe_code)]
        unsafe {
            c.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // If the test process dies, nspawn gets SIGTERM: a clean poweroff.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self.nspawn = Some(c.spawn().context("spawning systemd-nspawn")?);
        Ok(())
    }

    /// The container's PID 1: nspawn's child in another PID namespace.
    fn find_leader(&mut self) -> Result<i32> {
        let nspawn = self.nspawn_pid();
        let own_ns = std::fs::read_link("/proc/self/ns/pid")?;
        wait_until("the node's init process", BOOT_TIMEOUT, || {
            self.check_nspawn_alive()?;
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
                if ns.is_ok_and(|ns| ns != own_ns) {
                    return Ok(Some(pid.parse()?));
                }
            }
            Ok(None)
        })
        .map_err(|e| self.with_log(e))
    }

    fn wait_booted(&mut self) -> Result<()> {
        let mut last = String::new();
        let r = wait_until("systemctl is-system-running", BOOT_TIMEOUT, || {
            self.check_nspawn_alive()?;
            let out = self.exec(&["systemctl", "is-system-running"])?;
            last = format!("{} {}", out.stdout.trim(), out.stderr.trim());
            Ok(matches!(out.stdout.trim(), "running" | "degraded").then_some(()))
        });
        r.map_err(|e| self.with_log(e.context(format!("last state: {last}"))))
    }

    fn nspawn_pid(&self) -> i32 {
        self.nspawn.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// An error once nspawn has exited (ends a `wait_until`).
    fn check_nspawn_alive(&mut self) -> Result<()> {
        if let Some(c) = self.nspawn.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.nspawn = None;
                bail!("systemd-nspawn exited: {status}");
            }
        }
        if self.nspawn.is_none() {
            bail!("systemd-nspawn is not running");
        }
        Ok(())
    }

    fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(self.dir.join("nspawn.log")).unwrap_or_default();
        e.context(format!(
            "booting node {}; nspawn log tail:\n{}",
            self.name,
            cmd::tail(&log, 3000)
        ))
    }

    fn poweroff(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        // Only ever our own child's PID: SIGTERM makes nspawn power the node off cleanly.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        eprintln!(
            "plumb-systest: node {} did not power off in time, killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.poweroff();
        for cg in &self.cgroups {
            if let Err(e) = remove_cgroup(cg) {
                eprintln!("plumb-systest: {e:#}");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("plumb-systest: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// The plumb binary to install in nodes: `$PLUMB_BIN`, else `plumb` in the cargo profile dir
/// this test binary was built into (`cargo build -p plumb` must have run first).
pub fn plumb_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLUMB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test binary>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("no profile dir above {}", exe.display()))?;
    let bin = profile.join("plumb");
    if !bin.exists() {
        bail!(
            "{} does not exist: run `cargo build -p plumb` first, or set PLUMB_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn new_machine_id() -> Result<String> {
    let mut b = [0u8; 16];
    use std::io::Read;
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// One cgroup per node in each hierarchy nspawn uses: the v2 one (`unified` on a hybrid host)
/// and, on a hybrid host, the v1 `systemd` one.
fn make_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let base = Path::new("/sys/fs/cgroup");
    let parents: Vec<PathBuf> = if base.join("cgroup.controllers").exists() {
        vec![base.to_path_buf()]
    } else {
        ["unified", "systemd"]
            .iter()
            .map(|h| base.join(h))
            .filter(|p| p.join("cgroup.procs").exists())
            .collect()
    };
    let mut dirs = Vec::new();
    for p in parents {
        let d = p.join(name);
        if d.exists() {
            remove_cgroup(&d)?; // from a node of a test that died
        }
        std::fs::create_dir(&d).with_context(|| format!("creating cgroup {}", d.display()))?;
        dirs.push(d);
    }
    Ok(dirs)
}

/// Removes a cgroup tree depth-first; retries while its last processes are exiting.
fn remove_cgroup(dir: &Path) -> Result<()> {
    wait_until(
        &format!("removal of cgroup {}", dir.display()),
        Duration::from_secs(10),
        || {
            // EBUSY while the node's last processes exit: retry until the deadline.
            Ok((!dir.exists() || rmdir_tree(dir).is_ok()).then_some(()))
        },
    )
}

fn rmdir_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("rmdir {}", dir.display()))
}
