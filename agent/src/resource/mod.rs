//! One module per resource kind behind one trait, [`Kind`]: observe (reads the host through
//! `host/`), plan (pure: no I/O, no clock), apply (idempotent I/O through `host/`). The engine
//! runs the same phases over every kind in [`ORDER`]; see docs/resource-kinds.md to add one.
//!
//! Units and Quadlet containers are one kind to the engine, [`activate::ServiceKind`]: systemd
//! activates them together (one daemon-reload, stops before starts). `unit` and `container` are
//! their pure halves; `service` holds the change both plan.

pub mod activate;
pub mod checks;
pub mod container;
pub mod file;
pub mod package;
pub mod service;
pub mod unit;

use crate::host::Host;
use crate::spec::Desired;
use crate::state::{State, StateDir};
use crate::status::report::ResourceReport;
use anyhow::Result;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// One step of a plan.
pub trait Step: std::fmt::Debug {
    /// Whether applying it changes the host (else only the inventory learns something).
    fn touches_host(&self) -> bool;
    /// "update file /etc/motd (content differs)", for `plan` and the journal.
    fn describe(&self) -> String;
}

/// One resource's result in a pass.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: ResourceReport,
    /// Git did not change it; the host did.
    pub drift: bool,
    /// Masked on the host: reported as drift, left alone.
    pub masked: bool,
    /// What was (or would be) done, for `plan` and the pass's change list; empty when nothing.
    pub lines: Vec<String>,
}

/// What `plan` may know besides the kind's own want, have and inventory: what the kinds before
/// it changed in this pass.
#[derive(Debug, Default)]
pub struct Context {
    /// Managed files this pass changed, or in detect mode would change (units with them in
    /// `restart_on` restart, in `reload_on` reload).
    pub changed_paths: BTreeSet<String>,
    /// Detect mode only: the pass would install packages first, which may ship files it plans
    /// to create (an applying pass has installed them before it observes files).
    pub installing_packages: bool,
}

impl Context {
    /// Learns from one kind's outcomes what the kinds after it plan with.
    pub fn learn(&mut self, outcomes: &[Outcome], desired: &Desired) {
        use crate::status::report::{Kind, ResourceState};
        for o in outcomes {
            let r = &o.report;
            match (r.kind, r.state) {
                // Drifted: what detect mode says of a file it would write.
                (
                    Kind::File,
                    ResourceState::Changed
                    | ResourceState::DriftCorrected
                    | ResourceState::Pruned
                    | ResourceState::Drifted,
                ) => {
                    self.changed_paths.insert(r.name.clone());
                }
                (Kind::Package, ResourceState::Drifted)
                    if desired.packages.install.contains(&r.name) =>
                {
                    self.installing_packages = true;
                }
                _ => {}
            }
        }
    }
}

/// What `apply` may change besides the host: the inventory (saved with intent before the host
/// is touched, so a killed pass still knows what it may have written).
pub struct Apply<'a> {
    pub state: &'a mut State,
    pub state_dir: &'a StateDir,
    /// Set on SIGTERM: a kind stops between two changes.
    pub stop: &'a AtomicBool,
    /// A kind stopped before all its changes were applied.
    pub stopped: bool,
}

impl Apply<'_> {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One kind of managed thing.
pub trait Kind {
    /// "file", "package", ... (log fields).
    const NAME: &'static str;
    /// This kind's part of the spec (pure data).
    type Want: ?Sized;
    /// What `observe` read from the host (errors kept per resource, planned as failures).
    type Have;
    /// One step, printable by `plan`.
    type Change: Step;

    fn want(desired: &Desired) -> &Self::Want;
    /// Whether Git or the inventory names anything of this kind; when not, the pass skips it
    /// (no query, no bus).
    fn in_use(want: &Self::Want, state: &State) -> bool;
    fn observe(host: &Host, want: &Self::Want, state: &State, state_dir: &StateDir) -> Self::Have;
    /// Want x have x inventory -> changes. Pure.
    fn plan(
        want: &Self::Want,
        have: &Self::Have,
        state: &State,
        ctx: &Context,
    ) -> Vec<Self::Change>;
    /// What `plan` and detect mode report: the changes, not made.
    fn report(want: &Self::Want, have: &Self::Have, changes: &[Self::Change]) -> Vec<Outcome>;
    /// Makes the changes. Per-resource failures are outcomes; an `Err` is plumb's own state
    /// failing (the pass stops).
    fn apply(
        host: &Host,
        want: &Self::Want,
        have: &Self::Have,
        changes: &[Self::Change],
        run: &mut Apply,
    ) -> Result<Vec<Outcome>>;
}

/// The fixed set of kinds (dispatched by `match`, no trait objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindId {
    Packages,
    Files,
    Services,
}

/// The order of a pass: packages first (files and units may need what they install, and files
/// are observed after the packages that may ship them), then files, then units and containers
/// (restarted on the files written before them).
pub const ORDER: [KindId; 3] = [KindId::Packages, KindId::Files, KindId::Services];

/// Observe, plan, and apply (or, with `detect`, only report) one kind.
pub fn converge<K: Kind>(
    host: &Host,
    desired: &Desired,
    ctx: &Context,
    detect: bool,
    run: &mut Apply,
) -> Result<Vec<Outcome>> {
    let want = K::want(desired);
    if !K::in_use(want, run.state) {
        return Ok(vec![]);
    }
    let have = K::observe(host, want, run.state, run.state_dir);
    let changes = K::plan(want, &have, run.state, ctx);
    tracing::debug!(kind = K::NAME, ?changes, "plan");
    if detect {
        Ok(K::report(want, &have, &changes))
    } else {
        K::apply(host, want, &have, &changes, run)
    }
}

impl KindId {
    /// [`converge`] for this kind.
    pub fn converge(
        self,
        host: &Host,
        desired: &Desired,
        ctx: &Context,
        detect: bool,
        run: &mut Apply,
    ) -> Result<Vec<Outcome>> {
        match self {
            KindId::Packages => converge::<package::PackageKind>(host, desired, ctx, detect, run),
            KindId::Files => converge::<file::FileKind>(host, desired, ctx, detect, run),
            KindId::Services => converge::<activate::ServiceKind>(host, desired, ctx, detect, run),
        }
    }
}

/// An `ok` line for each resource Git names that no change reported.
pub fn fill_ok<'a>(
    out: &mut Vec<Outcome>,
    kind: crate::status::report::Kind,
    names: impl IntoIterator<Item = &'a String>,
) {
    let seen: BTreeSet<String> = out
        .iter()
        .filter(|o| o.report.kind == kind)
        .map(|o| o.report.name.clone())
        .collect();
    for name in names {
        if !seen.contains(name) {
            out.push(Outcome {
                report: ResourceReport {
                    kind,
                    name: name.clone(),
                    state: crate::status::report::ResourceState::Ok,
                    detail: String::new(),
                },
                drift: false,
                masked: false,
                lines: vec![],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::{Kind, ResourceState};

    fn outcome(kind: Kind, name: &str, state: ResourceState) -> Outcome {
        Outcome {
            report: ResourceReport {
                kind,
                name: name.into(),
                state,
                detail: String::new(),
            },
            drift: false,
            masked: false,
            lines: vec![],
        }
    }

    /// What later kinds plan with: files written (or, in detect mode, to be written) and
    /// whether packages are still to be installed.
    #[test]
    fn context_learns_changed_files_and_pending_installs() {
        let mut desired = Desired::default();
        desired.packages.install.insert("nginx".into());
        desired.packages.remove.insert("telnet".into());
        let mut ctx = Context::default();
        ctx.learn(
            &[
                outcome(Kind::Package, "telnet", ResourceState::Drifted),
                outcome(Kind::Package, "curl", ResourceState::Changed),
                outcome(Kind::File, "/etc/ok", ResourceState::Ok),
                outcome(Kind::File, "/etc/failed", ResourceState::Failed),
                outcome(Kind::File, "/etc/a", ResourceState::Changed),
                outcome(Kind::File, "/etc/b", ResourceState::DriftCorrected),
                outcome(Kind::File, "/etc/c", ResourceState::Pruned),
                outcome(Kind::File, "/etc/d", ResourceState::Drifted),
            ],
            &desired,
        );
        assert!(!ctx.installing_packages, "a removal is not an install");
        assert_eq!(
            ctx.changed_paths.iter().collect::<Vec<_>>(),
            ["/etc/a", "/etc/b", "/etc/c", "/etc/d"]
        );
        ctx.learn(
            &[outcome(Kind::Package, "nginx", ResourceState::Drifted)],
            &desired,
        );
        assert!(ctx.installing_packages);
    }
}
