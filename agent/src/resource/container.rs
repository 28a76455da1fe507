//! Podman Quadlet containers: Quadlet files under /etc/containers/systemd, and the service the
//! generator makes of each (web.container -> web.service) started, stopped or restarted.

use crate::host::fs::{HostFs, Observed};
use crate::host::Fault;
use crate::reason::Reason;
use crate::resource::service::{FileOp, Live, RunAction, SystemdChange};
use crate::resource::unit::{file_op, observe_path};
use crate::spec::SpecError;
use crate::spec::{ContainerSpec, RunState};
use crate::state::ManagedUnit;
use crate::status::report::Kind;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const QUADLET_DIR: &str = "/etc/containers/systemd";
pub const QUADLET_GENERATOR: &str = "/usr/libexec/podman/quadlet";

pub fn quadlet_path(file_name: &str) -> String {
    format!("{QUADLET_DIR}/{file_name}")
}

/// The service Quadlet generates for a file name (see `ContainerSpec::service_name`).
pub fn service_of(file_name: &str) -> String {
    ContainerSpec {
        file_name: file_name.into(),
        content: vec![],
        state: RunState::Started,
    }
    .service_name()
}

#[derive(Debug, Clone)]
pub struct ContainerObs {
    pub file: Result<Observed, Fault>,
    /// The generated service, as systemd sees it. A container removed by hand (`podman rm -f`)
    /// ends its service's main process, so the service says it is gone; podman itself is not
    /// asked (it does not work inside plumb.service's sandbox).
    pub live: Result<Live, Fault>,
}

/// Reads the Quadlet files of desired and inventoried containers and asks systemd about their
/// services.
pub fn observe(
    fs: &HostFs,
    desired: &BTreeMap<String, ContainerSpec>,
    inventory: &BTreeMap<String, ManagedUnit>,
    live: &mut dyn FnMut(&str) -> Result<Live, Fault>,
) -> BTreeMap<String, ContainerObs> {
    let names: BTreeSet<&String> = desired.keys().chain(inventory.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let obs = ContainerObs {
                file: observe_path(fs, &quadlet_path(name)),
                live: live(&service_of(name)),
            };
            (name.clone(), obs)
        })
        .collect()
}

pub fn digest(spec: &ContainerSpec) -> String {
    let mut h = Sha256::new();
    h.update(spec.file_name.as_bytes());
    h.update(b"\0");
    h.update(&spec.content);
    h.update(format!("\0{:?}", spec.state).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Desired x observed x inventory -> one change per container that needs anything. Pure.
pub fn plan(
    desired: &BTreeMap<String, ContainerSpec>,
    obs: &BTreeMap<String, ContainerObs>,
    inventory: &BTreeMap<String, ManagedUnit>,
) -> Vec<SystemdChange> {
    let mut out = Vec::new();
    for (name, spec) in desired {
        let o = &obs[name];
        let digest = digest(spec);
        let git_unchanged =
            inventory.get(name).and_then(|m| m.digest.as_deref()) == Some(digest.as_str());
        let mut c = SystemdChange::new(Kind::Container, name, &spec.service_name());
        c.record = Some(ManagedUnit {
            digest: Some(digest),
            has_file: true,
            dropins: vec![],
            activation_pending: false,
        });
        match file_op(&quadlet_path(name), Some(&spec.content), &o.file) {
            Ok(Some(op)) => {
                c.files.push(op);
                c.why.push(if inventory.contains_key(name) {
                    "Quadlet file changed".into()
                } else {
                    "Quadlet file installed".into()
                });
            }
            Ok(None) => {}
            Err(e) => {
                c.blocked = Some(e.to_string());
                out.push(c);
                continue;
            }
        }
        // The last pass wrote the Quadlet file and was stopped before it activated it.
        c.resume = inventory.get(name).is_some_and(|m| m.activation_pending) && c.files.is_empty();
        if c.resume {
            c.why
                .push("the last pass was stopped before it activated the container".into());
        }
        let changed = !c.files.is_empty() || c.resume;
        let live = match &o.live {
            Ok(l) => l,
            Err(e) => {
                c.blocked = Some(format!("could not read its state from systemd: {e}"));
                out.push(c);
                continue;
            }
        };
        let running = live.running();
        match spec.state {
            RunState::Started if changed && running => c.run = Some(RunAction::Restart),
            RunState::Started if !running => {
                c.run = Some(RunAction::Start);
                if !changed {
                    c.why.push(format!("was {}", live.active_state));
                }
            }
            RunState::Stopped if running => {
                c.run = Some(RunAction::Stop);
                c.why.push(format!("was {}", live.active_state));
            }
            _ => {}
        }
        c.drift = git_unchanged && c.touches_host();
        if c.touches_host() || !git_unchanged {
            out.push(c);
        }
    }
    for (name, _) in inventory.iter().filter(|(n, _)| !desired.contains_key(*n)) {
        let mut c = SystemdChange::new(Kind::Container, name, &service_of(name));
        c.prune = true;
        if obs[name].live.as_ref().is_ok_and(|l| l.running()) {
            c.run = Some(RunAction::Stop);
        }
        c.files.push(FileOp::Remove {
            path: quadlet_path(name),
        });
        c.why.push("left Git: stopped, Quadlet file removed".into());
        out.push(c);
    }
    out
}

/// Runs Quadlet's generator in dry-run mode over every desired Quadlet file (they may refer to
/// each other) when one of them would change. The error names the file and quotes Quadlet.
pub fn validate(
    fs: &HostFs,
    desired: &BTreeMap<String, ContainerSpec>,
    staging: &Path,
) -> Result<(), SpecError> {
    let changes = desired.iter().any(|(name, spec)| {
        let p = quadlet_path(name);
        !matches!(
            file_op(&p, Some(&spec.content), &observe_path(fs, &p)),
            Ok(None)
        )
    });
    if !changes {
        return Ok(());
    }
    if !Path::new(QUADLET_GENERATOR).exists() {
        tracing::warn!("{QUADLET_GENERATOR} not found: Quadlet files are installed unchecked");
        return Ok(());
    }
    crate::state::reset_dir(staging).map_err(|e| invalid(format!("{e:#}")))?;
    let result = (|| {
        for (name, spec) in desired {
            let p = staging.join(name);
            std::fs::write(&p, &spec.content)
                .map_err(|e| format!("writing {}: {e}", p.display()))?;
        }
        let mut cmd = std::process::Command::new(QUADLET_GENERATOR);
        cmd.arg("-dryrun").env("QUADLET_UNIT_DIRS", staging);
        let out = crate::host::command::run(&mut cmd, std::time::Duration::from_secs(60))
            .map_err(|e| format!("{e:#}"))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let prefix = format!("{}/", staging.display());
        let problems: Vec<String> = text
            .lines()
            .filter(|l| !l.contains("Loading source unit file"))
            .map(|l| {
                let l = l.split_once("]: ").map(|(_, m)| m).unwrap_or(l);
                l.replace(&prefix, "").trim().to_string()
            })
            .filter(|l| !l.is_empty())
            .collect();
        Err(format!("invalid Quadlet file: {}", problems.join(" | ")))
    })();
    let _ = std::fs::remove_dir_all(staging);
    result.map_err(invalid)
}

fn invalid(message: String) -> SpecError {
    SpecError::new(Reason::InvalidUnit, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fs::Meta;

    const WEB: &str = "[Container]\nImage=localhost/busybox\nExec=httpd -f\n";

    fn spec(content: &str, state: RunState) -> ContainerSpec {
        ContainerSpec {
            file_name: "web.container".into(),
            content: content.as_bytes().to_vec(),
            state,
        }
    }

    fn obs(file: Option<&str>, active: &str) -> ContainerObs {
        ContainerObs {
            file: Ok(match file {
                Some(d) => Observed::File {
                    data: d.as_bytes().to_vec(),
                    meta: Meta {
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                },
                None => Observed::Missing,
            }),
            live: Ok(Live {
                load_state: "loaded".into(),
                active_state: active.into(),
                unit_file_state: "generated".into(),
                ..Default::default()
            }),
        }
    }

    fn managed(s: &ContainerSpec) -> ManagedUnit {
        ManagedUnit {
            digest: Some(digest(s)),
            has_file: true,
            dropins: vec![],
            activation_pending: false,
        }
    }

    #[test]
    fn plan_table() {
        use RunAction::*;
        let web = spec(WEB, RunState::Started);
        let old = spec("[Container]\nImage=localhost/busybox\n", RunState::Started);
        let stopped = spec(WEB, RunState::Stopped);
        // (files, run, drift)
        type Case = (
            ContainerSpec,
            ContainerObs,
            Option<ManagedUnit>,
            Option<(usize, Option<RunAction>, bool)>,
        );
        let cases: Vec<(&str, Case)> = vec![
            (
                "new",
                (
                    web.clone(),
                    obs(None, ""),
                    None,
                    Some((1, Some(Start), false)),
                ),
            ),
            (
                "in sync",
                (
                    web.clone(),
                    obs(Some(WEB), "active"),
                    Some(managed(&web)),
                    None,
                ),
            ),
            (
                "spec changed",
                (
                    web.clone(),
                    obs(Some("old"), "active"),
                    Some(managed(&old)),
                    Some((1, Some(Restart), false)),
                ),
            ),
            (
                "edited by hand",
                (
                    web.clone(),
                    obs(Some("x"), "active"),
                    Some(managed(&web)),
                    Some((1, Some(Restart), true)),
                ),
            ),
            (
                "removed by hand, service down",
                (
                    web.clone(),
                    obs(Some(WEB), "failed"),
                    Some(managed(&web)),
                    Some((0, Some(Start), true)),
                ),
            ),
            (
                "stopped in Git",
                (
                    stopped.clone(),
                    obs(Some(WEB), "active"),
                    Some(managed(&web)),
                    Some((0, Some(Stop), false)),
                ),
            ),
        ];
        for (name, (s, o, inv, want)) in cases {
            let desired: BTreeMap<_, _> = [(s.file_name.clone(), s.clone())].into();
            let inventory: BTreeMap<_, _> =
                inv.into_iter().map(|m| (s.file_name.clone(), m)).collect();
            let obs: BTreeMap<_, _> = [(s.file_name.clone(), o)].into();
            let got = plan(&desired, &obs, &inventory);
            let got = got
                .first()
                .filter(|c| c.touches_host())
                .map(|c| (c.files.len(), c.run, c.drift));
            assert_eq!(got, want, "case {name}");
        }
        // Left Git.
        let obsm: BTreeMap<_, _> = [("web.container".to_string(), obs(Some(WEB), "active"))].into();
        let inv: BTreeMap<_, _> = [("web.container".to_string(), managed(&web))].into();
        let p = plan(&BTreeMap::new(), &obsm, &inv);
        assert!(p[0].prune && p[0].run == Some(Stop) && p[0].files.len() == 1);
        assert_eq!(p[0].unit, "web.service");
    }

    #[test]
    fn names() {
        assert_eq!(service_of("web.container"), "web.service");
        assert_eq!(service_of("data.volume"), "data-volume.service");
    }
}
