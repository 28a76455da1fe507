//! Self-protection: a commit must not cut plumb off from its own host. Whatever would leave the
//! agent unable to run, fetch or verify the next commit (its config, state, binary, credentials,
//! service) is refused before anything is written (reason `self-protection`); agent.toml and
//! allowed_signers may be managed, but only with content that loads.

use super::{Content, Desired, RunState, SpecError};
use crate::config::Settings;
use crate::reason::Reason;
use std::path::{Path, PathBuf};

/// What plumb needs on the host, as host paths.
pub struct Guard {
    pub root: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub allowed_signers: Option<PathBuf>,
    /// The ssh key and token file: never written by Git.
    pub secrets: Vec<PathBuf>,
    /// The running binary.
    pub exe: Option<PathBuf>,
}

impl Guard {
    pub fn of(s: &Settings) -> Guard {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Guard {
            root: s.root.clone(),
            config: abs(&s.source_file),
            state_dir: s.state_dir.clone(),
            allowed_signers: s.allowed_signers.as_deref().map(abs),
            secrets: [&s.ssh_key, &s.token_file, &Some(s.identity.clone())]
                .into_iter()
                .flatten()
                .map(|p| abs(p))
                .collect(),
            exe: std::env::current_exe().ok(),
        }
    }
}

impl Guard {
    /// The paths of the packaged install (`.deb`/`.rpm` defaults and the documented agent.toml):
    /// what `plumb validate` checks a checkout against on a CI machine that is not the host.
    pub fn packaged() -> Guard {
        Guard {
            root: "/".into(),
            config: crate::config::DEFAULT_CONFIG.into(),
            state_dir: "/var/lib/plumb".into(),
            allowed_signers: Some("/etc/plumb/allowed_signers".into()),
            secrets: vec![
                "/etc/plumb/deploy_key".into(),
                "/etc/plumb/token".into(),
                crate::config::DEFAULT_IDENTITY.into(),
            ],
            exe: Some("/usr/bin/plumb".into()),
        }
    }
}

/// Where systemd looks for unit files (system.control, system.attached, system, ... below each):
/// a `plumb.service` (or a drop-in for it) anywhere below would replace, mask or reconfigure the
/// agent's own service. (/run is refused for every file anyway.)
const UNIT_ROOTS: &[&str] = &[
    "/etc/systemd/",
    "/usr/lib/systemd/",
    "/lib/systemd/",
    "/usr/local/lib/systemd/",
];
const SERVICE: &str = "plumb.service";

fn refuse(msg: String) -> SpecError {
    SpecError::new(
        Reason::SelfProtection,
        format!("{msg}: that would cut plumb off from this host; manage it outside the fleet repo"),
    )
}

/// `Alias=` and `Conflicts=` lines of a unit file naming plumb.service.
fn names_plumb(text: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        for k in ["Alias", "Conflicts"] {
            if key.trim() == k && value.split_whitespace().any(|v| v == SERVICE) {
                out.push(k);
            }
        }
    }
    out
}

pub fn check(d: &Desired, g: &Guard) -> Result<(), SpecError> {
    let on_host = |p: &str| g.root.join(p.trim_start_matches('/'));
    for (path, spec) in &d.files {
        let host = on_host(path);
        let at = &spec.origin;
        if host.starts_with(&g.state_dir) || g.state_dir.starts_with(&host) {
            return Err(refuse(format!(
                "{at}: {path} is plumb's state_dir ({})",
                g.state_dir.display()
            )));
        }
        if g.exe.as_deref() == Some(host.as_path()) {
            return Err(refuse(format!("{at}: {path} is plumb's own binary")));
        }
        if g.secrets.contains(&host) {
            return Err(refuse(format!(
                "{at}: {path} is plumb's credential (auth.ssh_key, auth.token_file or secrets.identity)"
            )));
        }
        if host == g.config {
            let Content::Regular(data) = &spec.content else {
                return Err(refuse(format!(
                    "{at}: {path} (plumb's config) as a symlink"
                )));
            };
            let text = std::str::from_utf8(data)
                .map_err(|_| refuse(format!("{at}: {path} is plumb's config and is not UTF-8")))?;
            if let Err(e) = Settings::parse(text, &g.config) {
                return Err(refuse(format!(
                    "{at}: would write an invalid plumb config {path}: {e:#}"
                )));
            }
        }
        if g.allowed_signers.as_deref() == Some(host.as_path()) {
            let Content::Regular(data) = &spec.content else {
                return Err(refuse(format!(
                    "{at}: {path} (trust.allowed_signers) as a symlink"
                )));
            };
            let ok = std::str::from_utf8(data)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    crate::source::verify::parse_signers(t).map_err(|e| format!("{e:#}"))
                });
            match ok {
                Ok(keys) if !keys.is_empty() => {}
                Ok(_) => {
                    return Err(refuse(format!(
                        "{at}: would write an allowed_signers {path} that lists no key"
                    )))
                }
                Err(e) => {
                    return Err(refuse(format!(
                        "{at}: would write an invalid allowed_signers {path}: {e}"
                    )))
                }
            }
        }
        {
            let service_file = UNIT_ROOTS.iter().any(|dir| path.starts_with(dir))
                && path
                    .split('/')
                    .any(|c| c == SERVICE || c == format!("{SERVICE}.d"));
            if service_file {
                return Err(refuse(format!("{at}: {path} replaces or masks {SERVICE}")));
            }
        }
    }
    // Under another root too: an image whose plumb.service is stopped or masked boots cut off.
    {
        if let Some(u) = d.units.get(SERVICE) {
            let what = if u.state == Some(RunState::Stopped) {
                "stops"
            } else if u.enabled == Some(false) {
                "disables"
            } else {
                "replaces or reconfigures"
            };
            return Err(refuse(format!(
                "[units.{SERVICE:?}] or units/{SERVICE} {what} {SERVICE}"
            )));
        }
        // A unit that aliases itself to plumb.service, or conflicts with it, replaces or stops it.
        for (name, u) in &d.units {
            let texts = u.file.iter().chain(u.dropins.values());
            if let Some(key) = texts.flat_map(|t| names_plumb(t)).next() {
                return Err(refuse(format!("units/{name}: {key}= names {SERVICE}")));
            }
        }
        // A Quadlet file generates a unit of its name: plumb.container would shadow plumb.service.
        if let Some(c) = d.containers.values().find(|c| c.service_name() == SERVICE) {
            return Err(refuse(format!(
                "containers/{} generates {SERVICE}",
                c.file_name
            )));
        }
        if d.packages.remove.iter().any(|p| p == "plumb") {
            return Err(refuse(
                "[packages] remove = [\"plumb\"] removes plumb".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tree::MemTree;

    fn guard() -> Guard {
        Guard {
            root: "/".into(),
            config: "/etc/plumb/agent.toml".into(),
            state_dir: "/var/lib/plumb".into(),
            allowed_signers: Some("/etc/plumb/allowed_signers".into()),
            secrets: vec!["/etc/plumb/token".into()],
            exe: Some("/usr/bin/plumb".into()),
        }
    }

    fn check_tree(t: MemTree) -> Result<(), SpecError> {
        let d = crate::spec::load(&t, "hosts/h1", &Default::default()).unwrap();
        check(&d, &guard())
    }

    #[test]
    fn what_would_cut_plumb_off_is_refused() {
        let refused = [
            MemTree::default().file("hosts/h1/files/etc/plumb/agent.toml", "repo = ["),
            MemTree::default().file("hosts/h1/files/etc/plumb/agent.toml", "host = \"h1\"\n"),
            MemTree::default().file("hosts/h1/files/var/lib/plumb/state.json", "{}"),
            MemTree::default().file("hosts/h1/files/usr/bin/plumb", "#!/bin/sh\n"),
            MemTree::default().file("hosts/h1/files/etc/plumb/token", "x"),
            MemTree::default().file("hosts/h1/files/etc/plumb/allowed_signers", "# none\n"),
            MemTree::default().link(
                "hosts/h1/files/etc/systemd/system/plumb.service",
                "/dev/null",
            ),
            MemTree::default().file(
                "hosts/h1/files/etc/systemd/system/plumb.service.d/x.conf",
                "[Service]\nExecStart=\n",
            ),
            MemTree::default().file(
                "hosts/h1/files/etc/systemd/system.control/plumb.service.d/50-x.conf",
                "[Service]\n",
            ),
            MemTree::default().file("hosts/h1/files/usr/lib/systemd/system/plumb.service", "x"),
            MemTree::default().file(
                "hosts/h1/host.toml",
                "[units.\"plumb.service\"]\nstate = \"stopped\"\n",
            ),
            MemTree::default().file(
                "hosts/h1/host.toml",
                "[units.\"plumb.service\"]\nenabled = false\n",
            ),
            MemTree::default().file("hosts/h1/units/plumb.service.d/x.conf", "[Service]\n"),
            MemTree::default().file("hosts/h1/host.toml", "[packages]\nremove = [\"plumb\"]\n"),
            MemTree::default().file("hosts/h1/containers/plumb.container", "[Container]\n"),
            MemTree::default().file(
                "hosts/h1/units/x.service",
                "[Service]\nExecStart=/bin/true\n[Install]\nAlias=plumb.service\n",
            ),
            MemTree::default().file(
                "hosts/h1/units/y.service",
                "[Unit]\nConflicts=a.service plumb.service\n[Service]\nExecStart=/bin/true\n",
            ),
        ];
        for t in refused {
            let what = format!("{:?}", t.entries.first().map(|e| &e.0));
            let e = check_tree(t).expect_err(&what);
            assert_eq!(e.reason, Reason::SelfProtection, "{what}: {}", e.message);
            assert!(e.message.contains("manage it outside"), "{}", e.message);
        }
        // A valid config, a signers file with a key, other units: fine.
        check_tree(MemTree::default().file(
            "hosts/h1/files/etc/plumb/agent.toml",
            "repo = \"https://git.example.org/fleet.git\"\nhost = \"h1\"\n",
        ))
        .unwrap();
        check_tree(MemTree::default().file("hosts/h1/files/etc/plumb/allowed_signers", "ops@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk1a4sWxZtNXi1u1mnbGk8kM6WbQJmqVb3XMcOh1Ylh\n")).unwrap();
        check_tree(MemTree::default().file(
            "hosts/h1/files/etc/systemd/system/nginx.service.d/x.conf",
            "[Service]\n",
        ))
        .unwrap();
    }
}
