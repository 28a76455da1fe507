//! Files: observe the managed paths, plan (pure) what makes them match Git, apply atomically.

use super::{Apply, Context, Outcome, Step};
use crate::host::fs::{HostFs, Meta, Observed};
use crate::host::{Fault, Host};
use crate::spec::{Content, Desired, FileSpec};
use crate::state::{Backup, ManagedFile, State, StateDir};
use crate::status::report::{Kind, ResourceReport, ResourceState};
use anyhow::Result;
use std::collections::BTreeMap;

/// Managed files, symlinks and the directories plumb created for them.
pub struct FileKind;

impl super::Kind for FileKind {
    const NAME: &'static str = "file";
    type Want = BTreeMap<String, FileSpec>;
    type Have = BTreeMap<String, FileObs>;
    type Change = FileChange;

    fn want(desired: &Desired) -> &Self::Want {
        &desired.files
    }

    fn in_use(want: &Self::Want, state: &State) -> bool {
        !want.is_empty() || !state.files.is_empty()
    }

    fn observe(host: &Host, want: &Self::Want, state: &State, _: &StateDir) -> Self::Have {
        observe(&host.fs, want, &state.files)
    }

    fn plan(want: &Self::Want, have: &Self::Have, state: &State, ctx: &Context) -> Vec<FileChange> {
        let mut changes = plan(want, have, &state.files);
        if ctx.installing_packages {
            for c in changes.iter_mut().filter(|c| c.is_create()) {
                c.detail = MAY_BE_SHIPPED.into();
            }
        }
        changes
    }

    fn report(want: &Self::Want, have: &Self::Have, changes: &[FileChange]) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = changes
            .iter()
            .map(|c| {
                let (state, detail, lines) = if let FileAction::Fail(e) = &c.action {
                    (ResourceState::Failed, e.clone(), vec![])
                } else if c.touches_host() {
                    let mut lines = vec![c.describe()];
                    if let (Some(s), Ok(o)) = (want.get(&c.path), &have[&c.path].observed) {
                        lines.extend(diff(s, o));
                    }
                    (ResourceState::Drifted, c.detail.clone(), lines)
                } else {
                    (ResourceState::Ok, c.detail.clone(), vec![])
                };
                outcome(c, state, detail, lines)
            })
            .collect();
        super::fill_ok(&mut out, Kind::File, want.keys());
        out
    }

    fn apply(
        host: &Host,
        want: &Self::Want,
        have: &Self::Have,
        changes: &[FileChange],
        run: &mut Apply,
    ) -> Result<Vec<Outcome>> {
        record_intent(changes, run)?;
        let fs = &host.fs;
        let mut out = Vec::new();
        // File writes are synced together after the loop (see `HostFs::begin_batch`).
        fs.begin_batch();
        for c in changes {
            if run.stopping() {
                run.stopped = true;
                break;
            }
            let ids = have[&c.path].ids.clone().unwrap_or((0, 0));
            let applied = apply_one(
                fs,
                run.state_dir,
                c,
                want.get(&c.path),
                ids,
                &mut run.state.files,
            );
            out.push(match applied {
                Err(e) => {
                    tracing::error!(kind = "file", name = %c.path, error = %format!("{e:#}"), "failed: {}: {e:#}", c.describe());
                    outcome(c, ResourceState::Failed, format!("{e:#}"), vec![])
                }
                Ok(()) if c.touches_host() => {
                    tracing::info!(message_id = crate::logging::id::change(c.drift), kind = "file", name = %c.path, action = c.action.name(), drift = c.drift, "applied: {}", c.describe());
                    outcome(c, resource_state(c), c.detail.clone(), vec![c.describe()])
                }
                Ok(()) => outcome(c, resource_state(c), c.detail.clone(), vec![]),
            });
        }
        super::fill_ok(&mut out, Kind::File, want.keys());
        // The files are in place, durably, before units restart on them and before the state
        // says the commit is applied. If that fails (a full disk), no staged file was put in
        // place: each written one is reported failed, and the next pass writes it again (its
        // content differs from the inventory's).
        if let Err(e) = fs.commit_batch() {
            let e = format!("{e:#}");
            tracing::error!(kind = "file", error = %e, "failed to put the written files in place: {e}");
            for o in out.iter_mut().filter(|o| {
                matches!(
                    o.report.state,
                    ResourceState::Changed | ResourceState::DriftCorrected
                )
            }) {
                o.report.state = ResourceState::Failed;
                o.report.detail = e.clone();
            }
        }
        Ok(out)
    }
}

/// Records intent first: a pass killed mid-way still knows every path it may have written.
fn record_intent(changes: &[FileChange], run: &mut Apply) -> Result<()> {
    if !changes
        .iter()
        .any(|c| c.touches_host() || c.action == FileAction::Record)
    {
        return Ok(());
    }
    for c in changes
        .iter()
        .filter(|c| matches!(c.action, FileAction::Write { backup: false }))
    {
        run.state.files.entry(c.path.clone()).or_default();
    }
    run.state_dir.save(run.state)
}

fn outcome(c: &FileChange, state: ResourceState, detail: String, lines: Vec<String>) -> Outcome {
    Outcome {
        report: ResourceReport {
            kind: Kind::File,
            name: c.path.clone(),
            state,
            detail,
        },
        drift: c.drift,
        masked: false,
        lines,
    }
}

fn resource_state(c: &FileChange) -> ResourceState {
    match c.action {
        FileAction::Remove { .. } => ResourceState::Pruned,
        FileAction::Record | FileAction::Fail(_) => ResourceState::Ok,
        _ if c.drift => ResourceState::DriftCorrected,
        _ => ResourceState::Changed,
    }
}

impl FileAction {
    /// For log fields.
    pub fn name(&self) -> &'static str {
        match self {
            FileAction::Record => "record",
            FileAction::Write { .. } => "write",
            FileAction::SetMeta => "set-meta",
            FileAction::Remove { restore: Some(_) } => "restore",
            FileAction::Remove { restore: None } => "delete",
            FileAction::Fail(_) => "fail",
        }
    }
}

/// The detail of a file `plan` would create while the same pass installs packages: one of them
/// may ship it, and then it is an update of the package's file, kept as a backup.
pub const MAY_BE_SHIPPED: &str = "absent now; if a package this pass installs ships it, plumb keeps that as a backup and replaces it";

impl FileChange {
    /// Writes a file that is absent now (Git's new file, not one deleted on the host).
    fn is_create(&self) -> bool {
        matches!(self.action, FileAction::Write { .. }) && self.detail == "created"
    }
}

/// What the host has at one path, and the owner ids Git's names resolve to.
#[derive(Debug, Clone)]
pub struct FileObs {
    pub observed: Result<Observed, Fault>,
    pub ids: Result<(u32, u32), Fault>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// The host already matches; only the inventory learns it.
    Record,
    /// Write content and metadata; `backup` keeps what was there before plumb (first claim).
    Write { backup: bool },
    /// Only owner or mode differ.
    SetMeta,
    /// Git no longer names the path: restore what was there before plumb, or delete it.
    Remove { restore: Option<Backup> },
    /// Cannot be applied; the reason.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub action: FileAction,
    /// Git did not change but the host did.
    pub drift: bool,
    /// What differs, for people ("created", "mode 0644 -> 0600").
    pub detail: String,
}

impl Step for FileChange {
    /// Whether applying it touches the host.
    fn touches_host(&self) -> bool {
        !matches!(self.action, FileAction::Record | FileAction::Fail(_))
    }

    /// "update file /etc/motd (content differs)" for plan and logs.
    fn describe(&self) -> String {
        let verb = match self.action {
            FileAction::Write { .. } if self.is_create() || self.detail == MAY_BE_SHIPPED => {
                "create"
            }
            FileAction::Write { .. } | FileAction::SetMeta => "update",
            FileAction::Remove { restore: Some(_) } => "restore",
            FileAction::Remove { restore: None } => "delete",
            FileAction::Record | FileAction::Fail(_) => "keep",
        };
        let drift = if self.drift { ", drift" } else { "" };
        if self.is_create() && !self.drift {
            // The verb says it all ("create file /etc/motd"), in plan's tense and apply's.
            return format!("{verb} file {}", self.path);
        }
        format!("{verb} file {} ({}{drift})", self.path, self.detail)
    }
}

/// The invoking user's (uid, gid) when plumb does not run as root, else None.
fn unprivileged() -> Option<(u32, u32)> {
    let uid = nix::unistd::geteuid();
    (!uid.is_root()).then(|| (uid.as_raw(), nix::unistd::getegid().as_raw()))
}

/// The uid and gid a file gets: the ones Git names; where it names none, root's, or the invoking
/// user's when plumb is not root (`me`), who could not give a file away to root anyway.
fn ids(fs: &HostFs, spec: &FileSpec, me: Option<(u32, u32)>) -> Result<(u32, u32)> {
    let uid = match (spec.owner.as_str(), me) {
        ("", Some((uid, _))) => uid,
        ("", None) => fs.uid("root")?,
        (name, _) => fs.uid(name)?,
    };
    let gid = match (spec.group.as_str(), me) {
        ("", Some((_, gid))) => gid,
        ("", None) => fs.gid("root")?,
        (name, _) => fs.gid(name)?,
    };
    Ok((uid, gid))
}

/// Says once per process that files with no owner in Git keep the invoking user's ownership.
fn say_once_unprivileged() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let uid = nix::unistd::geteuid();
        tracing::warn!(
            "plumb runs as uid {uid}, not root: files whose owner or group Git does not name \
             get uid {uid} and gid {} instead of root (a file that names one needs root)",
            nix::unistd::getegid()
        );
    });
}

/// Looks at every desired and every inventoried path.
pub fn observe(
    fs: &HostFs,
    desired: &BTreeMap<String, FileSpec>,
    inventory: &BTreeMap<String, ManagedFile>,
) -> BTreeMap<String, FileObs> {
    let mut out = BTreeMap::new();
    let me = unprivileged();
    if me.is_some()
        && desired
            .values()
            .any(|s| s.owner.is_empty() || s.group.is_empty())
    {
        say_once_unprivileged();
    }
    for (path, spec) in desired {
        let ids = ids(fs, spec, me).map_err(Fault::from);
        out.insert(
            path.clone(),
            FileObs {
                observed: fs.observe(path).map_err(Fault::from),
                ids,
            },
        );
    }
    for path in inventory.keys().filter(|p| !desired.contains_key(*p)) {
        out.insert(
            path.clone(),
            FileObs {
                observed: fs.observe(path).map_err(Fault::from),
                ids: Ok((0, 0)),
            },
        );
    }
    out
}

/// Desired x observed x inventory -> the changes, in path order. Pure.
pub fn plan(
    desired: &BTreeMap<String, FileSpec>,
    obs: &BTreeMap<String, FileObs>,
    inventory: &BTreeMap<String, ManagedFile>,
) -> Vec<FileChange> {
    let mut changes = Vec::new();
    // A path turning from a file into a directory (or back) in one commit: the old managed
    // paths in the way are removed first (and not restored), so one pass converges.
    let in_way = in_the_way(desired, inventory);
    let missing = Ok(Observed::Missing);
    for (path, spec) in desired {
        let o = &obs[path];
        let observed_here = match (&o.observed, &in_way) {
            (Err(_), w) if ancestors(path).any(|a| w.contains(a)) => &missing,
            (Ok(Observed::Dir), w) if clears_dir(path, w, inventory) => &missing,
            (ob, _) => ob,
        };
        let managed = inventory.get(path);
        let change = |action, drift, detail: String| FileChange {
            path: path.clone(),
            action,
            drift,
            detail,
        };
        let (uid, gid) = match (observed_here, &o.ids) {
            (Err(e), _) | (_, Err(e)) => {
                changes.push(change(
                    FileAction::Fail(e.to_string()),
                    false,
                    String::new(),
                ));
                continue;
            }
            (Ok(_), Ok(ids)) => *ids,
        };
        let observed = observed_here.as_ref().expect("checked");
        let want = Meta {
            mode: spec.mode,
            uid,
            gid,
        };
        let drift = managed.and_then(|m| m.digest.as_deref()) == Some(spec.digest().as_str());
        let (action, detail) = action_for(&spec.content, observed, &want, drift, managed.is_none());
        let in_sync = action == FileAction::Record;
        if in_sync && drift {
            continue; // matches, and the inventory already knows it
        }
        changes.push(change(action, drift && !in_sync, detail));
    }
    let mut first = Vec::new();
    for (path, managed) in inventory.iter().filter(|(p, _)| !desired.contains_key(*p)) {
        let blocking = in_way.contains(path.as_str());
        let restore = managed.backup.clone().filter(|_| !blocking);
        let detail = if restore.is_some() {
            "restored what was there before plumb"
        } else {
            "deleted"
        };
        let change = FileChange {
            path: path.clone(),
            action: FileAction::Remove { restore },
            drift: false,
            detail: detail.into(),
        };
        if blocking {
            first.push(change);
        } else {
            changes.push(change);
        }
    }
    first.extend(changes);
    first
}

/// "/a/b/c" -> "/a/b", "/a".
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut p = path;
    std::iter::from_fn(move || {
        let (parent, _) = p.rsplit_once('/')?;
        p = parent;
        (!parent.is_empty()).then_some(parent)
    })
}

/// Managed paths Git dropped that stand where Git now wants a path: a file where a directory is
/// needed (an ancestor of a desired path), or files in a directory that is to become a file.
fn in_the_way<'a>(
    desired: &BTreeMap<String, FileSpec>,
    inventory: &'a BTreeMap<String, ManagedFile>,
) -> std::collections::BTreeSet<&'a str> {
    let gone: Vec<&str> = inventory
        .keys()
        .filter(|p| !desired.contains_key(*p))
        .map(String::as_str)
        .collect();
    gone.into_iter()
        .filter(|g| {
            ancestors(g).any(|a| desired.contains_key(a))
                || desired.keys().any(|d| ancestors(d).any(|a| a == *g))
        })
        .collect()
}

/// The directory at `dir` holds managed files about to be removed, and plumb made it: it goes
/// with them (`HostFs` replaces it only once empty), and the file Git wants takes its place.
fn clears_dir(
    dir: &str,
    in_way: &std::collections::BTreeSet<&str>,
    inventory: &BTreeMap<String, ManagedFile>,
) -> bool {
    let below: Vec<&&str> = in_way
        .iter()
        .filter(|p| ancestors(p).any(|a| a == dir))
        .collect();
    !below.is_empty()
        && below.iter().any(|p| {
            inventory[**p]
                .created_dirs
                .iter()
                .any(|d| d.as_str() == dir)
        })
}

/// What makes one path match Git, and why (for people). Pure.
fn action_for(
    content: &Content,
    observed: &Observed,
    want: &Meta,
    drift: bool,
    first_claim: bool,
) -> (FileAction, String) {
    match (content, observed) {
        (_, Observed::Dir) => (
            FileAction::Fail(
                "a directory is in the way on the host: plumb does not replace directories".into(),
            ),
            String::new(),
        ),
        (_, Observed::Other) => (
            FileAction::Fail("a device, socket or fifo is in the way on the host".into()),
            String::new(),
        ),
        (_, Observed::Missing) => (
            FileAction::Write { backup: false },
            if drift {
                "deleted on the host"
            } else {
                "created"
            }
            .into(),
        ),
        (Content::Regular(data), Observed::File { data: have, meta }) => {
            if have != data {
                (
                    FileAction::Write {
                        backup: first_claim,
                    },
                    "content differs".into(),
                )
            } else if meta != want {
                (FileAction::SetMeta, meta_detail(meta, want))
            } else {
                (FileAction::Record, String::new())
            }
        }
        (Content::Symlink(t), Observed::Symlink { target, meta }) => {
            if t != target {
                (
                    FileAction::Write {
                        backup: first_claim,
                    },
                    format!("symlink target {target} -> {t}"),
                )
            } else if (meta.uid, meta.gid) != (want.uid, want.gid) {
                (
                    FileAction::Write { backup: false },
                    "symlink owner differs".into(),
                )
            } else {
                (FileAction::Record, String::new())
            }
        }
        (Content::Regular(_), Observed::Symlink { .. }) => (
            FileAction::Write {
                backup: first_claim,
            },
            "a symlink is in place of the file".into(),
        ),
        (Content::Symlink(_), Observed::File { .. }) => (
            FileAction::Write {
                backup: first_claim,
            },
            "a file is in place of the symlink".into(),
        ),
    }
}

fn meta_detail(have: &Meta, want: &Meta) -> String {
    let mut parts = Vec::new();
    if have.mode != want.mode {
        parts.push(format!("mode {:04o} -> {:04o}", have.mode, want.mode));
    }
    if (have.uid, have.gid) != (want.uid, want.gid) {
        parts.push(format!(
            "owner {}:{} -> {}:{}",
            have.uid, have.gid, want.uid, want.gid
        ));
    }
    parts.join(", ")
}

/// Applies one change, updating the inventory entry as it goes (the caller persists it).
/// For a first claim the old content is saved before anything is overwritten.
pub fn apply_one(
    fs: &HostFs,
    state: &StateDir,
    change: &FileChange,
    spec: Option<&FileSpec>,
    ids: (u32, u32),
    inventory: &mut BTreeMap<String, ManagedFile>,
) -> Result<()> {
    let path = &change.path;
    match &change.action {
        FileAction::Fail(e) => anyhow::bail!("{e}"),
        FileAction::Record => {}
        FileAction::Write { backup } => {
            let spec = spec.expect("a write has a spec");
            if *backup && !inventory.contains_key(path) {
                let taken = take_backup(fs, state, path)?;
                inventory.insert(
                    path.clone(),
                    ManagedFile {
                        digest: None,
                        created_dirs: vec![],
                        backup: taken,
                    },
                );
            }
            let meta = Meta {
                mode: spec.mode,
                uid: ids.0,
                gid: ids.1,
            };
            let created = match &spec.content {
                Content::Regular(data) => fs.write_file(path, data, meta)?,
                Content::Symlink(target) => {
                    // A regular file or symlink both vanish under rename; nothing else to clear.
                    fs.write_symlink(path, target, meta)?
                }
            };
            let entry = inventory.entry(path.clone()).or_default();
            entry.created_dirs.extend(created);
        }
        FileAction::SetMeta => {
            let spec = spec.expect("set-meta has a spec");
            fs.set_meta(
                path,
                Meta {
                    mode: spec.mode,
                    uid: ids.0,
                    gid: ids.1,
                },
            )?;
        }
        FileAction::Remove { restore } => {
            match restore {
                Some(b) => {
                    let data = state.read_backup(&b.blob)?;
                    let meta = Meta {
                        mode: b.mode,
                        uid: b.uid,
                        gid: b.gid,
                    };
                    if b.symlink {
                        fs.write_symlink(path, &String::from_utf8_lossy(&data), meta)?;
                    } else {
                        fs.write_file(path, &data, meta)?;
                    }
                    state.drop_backup(&b.blob);
                }
                None => fs.remove(path)?,
            }
            if let Some(m) = inventory.remove(path) {
                for dir in m.created_dirs.iter().rev() {
                    let still_needed = inventory.values().any(|o| o.created_dirs.contains(dir));
                    if !still_needed {
                        fs.remove_empty_dir(dir)?;
                    }
                }
            }
            return Ok(());
        }
    }
    if let Some(spec) = spec {
        inventory.entry(path.clone()).or_default().digest = Some(spec.digest());
    }
    Ok(())
}

fn take_backup(fs: &HostFs, state: &StateDir, path: &str) -> Result<Option<Backup>> {
    Ok(match fs.observe(path)? {
        Observed::File { data, meta } => Some(Backup {
            blob: state.store_backup(path, &data)?,
            symlink: false,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
        }),
        Observed::Symlink { target, meta } => Some(Backup {
            blob: state.store_backup(path, target.as_bytes())?,
            symlink: true,
            mode: 0o777,
            uid: meta.uid,
            gid: meta.gid,
        }),
        _ => None,
    })
}

/// A unified diff of a text file for `plan`; secrets and binaries are summarized instead.
pub fn diff(spec: &FileSpec, observed: &Observed) -> Option<String> {
    let Content::Regular(new) = &spec.content else {
        return None;
    };
    // Either side may be the secret: Git's new content, or what the host has now.
    let host_secret = matches!(observed, Observed::File { meta, .. } if meta.mode & 0o004 == 0);
    if spec.secret.is_some() {
        return Some("(secret: content hidden)".into());
    }
    if spec.is_secret() || host_secret {
        return Some("(content not shown: the file is not world-readable)".into());
    }
    let old: &[u8] = match observed {
        Observed::File { data, .. } => data,
        Observed::Missing => b"",
        _ => return None,
    };
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(a), Ok(b)) if a != b => Some(
            similar::TextDiff::from_lines(a, b)
                .unified_diff()
                .context_radius(3)
                .header("host", "git")
                .to_string(),
        ),
        (Ok(_), Ok(_)) => None,
        _ => Some(format!(
            "(binary content, {} -> {} bytes)",
            old.len(),
            new.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data: &str, mode: u32) -> FileSpec {
        FileSpec {
            content: Content::Regular(data.as_bytes().to_vec()),
            mode,
            owner: "root".into(),
            group: "root".into(),
            origin: "hosts/h/files/x".into(),
            validate: None,
            secret: None,
        }
    }

    fn file(data: &str, mode: u32) -> Observed {
        Observed::File {
            data: data.as_bytes().to_vec(),
            meta: Meta {
                mode,
                uid: 0,
                gid: 0,
            },
        }
    }

    fn obs(o: Observed) -> FileObs {
        FileObs {
            observed: Ok(o),
            ids: Ok((0, 0)),
        }
    }

    fn managed(s: &FileSpec) -> ManagedFile {
        ManagedFile {
            digest: Some(s.digest()),
            ..Default::default()
        }
    }

    /// Issue 20: `plan` does not say a plain "create" for a file a package of the same pass may
    /// ship; other changes, and passes installing nothing, read as before.
    #[test]
    fn unnamed_owner_is_root_or_the_invoking_user() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1234:1235::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\napp:x:1235:\n").unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        let mut unnamed = spec("x", 0o644);
        (unnamed.owner, unnamed.group) = (String::new(), String::new());
        let mut named = spec("x", 0o644);
        (named.owner, named.group) = ("app".into(), "app".into());
        let me = Some((1000, 1001));
        assert_eq!(ids(&fs, &unnamed, None).unwrap(), (0, 0));
        assert_eq!(ids(&fs, &unnamed, me).unwrap(), (1000, 1001));
        assert_eq!(ids(&fs, &named, me).unwrap(), (1234, 1235));
        assert_eq!(ids(&fs, &named, None).unwrap(), (1234, 1235));
        let mut half = named.clone();
        half.group = String::new();
        assert_eq!(ids(&fs, &half, me).unwrap(), (1234, 1001));
    }

    #[test]
    fn create_while_packages_install_names_the_package_case() {
        use crate::resource::Kind as _;
        let (conf, motd) = ("/etc/nginx/nginx.conf", "/etc/motd");
        let want: BTreeMap<String, FileSpec> = [
            (conf.to_string(), spec("x", 0o644)),
            (motd.to_string(), spec("m", 0o644)),
        ]
        .into();
        let have: BTreeMap<String, FileObs> = [
            (conf.to_string(), obs(Observed::Missing)),
            (motd.to_string(), obs(file("old", 0o644))),
        ]
        .into();
        let state = State::default();
        let lines = |ctx: &Context| -> Vec<String> {
            FileKind::plan(&want, &have, &state, ctx)
                .iter()
                .map(|c| c.describe())
                .collect()
        };
        assert_eq!(
            lines(&Context::default()),
            [
                "update file /etc/motd (content differs)",
                "create file /etc/nginx/nginx.conf",
            ]
        );
        let installing = Context {
            installing_packages: true,
            ..Context::default()
        };
        assert_eq!(
            lines(&installing),
            [
                "update file /etc/motd (content differs)",
                "create file /etc/nginx/nginx.conf (absent now; if a package this pass installs \
                 ships it, plumb keeps that as a backup and replaces it)",
            ]
        );
    }

    /// (desired, observed, inventory) -> (action, drift)
    #[test]
    fn plan_table() {
        let a = spec("a", 0o644);
        let old = spec("old", 0o644);
        let backup = Backup {
            blob: "b".into(),
            symlink: false,
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        type Case = (
            Option<FileSpec>,
            Observed,
            Option<ManagedFile>,
            Option<(FileAction, bool)>,
        );
        let cases: Vec<(&str, Case)> = vec![
            ("new file", (Some(a.clone()), Observed::Missing, None, Some((FileAction::Write { backup: false }, false)))),
            ("in sync", (Some(a.clone()), file("a", 0o644), Some(managed(&a)), None)),
            ("adopt identical", (Some(a.clone()), file("a", 0o644), None, Some((FileAction::Record, false)))),
            ("take over existing", (Some(a.clone()), file("x", 0o644), None, Some((FileAction::Write { backup: true }, false)))),
            ("new commit", (Some(a.clone()), file("old", 0o644), Some(managed(&old)), Some((FileAction::Write { backup: false }, false)))),
            ("edited by hand", (Some(a.clone()), file("hack", 0o644), Some(managed(&a)), Some((FileAction::Write { backup: false }, true)))),
            ("deleted by hand", (Some(a.clone()), Observed::Missing, Some(managed(&a)), Some((FileAction::Write { backup: false }, true)))),
            ("chmod by hand", (Some(a.clone()), file("a", 0o666), Some(managed(&a)), Some((FileAction::SetMeta, true)))),
            ("dir in the way", (Some(a.clone()), Observed::Dir, None, Some((FileAction::Fail("a directory is in the way on the host: plumb does not replace directories".into()), false)))),
            ("left git", (None, file("a", 0o644), Some(managed(&a)), Some((FileAction::Remove { restore: None }, false)))),
            (
                "left git, restore",
                (None, file("a", 0o644), Some(ManagedFile { backup: Some(backup.clone()), ..managed(&a) }), Some((FileAction::Remove { restore: Some(backup.clone()) }, false))),
            ),
        ];
        for (name, (desired, observed, inv, want)) in cases {
            let p = "/etc/x".to_string();
            let desired: BTreeMap<_, _> = desired.into_iter().map(|s| (p.clone(), s)).collect();
            let inventory: BTreeMap<_, _> = inv.into_iter().map(|m| (p.clone(), m)).collect();
            let o: BTreeMap<_, _> = [(p.clone(), obs(observed))].into();
            let got = plan(&desired, &o, &inventory);
            let got: Option<(FileAction, bool)> =
                got.into_iter().next().map(|c| (c.action, c.drift));
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn unresolvable_owner_fails_the_file() {
        let a = spec("a", 0o644);
        let desired: BTreeMap<_, _> = [("/etc/x".to_string(), a)].into();
        let o: BTreeMap<_, _> = [(
            "/etc/x".to_string(),
            FileObs {
                observed: Ok(Observed::Missing),
                ids: Err("user \"app\": missing".into()),
            },
        )]
        .into();
        let c = plan(&desired, &o, &BTreeMap::new());
        assert!(matches!(&c[0].action, FileAction::Fail(e) if e.contains("app")));
    }

    #[test]
    fn diffs_hide_secrets() {
        let d = diff(&spec("b\n", 0o644), &file("a\n", 0o644)).unwrap();
        assert!(d.contains("-a") && d.contains("+b"), "{d}");
        let s = diff(&spec("password\n", 0o600), &file("old\n", 0o600)).unwrap();
        assert!(!s.contains("password") && !s.contains("old"), "{s}");
        // Git says world-readable, but the host's current file is a secret: not shown either.
        let s = diff(&spec("public\n", 0o644), &file("hunter2\n", 0o600)).unwrap();
        assert!(!s.contains("hunter2"), "{s}");
        // Issue 14: a secret from Git is hidden whatever its mode says.
        let mut secret = spec("hunter2\n", 0o644);
        secret.secret = Some([1; 32]);
        let s = diff(&secret, &file("old\n", 0o644)).unwrap();
        assert_eq!(s, "(secret: content hidden)");
    }
}
