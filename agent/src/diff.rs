//! `plumb diff BASE HEAD`: per host, what moving from commit BASE to HEAD of a fleet-repo checkout
//! would change, for review (DESIGN section 3). The hosts are the directories under `hosts/` and
//! the hosts the status branches know that a fleet.toml `[[assign]]` pattern matches, at either
//! commit. Templates render with each host's published facts. [`compare`] is pure: desired state
//! against desired state, assuming the host runs BASE as Git asks.

use crate::config::Limits;
use crate::resource::{container, unit};
use crate::spec::facts::Facts;
use crate::spec::{Content, Desired, FileSpec, HealthProbe, RenderCache, RunState, UnitSpec};
use crate::status::report::Report;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What to compare.
pub struct Options {
    /// The checkout (its Git repository is read; the worktree is not).
    pub dir: PathBuf,
    pub base: String,
    pub head: String,
    /// Only hosts matching one of these globs (all when empty).
    pub hosts: Vec<String>,
    /// Repository holding the status branches (default: the checkout's own refs).
    pub status_repo: Option<String>,
}

/// One change on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// "file", "unit", "container", "package", "health".
    pub kind: &'static str,
    /// file: create, update, delete; unit/container: start, restart, reload, stop, install,
    /// update; package: install, remove, change, unmanage; health: run.
    pub action: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
    /// A unified diff (BASE -> HEAD), or why none is shown ("(secret: content hidden)").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// One host that HEAD changes, rejects, or that could not be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct HostDiff {
    pub host: String,
    /// "changed", "rejected", or "not-rendered" (no facts published).
    pub state: &'static str,
    /// The reason code (docs/reasons.md) of a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub base: String,
    pub head: String,
    /// Hosts with a change, a rejection, or no facts; hosts without any change are only counted.
    pub hosts: Vec<HostDiff>,
    pub changed: usize,
    pub rejected: usize,
    pub not_rendered: usize,
    pub unchanged: usize,
    /// Template renders done (each distinct template and context once).
    pub renders: u64,
}

impl Summary {
    /// 1 when a host would reject HEAD, else 2 when any host changes, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.rejected > 0 {
            1
        } else if self.changed > 0 {
            2
        } else {
            0
        }
    }
}

/// Reads both commits and every host's facts, and compares.
pub fn run(o: &Options) -> Result<Summary> {
    let git_dir = git_dir(&o.dir)?;
    let base = rev_parse(&o.dir, &o.base)?;
    let head = rev_parse(&o.dir, &o.head)?;
    let limits = Limits::default();
    let local = crate::source::git::LocalRepo::open_or_init(&git_dir)?
        .with_file_limit(limits.max_file_size);
    // Roles are read for every host that includes them: decompressed once.
    let cache_bytes = 64 << 20;
    let trees = [
        local.tree(base)?.with_object_cache(cache_bytes),
        local.tree(head)?.with_object_cache(cache_bytes),
    ];
    let mut dirs = BTreeSet::new();
    for t in &trees {
        dirs.extend(host_dirs(t)?);
    }
    dirs.retain(|h| crate::config::validate_host(h).is_ok());
    let facts = read_facts(&local, o.status_repo.as_deref(), &dirs)?;
    // Every host either commit knows: its directory, or a pattern matching a reported host.
    let mut hosts = dirs;
    for t in &trees {
        if let Ok(f) = crate::spec::fleet_toml(t) {
            for h in facts.keys() {
                if f.matching(h).next().is_some() {
                    hosts.insert(h.clone());
                }
            }
        }
    }
    hosts.retain(|h| {
        crate::config::validate_host(h).is_ok()
            && (o.hosts.is_empty() || o.hosts.iter().any(|p| crate::spec::glob_match(p, h)))
    });
    let mut cache = RenderCache::default();
    let mut s = Summary {
        base: base.to_string(),
        head: head.to_string(),
        hosts: Vec::new(),
        changed: 0,
        rejected: 0,
        not_rendered: 0,
        unchanged: 0,
        renders: 0,
    };
    let no_facts = Facts::default();
    for h in &hosts {
        let host_facts = facts.get(h).and_then(|f| f.as_ref());
        let d = host(
            &trees,
            h,
            host_facts.unwrap_or(&no_facts),
            host_facts.is_none(),
            &limits,
            &mut cache,
        );
        match d.state {
            "changed" => s.changed += 1,
            "rejected" => s.rejected += 1,
            "not-rendered" => s.not_rendered += 1,
            _ => {
                s.unchanged += 1;
                continue;
            }
        }
        s.hosts.push(d);
    }
    s.renders = cache.renders;
    Ok(s)
}

/// What one commit asks of a host.
enum Loaded {
    /// Neither a directory nor a fleet.toml entry: not a host of this commit.
    Absent,
    /// Its templates need facts it has not published.
    NoFacts,
    Rejected(crate::spec::SpecError),
    Desired(Box<Desired>),
}

fn load(
    tree: &crate::source::git::CommitTree,
    host: &str,
    facts: &Facts,
    facts_missing: bool,
    limits: &Limits,
    cache: &mut RenderCache,
) -> Loaded {
    let dir = format!("hosts/{host}");
    let assigned = crate::spec::fleet_toml(tree)
        .map(|f| f.matching(host).next().is_some())
        .unwrap_or(true);
    let has_dir = tree.is_dir(&dir).unwrap_or(false);
    if !assigned && !has_dir {
        return Loaded::Absent;
    }
    if facts_missing {
        match crate::spec::has_templates(tree, &dir, limits, host) {
            Ok(true) => return Loaded::NoFacts,
            Ok(false) => {}
            Err(e) => return Loaded::Rejected(e),
        }
    }
    let inputs = crate::spec::Inputs {
        host,
        facts,
        cache: Some(cache),
        keys: None,
    };
    let guard = crate::spec::guard::Guard::packaged();
    let loaded = crate::spec::load_with(tree, &dir, limits, inputs)
        .and_then(|d| crate::spec::guard::check(&d, &guard).map(|()| d));
    match loaded {
        Ok(mut d) => {
            // A template reading `secrets` changes with the secrets.toml.age of its layers.
            let layers = if d
                .files
                .values()
                .any(|f| f.secret.is_some() && !f.origin.ends_with(crate::spec::secret::SUFFIX))
            {
                crate::spec::layers(tree, &dir, limits, host).unwrap_or_default()
            } else {
                Vec::new()
            };
            mark_secrets(tree, &layers, &mut d);
            Loaded::Desired(Box::new(d))
        }
        Err(e) => Loaded::Rejected(e),
    }
}

/// Without the host's key a secret's content is a placeholder: its identity is the source it
/// came from (the ciphertext or the template) with the placeholder output, so a changed secret
/// shows as changed, and never its content.
fn mark_secrets(tree: &crate::source::git::CommitTree, layers: &[String], d: &mut Desired) {
    use crate::spec::tree::FleetTree;
    let mut tables = Sha256::new();
    for l in layers {
        let path = format!("{l}/{}", crate::spec::secret::SECRETS_TOML);
        if let Ok(Some(data)) = tree.read(&path, u64::MAX) {
            tables.update(path.as_bytes());
            tables.update(&data);
        }
    }
    let tables = tables.finalize();
    for f in d.files.values_mut() {
        if f.secret.is_none() {
            continue;
        }
        let mut h = Sha256::new();
        if let Ok(Some(src)) = tree.read(&f.origin, u64::MAX) {
            h.update(&src);
        }
        if !f.origin.ends_with(crate::spec::secret::SUFFIX) {
            h.update(tables);
        }
        h.update(b"\0");
        if let Content::Regular(c) = &f.content {
            h.update(c);
        }
        f.secret = Some(h.finalize().into());
    }
}

fn host(
    trees: &[crate::source::git::CommitTree; 2],
    h: &str,
    facts: &Facts,
    facts_missing: bool,
    limits: &Limits,
    cache: &mut RenderCache,
) -> HostDiff {
    let mut d = HostDiff {
        host: h.to_string(),
        state: "unchanged",
        reason: None,
        message: String::new(),
        changes: Vec::new(),
    };
    let head = load(&trees[1], h, facts, facts_missing, limits, cache);
    let base = load(&trees[0], h, facts, facts_missing, limits, cache);
    let empty = Desired::default();
    let (base_desired, note) = match &base {
        Loaded::Desired(b) => (&**b, String::new()),
        Loaded::Absent => (&empty, "new host".to_string()),
        Loaded::Rejected(e) => (
            &empty,
            format!(
                "BASE was rejected too ({}): compared with nothing",
                e.reason.as_str()
            ),
        ),
        Loaded::NoFacts => (&empty, String::new()),
    };
    match head {
        Loaded::NoFacts => {
            d.state = "not-rendered";
            d.message =
                "not rendered: no facts (the host has not published a status branch with [facts])"
                    .into();
        }
        Loaded::Rejected(e) => {
            d.state = "rejected";
            d.reason = Some(e.reason.as_str());
            d.message = e.message.clone();
        }
        Loaded::Absent => {
            if matches!(base, Loaded::Absent) {
                return d;
            }
            // What the agent on it does: it rejects the commit and keeps its last one.
            d.state = "rejected";
            d.reason = Some(crate::reason::Reason::InvalidSpec.as_str());
            d.message = format!("hosts/{h} does not exist at HEAD and no fleet.toml [[assign]] matches it: the host's agent would reject HEAD and keep its last commit (stop plumb on it before removing it from the fleet)");
        }
        Loaded::Desired(hd) => {
            d.changes = compare(base_desired, &hd);
            if !d.changes.is_empty() {
                d.state = "changed";
                d.message = note;
            }
        }
    }
    d
}

/// Desired at BASE -> desired at HEAD: what the agent would do, for a host that runs BASE as Git
/// asks (units in their desired state). Pure.
pub fn compare(base: &Desired, head: &Desired) -> Vec<Change> {
    let mut out = Vec::new();
    let changed_files = files(base, head, &mut out);
    units(base, head, &changed_files, &mut out);
    containers(base, head, &mut out);
    packages(base, head, &mut out);
    if !out.is_empty() {
        for c in &head.health {
            let name = match &c.probe {
                HealthProbe::Unit(u) => format!("unit {u} active"),
                HealthProbe::Command(argv) => format!("command {}", argv.join(" ")),
            };
            out.push(change("health", "run", name));
        }
    }
    out
}

fn change(kind: &'static str, action: &'static str, name: String) -> Change {
    Change {
        kind,
        action,
        name,
        why: Vec::new(),
        diff: None,
    }
}

/// File changes; returns the paths created, updated or deleted.
fn files(base: &Desired, head: &Desired, out: &mut Vec<Change>) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    let paths: BTreeSet<&String> = base.files.keys().chain(head.files.keys()).collect();
    for path in paths {
        let (b, h) = (base.files.get(path), head.files.get(path));
        let mut c = match (b, h) {
            (None, Some(h)) => {
                let mut c = change("file", "create", path.clone());
                c.diff = content_diff(None, h);
                c
            }
            (Some(_), None) => change("file", "delete", path.clone()),
            (Some(b), Some(h)) if b.digest() != h.digest() => {
                let mut c = change("file", "update", path.clone());
                if b.mode != h.mode {
                    c.why.push(format!("mode {:o} -> {:o}", b.mode, h.mode));
                }
                if (&b.owner, &b.group) != (&h.owner, &h.group) {
                    c.why.push(format!(
                        "owner {}:{} -> {}:{}",
                        or_root(&b.owner),
                        or_root(&b.group),
                        or_root(&h.owner),
                        or_root(&h.group)
                    ));
                }
                c.diff = content_diff(Some(b), h);
                c
            }
            _ => continue,
        };
        c.why.retain(|w| !w.is_empty());
        changed.insert(path.clone());
        out.push(c);
    }
    changed
}

fn or_root(s: &str) -> &str {
    if s.is_empty() {
        "root"
    } else {
        s
    }
}

/// A unified diff of text content; secrets and binaries summarized (as `plan` does).
fn content_diff(old: Option<&FileSpec>, new: &FileSpec) -> Option<String> {
    if old.is_some_and(|o| o.secret.is_some()) || new.secret.is_some() {
        return Some("(secret: content hidden)".into());
    }
    if old.is_some_and(|o| o.is_secret()) || new.is_secret() {
        return Some("(content not shown: the file is not world-readable)".into());
    }
    let text = |f: &FileSpec| -> Option<Vec<u8>> {
        match &f.content {
            Content::Regular(d) => Some(d.clone()),
            Content::Symlink(t) => Some(format!("-> {t}\n").into_bytes()),
        }
    };
    let a = old.and_then(text).unwrap_or_default();
    let b = text(new).unwrap_or_default();
    if a == b {
        return None;
    }
    match (std::str::from_utf8(&a), std::str::from_utf8(&b)) {
        (Ok(a), Ok(b)) => Some(
            similar::TextDiff::from_lines(a, b)
                .unified_diff()
                .context_radius(3)
                .header("BASE", "HEAD")
                .to_string(),
        ),
        _ => Some(format!(
            "(binary content, {} -> {} bytes)",
            a.len(),
            b.len()
        )),
    }
}

/// The state a unit is kept in: `None` when it is left to its trigger (or is a template).
fn want(spec: &UnitSpec, triggered: &BTreeSet<String>) -> Option<RunState> {
    spec.state.or(
        if triggered.contains(&spec.name) || unit::is_template(&spec.name) {
            None
        } else {
            Some(RunState::Started)
        },
    )
}

fn units(base: &Desired, head: &Desired, changed_files: &BTreeSet<String>, out: &mut Vec<Change>) {
    let (tb, th) = (unit::triggered(&base.units), unit::triggered(&head.units));
    let names: BTreeSet<&String> = base.units.keys().chain(head.units.keys()).collect();
    for name in names {
        let c = match (base.units.get(name), head.units.get(name)) {
            (None, Some(h)) => {
                let action = match want(h, &th) {
                    Some(RunState::Started) => "start",
                    Some(RunState::Stopped) | None => "install",
                };
                let mut c = change("unit", action, name.clone());
                c.why.push(if h.file.is_some() {
                    "unit file installed".into()
                } else {
                    "now managed by Git".into()
                });
                c
            }
            (Some(b), None) => {
                let mut c = change("unit", "stop", name.clone());
                c.why.push(if b.file.is_some() {
                    "left Git: stopped, disabled and removed".into()
                } else {
                    "left Git: its drop-ins removed".into()
                });
                if b.file.is_none() {
                    c.action = "update";
                }
                c
            }
            (Some(b), Some(h)) => {
                let mut why = Vec::new();
                if b.file != h.file {
                    why.push("unit file changed".to_string());
                }
                let confs: BTreeSet<&String> = b.dropins.keys().chain(h.dropins.keys()).collect();
                for conf in confs {
                    if b.dropins.get(conf) != h.dropins.get(conf) {
                        why.push(format!("drop-in {conf} changed"));
                    }
                }
                let files_changed = !why.is_empty();
                let restart_on: Vec<&String> = h
                    .restart_on
                    .iter()
                    .filter(|p| changed_files.contains(*p))
                    .collect();
                let reload_on: Vec<&String> = h
                    .reload_on
                    .iter()
                    .filter(|p| changed_files.contains(*p))
                    .collect();
                let (wb, wh) = (want(b, &tb), want(h, &th));
                let action = match wh {
                    Some(RunState::Started) if wb != Some(RunState::Started) => "start",
                    Some(RunState::Stopped) if wb != Some(RunState::Stopped) => "stop",
                    Some(RunState::Stopped) => "update",
                    _ if (files_changed || !restart_on.is_empty()) && unit::restartable(name) => {
                        for p in &restart_on {
                            why.push(format!("{p} changed (restart_on)"));
                        }
                        "restart"
                    }
                    _ if !reload_on.is_empty() => {
                        for p in &reload_on {
                            why.push(format!("{p} changed (reload_on)"));
                        }
                        "reload"
                    }
                    _ => "update",
                };
                if wh.is_none() && matches!(action, "restart" | "reload") {
                    why.push("if it runs (left to its trigger)".into());
                }
                if b.enabled != h.enabled {
                    why.push(format!("enabled {:?} -> {:?}", b.enabled, h.enabled));
                }
                if action == "update" && why.is_empty() && unit::digest(b) == unit::digest(h) {
                    continue;
                }
                if action == "update" && why.is_empty() {
                    why.push("settings changed".into());
                }
                let mut c = change("unit", action, name.clone());
                c.why = why;
                c
            }
            (None, None) => continue,
        };
        out.push(c);
    }
}

fn containers(base: &Desired, head: &Desired, out: &mut Vec<Change>) {
    let names: BTreeSet<&String> = base
        .containers
        .keys()
        .chain(head.containers.keys())
        .collect();
    for name in names {
        let c = match (base.containers.get(name), head.containers.get(name)) {
            (None, Some(h)) => {
                let action = match h.state {
                    RunState::Started => "start",
                    RunState::Stopped => "install",
                };
                let mut c = change("container", action, name.clone());
                c.why
                    .push(format!("Quadlet file installed ({})", h.service_name()));
                c
            }
            (Some(b), None) => {
                let mut c = change("container", "stop", name.clone());
                c.why.push(format!(
                    "left Git: {} stopped and removed",
                    b.service_name()
                ));
                c
            }
            (Some(b), Some(h)) if container::digest(b) != container::digest(h) => {
                let action = match (b.state, h.state) {
                    (RunState::Stopped, RunState::Started) => "start",
                    (_, RunState::Stopped) if b.state == RunState::Started => "stop",
                    (_, RunState::Stopped) => "update",
                    _ => "restart",
                };
                let mut c = change("container", action, name.clone());
                if b.content != h.content {
                    c.why.push("Quadlet file changed".into());
                    c.diff = match (
                        std::str::from_utf8(&b.content),
                        std::str::from_utf8(&h.content),
                    ) {
                        (Ok(x), Ok(y)) => Some(
                            similar::TextDiff::from_lines(x, y)
                                .unified_diff()
                                .context_radius(3)
                                .header("BASE", "HEAD")
                                .to_string(),
                        ),
                        _ => None,
                    };
                }
                c
            }
            _ => continue,
        };
        out.push(c);
    }
}

/// A package entry's name: "nginx=1.26.0-1" -> "nginx".
fn package_name(entry: &str) -> &str {
    entry.split(['=', ' ']).next().unwrap_or(entry)
}

fn packages(base: &Desired, head: &Desired, out: &mut Vec<Change>) {
    let (b, h) = (&base.packages, &head.packages);
    let (b_install, h_install) = (b.entries(), h.entries());
    let gone: BTreeMap<&str, &String> = b_install
        .difference(&h_install)
        .map(|e| (package_name(e), e))
        .collect();
    let mut changed = BTreeSet::new();
    for e in h_install.difference(&b_install) {
        let name = package_name(e);
        let mut c = match gone.get(name) {
            Some(old) => {
                changed.insert(name);
                let mut c = change("package", "change", name.to_string());
                c.why.push(format!("{old} -> {e}"));
                c
            }
            None => change("package", "install", e.clone()),
        };
        c.why.retain(|w| !w.is_empty());
        out.push(c);
    }
    for (name, e) in &gone {
        if changed.contains(name) || h.remove.contains(*e) || h.remove.contains(*name) {
            continue;
        }
        let mut c = change("package", "unmanage", (*e).clone());
        c.why
            .push("no longer in [packages] install: left installed".into());
        out.push(c);
    }
    for e in h.remove.difference(&b.remove) {
        out.push(change("package", "remove", e.clone()));
    }
}

/// The text `plumb diff` prints.
pub fn text(s: &Summary) -> String {
    let mut t = String::new();
    for h in &s.hosts {
        match h.state {
            "rejected" => t.push_str(&format!(
                "{}: rejected [{}]: {}\n",
                h.host,
                h.reason.unwrap_or("-"),
                h.message
            )),
            "not-rendered" => t.push_str(&format!("{}: {}\n", h.host, h.message)),
            _ => {
                let n = h.changes.len();
                t.push_str(&format!(
                    "{}: {n} change{}{}\n",
                    h.host,
                    if n == 1 { "" } else { "s" },
                    if h.message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", h.message)
                    }
                ));
                for c in &h.changes {
                    t.push_str(&format!("  {} {} {}", c.action, c.kind, c.name));
                    if !c.why.is_empty() {
                        t.push_str(&format!(": {}", c.why.join(", ")));
                    }
                    t.push('\n');
                    if let Some(d) = &c.diff {
                        for line in d.lines() {
                            t.push_str(&format!("      {line}\n"));
                        }
                    }
                }
            }
        }
    }
    t.push_str(&format!(
        "diff {}..{}: {} host{} changed, {} rejected, {} not rendered (no facts), {} unchanged\n",
        s.base.get(..12).unwrap_or(&s.base),
        s.head.get(..12).unwrap_or(&s.head),
        s.changed,
        if s.changed == 1 { "" } else { "s" },
        s.rejected,
        s.not_rendered,
        s.unchanged
    ));
    t
}

/// The checkout's git directory (a worktree's own one works too).
fn git_dir(dir: &Path) -> Result<PathBuf> {
    let out = git(dir, &["rev-parse", "--absolute-git-dir"])
        .with_context(|| format!("{}: not a Git checkout", dir.display()))?;
    Ok(PathBuf::from(out))
}

fn rev_parse(dir: &Path, rev: &str) -> Result<gix::ObjectId> {
    if rev.starts_with('-') {
        bail!("{rev:?}: not a commit");
    }
    let out = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .with_context(|| format!("{rev:?}: not a commit of {}", dir.display()))?;
    gix::ObjectId::from_hex(out.as_bytes()).with_context(|| format!("{rev:?}: git said {out:?}"))
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The names of the directories under `hosts/` of a commit.
fn host_dirs(tree: &crate::source::git::CommitTree) -> Result<Vec<String>> {
    tree.subdirs("hosts")
}

/// Each host with a status branch: its published facts (`None` when its report has none).
/// With `{host}` in the URL (a status repository per host), the hosts in `dirs` are read, one
/// repository each, as `plumb fleet` does.
fn read_facts(
    local: &crate::source::git::LocalRepo,
    status_repo: Option<&str>,
    dirs: &BTreeSet<String>,
) -> Result<BTreeMap<String, Option<Facts>>> {
    let prefix = "refs/heads/status/";
    let mut refs: Vec<(String, gix::ObjectId)> = Vec::new();
    let scratch;
    let repo = match status_repo {
        Some(url) => {
            crate::config::validate_repo(url).context("--status-repo")?;
            scratch = tempfile::Builder::new()
                .prefix("plumb-diff-")
                .tempdir()
                .context("creating a scratch directory for the fetch")?;
            let ep = crate::status::remote::Endpoint {
                url: url.to_string(),
                ssh_key: None,
                token_file: None,
                known_hosts: None,
            };
            let repo = crate::source::repo::open_bare(scratch.path(), Some(ep.ssh_command()))?;
            let depth = Some(std::num::NonZeroU32::MIN);
            if url.contains("{host}") {
                for h in dirs {
                    let one = crate::status::remote::Endpoint {
                        url: url.replace("{host}", h),
                        ..ep.clone()
                    };
                    let branch = format!("{prefix}{h}");
                    let spec = format!("+{branch}:refs/remotes/{h}/status");
                    // A host that has not reported (or whose repository is missing) has no facts.
                    match crate::status::remote::fetch(&repo, &one, &[spec], depth) {
                        Ok(f) => {
                            if let Some((_, id)) = f.remote_refs.iter().find(|(n, _)| *n == branch)
                            {
                                refs.push((h.clone(), *id));
                            }
                        }
                        Err(e) => tracing::warn!("{}: {e:#}", one.redacted()),
                    }
                }
            } else {
                let spec = format!("+{prefix}*:refs/remotes/origin/status/*");
                let f = crate::status::remote::fetch(&repo, &ep, &[spec], depth)?;
                for (name, id) in f.remote_refs {
                    if let Some(h) = name.strip_prefix(prefix) {
                        refs.push((h.to_string(), id));
                    }
                }
            }
            repo
        }
        None => {
            let repo = local.open(None)?;
            // Local branches win over the remote-tracking ones of the same host.
            for p in ["refs/remotes/origin/status/", prefix] {
                let platform = repo.references()?;
                for r in platform.prefixed(p)? {
                    let mut r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
                    let name = r.name().as_bstr().to_string();
                    let id = r.peel_to_id()?.detach();
                    if let Some(h) = name.strip_prefix(p) {
                        refs.retain(|(x, _)| x != h);
                        refs.push((h.to_string(), id));
                    }
                }
            }
            repo
        }
    };
    let mut out = BTreeMap::new();
    for (h, id) in refs {
        let facts = status_toml(&repo, id)
            .ok()
            .and_then(|t| Report::from_toml(&t).ok())
            .and_then(|r| r.facts);
        out.insert(h, facts);
    }
    Ok(out)
}

/// status.toml of a status commit.
fn status_toml(repo: &gix::Repository, id: gix::ObjectId) -> Result<String> {
    let tree = repo.find_commit(id)?.tree()?;
    let entry = tree
        .find_entry("status.toml")
        .context("the status commit has no status.toml")?;
    // A report is a few KB; a hostile status branch gets no more memory than this.
    let size = repo.find_header(entry.object_id())?.size();
    if size > MAX_STATUS_TOML {
        bail!("status.toml is {size} bytes, over {MAX_STATUS_TOML}");
    }
    let blob = repo.find_blob(entry.object_id())?;
    Ok(String::from_utf8_lossy(&blob.data).into_owned())
}

const MAX_STATUS_TOML: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ContainerSpec, Packages};

    fn file(data: &str, mode: u32) -> FileSpec {
        FileSpec {
            content: Content::Regular(data.as_bytes().to_vec()),
            mode,
            owner: String::new(),
            group: String::new(),
            origin: "roles/web/files/etc/a.conf".into(),
            validate: None,
            secret: None,
        }
    }

    fn unit(name: &str, file: &str) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            file: Some(file.as_bytes().to_vec()),
            dropins: BTreeMap::new(),
            enabled: None,
            state: None,
            restart_on: vec![],
            reload_on: vec![],
            check: None,
        }
    }

    fn short(c: &[Change]) -> Vec<String> {
        c.iter()
            .map(|c| format!("{} {} {}", c.action, c.kind, c.name))
            .collect()
    }

    #[test]
    fn packages_by_entry_a_pin_change_is_a_change() {
        let pk =
            |i: &[&str], r: &[&str]| Packages::from_entries(i.iter().copied(), r.iter().copied());
        let base = Desired {
            packages: pk(&["nginx=1.26.0-1", "curl", "jq"], &[]),
            ..Desired::default()
        };
        let head = Desired {
            packages: pk(&["nginx=1.26.1-1", "curl", "htop"], &["jq"]),
            ..Desired::default()
        };
        let c = compare(&base, &head);
        assert_eq!(
            short(&c),
            [
                "install package htop",
                "change package nginx",
                "remove package jq"
            ]
        );
        let nginx = c.iter().find(|c| c.name == "nginx").unwrap();
        assert_eq!(nginx.why, ["nginx=1.26.0-1 -> nginx=1.26.1-1"]);
        assert!(compare(&base, &base).is_empty());
    }

    #[test]
    fn units_restart_reload_start_stop() {
        let mut base = Desired::default();
        base.files.insert("/etc/a.conf".into(), file("a\n", 0o644));
        base.files
            .insert("/etc/site.conf".into(), file("s\n", 0o644));
        let mut app = unit("app.service", "[Service]\nExecStart=/bin/app\n");
        app.restart_on = vec!["/etc/a.conf".into()];
        let mut web = unit("web.service", "[Service]\nExecStart=/bin/web\n");
        web.reload_on = vec!["/etc/site.conf".into()];
        let old = unit("old.service", "[Service]\nExecStart=/bin/old\n");
        let mut off = unit("off.service", "[Service]\nExecStart=/bin/off\n");
        off.state = Some(RunState::Stopped);
        for u in [&app, &web, &old, &off] {
            base.units.insert(u.name.clone(), u.clone());
        }
        let mut head = base.clone();
        // Nothing changed: nothing to do, and no health checks run.
        head.health.push(crate::spec::HealthCheck {
            probe: HealthProbe::Unit("app.service".into()),
            timeout: std::time::Duration::from_secs(5),
        });
        assert!(compare(&base, &head).is_empty());
        head.files.insert("/etc/a.conf".into(), file("b\n", 0o644));
        head.files
            .insert("/etc/site.conf".into(), file("t\n", 0o644));
        head.units.remove("old.service");
        head.units.get_mut("off.service").unwrap().state = Some(RunState::Started);
        head.units
            .get_mut("web.service")
            .unwrap()
            .dropins
            .insert("x.conf".into(), b"[Service]\n".to_vec());
        let c = compare(&base, &head);
        assert_eq!(
            short(&c),
            [
                "update file /etc/a.conf",
                "update file /etc/site.conf",
                "restart unit app.service",
                "start unit off.service",
                "stop unit old.service",
                // Its own drop-in changed: a restart wins over the reload.
                "restart unit web.service",
                "run health unit app.service active",
            ]
        );
        assert_eq!(c[2].why, ["/etc/a.conf changed (restart_on)"]);
        assert_eq!(c[5].why, ["drop-in x.conf changed"]);
        // Only the reload_on file: a reload.
        let mut h2 = head.clone();
        h2.units.insert("web.service".into(), web.clone());
        let c = compare(&base, &h2);
        let w = c.iter().find(|c| c.name == "web.service").unwrap();
        assert_eq!(
            (w.action, w.why.clone()),
            (
                "reload",
                vec!["/etc/site.conf changed (reload_on)".to_string()]
            )
        );
    }

    #[test]
    fn secrets_and_unreadable_files_show_no_content() {
        let base = Desired::default();
        let mut head = Desired::default();
        let mut s = file("hunter2\n", 0o600);
        s.secret = Some([1; 32]);
        head.files.insert("/etc/secret".into(), s);
        head.files
            .insert("/etc/private".into(), file("private\n", 0o600));
        let c = compare(&base, &head);
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("private\\n"),
            "{text}"
        );
        assert_eq!(c[1].diff.as_deref(), Some("(secret: content hidden)"));
        assert!(c[0].diff.as_deref().unwrap().contains("not world-readable"));
    }

    #[test]
    fn containers() {
        let spec = |content: &str, state| ContainerSpec {
            file_name: "web.container".into(),
            content: content.as_bytes().to_vec(),
            state,
        };
        let mut base = Desired::default();
        base.containers.insert(
            "web.container".into(),
            spec("[Container]\nImage=a\n", RunState::Started),
        );
        let mut head = base.clone();
        head.containers.insert(
            "web.container".into(),
            spec("[Container]\nImage=b\n", RunState::Started),
        );
        let c = compare(&base, &head);
        assert_eq!(short(&c), ["restart container web.container"]);
        assert!(c[0].diff.as_deref().unwrap().contains("+Image=b"));
        head.containers.insert(
            "web.container".into(),
            spec("[Container]\nImage=a\n", RunState::Stopped),
        );
        assert_eq!(
            short(&compare(&base, &head)),
            ["stop container web.container"]
        );
        assert_eq!(
            short(&compare(&head, &Desired::default())),
            ["stop container web.container"]
        );
    }
}
