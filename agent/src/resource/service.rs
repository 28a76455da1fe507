//! What a unit or a Quadlet container asks of systemd: the change both kinds plan (pure), applied
//! together by `activate` (one daemon-reload for both). Neither kind imports `activate`.

use crate::state::ManagedUnit;
use crate::status::report::Kind;

/// What systemd says about one unit.
pub use crate::host::systemd::UnitState as Live;

impl Live {
    /// Running or on its way there: nothing to start.
    pub fn running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading" | "refreshing"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    Write { path: String, data: Vec<u8> },
    Remove { path: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    Start,
    Stop,
    Restart,
    /// ReloadUnit: a running unit rereads its configuration (`reload_on`), same main process.
    Reload,
}

/// Everything one unit (or Quadlet file) needs, applied phase by phase with all the others.
#[derive(Debug, Clone)]
pub struct SystemdChange {
    pub kind: Kind,
    /// The resource: "app.service", or the Quadlet file "web.container".
    pub name: String,
    /// The systemd unit acted on ("web.service" for "web.container").
    pub unit: String,
    pub files: Vec<FileOp>,
    /// Some(true): EnableUnitFiles; Some(false): DisableUnitFiles.
    pub enable: Option<bool>,
    pub run: Option<RunAction>,
    /// A unit stopped before `run` (a socket's service, before the socket restarts).
    pub stop_first: Option<String>,
    /// It left Git: stopped and disabled first, then its files removed.
    pub prune: bool,
    /// Git did not change it; the host did.
    pub drift: bool,
    /// Masked on the host: reported, left alone.
    pub masked: bool,
    /// Why nothing can be done for it (reported as failed, or drifted when masked).
    pub blocked: Option<String>,
    /// What differs, for people.
    pub why: Vec<String>,
    /// The inventory entry once its files are written; None when pruned.
    pub record: Option<ManagedUnit>,
    /// The last pass wrote its files but was stopped before it activated it: do it now.
    pub resume: bool,
}

impl SystemdChange {
    pub fn new(kind: Kind, name: &str, unit: &str) -> SystemdChange {
        SystemdChange {
            kind,
            name: name.into(),
            unit: unit.into(),
            files: vec![],
            enable: None,
            run: None,
            stop_first: None,
            prune: false,
            drift: false,
            masked: false,
            blocked: None,
            why: vec![],
            record: None,
            resume: false,
        }
    }

    pub fn touches_host(&self) -> bool {
        self.blocked.is_none()
            && (!self.files.is_empty() || self.enable.is_some() || self.run.is_some() || self.prune)
    }

    /// "restart unit app.service (unit file or drop-in changed, drift)" for plan and logs.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            Kind::Container => "container",
            _ => "unit",
        };
        let verb = if self.prune {
            "prune"
        } else {
            match (self.run, self.enable, self.files.is_empty()) {
                (Some(RunAction::Restart), ..) => "restart",
                (Some(RunAction::Reload), ..) => "reload",
                (Some(RunAction::Start), ..) => "start",
                (Some(RunAction::Stop), ..) => "stop",
                (None, Some(true), _) => "enable",
                (None, Some(false), _) => "disable",
                (None, None, false) => "update",
                (None, None, true) => "keep",
            }
        };
        let mut why = self.why.join(", ");
        if self.drift {
            why.push_str(if why.is_empty() { "drift" } else { ", drift" });
        }
        let unit = if self.unit != self.name {
            format!(" -> {}", self.unit)
        } else {
            String::new()
        };
        format!("{verb} {kind} {}{unit} ({why})", self.name)
    }
}
