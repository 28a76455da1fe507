//! OS packages: observe the installed set (one query), plan (pure) what makes it match
//! `[packages]`, apply in one transaction per direction through PackageKit, or apt-get/dnf when
//! PackageKit is not there.

use super::{Apply, Context, Outcome, Step};
use crate::host::packages::{Backend, Offer, PackageManager};
use crate::host::pkgcmd::Installed;
use crate::host::{pkg_cleanup, pkgcmd, self_upgrade, service_hold};
use crate::host::{Fault, Host};
use crate::spec::version::{self, Scheme};
use crate::spec::{Desired, Packages};
use crate::state::{ManagedPackage, State, StateDir};
use crate::status::report::{Kind, ResourceReport, ResourceState};
use anyhow::Result;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Package lists older than this are refreshed before an install.
pub(crate) const CACHE_MAX_AGE: Duration = Duration::from_secs(6 * 3600);
/// An unknown name refreshes the lists, but not more often than this: a typo in Git must not
/// make every pass download the package lists again.
pub(crate) const CACHE_MIN_AGE: Duration = Duration::from_secs(10 * 60);
/// In state_dir: when plumb last refreshed the package lists (unix seconds).
const REFRESHED_DOC: &str = "packages-refreshed";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageAction {
    /// Installed, not yet in the inventory: recorded as there before plumb (never pruned).
    Adopt,
    /// Installed in a version the pin allows, and the pin changed in Git: only the inventory
    /// learns the new pin.
    Repin,
    Install,
    /// Installed, in a version the pin does not allow (`from`): install the pinned one.
    /// `order`: the pinned version against `from` (an upgrade or a downgrade), when the pin is
    /// exact; `None` for a pattern (the version is chosen when it is installed).
    Change {
        from: String,
        order: Option<Ordering>,
    },
    /// Named in `remove` and installed.
    Remove,
    /// Left `install`; plumb installed it: removed.
    Prune,
    /// Left Git; nothing to do on the host, the inventory forgets it. `kept`: it is still
    /// installed because it was there before plumb.
    Forget {
        kept: bool,
    },
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    pub name: String,
    pub action: PackageAction,
    /// Git did not change but the host did (removed by hand, or another version installed).
    pub drift: bool,
    /// The version pin Git gives it (`install` only).
    pub pin: Option<String>,
}

impl Step for PackageChange {
    fn touches_host(&self) -> bool {
        matches!(
            self.action,
            PackageAction::Install
                | PackageAction::Change { .. }
                | PackageAction::Remove
                | PackageAction::Prune
        )
    }

    /// "install package curl (removed on the host)", "downgrade package nginx: 1.26.0-1
    /// installed, 1.24.0-1 wanted" for plan and logs.
    fn describe(&self) -> String {
        let name = match &self.pin {
            Some(pin) => format!("{}={pin}", self.name),
            None => self.name.clone(),
        };
        if let PackageAction::Change { from, order } = &self.action {
            let verb = match order {
                Some(Ordering::Greater) => "upgrade",
                Some(Ordering::Less) => "downgrade",
                _ => "change",
            };
            let drift = if self.drift {
                " (changed on the host)"
            } else {
                ""
            };
            return format!(
                "{verb} package {}: {from} installed, {} wanted{drift}",
                self.name,
                self.pin.as_deref().unwrap_or("any version")
            );
        }
        let verb = match self.action {
            PackageAction::Install if self.drift => "reinstall",
            PackageAction::Install => "install",
            PackageAction::Remove => "remove",
            PackageAction::Prune => "remove (left [packages] install)",
            PackageAction::Adopt | PackageAction::Repin | PackageAction::Forget { .. } => "record",
            PackageAction::Change { .. } => unreachable!("described above"),
            PackageAction::Fail(_) => "fail",
        };
        let drift = if self.drift {
            " (removed on the host)"
        } else {
            ""
        };
        format!("{verb} package {name}{drift}")
    }
}

/// One package's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageResult {
    pub name: String,
    pub state: ResourceState,
    pub detail: String,
    pub drift: bool,
}

/// `[packages]`: installed and removed through PackageKit, or apt-get/dnf.
pub struct PackageKind;

impl super::Kind for PackageKind {
    const NAME: &'static str = "package";
    type Want = Packages;
    /// The installed set with versions, read once per pass.
    type Have = Result<Installed, Fault>;
    type Change = PackageChange;

    fn want(desired: &Desired) -> &Self::Want {
        &desired.packages
    }

    /// A host without packages in Git or the inventory never runs the query.
    fn in_use(want: &Self::Want, state: &State) -> bool {
        !(want.install.is_empty() && want.remove.is_empty() && state.packages.is_empty())
    }

    fn observe(host: &Host, _: &Self::Want, _: &State, _: &StateDir) -> Self::Have {
        if !host.is_system_root() {
            return Err(Fault(format!(
                "packages are managed only when root = \"/\" (root is {})",
                host.fs.root().display()
            )));
        }
        pkgcmd::installed_versions_from(host.package_manager.database()).map_err(Fault::from)
    }

    fn plan(
        want: &Self::Want,
        have: &Self::Have,
        state: &State,
        _: &Context,
    ) -> Vec<PackageChange> {
        plan(want, have, &state.packages)
    }

    fn report(want: &Self::Want, _: &Self::Have, changes: &[PackageChange]) -> Vec<Outcome> {
        report_only(want, changes)
            .into_iter()
            .map(|r| {
                let lines = changes
                    .iter()
                    .filter(|c| c.name == r.name && c.touches_host())
                    .map(|c| c.describe())
                    .collect();
                r.outcome(lines)
            })
            .collect()
    }

    /// The inventory changes are saved with the rest of the state at the end of the pass.
    fn apply(
        host: &Host,
        want: &Self::Want,
        have: &Self::Have,
        changes: &[PackageChange],
        run: &mut Apply,
    ) -> anyhow::Result<Vec<Outcome>> {
        let before = have.as_ref().ok();
        Ok(apply(host, want, before, changes, run.state, run.state_dir)
            .into_iter()
            .map(|r| {
                let lines = match r.state {
                    ResourceState::Ok | ResourceState::Failed => vec![],
                    _ => vec![format!("package {}: {}", r.name, r.detail)],
                };
                r.outcome(lines)
            })
            .collect())
    }
}

impl PackageResult {
    fn outcome(self, lines: Vec<String>) -> Outcome {
        Outcome {
            report: ResourceReport {
                kind: Kind::Package,
                name: self.name,
                state: self.state,
                detail: self.detail,
            },
            drift: self.drift,
            masked: false,
            lines,
        }
    }
}

/// Desired x installed x inventory -> changes, in name order. Pure.
pub fn plan(
    desired: &Packages,
    installed: &Result<Installed, Fault>,
    inventory: &BTreeMap<String, ManagedPackage>,
) -> Vec<PackageChange> {
    let change = |name: &String, action, drift| PackageChange {
        name: name.clone(),
        action,
        drift,
        pin: desired.pin(name).map(String::from),
    };
    let (installed, scheme) = match installed {
        Ok(i) => (&i.versions, i.scheme),
        Err(e) => {
            return desired
                .install
                .iter()
                .chain(&desired.remove)
                .map(|n| change(n, PackageAction::Fail(e.to_string()), false))
                .collect();
        }
    };
    let mut changes = Vec::new();
    for name in &desired.install {
        let managed = inventory.get(name);
        let pin = desired.pin(name);
        let Some(have) = installed.get(name) else {
            changes.push(change(name, PackageAction::Install, managed.is_some()));
            continue;
        };
        let action = match (pin, managed) {
            (Some(pin), _) if !version::pin_matches(pin, have) => {
                // Drift only when Git still pins what plumb last made true.
                let drift = managed.is_some_and(|m| m.pin.as_deref() == Some(pin));
                let order = (!version::is_pattern(pin)).then(|| scheme.compare(pin, have));
                let from = have.clone();
                changes.push(change(name, PackageAction::Change { from, order }, drift));
                continue;
            }
            (_, None) => PackageAction::Adopt,
            (_, Some(m)) if m.pin.as_deref() != pin => PackageAction::Repin,
            _ => continue,
        };
        changes.push(change(name, action, false));
    }
    for name in &desired.remove {
        if installed.contains_key(name) {
            changes.push(change(name, PackageAction::Remove, false));
        } else if inventory.contains_key(name) {
            changes.push(change(name, PackageAction::Forget { kept: false }, false));
        }
    }
    for (name, managed) in inventory {
        if desired.install.contains(name) || desired.remove.contains(name) {
            continue;
        }
        let present = installed.contains_key(name);
        let action = if managed.installed_by_plumb && present {
            PackageAction::Prune
        } else {
            PackageAction::Forget { kept: present }
        };
        changes.push(change(name, action, false));
    }
    changes.sort_by(|a, b| a.name.cmp(&b.name));
    changes
}

/// Results without touching the host (`detect` mode and `plan`).
pub fn report_only(desired: &Packages, changes: &[PackageChange]) -> Vec<PackageResult> {
    let mut out: BTreeMap<String, PackageResult> = desired_ok(desired);
    for c in changes {
        let (state, detail) = match &c.action {
            PackageAction::Fail(e) => (ResourceState::Failed, e.clone()),
            _ if c.touches_host() => (ResourceState::Drifted, c.describe()),
            _ => continue,
        };
        out.insert(
            c.name.clone(),
            PackageResult {
                name: c.name.clone(),
                state,
                detail,
                drift: c.drift,
            },
        );
    }
    out.into_values().collect()
}

fn desired_ok(desired: &Packages) -> BTreeMap<String, PackageResult> {
    desired
        .install
        .iter()
        .chain(&desired.remove)
        .map(|n| {
            (
                n.clone(),
                PackageResult {
                    name: n.clone(),
                    state: ResourceState::Ok,
                    detail: String::new(),
                    drift: false,
                },
            )
        })
        .collect()
}

/// Applies the changes: all installs in one transaction (service starts held on a dpkg system),
/// then all removals in one, and after removing a package of plumb's own what its install
/// brought that nothing else needs. Each package gets its own result; the inventory in `state`
/// follows what landed and is saved by the caller (intent is saved here before installing, so a
/// killed pass still knows what plumb installed). `before`: the installed set observed.
pub fn apply(
    host: &Host,
    desired: &Packages,
    before: Option<&Installed>,
    changes: &[PackageChange],
    state: &mut State,
    state_dir: &StateDir,
) -> Vec<PackageResult> {
    let mut out = desired_ok(desired);
    let (to_install, to_remove) = inventory_only(changes, state, &mut out);
    if to_install.is_empty() && to_remove.is_empty() {
        return out.into_values().collect();
    }

    // Intent first: what plumb is about to install is plumb's, even if the pass dies mid-way.
    let mut fresh = BTreeSet::new();
    for c in &to_install {
        if !state.packages.contains_key(&c.name) {
            // A package there before plumb whose version plumb changes stays not plumb's.
            let installed_by_plumb = !matches!(c.action, PackageAction::Change { .. });
            if installed_by_plumb {
                fresh.insert(c.name.clone());
            }
            state.packages.insert(
                c.name.clone(),
                ManagedPackage {
                    installed_by_plumb,
                    pin: None,
                },
            );
        }
    }
    if let Err(e) = state_dir.save(state) {
        let e = format!("{e:#}");
        for c in to_install.iter().chain(&to_remove) {
            set(&mut out, &c.name, ResourceState::Failed, e.clone(), c.drift);
        }
        return out.into_values().collect();
    }

    let install: Vec<Wanted> = to_install.iter().map(|c| Wanted::of(c)).collect();
    let remove: Vec<String> = to_remove.iter().map(|c| c.name.clone()).collect();
    let scheme = before.map_or(Scheme::Deb, |b| b.scheme);
    // Only what plumb installed takes what its install brought (and its config) with it.
    let own: BTreeSet<&String> = remove
        .iter()
        .filter(|n| {
            state.brought.contains(*n)
                || state.packages.get(*n).is_some_and(|p| p.installed_by_plumb)
        })
        .collect();
    let db = host.package_manager.database();
    // dpkg's cleanup and service hold: not for dnf's packages on a Debian host that has both.
    let debian = host.is_system_root() && db != Some(pkgcmd::Native::Dnf) && pkg_cleanup::applies();
    let hold = debian && !install.is_empty();
    let conn = host.bus().map(|b| b.connection());
    let done = crate::host::runtime::handle()
        .map(|rt| {
            rt.block_on(run_backend(
                host.package_manager,
                conn,
                &install,
                &remove,
                hold,
                scheme,
                state_dir,
            ))
        })
        .unwrap_or_else(|e| {
            let mut done = all_failed(&names(&install), &e);
            done.extend(all_failed(&remove, &e));
            done
        });
    // plumb's own package is not installed yet: it is after the report.
    let checked: Vec<Wanted> = install
        .iter()
        .filter(|w| w.name != self_upgrade::OWN_PACKAGE)
        .cloned()
        .collect();
    let done = check_pins(done, &checked, db);
    let removed_own: Vec<String> = done
        .iter()
        .filter(|(n, r)| r.is_ok() && own.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    for (name, result) in done {
        let c = changes
            .iter()
            .find(|c| c.name == name)
            .expect("a result is for a planned change");
        record_result(c, result, &fresh, state, &mut out);
    }
    // A host with rpm's packages under dnf: a dnf host, or a Debian one told to use dnf.
    let rpm = host.is_system_root()
        && !debian
        && db != Some(pkgcmd::Native::Apt)
        && pkgcmd::Native::Dnf.present();
    if (debian || rpm) && !removed_own.is_empty() {
        clean_up_after(desired, &removed_own, rpm, state, &mut out);
    }
    match pkgcmd::installed_from(db) {
        Ok(now) => {
            if !install.is_empty() {
                if let Some(before) = before {
                    let before: BTreeSet<String> = before.versions.keys().cloned().collect();
                    let appeared = appeared(&before, &now);
                    tracing::info!(held = hold, packages = ?appeared, "packages plumb's install brought");
                    if hold {
                        state.held.extend(appeared.iter().cloned());
                    }
                    state.brought.extend(appeared);
                }
            }
            state.brought.retain(|n| now.contains(n));
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read the installed packages after the transaction; what it brought is not recorded");
        }
    }
    // What the install brought is known from now on, even if the pass dies before its end.
    if let Err(e) = state_dir.save(state) {
        tracing::warn!(error = %format!("{e:#}"), "could not save the package inventory");
    }
    out.into_values().collect()
}

/// A pinned install the backend reported done is checked against what is installed now: a
/// tool that did nothing (apt on a stale cache, a package held) must not be reported as having
/// installed the pinned version.
fn check_pins(done: Done, install: &[Wanted], db: Option<pkgcmd::Native>) -> Done {
    let pinned: BTreeMap<&str, &str> = install
        .iter()
        .filter_map(|w| Some((w.name.as_str(), w.pin.as_deref()?)))
        .collect();
    if !done
        .iter()
        .any(|(n, r)| r.is_ok() && pinned.contains_key(n.as_str()))
    {
        return done;
    }
    let now = match pkgcmd::installed_versions_from(db) {
        Ok(now) => now.versions,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read the installed versions after the transaction");
            return done;
        }
    };
    done.into_iter()
        .map(|(name, r)| {
            let r = match (r, pinned.get(name.as_str())) {
                (Ok(detail), Some(pin)) => match now.get(&name) {
                    Some(v) if version::pin_matches(pin, v) => Ok(detail),
                    other => Err(format!(
                        "the package tool reported \"{detail}\", but {} is installed, not {pin}: see its log (/var/log/apt/history.log, dnf history)",
                        other.map_or("no version", String::as_str)
                    )),
                },
                (r, _) => r,
            };
            (name, r)
        })
        .collect()
}

/// The packages in `after` but not in `before`, by their bare names (dpkg lists multi-arch
/// packages both bare and qualified).
fn appeared(before: &BTreeSet<String>, after: &BTreeSet<String>) -> BTreeSet<String> {
    after
        .difference(before)
        .filter(|n| match n.split_once(':') {
            Some((bare, _)) => !after.contains(bare),
            None => true,
        })
        .cloned()
        .collect()
}

/// After plumb removed packages it installed (`removed`): what plumb's installs brought that
/// apt would now autoremove (with `dnf`: that dnf counts as unneeded) goes too (never a package
/// Git or the inventory still names), and what dpkg keeps of them (configuration files,
/// enabled-unit links) is purged. Said in each
/// removed package's detail; a failure makes it failed, naming what is left.
fn clean_up_after(
    desired: &Packages,
    removed: &[String],
    dnf: bool,
    state: &State,
    out: &mut BTreeMap<String, PackageResult>,
) {
    let candidates: BTreeSet<String> = state
        .brought
        .iter()
        .filter(|n| !desired.install.contains(*n) && !state.packages.contains_key(*n))
        .cloned()
        .collect();
    let cleaned = if dnf {
        pkg_cleanup::remove_unneeded_dnf(&candidates).map(|orphans| (orphans, vec![]))
    } else {
        pkg_cleanup::orphans(&candidates).and_then(|orphans| {
            let purged = pkg_cleanup::remove_and_purge(&orphans, removed)?;
            Ok((orphans, purged))
        })
    };
    let check = if dnf {
        "dnf repoquery --unneeded"
    } else {
        "apt-get autoremove --dry-run"
    };
    let note = match &cleaned {
        Ok((orphans, purged)) => {
            tracing::info!(removed = ?orphans, purged = ?purged, "removed what plumb's install brought");
            cleanup_note(orphans, purged)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "removing what plumb's install brought failed");
            format!("; removing what its install brought failed (see `{check}`): {e:#}")
        }
    };
    for name in removed {
        if let Some(r) = out.get_mut(name) {
            r.detail.push_str(&note);
            if cleaned.is_err() {
                r.state = ResourceState::Failed;
            }
        }
    }
}

/// "; with it what its install brought and nothing else needs: a, b; configuration purged: c".
fn cleanup_note(orphans: &[String], purged: &[String]) -> String {
    let mut note = String::new();
    if !orphans.is_empty() {
        note.push_str(&format!(
            "; with it what its install brought and nothing else needs: {}",
            orphans.join(", ")
        ));
    }
    if !purged.is_empty() {
        note.push_str(&format!("; configuration purged: {}", purged.join(", ")));
    }
    note
}

fn set(
    out: &mut BTreeMap<String, PackageResult>,
    name: &str,
    state: ResourceState,
    detail: String,
    drift: bool,
) {
    let name = name.to_string();
    out.insert(
        name.clone(),
        PackageResult {
            name,
            state,
            detail,
            drift,
        },
    );
}

/// Applies what only the inventory learns (adopt, forget) and refuses bad names; returns the
/// changes that need the package manager: (installs, removals).
fn inventory_only<'a>(
    changes: &'a [PackageChange],
    state: &mut State,
    out: &mut BTreeMap<String, PackageResult>,
) -> (Vec<&'a PackageChange>, Vec<&'a PackageChange>) {
    let mut to_install = Vec::new();
    let mut to_remove = Vec::new();
    for c in changes {
        // The name reaches a command line or D-Bus next: checked again, whatever the loader did.
        if c.touches_host() {
            if let Err(e) = pkgcmd::check_name(&c.name) {
                set(out, &c.name, ResourceState::Failed, format!("{e:#}"), false);
                continue;
            }
        }
        match &c.action {
            PackageAction::Fail(e) => set(out, &c.name, ResourceState::Failed, e.clone(), false),
            PackageAction::Adopt => {
                state.packages.insert(
                    c.name.clone(),
                    ManagedPackage {
                        installed_by_plumb: false,
                        pin: c.pin.clone(),
                    },
                );
            }
            PackageAction::Repin => {
                if let Some(m) = state.packages.get_mut(&c.name) {
                    m.pin = c.pin.clone();
                }
            }
            PackageAction::Forget { kept } => {
                state.packages.remove(&c.name);
                if *kept {
                    set(
                        out,
                        &c.name,
                        ResourceState::Ok,
                        "no longer managed; kept: it was installed before plumb".into(),
                        false,
                    );
                }
            }
            PackageAction::Install | PackageAction::Change { .. } => to_install.push(c),
            PackageAction::Remove | PackageAction::Prune => to_remove.push(c),
        }
    }
    (to_install, to_remove)
}

/// One package's result from the backend, into the report and the inventory.
fn record_result(
    c: &PackageChange,
    result: std::result::Result<String, String>,
    fresh: &BTreeSet<String>,
    state: &mut State,
    out: &mut BTreeMap<String, PackageResult>,
) {
    let name = &c.name;
    match result {
        Ok(detail) => {
            tracing::info!(message_id = crate::logging::id::change(c.drift), kind = "package", name = %name, action = ?c.action, drift = c.drift, detail = %detail, "package {name}: {detail}");
            let st = match c.action {
                PackageAction::Install | PackageAction::Change { .. } => {
                    if let Some(m) = state.packages.get_mut(name) {
                        m.pin = c.pin.clone();
                    }
                    if c.drift {
                        ResourceState::DriftCorrected
                    } else {
                        ResourceState::Changed
                    }
                }
                PackageAction::Prune => {
                    state.packages.remove(name);
                    ResourceState::Pruned
                }
                _ => {
                    state.packages.remove(name);
                    ResourceState::Changed
                }
            };
            let detail = match &c.action {
                PackageAction::Change { from, .. } if c.drift => {
                    format!("{detail}: {from} had been installed on the host")
                }
                _ if c.drift => format!("{detail}: it had been removed on the host"),
                _ => detail,
            };
            set(out, name, st, detail, c.drift);
        }
        Err(e) => {
            tracing::error!(kind = "package", name = %name, error = %e, "package {name} failed: {e}");
            if fresh.contains(name) {
                state.packages.remove(name);
            }
            set(out, name, ResourceState::Failed, e, c.drift);
        }
    }
}

/// One result per name: what was done ("installed via PackageKit"), or why not.
type Done = Vec<(String, std::result::Result<String, String>)>;

/// Chooses the backend, then installs all of `install` and removes all of `remove`.
/// With `hold`, service starts are held during the install transaction (see
/// `host::service_hold`): the units start after the pass wrote their files.
async fn run_backend(
    setting: PackageManager,
    conn: std::result::Result<&zbus::Connection, Fault>,
    install: &[Wanted],
    remove: &[String],
    hold: bool,
    scheme: Scheme,
    state_dir: &StateDir,
) -> Done {
    let backend = match Backend::choose(setting, conn).await {
        Ok(b) => b,
        Err(e) => {
            let mut done = all_failed(&names(install), &e);
            done.extend(all_failed(remove, &e));
            return done;
        }
    };
    tracing::info!(
        backend = backend.name(),
        install = install.len(),
        remove = remove.len(),
        "applying packages with {}: {} to install, {} to remove",
        backend.name(),
        install.len(),
        remove.len()
    );
    let mut done = Vec::new();
    if !install.is_empty() {
        let held = hold.then(|| service_hold::hold(std::path::Path::new("/")));
        if let Some(Err(e)) = &held {
            tracing::warn!(error = %format!("{e:#}"), "could not hold service starts: the packages' services start with their own defaults");
        }
        done.extend(install_all(&backend, install, scheme, state_dir).await);
        drop(held);
    }
    if !remove.is_empty() {
        done.extend(remove_all(&backend, remove).await);
    }
    done
}

/// One package to install: its name, the pin Git gives it, and the version installed now when
/// the pin changes it.
#[derive(Debug, Clone)]
struct Wanted {
    name: String,
    pin: Option<String>,
    from: Option<String>,
}

impl Wanted {
    fn of(c: &PackageChange) -> Wanted {
        Wanted {
            name: c.name.clone(),
            pin: c.pin.clone(),
            from: match &c.action {
                PackageAction::Change { from, .. } => Some(from.clone()),
                _ => None,
            },
        }
    }

    /// "installed via apt-get", "installed 2.0 via PackageKit", "downgraded 2.0 -> 1.0 via ...".
    fn done(&self, version: Option<&str>, scheme: Scheme, backend: &str) -> String {
        match (version, &self.from) {
            (Some(v), Some(from)) => {
                let verb = match scheme.compare(v, from) {
                    Ordering::Greater => "upgraded",
                    Ordering::Less => "downgraded",
                    Ordering::Equal => "reinstalled",
                };
                format!("{verb} {from} -> {v} via {backend}")
            }
            (Some(v), None) => format!("installed {v} via {backend}"),
            (None, _) => format!("installed via {backend}"),
        }
    }
}

fn names(wanted: &[Wanted]) -> Vec<String> {
    wanted.iter().map(|w| w.name.clone()).collect()
}

/// What the repositories offer for `wanted`: name -> (id, the version when pinned), and, for
/// pinned names no version of which matches, the versions there are.
type Offers = (
    BTreeMap<String, (String, Option<String>)>,
    BTreeMap<String, Vec<String>>,
);

async fn offers(backend: &Backend, wanted: &[Wanted], scheme: Scheme) -> Result<Offers> {
    let plain: Vec<String> = wanted
        .iter()
        .filter(|w| w.pin.is_none())
        .map(|w| w.name.clone())
        .collect();
    let pins: BTreeMap<String, String> = wanted
        .iter()
        .filter_map(|w| Some((w.name.clone(), w.pin.clone()?)))
        .collect();
    let mut found: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    if !plain.is_empty() {
        for (name, id) in backend.available(&plain).await? {
            found.insert(name, (id, None));
        }
    }
    let mut unmatched = BTreeMap::new();
    for (name, offer) in backend.available_pinned(&pins, scheme).await? {
        match offer {
            Offer::Found { id, version } => {
                found.insert(name, (id, Some(version)));
            }
            Offer::NoMatch(versions) => {
                unmatched.insert(name, versions);
            }
        }
    }
    Ok((found, unmatched))
}

/// Resolves (pinned names to the version their pin names), refreshing the package lists when
/// they are old or a name or version is unknown to them, then installs everything found in one
/// transaction.
async fn install_all(
    backend: &Backend,
    wanted: &[Wanted],
    scheme: Scheme,
    state_dir: &StateDir,
) -> Done {
    let age = cache_age(state_dir);
    let refreshed = age.is_none_or(|a| a > CACHE_MAX_AGE);
    if refreshed {
        refresh(backend, state_dir).await;
    }
    let (mut found, mut unmatched) = match offers(backend, wanted, scheme).await {
        Ok(o) => o,
        Err(e) => return all_failed(&names(wanted), &e),
    };
    if found.len() < wanted.len() && !refreshed && age.is_none_or(|a| a > CACHE_MIN_AGE) {
        refresh(backend, state_dir).await;
        match offers(backend, wanted, scheme).await {
            Ok(again) => (found, unmatched) = again,
            Err(e) => return all_failed(&names(wanted), &e),
        }
    }
    // Names no repository has: the tool's own words for them, when it has better ones than
    // "not found" (dnf's "No match for argument").
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !found.contains_key(&w.name) && !unmatched.contains_key(&w.name))
        .map(|w| w.name.clone())
        .collect();
    let words = backend.why_missing(&missing).await.unwrap_or_else(|e| {
        tracing::debug!(error = %format!("{e:#}"), "asking why packages are missing");
        BTreeMap::new()
    });
    let mut done: Done = wanted
        .iter()
        .filter(|w| !found.contains_key(&w.name))
        .map(|w| {
            let said = words.get(&w.name).map(String::as_str);
            (
                w.name.clone(),
                Err(not_found(backend.name(), w, unmatched.get(&w.name), said)),
            )
        })
        .collect();
    let mut batch: Vec<(String, String)> = found
        .iter()
        .map(|(name, (id, _))| (name.clone(), id.clone()))
        .collect();
    // plumb's own package: installed after this pass's report (its install restarts plumb).
    if let Some(at) = batch
        .iter()
        .position(|(n, _)| n == self_upgrade::OWN_PACKAGE)
    {
        let (name, _) = batch.remove(at);
        let version = found.get(&name).and_then(|(_, v)| v.clone());
        let id = match &version {
            Some(v) => format!("{name}={v}"),
            None => name.clone(),
        };
        let now = crate::judged::now_secs() as i64;
        let native = match backend {
            Backend::Native(n) => Some(*n),
            Backend::PackageKit(_) => None,
        };
        done.push((
            name,
            self_upgrade::defer(state_dir, &id, version.as_deref(), now, native),
        ));
    }
    let pinned = found.values().any(|(_, v)| v.is_some());
    let results = in_one_transaction(&batch, "", |ids| async move {
        backend.install(&ids, pinned).await
    })
    .await;
    for (name, r) in results {
        let w = wanted
            .iter()
            .find(|w| w.name == name)
            .expect("a result is for a wanted package");
        let version = found.get(&name).and_then(|(_, v)| v.as_deref());
        done.push((name, r.map(|_| w.done(version, scheme, backend.name()))));
    }
    done
}

/// Why a wanted package cannot be installed: no such name, or no such version (naming the
/// versions there are).
/// `said`: the tool's own words for a name it does not know.
fn not_found(
    backend: &str,
    w: &Wanted,
    versions: Option<&Vec<String>>,
    said: Option<&str>,
) -> String {
    let n = &w.name;
    let said = said
        .map(|s| format!(" ({backend}: {s})"))
        .unwrap_or_default();
    match (&w.pin, versions) {
        (Some(pin), Some(versions)) => {
            const SHOWN: usize = 10;
            let mut list = versions.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if versions.len() > SHOWN {
                list.push_str(&format!(" and {} more", versions.len() - SHOWN));
            }
            let what = if version::is_pattern(pin) {
                format!("no version of package {n} matching {pin}")
            } else {
                format!("no version {pin} of package {n}")
            };
            format!(
                "{backend} found {what} in the configured repositories (they have {list}): pin one of those in [packages] install, or add the repository that has it"
            )
        }
        (Some(pin), None) => format!(
            "{backend} found no package named {n:?} in the configured repositories{said} (wanted version {pin}): check the name, or the host's package sources"
        ),
        (None, _) => format!(
            "{backend} found no package named {n:?} in the configured repositories{said}: check the name, or the host's package sources"
        ),
    }
}

async fn remove_all(backend: &Backend, names: &[String]) -> Done {
    let ids = match backend.installed_ids(names).await {
        Ok(ids) => ids,
        Err(e) => return all_failed(names, &e),
    };
    // Gone since it was observed: nothing left to remove.
    let mut done: Done = names
        .iter()
        .filter(|n| !ids.contains_key(*n))
        .map(|n| (n.clone(), Ok(format!("removed via {}", backend.name()))))
        .collect();
    let batch: Vec<(String, String)> = ids.into_iter().collect();
    done.extend(
        in_one_transaction(
            &batch,
            &format!("removed via {}", backend.name()),
            |ids| async move { backend.remove(&ids).await },
        )
        .await,
    );
    done
}

/// Runs `op` once for the whole batch of (name, id). When that fails and the batch holds more
/// than one package, each is tried alone, so one bad package carries its own error and does not
/// hold back the others.
async fn in_one_transaction<F, Fut>(batch: &[(String, String)], what: &str, op: F) -> Done
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    if batch.is_empty() {
        return vec![];
    }
    let ids = batch.iter().map(|(_, id)| id.clone()).collect();
    match op(ids).await {
        Ok(()) => batch
            .iter()
            .map(|(n, _)| (n.clone(), Ok(what.to_string())))
            .collect(),
        Err(e) if batch.len() == 1 => vec![(batch[0].0.clone(), Err(format!("{e:#}")))],
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "package transaction failed, trying each package alone: {e:#}");
            let mut done = Vec::new();
            for (name, id) in batch {
                let r = op(vec![id.clone()]).await.map(|()| what.to_string());
                done.push((name.clone(), r.map_err(|e| format!("{e:#}"))));
            }
            done
        }
    }
}

fn all_failed(names: &[String], e: &anyhow::Error) -> Done {
    let e = format!("{e:#}");
    names.iter().map(|n| (n.clone(), Err(e.clone()))).collect()
}

/// Refreshes the package lists and remembers when it tried. A failure is logged, not fatal:
/// resolving against the old lists may still find everything. It counts as a try all the same,
/// so a broken mirror is not asked again on every pass.
pub(crate) async fn refresh(backend: &Backend, state_dir: &StateDir) {
    tracing::info!(
        backend = backend.name(),
        "refreshing the package lists with {}",
        backend.name()
    );
    if let Err(e) = backend.refresh().await {
        tracing::warn!(error = %format!("{e:#}"), "refreshing the package lists failed: {e:#}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Err(e) = state_dir.write_doc(REFRESHED_DOC, &format!("{now}\n")) {
        tracing::warn!(error = %format!("{e:#}"), "could not remember the refresh time: {e:#}");
    }
}

/// How long ago plumb refreshed the package lists; `None` when it never did.
pub(crate) fn cache_age(state_dir: &StateDir) -> Option<Duration> {
    let text = state_dir.read_doc(REFRESHED_DOC).ok()??;
    let at: u64 = text.trim().parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(now.saturating_sub(at)))
}

/// Removes a hold on service starts that a killed pass left (run at the start of every pass).
pub fn clear_stale_hold(host: &Host) {
    if host.is_system_root() {
        service_hold::clear_stale(std::path::Path::new("/"));
    }
}

/// After the pass's units: starts what the packages installed with service starts held ship
/// and would have started themselves (enabled, inactive), unless plumb manages the unit (its
/// own step started it, or keeps it stopped). One outcome per unit started or failed.
pub fn start_held(host: &Host, desired: &Desired, state: &mut State) -> Vec<Outcome> {
    if state.held.is_empty() {
        return vec![];
    }
    if !host.is_system_root() {
        state.held.clear();
        return vec![];
    }
    let managed: BTreeSet<String> = desired
        .units
        .keys()
        .chain(state.units.keys())
        .cloned()
        .chain(desired.containers.values().map(|c| c.service_name()))
        .collect();
    let mut shipped: Vec<(String, String)> = Vec::new();
    for pkg in &state.held {
        match pkgcmd::shipped_units(pkg) {
            Ok(units) => shipped.extend(
                units
                    .into_iter()
                    .filter(|u| !managed.contains(u))
                    .map(|u| (u, pkg.clone())),
            ),
            // Removed since (or never installed): nothing of it to start.
            Err(e) => tracing::debug!(package = %pkg, error = %format!("{e:#}"), "no unit list"),
        }
    }
    let bus = match host.bus() {
        Ok(bus) => bus,
        Err(fault) => {
            // Kept in `held`: the next pass tries again.
            return shipped
                .into_iter()
                .map(|(unit, pkg)| held_outcome(unit, &pkg, Err(fault.clone())))
                .collect();
        }
    };
    let mut due = Vec::new();
    for (unit, pkg) in shipped {
        match bus.live(&unit) {
            Ok(s) if s.is_enabled() && !s.is_active() && !s.is_masked() => due.push((unit, pkg)),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(unit = %unit, error = %format!("{e:#}"), "could not read the state of a package's unit")
            }
        }
    }
    let names: Vec<&str> = due.iter().map(|(u, _)| u.as_str()).collect();
    let results = super::activate::start_units(bus, &names);
    state.held.clear();
    due.into_iter()
        .zip(results)
        .map(|((unit, pkg), r)| held_outcome(unit, &pkg, r))
        .collect()
}

fn held_outcome(unit: String, pkg: &str, r: std::result::Result<(), Fault>) -> Outcome {
    let (state, detail, lines) = match r {
        Ok(()) => {
            let what = format!(
                "started: package {pkg} ships it enabled; its start was held until the pass's files were in place"
            );
            let line = format!("start unit {unit} (package {pkg}, held during its install)");
            (ResourceState::Changed, what, vec![line])
        }
        Err(e) => (
            ResourceState::Failed,
            format!("package {pkg} ships it enabled; starting it after the install failed: {e}"),
            vec![],
        ),
    };
    Outcome {
        report: ResourceReport {
            kind: Kind::Unit,
            name: unit,
            state,
            detail,
        },
        drift: false,
        masked: false,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries as Git writes them: "a", "a=1.0".
    fn pkgs(install: &[&str], remove: &[&str]) -> Packages {
        Packages::from_entries(install.iter().copied(), remove.iter().copied())
    }

    /// Installed packages as "name" (version 1.0) or "name=version".
    fn set(names: &[&str]) -> Result<Installed, Fault> {
        Ok(Installed {
            scheme: Scheme::Deb,
            versions: names
                .iter()
                .map(|e| {
                    let (n, v) = e.split_once('=').unwrap_or((e, "1.0"));
                    (n.to_string(), v.to_string())
                })
                .collect(),
        })
    }

    fn names_of(i: Result<Installed, Fault>) -> BTreeSet<String> {
        i.unwrap().versions.into_keys().collect()
    }

    fn inv(entries: &[(&str, bool)]) -> BTreeMap<String, ManagedPackage> {
        entries
            .iter()
            .map(|(n, by)| {
                (
                    n.to_string(),
                    ManagedPackage {
                        installed_by_plumb: *by,
                        pin: None,
                    },
                )
            })
            .collect()
    }

    /// (desired, installed, inventory) -> [(name, action, drift)]
    #[test]
    fn plan_table() {
        use PackageAction::*;
        type Case = (
            Packages,
            Result<Installed, Fault>,
            BTreeMap<String, ManagedPackage>,
            Vec<(&'static str, PackageAction, bool)>,
        );
        let cases: Vec<(&str, Case)> = vec![
            (
                "nothing",
                (pkgs(&[], &[]), set(&["curl"]), inv(&[]), vec![]),
            ),
            (
                "new install",
                (
                    pkgs(&["a", "b"], &[]),
                    set(&[]),
                    inv(&[]),
                    vec![("a", Install, false), ("b", Install, false)],
                ),
            ),
            (
                "in sync",
                (pkgs(&["a"], &[]), set(&["a"]), inv(&[("a", true)]), vec![]),
            ),
            (
                "there before plumb",
                (
                    pkgs(&["a"], &[]),
                    set(&["a"]),
                    inv(&[]),
                    vec![("a", Adopt, false)],
                ),
            ),
            (
                "removed by hand",
                (
                    pkgs(&["a"], &[]),
                    set(&[]),
                    inv(&[("a", true)]),
                    vec![("a", Install, true)],
                ),
            ),
            (
                "remove installed",
                (
                    pkgs(&[], &["t"]),
                    set(&["t"]),
                    inv(&[]),
                    vec![("t", Remove, false)],
                ),
            ),
            (
                "remove absent",
                (pkgs(&[], &["t"]), set(&[]), inv(&[]), vec![]),
            ),
            (
                "left install, plumb's",
                (
                    pkgs(&[], &[]),
                    set(&["a"]),
                    inv(&[("a", true)]),
                    vec![("a", Prune, false)],
                ),
            ),
            (
                "left install, was there before",
                (
                    pkgs(&[], &[]),
                    set(&["a"]),
                    inv(&[("a", false)]),
                    vec![("a", Forget { kept: true }, false)],
                ),
            ),
            (
                "left install, already gone",
                (
                    pkgs(&[], &[]),
                    set(&[]),
                    inv(&[("a", true)]),
                    vec![("a", Forget { kept: false }, false)],
                ),
            ),
            (
                "moved to remove",
                (
                    pkgs(&[], &["a"]),
                    set(&["a"]),
                    inv(&[("a", true)]),
                    vec![("a", Remove, false)],
                ),
            ),
            (
                "moved to remove, gone",
                (
                    pkgs(&[], &["a"]),
                    set(&[]),
                    inv(&[("a", true)]),
                    vec![("a", Forget { kept: false }, false)],
                ),
            ),
            (
                "cannot read installed set",
                (
                    pkgs(&["a"], &["t"]),
                    Err("no dpkg".into()),
                    inv(&[("x", true)]),
                    vec![
                        ("a", Fail("no dpkg".into()), false),
                        ("t", Fail("no dpkg".into()), false),
                    ],
                ),
            ),
        ];
        for (name, (desired, installed, inventory, want)) in cases {
            let got: Vec<(String, PackageAction, bool)> = plan(&desired, &installed, &inventory)
                .into_iter()
                .map(|c| (c.name, c.action, c.drift))
                .collect();
            let want: Vec<(String, PackageAction, bool)> = want
                .into_iter()
                .map(|(n, a, d)| (n.to_string(), a, d))
                .collect();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn no_query_without_packages() {
        use crate::resource::Kind;
        let empty = State::default();
        assert!(!PackageKind::in_use(&pkgs(&[], &[]), &empty));
        assert!(PackageKind::in_use(&pkgs(&["a"], &[]), &empty));
        let root = tempfile::tempdir().unwrap();
        let sd = tempfile::tempdir().unwrap();
        let host = Host::open(root.path()).unwrap();
        let sd = StateDir::open(sd.path()).unwrap();
        let other_root = PackageKind::observe(&host, &pkgs(&["a"], &[]), &empty, &sd);
        assert!(matches!(other_root, Err(e) if e.0.contains("root")));
    }

    /// Pins (issue 17): (desired entries, installed "name=version", inventory name -> pin) ->
    /// [(name, action, drift)]. Another version than the pin with the pin unchanged in Git is
    /// drift; a new pin is a change.
    #[test]
    fn plan_pins() {
        use PackageAction::*;
        let pinned = |entries: &[(&str, Option<&str>)]| -> BTreeMap<String, ManagedPackage> {
            entries
                .iter()
                .map(|(n, p)| {
                    (
                        n.to_string(),
                        ManagedPackage {
                            installed_by_plumb: true,
                            pin: p.map(String::from),
                        },
                    )
                })
                .collect()
        };
        let change = |from: &str, order: Option<Ordering>| Change {
            from: from.into(),
            order,
        };
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            BTreeMap<String, ManagedPackage>,
            Vec<(&'a str, PackageAction, bool)>,
        );
        let cases: Vec<Case> = vec![
            (
                "exact, not installed",
                &["a=1.0"],
                &[],
                pinned(&[]),
                vec![("a", Install, false)],
            ),
            (
                "exact, in place",
                &["a=1.0"],
                &["a=1.0"],
                pinned(&[("a", Some("1.0"))]),
                vec![],
            ),
            (
                "exact, epoch on the host",
                &["a=1.0"],
                &["a=1:1.0"],
                pinned(&[("a", Some("1.0"))]),
                vec![],
            ),
            (
                "pin raised in Git: an upgrade, not drift",
                &["a=2.0"],
                &["a=1.0"],
                pinned(&[("a", Some("1.0"))]),
                vec![("a", change("1.0", Some(Ordering::Greater)), false)],
            ),
            (
                "pin lowered in Git: a downgrade",
                &["a=1.0"],
                &["a=2.0"],
                pinned(&[("a", Some("2.0"))]),
                vec![("a", change("2.0", Some(Ordering::Less)), false)],
            ),
            (
                "first pin of a managed package: a change",
                &["a=2.0"],
                &["a=1.0"],
                pinned(&[("a", None)]),
                vec![("a", change("1.0", Some(Ordering::Greater)), false)],
            ),
            (
                "another version installed by hand: drift",
                &["a=2.0"],
                &["a=1.0"],
                pinned(&[("a", Some("2.0"))]),
                vec![("a", change("1.0", Some(Ordering::Greater)), true)],
            ),
            (
                "removed by hand, pinned: drift",
                &["a=2.0"],
                &[],
                pinned(&[("a", Some("2.0"))]),
                vec![("a", Install, true)],
            ),
            (
                "pattern matches",
                &["a=2.*"],
                &["a=2.1"],
                pinned(&[("a", Some("2.*"))]),
                vec![],
            ),
            (
                "pattern does not match: no direction known",
                &["a=2.*"],
                &["a=1.0"],
                pinned(&[("a", Some("2.*"))]),
                vec![("a", change("1.0", None), true)],
            ),
            (
                "pin changed, installed version still fits: only recorded",
                &["a=2.*"],
                &["a=2.0"],
                pinned(&[("a", Some("2.0"))]),
                vec![("a", Repin, false)],
            ),
            (
                "pin dropped: only recorded",
                &["a"],
                &["a=2.0"],
                pinned(&[("a", Some("2.0"))]),
                vec![("a", Repin, false)],
            ),
            (
                "there before plumb, right version",
                &["a=1.0"],
                &["a=1.0"],
                pinned(&[]),
                vec![("a", Adopt, false)],
            ),
            (
                "there before plumb, other version: a change",
                &["a=2.0"],
                &["a=1.0"],
                pinned(&[]),
                vec![("a", change("1.0", Some(Ordering::Greater)), false)],
            ),
            (
                "plain name: any version",
                &["a"],
                &["a=0.1"],
                pinned(&[("a", None)]),
                vec![],
            ),
        ];
        for (name, want_entries, have, inventory, want) in cases {
            let desired = pkgs(want_entries, &[]);
            let changes = plan(&desired, &set(have), &inventory);
            let got: Vec<(String, PackageAction, bool)> = changes
                .iter()
                .map(|c| (c.name.clone(), c.action.clone(), c.drift))
                .collect();
            let want: Vec<(String, PackageAction, bool)> = want
                .into_iter()
                .map(|(n, a, d)| (n.to_string(), a, d))
                .collect();
            assert_eq!(got, want, "case {name}");
            for c in &changes {
                assert_eq!(c.pin.as_deref(), desired.pin(&c.name), "case {name}");
            }
        }
    }

    /// What plan and detect mode say of pinned packages.
    #[test]
    fn pins_are_described() {
        let desired = pkgs(&["nginx=1.26.0-1", "curl=8.*", "jq=1.7"], &[]);
        let inventory = {
            let mut i = inv(&[("nginx", true), ("curl", true)]);
            i.get_mut("nginx").unwrap().pin = Some("1.26.0-1".into());
            i.get_mut("curl").unwrap().pin = Some("7.*".into());
            i
        };
        let changes = plan(
            &desired,
            &set(&["nginx=1.24.0-1", "curl=7.88.1-10"]),
            &inventory,
        );
        let said: Vec<String> = changes.iter().map(|c| c.describe()).collect();
        assert_eq!(
            said,
            [
                "change package curl: 7.88.1-10 installed, 8.* wanted",
                "install package jq=1.7",
                "upgrade package nginx: 1.24.0-1 installed, 1.26.0-1 wanted (changed on the host)",
            ]
        );
        let r = report_only(&desired, &changes);
        let nginx = r.iter().find(|r| r.name == "nginx").unwrap();
        assert_eq!((nginx.state, nginx.drift), (ResourceState::Drifted, true));
        assert!(nginx.detail.contains("1.24.0-1 installed, 1.26.0-1 wanted"));
        let w = Wanted {
            name: "nginx".into(),
            pin: Some("1.24.0-1".into()),
            from: Some("1.26.0-1".into()),
        };
        assert_eq!(
            w.done(Some("1.24.0-1"), Scheme::Deb, "apt-get"),
            "downgraded 1.26.0-1 -> 1.24.0-1 via apt-get"
        );
        let w = Wanted { from: None, ..w };
        assert_eq!(
            w.done(Some("1.24.0-1"), Scheme::Deb, "PackageKit"),
            "installed 1.24.0-1 via PackageKit"
        );
        assert_eq!(w.done(None, Scheme::Deb, "dnf"), "installed via dnf");
        let e = not_found(
            "apt-get",
            &w,
            Some(&vec!["2.0".to_string(), "1.0".to_string()]),
            None,
        );
        assert_eq!(e, "apt-get found no version 1.24.0-1 of package nginx in the configured repositories (they have 2.0, 1.0): pin one of those in [packages] install, or add the repository that has it");
    }

    /// A state.json of before pins loads (no pin); a pin is written only when there is one.
    #[test]
    fn inventory_pins_serialize() {
        let st: State =
            serde_json::from_str(r#"{"packages":{"a":{"installed_by_plumb":true}}}"#).unwrap();
        assert_eq!(st.packages["a"].pin, None);
        assert!(!serde_json::to_string(&st).unwrap().contains("pin"));
        let mut st = st;
        st.packages.get_mut("a").unwrap().pin = Some("1.*".into());
        let back: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back.packages["a"].pin.as_deref(), Some("1.*"));
    }

    #[test]
    fn detect_reports_without_touching() {
        let desired = pkgs(&["a", "b"], &["t"]);
        let changes = plan(
            &desired,
            &set(&["b", "t"]),
            &inv(&[("a", true), ("b", true)]),
        );
        let r = report_only(&desired, &changes);
        let got: Vec<(&str, ResourceState, bool)> = r
            .iter()
            .map(|r| (r.name.as_str(), r.state, r.drift))
            .collect();
        assert_eq!(
            got,
            [
                ("a", ResourceState::Drifted, true),
                ("b", ResourceState::Ok, false),
                ("t", ResourceState::Drifted, false)
            ]
        );
    }

    /// Only the inventory changes (and a bad name is refused): no backend is even chosen.
    #[test]
    fn inventory_only_changes_and_bad_names_touch_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        let mut state = State {
            packages: inv(&[("old", false), ("gone", true)]),
            ..Default::default()
        };
        let desired = pkgs(&["pre", "x; rm -rf /"], &[]);
        let changes = vec![
            PackageChange {
                name: "pre".into(),
                action: PackageAction::Adopt,
                drift: false,
                pin: None,
            },
            PackageChange {
                name: "old".into(),
                action: PackageAction::Forget { kept: true },
                drift: false,
                pin: None,
            },
            PackageChange {
                name: "gone".into(),
                action: PackageAction::Forget { kept: false },
                drift: false,
                pin: None,
            },
            PackageChange {
                name: "x; rm -rf /".into(),
                action: PackageAction::Install,
                drift: false,
                pin: None,
            },
        ];
        let root = tempfile::tempdir().unwrap();
        let host = Host::open(root.path()).unwrap();
        let r = apply(&host, &desired, None, &changes, &mut state, &sd);
        assert_eq!(state.packages, inv(&[("pre", false)]));
        let got: Vec<(&str, ResourceState)> =
            r.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            got,
            [
                ("old", ResourceState::Ok),
                ("pre", ResourceState::Ok),
                ("x; rm -rf /", ResourceState::Failed)
            ]
        );
        assert!(
            r[2].detail.contains("not a valid package name"),
            "{:?}",
            r[2]
        );
        assert!(cache_age(&sd).is_none(), "nothing was refreshed");
    }

    #[test]
    fn what_an_install_brought() {
        let before = names_of(set(&["curl", "libc6", "libc6:amd64"]));
        let after = names_of(set(&[
            "curl",
            "libc6",
            "libc6:amd64",
            "nginx",
            "nginx-common",
            "libfoo",
            "libfoo:amd64",
            "libbar:i386",
        ]));
        let got: Vec<String> = appeared(&before, &after).into_iter().collect();
        assert_eq!(got, ["libbar:i386", "libfoo", "nginx", "nginx-common"]);
    }

    #[test]
    fn cleanup_is_said_in_the_detail() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(cleanup_note(&[], &[]), "");
        assert_eq!(
            cleanup_note(&s(&["nginx-common"]), &s(&["nginx", "nginx-common"])),
            "; with it what its install brought and nothing else needs: nginx-common; configuration purged: nginx, nginx-common"
        );
    }

    /// A state.json written before `brought` and `held` existed still loads; empty sets are not
    /// written.
    #[test]
    fn old_state_loads() {
        let old = r#"{"packages":{"nginx":{"installed_by_plumb":true}}}"#;
        let st: State = serde_json::from_str(old).unwrap();
        assert!(st.brought.is_empty() && st.held.is_empty());
        assert!(st.packages["nginx"].installed_by_plumb);
        let json = serde_json::to_string(&st).unwrap();
        assert!(
            !json.contains("brought") && !json.contains("held"),
            "{json}"
        );
    }

    #[test]
    fn refresh_time_is_remembered() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        assert!(cache_age(&sd).is_none());
        let an_hour_ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        sd.write_doc(REFRESHED_DOC, &format!("{an_hour_ago}\n"))
            .unwrap();
        let age = cache_age(&sd).unwrap();
        assert!(
            age >= Duration::from_secs(3600) && age < Duration::from_secs(3700),
            "{age:?}"
        );
        assert!(age > CACHE_MIN_AGE && age < CACHE_MAX_AGE);
    }
}
