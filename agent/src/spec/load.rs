//! Reads a host directory and the roles it includes into one `Desired`.

use super::facts::Facts;
use super::fleet::{Assign, FleetToml, FLEET_TOML};
use super::hosttoml::{HostToml, RawFile, RawUnit};
use super::secret::{self, Keys};
use super::template::{merge_vars, Context, RenderCache, Renderer, SUFFIX};
use super::tree::{Budget, FleetTree, Node};
use super::*;
use crate::config::{parse_duration_in, ranges, Limits};
use crate::reason::Reason;

const CONTAINER_KINDS: &[&str] = &[
    "container",
    "volume",
    "network",
    "pod",
    "kube",
    "image",
    "build",
];
const UNIT_KINDS: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "target",
    "mount",
    "automount",
    "swap",
    "slice",
    "device",
];
const MAX_INCLUDE_DEPTH: usize = 8;
/// Health checks run one after another while the pass holds the state lock: bounded in number
/// and in the time they may take together.
const MAX_HEALTH_CHECKS: usize = 100;
const MAX_HEALTH_WAIT: Duration = Duration::from_secs(2 * 3600);
const MAX_PACKAGES: usize = 10_000;
/// fleet.toml is settings, like host.toml (which may be at least this large).
const MAX_FLEET_TOML: u64 = 1 << 20;

type Result<T> = std::result::Result<T, SpecError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(SpecError::invalid(msg.into()))
}

/// What loading needs besides the tree: who the host is, its facts, and the render cache.
pub struct Inputs<'a> {
    /// The host name: fleet.toml patterns match it, templates see it as `host`.
    pub host: &'a str,
    pub facts: &'a Facts,
    pub cache: Option<&'a mut RenderCache>,
    /// This host's identity for `.age` files (section 10). `None`: no decrypting (`plumb
    /// validate` off the host): `.age` files are checked for their format only, and templates
    /// see a placeholder for every secret.
    pub keys: Option<&'a Keys>,
}

/// Loads `host_dir` (e.g. "hosts/web-01") from `tree`, for the host named by its last component,
/// without facts. Every problem is a `SpecError` naming the repo file and what to do; nothing
/// here touches the host.
pub fn load(tree: &dyn FleetTree, host_dir: &str, limits: &Limits) -> Result<Desired> {
    let host = host_dir.rsplit('/').next().unwrap_or(host_dir);
    let facts = Facts::default();
    load_with(
        tree,
        host_dir,
        limits,
        Inputs {
            host,
            facts: &facts,
            cache: None,
            keys: None,
        },
    )
}

/// Loads the host: the fleet.toml `[[assign]]` entries matching its name (in file order), then
/// its own directory `host_dir` (optional when an entry matched), then renders its templates.
pub fn load_with(
    tree: &dyn FleetTree,
    host_dir: &str,
    limits: &Limits,
    mut inputs: Inputs,
) -> Result<Desired> {
    let mut b = build(tree, host_dir, limits, inputs.host)?;
    b.render(tree, &mut inputs, limits)?;
    b.finish(limits)
}

/// The directories a host is made of, in the order they apply: roles (from fleet.toml and the
/// includes), then its own directory (when it has one). `plumb secret` encrypts a role's
/// secrets to every host whose layers name it.
pub fn layers(
    tree: &dyn FleetTree,
    host_dir: &str,
    limits: &Limits,
    host: &str,
) -> Result<Vec<String>> {
    Ok(build(tree, host_dir, limits, host)?.order)
}

/// Whether the host's layers hold templates (`.tmpl`, `.tmpl.age`): they need its facts.
pub fn has_templates(
    tree: &dyn FleetTree,
    host_dir: &str,
    limits: &Limits,
    host: &str,
) -> Result<bool> {
    let b = build(tree, host_dir, limits, host)?;
    Ok(b.templates.iter().any(|p| {
        let rel = p.rel.strip_suffix(secret::SUFFIX).unwrap_or(&p.rel);
        rel.ends_with(SUFFIX)
    }))
}

/// fleet.toml of the tree (empty when there is none).
pub fn fleet_toml(tree: &dyn FleetTree) -> Result<FleetToml> {
    match tree.read(FLEET_TOML, MAX_FLEET_TOML) {
        Ok(Some(data)) => {
            let text = std::str::from_utf8(&data)
                .map_err(|_| SpecError::invalid(format!("{FLEET_TOML} is not UTF-8")))?;
            FleetToml::parse(text).map_err(SpecError::invalid)
        }
        Ok(None) => Ok(FleetToml::default()),
        Err(e) => Err(walk_error(FLEET_TOML, e)),
    }
}

/// Walks fleet.toml's entries for the host and its own directory: everything but rendering.
fn build(tree: &dyn FleetTree, host_dir: &str, limits: &Limits, host: &str) -> Result<Builder> {
    let mut b = Builder {
        budget: Budget::new(limits),
        ..Builder::default()
    };
    let fleet = fleet_toml(tree)?;
    let assigned: Vec<(usize, &Assign)> = fleet.matching(host).collect();
    for (_, a) in &assigned {
        merge_vars(&mut b.vars, a.vars.clone());
    }
    for (i, a) in &assigned {
        let at = format!("{FLEET_TOML} [[assign]] #{}", i + 1);
        let mut stack = vec![at.clone()];
        for inc in &a.include {
            let inc_dir = inc.trim_end_matches('/');
            check_rel_path(inc_dir).map_err(|e| bad_path(format!("{at}: include {inc:?}: {e}")))?;
            b.layer(tree, inc_dir, &mut stack, false, limits)?;
        }
    }
    b.host_optional = !assigned.is_empty();
    let mut stack = Vec::new();
    b.layer(tree, host_dir, &mut stack, true, limits)?;
    Ok(b)
}

/// Reason and wording for a problem the tree walk found (a `SpecError` it raised keeps its own).
fn walk_error(dir: &str, e: anyhow::Error) -> SpecError {
    if e.downcast_ref::<crate::source::git::TooLarge>().is_some() {
        return SpecError::new(Reason::SizeLimit, format!("{dir}: {e:#}"));
    }
    match e.downcast::<SpecError>() {
        Ok(s) => SpecError::new(s.reason, format!("{dir}: {}", s.message)),
        Err(e) => SpecError::invalid(format!("{dir}: {e:#}")),
    }
}

fn size_limit<T>(msg: impl Into<String>) -> Result<T> {
    Err(SpecError::new(Reason::SizeLimit, msg))
}

fn bad_path(msg: impl Into<String>) -> SpecError {
    SpecError::new(Reason::InvalidPath, msg)
}

#[derive(Default)]
struct Builder {
    /// Layers expanded so far: a role included by many others is read and applied once (includes
    /// form a DAG; a role including the next one 20 times over 7 levels costs 7 walks, not 20^7).
    expanded: BTreeSet<String>,
    files: BTreeMap<String, FileSpec>,
    file_settings: BTreeMap<String, (String, RawFile)>,
    unit_files: BTreeMap<String, (String, Vec<u8>)>,
    dropins: BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>,
    unit_settings: BTreeMap<String, (String, RawUnit)>,
    containers: BTreeMap<String, (String, Vec<u8>)>,
    container_settings: BTreeMap<String, (String, Option<String>)>,
    packages: Packages,
    health: Vec<HealthCheck>,
    upgrade: Upgrade,
    reboot: RebootWhen,
    /// What the walks of this load may still read (every layer counts against one budget).
    budget: Budget,
    /// `[vars]` merged so far (fleet.toml, then layers as they finish: roles, the host last).
    vars: toml::Table,
    /// `.tmpl` files, rendered once every layer's vars are known.
    templates: Vec<Pending>,
    /// A fleet.toml entry matched the host: it needs no directory of its own.
    host_optional: bool,
    /// `secrets.toml.age` files by layer, in order (decrypted with the templates).
    secrets_tomls: Vec<(String, Vec<u8>)>,
    /// The directories read, in the order they applied.
    order: Vec<String>,
}

/// A template waiting for the vars of every layer.
struct Pending {
    origin: String,
    /// "files", "units" or "containers".
    top: &'static str,
    /// Below `top`, with the `.tmpl` suffix.
    rel: String,
    data: Vec<u8>,
    executable: bool,
    /// An `.age` file (`rel` ends in `.age`): decrypted before anything else.
    encrypted: bool,
}

impl Builder {
    fn layer(
        &mut self,
        tree: &dyn FleetTree,
        dir: &str,
        stack: &mut Vec<String>,
        is_host: bool,
        limits: &Limits,
    ) -> Result<()> {
        if stack.iter().any(|d| d == dir) {
            return err(format!("include cycle: {} -> {dir}", stack.join(" -> ")));
        }
        if !self.expanded.insert(dir.to_string()) {
            return Ok(()); // already applied through another include
        }
        if self.expanded.len() > limits.max_includes + 1 {
            return size_limit(format!(
                "{}: includes more than {} roles (limits.max_includes in agent.toml)",
                stack.first().map(String::as_str).unwrap_or(dir),
                limits.max_includes
            ));
        }
        if stack.len() >= MAX_INCLUDE_DEPTH {
            return size_limit(format!(
                "{dir}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels"
            ));
        }
        let entries = tree
            .walk(dir, &mut self.budget)
            .map_err(|e| walk_error(dir, e))?;
        let Some(entries) = entries else {
            if is_host && self.host_optional {
                return Ok(()); // configured through fleet.toml alone
            }
            return err(if is_host {
                format!(
                    "{dir} does not exist in {}: add the host's directory to the fleet repo (or match the host in fleet.toml [[assign]]), or fix `host`/`path` in agent.toml",
                    tree.describe()
                )
            } else {
                format!(
                    "{}: include {dir:?} does not exist in {}",
                    stack.last().map(String::as_str).unwrap_or(dir),
                    tree.describe()
                )
            });
        };
        if let Some((rel, _)) = entries
            .iter()
            .find(|(rel, _)| rel.split('/').count() > limits.max_depth)
        {
            let shown: String = rel.chars().take(120).collect();
            return size_limit(format!(
                "{dir}/{shown}...: directories nest deeper than {} levels (limits.max_depth in agent.toml)",
                limits.max_depth
            ));
        }
        let host_toml = match entries.iter().find(|(p, _)| p == "host.toml") {
            Some((_, Node::File { data, .. })) => {
                let text = std::str::from_utf8(data)
                    .map_err(|_| SpecError::invalid(format!("{dir}/host.toml is not UTF-8")))?;
                toml::from_str::<HostToml>(text)
                    .map_err(|e| SpecError::invalid(format!("{dir}/host.toml: {e}")))?
            }
            Some(_) => return err(format!("{dir}/host.toml must be a regular file")),
            None => HostToml::default(),
        };
        stack.push(dir.to_string());
        for inc in &host_toml.include {
            let inc_dir = inc.trim_end_matches('/');
            check_rel_path(inc_dir)
                .map_err(|e| bad_path(format!("{dir}/host.toml: include {inc:?}: {e}")))?;
            self.layer(tree, inc_dir, stack, false, limits)?;
        }
        stack.pop();
        self.order.push(dir.to_string());
        for (rel, node) in &entries {
            self.entry(dir, rel, node)?;
        }
        self.settings(dir, host_toml)
    }

    fn entry(&mut self, dir: &str, rel: &str, node: &Node) -> Result<()> {
        let origin = format!("{dir}/{rel}");
        let (top, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match (top, node) {
            ("host.toml", _) => Ok(()),
            // The host's pinned SSH host key (rollout status trust, DESIGN section 11).
            ("host_key.pub", _) => Ok(()),
            (secret::SECRETS_TOML, Node::File { data, .. }) => {
                self.secrets_tomls.push((origin, data.clone()));
                Ok(())
            }
            ("units" | "containers", Node::File { .. }) if rest.ends_with(secret::SUFFIX) => err(format!(
                "{origin}: secrets go under files/ (mode 0600), not {top}/, whose files are world-readable: have the unit read it (EnvironmentFile=, LoadCredential=)"
            )),
            ("files", Node::File { data, executable }) if rest.ends_with(secret::SUFFIX) => {
                self.templates.push(Pending {
                    origin,
                    top: "files",
                    rel: rest.to_string(),
                    data: data.clone(),
                    executable: *executable,
                    encrypted: true,
                });
                Ok(())
            }
            // Read only through {% include %} / {% import %} of a template.
            ("templates", _) => Ok(()),
            ("files" | "units" | "containers", Node::Dir) if rest.is_empty() => Ok(()),
            (top @ ("files" | "units" | "containers"), Node::File { data, executable })
                if rest.ends_with(SUFFIX) =>
            {
                self.templates.push(Pending {
                    origin,
                    top: match top {
                        "files" => "files",
                        "units" => "units",
                        _ => "containers",
                    },
                    rel: rest.to_string(),
                    data: data.clone(),
                    executable: *executable,
                    encrypted: false,
                });
                Ok(())
            }
            ("files", _) => self.file(&origin, rest, node),
            ("units", _) => self.unit(&origin, rest, node),
            ("containers", _) => self.container(&origin, rest, node),
            _ => err(format!(
                "{origin}: unexpected entry; a host or role directory holds host.toml, secrets.toml.age, files/, units/, containers/ and templates/"
            )),
        }
    }

    fn file(&mut self, origin: &str, rel: &str, node: &Node) -> Result<()> {
        check_rel_path(rel).map_err(|e| bad_path(format!("{origin}: {e}")))?;
        if !matches!(node, Node::Dir) {
            // Named at the file (Git has no empty directories): its directories are checked too.
            check_host_path(rel).map_err(|e| bad_path(format!("{origin}: {e}")))?;
        }
        let path = format!("/{rel}");
        if rel.starts_with("tmp/") && !matches!(node, Node::Dir) {
            tracing::warn!(
                file = origin,
                "{path}: plumb.service runs with a private /tmp, so other services will not see this file; use /var/tmp or /run via tmpfiles.d"
            );
        }
        let (content, mode) = match node {
            Node::Dir => return Ok(()),
            Node::File { data, executable } => (
                Content::Regular(data.clone()),
                if *executable { 0o755 } else { 0o644 },
            ),
            Node::Symlink { target } => {
                check_link_target(&path, target).map_err(|e| bad_path(format!("{origin}: {e}")))?;
                (Content::Symlink(target.clone()), 0o777)
            }
        };
        let spec = FileSpec {
            content,
            mode,
            owner: String::new(),
            group: String::new(),
            origin: origin.to_string(),
            validate: None,
            secret: None,
        };
        if let Some(prev) = self.files.get(&path) {
            if prev.content != spec.content {
                return err(format!(
                    "{path} is claimed by {} and by {origin} with different content: keep one",
                    prev.origin
                ));
            }
        }
        self.files.insert(path, spec);
        Ok(())
    }

    fn unit(&mut self, origin: &str, rel: &str, node: &Node) -> Result<()> {
        let data = match node {
            Node::File { data, .. } => data.clone(),
            Node::Dir => {
                return match rel.strip_suffix(".d") {
                    Some(unit) if !rel.contains('/') => check_unit_name(unit)
                        .map_err(|e| SpecError::invalid(format!("{origin}: {e}"))),
                    _ => err(format!(
                        "{origin}: units/ holds unit files and <unit>.d/ drop-in directories only"
                    )),
                };
            }
            Node::Symlink { .. } => {
                return err(format!(
                    "{origin}: unit files must be regular files, not symlinks"
                ))
            }
        };
        if let Some((dir, conf)) = rel.split_once('/') {
            let unit = dir
                .strip_suffix(".d")
                .filter(|_| !conf.contains('/') && conf.ends_with(".conf"));
            let Some(unit) = unit else {
                return err(format!(
                    "{origin}: a drop-in must be units/<unit>.d/<name>.conf"
                ));
            };
            check_name(conf).map_err(|e| SpecError::invalid(format!("{origin}: {e}")))?;
            check_unit_name(unit).map_err(|e| SpecError::invalid(format!("{origin}: {e}")))?;
            if dir.len() > NAME_MAX {
                return Err(bad_path(format!(
                    "{origin}: the drop-in directory name is over NAME_MAX ({NAME_MAX}): shorten the unit name"
                )));
            }
            let slot = self.dropins.entry(unit.to_string()).or_default();
            claim(slot, conf.to_string(), origin, data)
        } else {
            check_unit_name(rel).map_err(|e| SpecError::invalid(format!("{origin}: {e}")))?;
            claim(&mut self.unit_files, rel.to_string(), origin, data)
        }
    }

    fn container(&mut self, origin: &str, rel: &str, node: &Node) -> Result<()> {
        let Node::File { data, .. } = node else {
            return err(format!(
                "{origin}: containers/ holds Quadlet files (<name>.container, .volume, ...) only"
            ));
        };
        let kind = rel.rsplit_once('.').map(|(_, k)| k).unwrap_or("");
        if rel.contains('/') || !CONTAINER_KINDS.contains(&kind) {
            return err(format!(
                "{origin}: not a Quadlet file; use containers/<name>.<kind> with kind one of {}",
                CONTAINER_KINDS.join(", ")
            ));
        }
        check_name(rel).map_err(|e| SpecError::invalid(format!("{origin}: {e}")))?;
        claim(&mut self.containers, rel.to_string(), origin, data.clone())
    }

    /// Decrypts the `.age` files, renders the pending templates, and adds what they give as if
    /// Git held it (a file marked `template = false` is added as it is). Secret files get mode
    /// 0600 (before host.toml's settings) and a keyed hash instead of a plain digest.
    fn render(&mut self, tree: &dyn FleetTree, inputs: &mut Inputs, limits: &Limits) -> Result<()> {
        let pending = std::mem::take(&mut self.templates);
        let mut secrets: Option<toml::Table> = inputs.keys.map(|_| toml::Table::new());
        for (origin, data) in std::mem::take(&mut self.secrets_tomls) {
            let Some(all) = secrets.as_mut() else {
                secret::check_format(&origin, &data)?;
                continue;
            };
            let plain = secret::decrypt(&origin, &data, inputs.keys, limits.max_file_size)?;
            merge_vars(all, secret::parse_secrets_toml(&origin, &plain)?);
        }
        if pending.is_empty() {
            return Ok(());
        }
        let ctx = Context {
            host: inputs.host.to_string(),
            vars: self.vars.clone(),
            facts: inputs.facts.clone(),
            secrets,
        };
        let mut renderer =
            Renderer::new(tree, &ctx, limits.max_rendered_size, limits.max_file_size)?;
        for p in pending {
            let (rel, data) = if p.encrypted {
                let rel = p.rel.strip_suffix(secret::SUFFIX).expect("an .age name");
                let plain = match inputs.keys {
                    Some(_) => {
                        secret::decrypt(&p.origin, &p.data, inputs.keys, limits.max_file_size)?
                    }
                    None => {
                        secret::check_format(&p.origin, &p.data)?;
                        zeroize::Zeroizing::new(b"(secret)\n".to_vec())
                    }
                };
                (rel, plain)
            } else {
                (p.rel.as_str(), zeroize::Zeroizing::new(p.data))
            };
            let literal = !rel.ends_with(SUFFIX)
                || (p.top == "files"
                    && self
                        .file_settings
                        .get(&format!("/{rel}"))
                        .is_some_and(|(_, raw)| raw.template == Some(false)));
            let (rel, data, secret) = if literal {
                (rel, data, p.encrypted)
            } else {
                let out = renderer.render_secret_aware(
                    &p.origin,
                    &data,
                    inputs.cache.as_deref_mut(),
                    p.encrypted,
                )?;
                let rel = rel.strip_suffix(SUFFIX).expect("a .tmpl name");
                (
                    rel,
                    zeroize::Zeroizing::new(out.output.as_bytes().to_vec()),
                    out.secret,
                )
            };
            if secret && p.top != "files" {
                return Err(SpecError::new(
                    Reason::TemplateError,
                    format!("{}: reads `secrets`, but {}/ files are world-readable: put the secret in a file under files/ and have the unit read it (EnvironmentFile=, LoadCredential=)", p.origin, p.top),
                ));
            }
            let mac = secret.then(|| match inputs.keys {
                Some(k) => k.mac(&data),
                None => [0; 32],
            });
            let node = Node::File {
                data: data.to_vec(),
                executable: p.executable,
            };
            match p.top {
                "files" => {
                    self.file(&p.origin, rel, &node)?;
                    if let Some(mac) = mac {
                        let f = self.files.get_mut(&format!("/{rel}")).expect("just added");
                        f.secret = Some(mac);
                        f.mode = if p.executable { 0o700 } else { 0o600 };
                    }
                }
                "units" => self.unit(&p.origin, rel, &node)?,
                _ => self.container(&p.origin, rel, &node)?,
            }
            if let Node::File { mut data, .. } = node {
                zeroize::Zeroize::zeroize(&mut data);
            }
        }
        Ok(())
    }

    /// One layer's `[packages]`: names checked, pins split off and checked. A later layer's pin
    /// of a name replaces an earlier one's (the host's own directory comes last); one file
    /// pinning a name twice differently is an error.
    fn package_entries(
        &mut self,
        file: &str,
        install: Vec<String>,
        remove: Vec<String>,
    ) -> Result<()> {
        let mut pins: BTreeMap<String, String> = BTreeMap::new();
        for entry in &install {
            let (name, pin) = version::split_entry(entry)
                .map_err(|e| SpecError::invalid(format!("{file}: [packages] install: {e}")))?;
            check_package_name(name)
                .map_err(|e| SpecError::invalid(format!("{file}: [packages] install: {e}")))?;
            if let Some(pin) = pin {
                if let Some(other) = pins.insert(name.to_string(), pin.to_string()) {
                    if other != pin {
                        return err(format!(
                            "{file}: [packages] install pins {name:?} twice ({name}={other} and {entry}): keep one"
                        ));
                    }
                }
            }
            self.packages.install.insert(name.to_string());
        }
        for name in &remove {
            if name.contains('=') {
                return err(format!(
                    "{file}: [packages] remove: {name:?}: remove takes bare names (any version goes): write {:?}",
                    name.split('=').next().unwrap_or_default()
                ));
            }
            check_package_name(name)
                .map_err(|e| SpecError::invalid(format!("{file}: [packages] remove: {e}")))?;
        }
        self.packages.pins.extend(pins);
        self.packages.remove.extend(remove);
        Ok(())
    }

    fn settings(&mut self, dir: &str, t: HostToml) -> Result<()> {
        let file = format!("{dir}/host.toml");
        merge_vars(&mut self.vars, t.vars);
        self.package_entries(&file, t.packages.install, t.packages.remove)?;
        if let Some(u) = &t.packages.upgrade {
            self.upgrade = Upgrade::parse(u).ok_or_else(|| {
                SpecError::invalid(format!(
                    "{file}: [packages] upgrade = {u:?}: give \"none\", \"security\" or \"all\""
                ))
            })?;
        }
        if let Some(r) = t.reboot {
            self.reboot = r.when;
        }
        for (path, raw) in t.files {
            self.file_settings.insert(path, (file.clone(), raw));
        }
        for (name, raw) in t.units {
            check_unit_name(&name)
                .map_err(|e| SpecError::invalid(format!("{file}: [units.{name:?}]: {e}")))?;
            self.unit_settings.insert(name, (file.clone(), raw));
        }
        for (name, raw) in t.containers {
            self.container_settings
                .insert(name, (file.clone(), raw.state));
        }
        for (i, h) in t.health.into_iter().enumerate() {
            let at = format!("{file}: [[health]] #{}", i + 1);
            let probe = match (h.unit, h.command) {
                (Some(u), None) => {
                    check_unit_name(&u).map_err(|e| SpecError::invalid(format!("{at}: {e}")))?;
                    HealthProbe::Unit(u)
                }
                (None, Some(c)) if !c.is_empty() && c[0].starts_with('/') => {
                    HealthProbe::Command(c)
                }
                (None, Some(_)) => {
                    return err(format!(
                        "{at}: `command` must start with an absolute program path"
                    ))
                }
                _ => return err(format!("{at}: set exactly one of `unit` or `command`")),
            };
            let timeout = parse_duration_in(
                h.timeout.as_deref().unwrap_or("30s"),
                ranges::HEALTH_TIMEOUT,
            )
            .map_err(|e| SpecError::invalid(format!("{at}: `timeout`: {e}")))?;
            self.health.push(HealthCheck { probe, timeout });
        }
        Ok(())
    }

    fn finish(mut self, limits: &Limits) -> Result<Desired> {
        for (path, (file, raw)) in std::mem::take(&mut self.file_settings) {
            let Some(spec) = self.files.get_mut(&path) else {
                return err(format!(
                    "{file}: [files.{path:?}] names a file that is not under files/"
                ));
            };
            if raw.template == Some(false) && !path.ends_with(SUFFIX) {
                return err(format!(
                    "{file}: [files.{path:?}] template = false is for a file whose name ends in {SUFFIX} (kept literally)"
                ));
            }
            if let Some(m) = &raw.mode {
                spec.mode = parse_mode(m).map_err(|e| {
                    SpecError::invalid(format!("{file}: [files.{path:?}] mode: {e}"))
                })?;
            }
            if let Some(argv) = &raw.validate {
                check_argv(argv, true).map_err(|e| {
                    SpecError::invalid(format!("{file}: [files.{path:?}] validate: {e}"))
                })?;
                spec.validate = Some(argv.clone());
            }
            for (key, val, slot) in [
                ("owner", &raw.owner, &mut spec.owner),
                ("group", &raw.group, &mut spec.group),
            ] {
                if let Some(v) = val {
                    check_account(v).map_err(|e| {
                        SpecError::invalid(format!("{file}: [files.{path:?}] {key}: {e}"))
                    })?;
                    *slot = v.clone();
                }
            }
        }
        // A path cannot be both a file and a directory holding other files.
        for path in self.files.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if let Some(other) = self.files.get(parent) {
                    return err(format!(
                        "{parent} is a file in {} but a directory in {}: keep one",
                        other.origin, self.files[path].origin
                    ));
                }
                p = parent;
            }
        }
        self.check_limits(limits)?;

        let mut units = BTreeMap::new();
        let mut names: Vec<String> = self.unit_files.keys().cloned().collect();
        names.extend(self.dropins.keys().cloned());
        names.extend(self.unit_settings.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            let file = self.unit_files.remove(&name).map(|(_, d)| d);
            let dropins: BTreeMap<String, Vec<u8>> = self
                .dropins
                .remove(&name)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, (_, d))| (k, d))
                .collect();
            let (at, raw) = self.unit_settings.remove(&name).unwrap_or_default();
            let state = raw
                .state
                .as_deref()
                .map(|s| parse_state(Some(s)))
                .transpose()
                .map_err(|e| SpecError::invalid(format!("{at}: [units.{name:?}] state: {e}")))?;
            for (key, paths) in [
                ("restart_on", &raw.restart_on),
                ("reload_on", &raw.reload_on),
            ] {
                for p in paths {
                    if !self.files.contains_key(p) {
                        return err(format!("{at}: [units.{name:?}] {key} names {p:?}, which is not a managed file under files/"));
                    }
                }
            }
            if let Some(argv) = &raw.check {
                check_argv(argv, false).map_err(|e| {
                    SpecError::invalid(format!("{at}: [units.{name:?}] check: {e}"))
                })?;
            }
            units.insert(
                name.clone(),
                UnitSpec {
                    name,
                    file,
                    dropins,
                    enabled: raw.enabled,
                    state,
                    restart_on: raw.restart_on,
                    reload_on: raw.reload_on,
                    check: raw.check,
                },
            );
        }

        let mut containers: BTreeMap<String, ContainerSpec> = self
            .containers
            .into_iter()
            .map(|(file_name, (_, content))| {
                (
                    file_name.clone(),
                    ContainerSpec {
                        file_name,
                        content,
                        state: RunState::Started,
                    },
                )
            })
            .collect();
        for (key, (at, state)) in self.container_settings {
            let matches: Vec<&String> = containers
                .keys()
                .filter(|f| **f == key || f.rsplit_once('.').map(|(s, _)| s) == Some(key.as_str()))
                .collect();
            let file_name = match matches.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return err(format!(
                        "{at}: [containers.{key:?}] names no file under containers/"
                    ))
                }
                _ => {
                    return err(format!(
                        "{at}: [containers.{key:?}] is ambiguous: name the file, e.g. \"{}\"",
                        matches[0]
                    ))
                }
            };
            let state = parse_state(state.as_deref()).map_err(|e| {
                SpecError::invalid(format!("{at}: [containers.{key:?}] state: {e}"))
            })?;
            containers.get_mut(&file_name).expect("matched above").state = state;
        }

        let wait: Duration = self.health.iter().map(|h| h.timeout).sum();
        if self.health.len() > MAX_HEALTH_CHECKS || wait > MAX_HEALTH_WAIT {
            return size_limit(format!(
                "{} [[health]] checks waiting up to {} in all: at most {MAX_HEALTH_CHECKS} checks and {} of timeouts per host",
                self.health.len(),
                humantime::format_duration(wait),
                humantime::format_duration(MAX_HEALTH_WAIT)
            ));
        }
        let packages = self.packages.install.len() + self.packages.remove.len();
        if packages > MAX_PACKAGES {
            return size_limit(format!(
                "{packages} packages in [packages]: at most {MAX_PACKAGES} per host"
            ));
        }
        if let Some(both) = self
            .packages
            .install
            .intersection(&self.packages.remove)
            .next()
        {
            return err(format!(
                "package {both:?} is both in [packages] install and remove: keep one"
            ));
        }
        Ok(Desired {
            files: self.files,
            units,
            containers,
            packages: self.packages,
            health: self.health,
            upgrade: self.upgrade,
            reboot: self.reboot,
        })
    }
}

impl Builder {
    /// Every file plumb would write (files, unit files, drop-ins, Quadlet files) counts against
    /// the limits, so a huge commit is rejected before anything is written.
    fn check_limits(&self, limits: &Limits) -> Result<()> {
        let mut sizes: Vec<(&str, &str, u64)> = Vec::new();
        for (path, f) in &self.files {
            let len = match &f.content {
                Content::Regular(d) => d.len() as u64,
                Content::Symlink(_) => 0,
            };
            sizes.push((&f.origin, path, len));
        }
        for (name, (origin, data)) in self.unit_files.iter().chain(&self.containers) {
            sizes.push((origin, name, data.len() as u64));
        }
        for (conf, (origin, data)) in self.dropins.values().flatten() {
            sizes.push((origin, conf, data.len() as u64));
        }
        if sizes.len() > limits.max_files {
            return size_limit(format!(
                "{} files exceed the limit of {} (limits.max_files in agent.toml)",
                sizes.len(),
                limits.max_files
            ));
        }
        if let Some((origin, name, _)) = sizes.iter().find(|s| s.2 > limits.max_file_size) {
            return size_limit(format!("{origin}: {name} is larger than the limit of {} bytes (limits.max_file_size in agent.toml)", limits.max_file_size));
        }
        let total: u64 = sizes.iter().map(|s| s.2).sum();
        if total > limits.max_total_size {
            return size_limit(format!("files total {total} bytes, over the limit of {} (limits.max_total_size in agent.toml)", limits.max_total_size));
        }
        Ok(())
    }
}

/// Records `key` in `slot`; a second claim must carry the same content.
fn claim(
    slot: &mut BTreeMap<String, (String, Vec<u8>)>,
    key: String,
    origin: &str,
    data: Vec<u8>,
) -> Result<()> {
    if let Some((prev, old)) = slot.get(&key) {
        if *old != data {
            return err(format!(
                "{key} is claimed by {prev} and by {origin} with different content: keep one"
            ));
        }
    }
    slot.insert(key, (origin.to_string(), data));
    Ok(())
}

/// A command from host.toml: an absolute program, no empty argv; `%s` exactly once when the
/// command checks a staged file (`validate`), never otherwise.
fn check_argv(argv: &[String], wants_file: bool) -> std::result::Result<(), String> {
    const MAX_ARGS: usize = 64;
    const MAX_ARG: usize = 4096;
    let Some(program) = argv.first() else {
        return Err("an empty command: give the program and its arguments".into());
    };
    if !program.starts_with('/') {
        return Err(format!(
            "the program {program:?} must be an absolute path (no shell, no PATH lookup)"
        ));
    }
    if argv.len() > MAX_ARGS || argv.iter().any(|a| a.len() > MAX_ARG || a.contains('\0')) {
        return Err(format!(
            "at most {MAX_ARGS} arguments of at most {MAX_ARG} bytes, without NUL"
        ));
    }
    let slots = argv.iter().filter(|a| a.contains("%s")).count();
    match (wants_file, slots) {
        (true, 1) | (false, 0) => Ok(()),
        (true, _) => Err("name the staged file exactly once, as \"%s\"".into()),
        (false, _) => Err("\"%s\" has no meaning here (it is for a file's `validate`)".into()),
    }
}

fn check_rel_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        return Err("must be a relative path inside the repo".into());
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("path components `.`, `..` and empty ones are not allowed".into());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed in paths".into());
    }
    Ok(())
}

/// Longest name a Linux file system takes (NAME_MAX); plumb's temp names are shorter.
const NAME_MAX: usize = 255;
/// Longest path the kernel takes (PATH_MAX, with its NUL).
const PATH_MAX: usize = 4096;
/// Kernel file systems: writing there is not configuration but an action (sysrq-trigger, a block
/// device, a cgroup knob), and /run is the runtime's, rebuilt at boot.
const PSEUDO_ROOTS: &[&str] = &["proc", "sys", "dev", "run"];

/// A host path (`rel` is below files/) plumb can write and keep: every name within NAME_MAX, the
/// whole within PATH_MAX, not a name of plumb's temp files, not on a kernel file system.
fn check_host_path(rel: &str) -> std::result::Result<(), String> {
    if rel.len() + 1 >= PATH_MAX {
        return Err(format!(
            "the host path is {} bytes long, over PATH_MAX ({PATH_MAX}): shorten it",
            rel.len() + 1
        ));
    }
    for c in rel.split('/') {
        if c.len() > NAME_MAX {
            return Err(format!(
                "the name {:?}... is {} bytes long, over NAME_MAX ({NAME_MAX}): shorten it",
                c.chars().take(40).collect::<String>(),
                c.len()
            ));
        }
        if crate::host::fs::is_tmp_name(std::ffi::OsStr::new(c)) {
            return Err(format!(
                "{c:?}: names of the form .*.plumb-new are plumb's temp files: rename it"
            ));
        }
    }
    let top = rel.split('/').next().unwrap_or("");
    if PSEUDO_ROOTS.contains(&top) {
        return Err(format!(
            "/{top} is a kernel or runtime file system, not configuration: plumb does not write there (use a unit or a tmpfiles.d/sysctl.d/udev file instead)"
        ));
    }
    Ok(())
}

/// A relative symlink target may not climb above the root it is applied under.
fn check_link_target(path: &str, target: &str) -> std::result::Result<(), String> {
    if target.is_empty() || target.contains('\0') {
        return Err("empty symlink target".into());
    }
    if target.len() >= PATH_MAX {
        return Err(format!(
            "symlink target of {} bytes, over PATH_MAX ({PATH_MAX})",
            target.len()
        ));
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth = path.matches('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(format!("symlink target {target:?} escapes the root"));
        }
    }
    Ok(())
}

fn check_name(n: &str) -> std::result::Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a valid name: use letters, digits and - _ . @ :"
        ))
    }
}

pub(crate) fn check_unit_name(n: &str) -> std::result::Result<(), String> {
    check_name(n)?;
    match n.rsplit_once('.') {
        Some((stem, kind)) if !stem.is_empty() && UNIT_KINDS.contains(&kind) => Ok(()),
        _ => Err(format!(
            "{n:?} is not a unit name: it must end in .{}",
            UNIT_KINDS.join(", .")
        )),
    }
}

/// Debian and RPM package names (with an optional :arch); nothing a shell or option parser could take.
pub(crate) fn check_package_name(n: &str) -> std::result::Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{n:?} is not a valid package name"))
    }
}

fn check_account(n: &str) -> std::result::Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 32
        && !n.starts_with('-')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{n:?} is not a valid user or group name"))
    }
}

fn parse_mode(m: &str) -> std::result::Result<u32, String> {
    match u32::from_str_radix(m, 8) {
        Ok(v) if v <= 0o7777 && !m.is_empty() => Ok(v),
        _ => Err(format!("{m:?} is not an octal mode like \"0644\"")),
    }
}

fn parse_state(s: Option<&str>) -> std::result::Result<RunState, String> {
    match s {
        None | Some("started") => Ok(RunState::Started),
        Some("stopped") => Ok(RunState::Stopped),
        Some(o) => Err(format!("{o:?}: allowed are \"started\" and \"stopped\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tree::MemTree;

    fn load_mem(t: MemTree) -> Result<Desired> {
        load(&t, "hosts/h1", &Limits::default())
    }

    fn fails(t: MemTree, needle: &str) {
        let e = load_mem(t).expect_err("must be rejected").message;
        assert!(e.contains(needle), "error {e:?} should contain {needle:?}");
    }

    #[test]
    fn files_modes_and_settings() {
        let d = load_mem(
            MemTree::default()
                .file("hosts/h1/files/etc/motd", "hi\n")
                .exec("hosts/h1/files/usr/local/bin/x", "#!/bin/sh\n")
                .link("hosts/h1/files/etc/alt", "motd")
                .file("hosts/h1/files/etc/app/secret", "pw")
                .file(
                    "hosts/h1/host.toml",
                    "[files.\"/etc/app/secret\"]\nmode = \"0600\"\nowner = \"app\"\ngroup = \"app\"\n",
                ),
        )
        .unwrap();
        assert_eq!(d.files["/etc/motd"].mode, 0o644);
        assert_eq!(d.files["/usr/local/bin/x"].mode, 0o755);
        assert_eq!(d.files["/etc/alt"].content, Content::Symlink("motd".into()));
        let s = &d.files["/etc/app/secret"];
        assert_eq!(
            (s.mode, s.owner.as_str(), s.group.as_str()),
            (0o600, "app", "app")
        );
        assert!(s.is_secret());
        assert!(!d.files["/etc/motd"].is_secret());
        // No owner in Git: left for the agent to resolve (root, or the invoking user).
        let motd = &d.files["/etc/motd"];
        assert_eq!((motd.owner.as_str(), motd.group.as_str()), ("", ""));
    }

    #[test]
    fn upgrade_policy_the_host_overrides_its_roles() {
        let tree = |host: &str| {
            MemTree::default()
                .file("roles/base/host.toml", "[packages]\nupgrade = \"all\"\n")
                .file("hosts/h1/files/etc/motd", "x")
                .file("hosts/h1/host.toml", host)
        };
        let d = load_mem(tree("include = [\"roles/base\"]\n")).unwrap();
        assert_eq!(d.upgrade, Upgrade::All);
        let d = load_mem(tree(
            "include = [\"roles/base\"]\n[packages]\nupgrade = \"security\"\n",
        ))
        .unwrap();
        assert_eq!(d.upgrade, Upgrade::Security);
        let d = load_mem(tree("")).unwrap();
        assert_eq!(d.upgrade, Upgrade::None);
    }

    #[test]
    fn reboot_when_the_host_says_wins_over_its_roles() {
        let tree = |host: &str| {
            MemTree::default()
                .file("roles/base/host.toml", "[reboot]\nwhen = \"required\"\n")
                .file("hosts/h1/host.toml", host)
        };
        let d = load_mem(tree("include = [\"roles/base\"]\n")).unwrap();
        assert_eq!(d.reboot, RebootWhen::Required);
        let d = load_mem(tree(
            "include = [\"roles/base\"]\n[reboot]\nwhen = \"never\"\n",
        ))
        .unwrap();
        assert_eq!(d.reboot, RebootWhen::Never);
    }

    #[test]
    fn includes_apply_in_order_and_merge() {
        let d = load_mem(
            MemTree::default()
                .file("roles/base/files/etc/motd", "same")
                .file("roles/base/host.toml", "[packages]\ninstall = [\"curl\"]\n")
                .file("roles/web/units/app.service", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
                .file("roles/web/units/app.service.d/limits.conf", "[Service]\nNice=5\n")
                .file("hosts/h1/files/etc/motd", "same")
                .file(
                    "hosts/h1/host.toml",
                    "include = [\"roles/base\", \"roles/web/\"]\n[packages]\ninstall = [\"nginx\"]\nremove = [\"telnet\"]\n[units.\"app.service\"]\nstate = \"stopped\"\nrestart_on = [\"/etc/motd\"]\n[units.\"nginx.service\"]\nenabled = true\n",
                )
                .file("hosts/h1/containers/web.container", "[Container]\nImage=localhost/busybox\n")
                .file("hosts/h1/containers/data.volume", "[Volume]\n"),
        )
        .unwrap();
        assert_eq!(
            d.packages.install.iter().collect::<Vec<_>>(),
            ["curl", "nginx"]
        );
        assert!(d.packages.remove.contains("telnet"));
        assert_eq!(d.reboot, RebootWhen::Never);
        let app = &d.units["app.service"];
        assert_eq!(app.state, Some(RunState::Stopped));
        assert_eq!(app.dropins.keys().collect::<Vec<_>>(), ["limits.conf"]);
        assert_eq!(app.restart_on, ["/etc/motd"]);
        assert!(d.units["nginx.service"].file.is_none());
        assert_eq!(d.containers["web.container"].service_name(), "web.service");
        assert_eq!(
            d.containers["data.volume"].service_name(),
            "data-volume.service"
        );
    }

    /// `[packages] install` pins (issue 17): split, checked, merged with the host's last; bad
    /// entries reject the commit naming the file, the key, the entry and what to write.
    #[test]
    fn package_pins() {
        let d = load_mem(
            MemTree::default()
                .file(
                    "roles/base/host.toml",
                    "[packages]\ninstall = [\"nginx=1.24.0-1\", \"jq=1.*\", \"curl\"]\n",
                )
                .file(
                    "hosts/h1/host.toml",
                    "include = [\"roles/base\"]\n[packages]\ninstall = [\"nginx=1:1.26.0-1\", \"curl=8.*\", \"jq\", \"libc6:amd64=2.41-12\"]\n",
                ),
        )
        .unwrap();
        let p = &d.packages;
        assert_eq!(
            p.install.iter().collect::<Vec<_>>(),
            ["curl", "jq", "libc6:amd64", "nginx"]
        );
        assert_eq!(p.pin("nginx"), Some("1:1.26.0-1"), "the host's pin wins");
        assert_eq!(p.pin("curl"), Some("8.*"));
        assert_eq!(p.pin("jq"), Some("1.*"), "a bare name keeps a role's pin");
        assert_eq!(p.pin("libc6:amd64"), Some("2.41-12"));
        assert_eq!(
            p.entries().into_iter().collect::<Vec<_>>(),
            [
                "curl=8.*",
                "jq=1.*",
                "libc6:amd64=2.41-12",
                "nginx=1:1.26.0-1"
            ]
        );

        let host = |toml: &str| MemTree::default().file("hosts/h1/host.toml", toml);
        for (toml, needle) in [
            (
                "[packages]\ninstall = [\"nginx=\"]",
                "hosts/h1/host.toml: [packages] install: \"nginx=\": the version after `=` is empty: write NAME=VERSION",
            ),
            ("[packages]\ninstall = [\"nginx=-1\"]", "must start with"),
            ("[packages]\ninstall = [\"nginx=1;id\"]", "has ';'"),
            ("[packages]\ninstall = [\"nginx=1 2\"]", "\"curl=8.*\""),
            ("[packages]\ninstall = [\"x;y=1\"]", "not a valid package name"),
            ("[packages]\ninstall = [\"=1\"]", "not a valid package name"),
            (
                "[packages]\ninstall = [\"a=1\", \"a=2\"]",
                "pins \"a\" twice (a=1 and a=2): keep one",
            ),
            (
                "[packages]\nremove = [\"telnet=0.17\"]",
                "hosts/h1/host.toml: [packages] remove: \"telnet=0.17\": remove takes bare names (any version goes): write \"telnet\"",
            ),
            ("[packages]\ninstall = [\"a=1\"]\nremove = [\"a\"]", "both"),
        ] {
            fails(host(toml), needle);
        }
        let long = format!("[packages]\ninstall = [\"a={}\"]", "1".repeat(200));
        fails(host(&long), "longer than 128");
        load_mem(host("[packages]\ninstall = [\"a=1\", \"a=1\"]")).unwrap();
    }

    #[test]
    fn check_validate_and_reload_on() {
        let t = |toml: &str| {
            MemTree::default()
                .file("hosts/h1/files/etc/nginx/nginx.conf", "events {}\n")
                .file("hosts/h1/files/etc/nginx/conf.d/site.conf", "server {}\n")
                .file("hosts/h1/host.toml", toml)
        };
        let d = load_mem(t(
            "[units.\"nginx.service\"]\ncheck = [\"/usr/sbin/nginx\", \"-t\"]\nreload_on = [\"/etc/nginx/conf.d/site.conf\"]\n\
             [files.\"/etc/nginx/nginx.conf\"]\nvalidate = [\"/usr/sbin/nginx\", \"-t\", \"-c\", \"%s\"]\n",
        ))
        .unwrap();
        let u = &d.units["nginx.service"];
        assert_eq!(u.check.as_deref().unwrap(), ["/usr/sbin/nginx", "-t"]);
        assert_eq!(u.reload_on, ["/etc/nginx/conf.d/site.conf"]);
        assert_eq!(
            d.files["/etc/nginx/nginx.conf"]
                .validate
                .as_deref()
                .unwrap()[3],
            "%s"
        );
        fails(
            t("[units.\"a.service\"]\nreload_on = [\"/etc/zz\"]"),
            "reload_on names \"/etc/zz\", which is not a managed file",
        );
        fails(
            t("[units.\"a.service\"]\ncheck = [\"nginx\", \"-t\"]"),
            "must be an absolute path",
        );
        fails(t("[units.\"a.service\"]\ncheck = []"), "an empty command");
        fails(
            t("[files.\"/etc/nginx/nginx.conf\"]\nvalidate = [\"/usr/sbin/nginx\", \"-t\"]"),
            "exactly once",
        );
        fails(
            t("[units.\"a.service\"]\ncheck = [\"/bin/test\", \"%s\"]"),
            "has no meaning here",
        );
    }

    #[test]
    fn health_checks() {
        let d = load_mem(MemTree::default().file(
            "hosts/h1/host.toml",
            "[[health]]\nunit = \"app.service\"\n[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"5s\"\n",
        ))
        .unwrap();
        assert_eq!(d.health[0].probe, HealthProbe::Unit("app.service".into()));
        assert_eq!(d.health[0].timeout, Duration::from_secs(30));
        assert_eq!(d.health[1].timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_input_is_rejected_with_the_file_named() {
        let host = |toml: &str| {
            MemTree::default()
                .file("hosts/h1/files/etc/a", "a")
                .file("hosts/h1/host.toml", toml)
        };
        fails(host("include = ["), "hosts/h1/host.toml");
        fails(host("packagez = 1"), "unknown field `packagez`");
        fails(
            host("[reboot]\nwhen = \"sometimes\""),
            "unknown variant `sometimes`, expected `never` or `required`",
        );
        fails(
            host("[reboot]\nwhen = \"never\"\nat = 3"),
            "unknown field `at`",
        );
        fails(
            host("include = [\"roles/nope\"]"),
            "include \"roles/nope\" does not exist",
        );
        fails(host("include = [\"../etc\"]"), "`..`");
        fails(host("include = [\"/etc\"]"), "relative path");
        fails(host("[files.\"/etc/a\"]\nmode = \"999\""), "mode");
        fails(
            host("[files.\"/etc/b\"]\nmode = \"0600\""),
            "not under files/",
        );
        fails(host("[files.\"/etc/a\"]\nowner = \"x;y\""), "owner");
        fails(
            host("[packages]\ninstall = [\"x; rm -rf /\"]"),
            "not a valid package name",
        );
        fails(
            host("[packages]\ninstall = [\"-oFoo\"]"),
            "not a valid package name",
        );
        fails(
            host("[packages]\ninstall = [\"a\"]\nremove = [\"a\"]"),
            "both",
        );
        fails(
            host("[packages]\nupgrade = \"some\""),
            "hosts/h1/host.toml: [packages] upgrade = \"some\": give \"none\", \"security\" or \"all\"",
        );
        fails(
            host("[units.\"app\"]\nstate = \"started\""),
            "not a unit name",
        );
        fails(host("[units.\"a.service\"]\nstate = \"running\""), "state");
        fails(
            host("[units.\"a.service\"]\nrestart_on = [\"/etc/zz\"]"),
            "restart_on",
        );
        fails(
            host("[containers.\"web\"]\nstate = \"started\""),
            "names no file",
        );
        fails(host("[[health]]\ntimeout = \"1s\""), "exactly one");
        fails(host("[[health]]\ncommand = [\"curl\"]"), "absolute");
        fails(
            MemTree::default().file("hosts/h2/host.toml", ""),
            "hosts/h1 does not exist",
        );
        fails(
            MemTree::default().file("hosts/h1/README", "x"),
            "unexpected entry",
        );
        fails(
            MemTree::default().link("hosts/h1/files/etc/x", "../../../../etc/shadow"),
            "escapes the root",
        );
        fails(
            MemTree::default()
                .file("hosts/h1/files/etc/app", "x")
                .file("hosts/h1/files/etc/app/conf", "y"),
            "a file in hosts/h1/files/etc/app but a directory",
        );
        fails(
            MemTree::default()
                .file("roles/a/files/etc/x", "1")
                .file("roles/b/files/etc/x", "2")
                .file("hosts/h1/host.toml", "include = [\"roles/a\", \"roles/b\"]"),
            "with different content",
        );
        fails(
            MemTree::default()
                .file("roles/a/host.toml", "include = [\"roles/a\"]")
                .file("hosts/h1/host.toml", "include = [\"roles/a\"]"),
            "include cycle",
        );
        fails(
            MemTree::default().file("hosts/h1/units/bad name.service", ""),
            "not a valid name",
        );
        fails(
            MemTree::default().file("hosts/h1/units/app.service.d/x.txt", ""),
            "drop-in",
        );
        fails(
            MemTree::default().file("hosts/h1/containers/web.txt", ""),
            "not a Quadlet file",
        );
        fails(
            MemTree::default()
                .file("hosts/h1/units/x.service", "")
                .file("hosts/h1/units/..d/a.conf", ""),
            "not a valid name",
        );
    }

    #[test]
    fn limits_are_enforced() {
        let t = MemTree::default()
            .file("hosts/h1/files/a", "12345")
            .file("hosts/h1/files/b", "1");
        let l = |f, t, n| Limits {
            max_file_size: f,
            max_total_size: t,
            max_files: n,
            ..Limits::default()
        };
        assert!(load(&t, "hosts/h1", &l(4, 100, 10))
            .unwrap_err()
            .message
            .contains("max_file_size"));
        assert!(load(&t, "hosts/h1", &l(100, 5, 10))
            .unwrap_err()
            .message
            .contains("max_total_size"));
        assert!(load(&t, "hosts/h1", &l(100, 100, 1))
            .unwrap_err()
            .message
            .contains("max_files"));
        assert!(load(&t, "hosts/h1", &l(5, 6, 2)).is_ok());
        // Issue 12: a limit is its own reason code.
        assert_eq!(
            load(&t, "hosts/h1", &l(4, 100, 10)).unwrap_err().reason,
            Reason::SizeLimit
        );
        let outside = MemTree::default().file("hosts/h1/files/a/../b", "x");
        assert_eq!(
            load(&outside, "hosts/h1", &l(100, 100, 10))
                .unwrap_err()
                .reason,
            Reason::InvalidPath
        );
        // Unit, drop-in and Quadlet files count too.
        let t = t
            .file("hosts/h1/units/a.service", "123456")
            .file("hosts/h1/units/a.service.d/x.conf", "1")
            .file("hosts/h1/containers/w.container", "1");
        assert!(load(&t, "hosts/h1", &l(5, 100, 10))
            .unwrap_err()
            .message
            .contains("hosts/h1/units/a.service: a.service is larger"));
        assert!(load(&t, "hosts/h1", &l(100, 100, 4))
            .unwrap_err()
            .message
            .contains("5 files exceed"));
        assert!(load(&t, "hosts/h1", &l(100, 13, 10))
            .unwrap_err()
            .message
            .contains("files total 14 bytes"));
    }

    /// Issue 12: bounds and their reason codes.
    #[test]
    fn hostile_bounds_have_their_reasons() {
        let code = |t: MemTree| load_mem(t).expect_err("must be rejected");
        let deep = format!("hosts/h1/files/{}f", "d/".repeat(40));
        let e = code(MemTree::default().file(&deep, "x"));
        assert_eq!(e.reason, Reason::SizeLimit, "{}", e.message);
        assert!(e.message.contains("limits.max_depth"), "{}", e.message);
        let e =
            code(MemTree::default().file(&format!("hosts/h1/files/etc/{}", "n".repeat(256)), "x"));
        assert_eq!(e.reason, Reason::InvalidPath, "{}", e.message);
        assert!(e.message.contains("NAME_MAX"), "{}", e.message);
        assert!(load_mem(
            MemTree::default().file(&format!("hosts/h1/files/etc/{}", "n".repeat(255)), "x")
        )
        .is_ok());
        for p in [
            "proc/sysrq-trigger",
            "sys/x",
            "dev/sda",
            "run/x",
            "etc/.motd.plumb-new",
        ] {
            let e = code(MemTree::default().file(&format!("hosts/h1/files/{p}"), "x"));
            assert_eq!(e.reason, Reason::InvalidPath, "{p}: {}", e.message);
        }
        let e = code(MemTree::default().link("hosts/h1/files/etc/x", "../../../x"));
        assert_eq!(e.reason, Reason::InvalidPath);
        let many = "[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"1h\"\n".repeat(3);
        let e = code(MemTree::default().file("hosts/h1/host.toml", &many));
        assert_eq!(e.reason, Reason::SizeLimit, "{}", e.message);
        let e = code(MemTree::default().file(
            "hosts/h1/host.toml",
            "[[health]]\ncommand = [\"/bin/true\"]\ntimeout = \"99999999999d\"\n",
        ));
        assert_eq!(e.reason, Reason::InvalidSpec);
        // A diamond of includes is applied once; more distinct roles than the limit is refused.
        let mut t = MemTree::default()
            .file("roles/a/host.toml", "include = [\"roles/c\"]")
            .file("roles/b/host.toml", "include = [\"roles/c\"]")
            .file(
                "roles/c/host.toml",
                "[[health]]\ncommand = [\"/bin/true\"]\n",
            )
            .file(
                "hosts/h1/host.toml",
                "include = [\"roles/a\", \"roles/b\", \"roles/a\"]",
            );
        assert_eq!(load_mem(t).unwrap().health.len(), 1);
        t = MemTree::default()
            .file("hosts/h1/host.toml", "include = [\"roles/a\", \"roles/b\"]")
            .file("roles/a/host.toml", "")
            .file("roles/b/host.toml", "");
        let one = Limits {
            max_includes: 1,
            ..Limits::default()
        };
        let e = load(&t, "hosts/h1", &one).unwrap_err();
        assert_eq!(e.reason, Reason::SizeLimit);
        assert!(e.message.contains("limits.max_includes"), "{}", e.message);
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target("/etc/a", "../usr/x").is_ok());
        assert!(check_link_target("/etc/a", "../../x").is_err());
        assert!(check_link_target("/etc/a", "/anything").is_ok());
        assert!(check_link_target("/a", "b/../../c").is_err());
    }
}
