//! What the unit and container system tests share: one node running plumb as a unit, fed by a
//! fleet repo on the host's git server.
#![allow(dead_code)] // each test binary uses a different part

use anyhow::{bail, Context, Result};
use plumb_systest::{FleetRepo, GitServer, Network, Node, NodeImage};
use std::time::Duration;

pub struct World {
    pub repo: FleetRepo,
    pub node: Node,
    _git: GitServer,
    _net: Network,
}

impl World {
    /// A booted node named `host` with plumb installed and pointed at an empty fleet repo.
    pub fn new(host: &str) -> Result<World> {
        let image = NodeImage::ensure()?;
        let net = Network::new()?;
        let git = GitServer::start(&net)?;
        let repo = git.create_repo("fleet.git")?;
        let node = Node::boot(&image, &net, host)?;
        node.install_plumb()?;
        node.write_file(
            "/etc/plumb/agent.toml",
            format!(
                "repo = \"{}\"\nhost = \"{host}\"\ninterval = \"1h\"\n",
                git.url("fleet.git")
            ),
        )?;
        // The host's directory stays in Git when a test removes all its units.
        repo.write(
            &format!("hosts/{host}/files/etc/plumb-test.conf"),
            "managed by plumb\n",
        )?;
        Ok(World {
            repo,
            node,
            _git: git,
            _net: net,
        })
    }

    /// Writes `hosts/<host>/<rel>` in the fleet repo's work tree (commit with `commit`).
    pub fn put(&self, rel: &str, contents: &str) -> Result<()> {
        self.repo
            .write(&format!("hosts/{}/{rel}", self.node.name()), contents)?;
        Ok(())
    }

    pub fn del(&self, rel: &str) -> Result<()> {
        self.repo
            .remove(&format!("hosts/{}/{rel}", self.node.name()))?;
        Ok(())
    }

    pub fn commit(&self, msg: &str) -> Result<String> {
        self.repo.commit(msg)
    }

    /// `plumb apply` inside the node, run as a transient unit in the sandbox of the shipped
    /// plumb.service, as the agent runs; its output. `ok`: whether exit 0 is expected.
    pub fn apply(&self, ok: bool) -> Result<String> {
        let (success, text) = self.run_apply()?;
        eprintln!("--- plumb apply (success: {success})\n{text}");
        if success != ok {
            bail!("plumb apply: success {success} (expected success: {ok})\n{text}");
        }
        Ok(text)
    }

    /// `plumb apply` in plumb.service's sandbox: whether it exited 0, and its output.
    fn run_apply(&self) -> Result<(bool, String)> {
        let mut argv = vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect"];
        let sandbox = sandbox_properties()?;
        for p in &sandbox {
            argv.extend(["-p", p.as_str()]);
        }
        argv.extend(["/usr/local/bin/plumb", "apply"]);
        let out = self.node.exec(&argv)?;
        Ok((out.success(), format!("{}{}", out.stdout, out.stderr)))
    }

    /// `plumb apply` like `apply`, whatever its exit code; its output.
    pub fn apply_quiet(&self) -> Result<String> {
        Ok(self.run_apply()?.1)
    }

    /// `plumb run` as the transient service plumb-test.service, in plumb.service's sandbox.
    pub fn start_daemon(&self) -> Result<()> {
        let sandbox = sandbox_properties()?;
        let mut argv = vec!["systemd-run", "--unit=plumb-test", "-p", "Type=notify"];
        for p in &sandbox {
            argv.extend(["-p", p.as_str()]);
        }
        argv.extend(["/usr/local/bin/plumb", "run"]);
        self.node.exec_ok(&argv)?;
        Ok(())
    }

    /// `plumb status` (the last report, TOML).
    pub fn status(&self) -> Result<String> {
        self.node.exec_ok(&["/usr/local/bin/plumb", "status"])
    }

    /// The report's `state` and `detail` for one resource.
    pub fn resource(&self, kind: &str, name: &str) -> Result<(String, String)> {
        let text = self.status()?;
        let v: toml::Value = toml::from_str(&text).context("parsing plumb status")?;
        let empty = vec![];
        let found = v
            .get("resources")
            .and_then(|r| r.as_array())
            .unwrap_or(&empty)
            .iter()
            .find(|r| {
                r.get("kind").and_then(|k| k.as_str()) == Some(kind)
                    && r.get("name").and_then(|n| n.as_str()) == Some(name)
            });
        let Some(r) = found else {
            bail!("no {kind} {name} in the report:\n{text}");
        };
        let field = |f: &str| {
            r.get(f)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok((field("state"), field("detail")))
    }

    /// The report's top-level string field (`outcome`, `message`, ...).
    pub fn report_field(&self, field: &str) -> Result<String> {
        let v: toml::Value = toml::from_str(&self.status()?)?;
        Ok(v.get(field)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string())
    }

    /// `systemctl <verb> <unit>`'s answer (is-active, is-enabled), whatever the exit code.
    pub fn systemctl(&self, verb: &str, unit: &str) -> Result<String> {
        Ok(self
            .node
            .exec(&["systemctl", verb, unit])?
            .stdout
            .trim()
            .to_string())
    }

    /// One property of a unit (`systemctl show -p P --value`).
    pub fn prop(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .node
            .exec_ok(&["systemctl", "show", "-p", prop, "--value", unit])?
            .trim()
            .to_string())
    }

    /// Waits until `systemctl is-active unit` says `want`.
    pub fn wait_active(&self, unit: &str, want: &str) -> Result<()> {
        self.node.wait_until(
            &format!("{unit} to be {want}"),
            Duration::from_secs(30),
            || Ok((self.systemctl("is-active", unit)? == want).then_some(())),
        )
    }
}

/// The sandbox of the shipped plumb.service: its [Service] settings but how it starts and
/// restarts, as `systemd-run -p` properties.
pub fn sandbox_properties() -> Result<Vec<String>> {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/plumb.service");
    let text =
        std::fs::read_to_string(&unit).with_context(|| format!("reading {}", unit.display()))?;
    let mut in_service = false;
    let mut props = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let how_it_runs = matches!(
            key,
            "Type"
                | "ExecCondition"
                | "ExecStart"
                | "WatchdogSec"
                | "Restart"
                | "RestartSec"
                | "TimeoutStopSec"
        );
        if in_service && !line.starts_with('#') && !how_it_runs {
            props.push(line.to_string());
        }
    }
    Ok(props)
}

impl World {
    /// Debian's own packages fetched when the node image was built (nginx and what it needs, see
    /// tests/node-image.sh), served to the node as a local apt repository.
    pub fn add_debian_repo(&self) -> Result<()> {
        self.node.write_file(
            "/etc/apt/sources.list.d/debian-debs.list",
            "deb [trusted=yes] file:/srv/debian-debs ./\n",
        )?;
        self.node.write_file(
            "/etc/apt/apt.conf.d/99plumb-test",
            "Acquire::Languages \"none\";\n",
        )?;
        self.node.exec_ok(&["apt-get", "update", "-q"])?;
        Ok(())
    }

    /// `busybox wget` of a URL inside the node: the body, or None when nothing answered.
    pub fn http_get(&self, url: &str) -> Result<Option<String>> {
        let out = self.node.exec(&["busybox", "wget", "-q", "-O", "-", url])?;
        Ok(out.success().then_some(out.stdout))
    }

    /// Waits until `url` serves exactly `want`. nginx's reload returns before its new workers
    /// answer (the old ones finish their requests first), so a reload is seen with a deadline.
    pub fn wait_served(&self, url: &str, want: &str) -> Result<()> {
        self.node.wait_until(
            &format!("{url} to serve {want:?}"),
            Duration::from_secs(30),
            || Ok((self.http_get(url)?.as_deref() == Some(want)).then_some(())),
        )
    }

    /// Whether dpkg has `pkg` installed ("install ok installed").
    pub fn installed(&self, pkg: &str) -> Result<bool> {
        let out = self
            .node
            .exec(&["dpkg-query", "-W", "-f", "${Status}", pkg])?;
        Ok(out.success() && out.stdout.trim() == "install ok installed")
    }

    /// How often systemd started `unit` since boot (its journal's "Started" lines).
    pub fn starts(&self, unit: &str) -> Result<usize> {
        let out =
            self.node
                .exec_ok(&["journalctl", "-b", "-u", unit, "-o", "cat", "--no-pager"])?;
        Ok(out.lines().filter(|l| l.starts_with("Started ")).count())
    }
}

impl World {
    /// The test bridge, for servers a test adds (a registry).
    pub fn net(&self) -> &Network {
        &self._net
    }
}
