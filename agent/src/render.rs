//! `plumb render`: one rendered template of a fleet-repo checkout, for an operator or CI, and the
//! facts `render` and `validate` use (`--facts FILE`, else this machine's).

use crate::spec::facts::Facts;
use crate::spec::template::SUFFIX;
use crate::spec::tree::DirTree;
use crate::spec::{Content, Desired};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Facts from `--facts FILE`, or read from this machine.
pub fn facts(file: Option<&Path>) -> Result<Facts> {
    match file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Facts::from_toml(&text).with_context(|| {
                format!(
                    "{}: not a facts file (the [facts] table of a status.toml, or its keys)",
                    f.display()
                )
            })
        }
        None => Ok(crate::host::facts::read(Path::new("/"))),
    }
}

/// `host` of the agent config when there is one, else the facts' host name.
pub fn default_host(config: &Path, facts: &Facts) -> String {
    crate::config::Settings::load(config)
        .map(|s| s.host)
        .ok()
        .or_else(|| facts.hostname.clone())
        .unwrap_or_default()
}

/// The content `path` renders to for `host` in the checkout `dir`: `path` is a template's repo
/// path or the host path it installs to.
pub fn render(dir: &Path, host: &str, path: &str, facts: &Facts) -> Result<Vec<u8>> {
    crate::config::validate_host(host).with_context(|| format!("--host {host:?}"))?;
    let tree = DirTree {
        root: dir.to_path_buf(),
    };
    let inputs = crate::spec::Inputs {
        host,
        facts,
        cache: None,
        keys: None,
    };
    let limits = crate::config::Limits::default();
    let desired = crate::spec::load_with(&tree, &format!("hosts/{host}"), &limits, inputs)
        .map_err(|e| anyhow::anyhow!("host {host}: {e}"))?;
    let target = if path.starts_with('/') {
        path.to_string()
    } else {
        installed_path(path).with_context(|| {
            format!("{path}: not a template under files/, units/ or containers/ of a host or role directory")
        })?
    };
    let found = lookup(&desired, &target, (!path.starts_with('/')).then_some(path));
    match found {
        Some(data) => Ok(data),
        None if path.starts_with('/') => bail!("{path}: host {host} has no such file"),
        None => bail!("{path}: host {host} does not use it (its directory, its includes and fleet.toml [[assign]] do not name it)"),
    }
}

/// Where a template installs: roles/web/files/etc/a.conf.tmpl -> /etc/a.conf;
/// roles/web/units/app.service.tmpl -> /etc/systemd/system/app.service; containers likewise.
fn installed_path(repo_path: &str) -> Option<String> {
    let stripped = repo_path.strip_suffix(SUFFIX).unwrap_or(repo_path);
    for (marker, base) in [
        ("/files/", ""),
        ("/units/", "/etc/systemd/system/"),
        ("/containers/", "/etc/containers/systemd/"),
    ] {
        if let Some((_, rest)) = stripped.split_once(marker) {
            return Some(if base.is_empty() {
                format!("/{rest}")
            } else {
                format!("{base}{rest}")
            });
        }
    }
    None
}

/// The content at host path `target`, when (for a repo path) it came from `origin`.
fn lookup(d: &Desired, target: &str, origin: Option<&str>) -> Option<Vec<u8>> {
    if let Some(f) = d.files.get(target) {
        if origin.is_some_and(|o| o != f.origin) {
            return None;
        }
        return match &f.content {
            Content::Regular(data) => Some(data.clone()),
            Content::Symlink(t) => Some(format!("{t}\n").into_bytes()),
        };
    }
    if let Some(name) = target.strip_prefix("/etc/systemd/system/") {
        if let Some((unit, conf)) = name.split_once(".d/") {
            return d.units.get(unit)?.dropins.get(conf).cloned();
        }
        return d.units.get(name)?.file.clone();
    }
    let name = target.strip_prefix("/etc/containers/systemd/")?;
    Some(d.containers.get(name)?.content.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn installed_paths() {
        use super::installed_path as p;
        assert_eq!(p("roles/web/files/etc/a.conf.tmpl").unwrap(), "/etc/a.conf");
        assert_eq!(p("hosts/h1/files/etc/b").unwrap(), "/etc/b");
        assert_eq!(
            p("roles/web/units/app.service.d/env.conf.tmpl").unwrap(),
            "/etc/systemd/system/app.service.d/env.conf"
        );
        assert_eq!(
            p("roles/web/containers/web.container.tmpl").unwrap(),
            "/etc/containers/systemd/web.container"
        );
        assert!(p("fleet.toml").is_none());
    }
}
