//! The report a pass produces: `status.toml` on the status branch, and `plumb status` locally.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The host matched Git; nothing was done.
    Converged,
    /// A new commit (or a change of it) was applied.
    Changed,
    /// The host had drifted from Git: corrected (enforce) or only reported (detect).
    Drifted,
    /// A resource could not be applied, a health check failed, or Git could not be read.
    Failed,
    /// The new commit is invalid or untrusted: nothing of it was applied.
    Rejected,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Changed => "changed",
            Outcome::Drifted => "drifted",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Unit,
    Container,
    Package,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceState {
    Ok,
    Changed,
    DriftCorrected,
    /// Differs from Git and was left alone (`mode = "detect"`).
    Drifted,
    Failed,
    Pruned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    pub kind: Kind,
    pub name: String,
    pub state: ResourceState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub agent_version: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub desired_commit: String,
    #[serde(default)]
    pub applied_commit: String,
    #[serde(default)]
    pub last_good_commit: String,
    /// When `applied_commit` was first applied here (rollout `soak` counts from it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_at: String,
    /// Why the host has not moved to `desired_commit` yet (rollout gate, quarantine, window,
    /// disruption slot); empty when it is not waiting.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
    /// The OS says a reboot is needed (`/run/reboot-required`, `needs-restarting -r`), on every
    /// pass whatever `[reboot] when` says; absent when it could not be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    pub checked_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Why, as a stable code, when failed or rejected (docs/reasons.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::reason::Reason>,
    /// The recipient `.age` files must be encrypted to for this host (DESIGN section 10):
    /// `plumb secret encrypt --host` reads it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
    /// The last reboot plumb made (`[reboot] when = "required"`), once the boot's health
    /// checks passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reboot: Option<LastReboot>,
    /// The host facts templates saw (DESIGN section 9); a change of them is a change of meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<crate::spec::facts::Facts>,
    /// The upgrades the package repositories offer this host (DESIGN section 13); absent when
    /// plumb does not manage the system's packages (another `root`) or could not list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrades: Option<Upgrades>,
    #[serde(default)]
    pub resources: Vec<ResourceReport>,
    /// Container images plumb updated, rolled back, or waits to update (DESIGN section 13).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_updates: Vec<ContainerUpdate>,
}

/// One container's image update (`[[container_updates]]`): the last one plumb made, or the one
/// waiting for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUpdate {
    /// The Quadlet file ("web.container").
    pub container: String,
    /// The image reference it follows ("registry.example:5000/web:latest").
    pub image: String,
    pub state: UpdateState,
    /// The digest it ran before the update.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub old_digest: String,
    /// The digest the update brought (running when `updated`, put back when `rolled-back`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub new_digest: String,
    /// When it happened (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
    /// Why, in words: the failed check, when the window opens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateState {
    /// Running the new image; the health checks passed.
    Updated,
    /// The new image failed the health checks (or did not start): the old one runs again, and
    /// the new one is not tried again.
    RolledBack,
    /// The update could not be made or undone: the detail says what runs.
    Failed,
    /// A newer image is in the registry; the window is closed or no disruption slot is free.
    Waiting,
}

/// `[upgrades]`: what `[packages] upgrade` would apply, listed again only when the package
/// database or the package lists changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Upgrades {
    /// Packages with a newer version available (exact, however long `names` is).
    pub count: usize,
    /// How many of them are security updates.
    pub security: usize,
    /// Their names, sorted, at most `MAX_UPGRADE_NAMES` (security updates first).
    #[serde(default)]
    pub names: Vec<String>,
    /// `[packages] upgrade` of the applied commit.
    #[serde(default)]
    pub policy: String,
    /// When plumb last ran the upgrades (RFC 3339), if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_run: String,
    /// When they run next, when the policy is not "none" ("when the window opens mon 02:00 UTC").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next: String,
}

/// At most this many names in `[upgrades] names` (the count stays exact).
pub const MAX_UPGRADE_NAMES: usize = 50;

/// `[last_reboot]` of status.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReboot {
    /// When plumb asked for it (RFC 3339).
    pub at: String,
    /// What required it ("/run/reboot-required: linux-image-6.12.57+deb13-amd64").
    pub why: String,
}

impl Report {
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a report always serializes")
    }

    pub fn from_toml(s: &str) -> anyhow::Result<Report> {
        Ok(toml::from_str(s)?)
    }

    /// Same meaning: equal but for the time it was checked (a heartbeat need not say it again).
    pub fn same_meaning(&self, other: &Report) -> bool {
        let mut a = self.clone();
        a.checked_at.clone_from(&other.checked_at);
        a == *other
    }

    /// Resources that changed or failed; `ok` ones are counted, not listed, in one-line summaries.
    pub fn count(&self, state: ResourceState) -> usize {
        self.resources.iter().filter(|r| r.state == state).count()
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_roundtrip_and_field_names() {
        let r = Report {
            host: "web-01".into(),
            agent_version: "0.1.0".into(),
            outcome: Outcome::Drifted,
            desired_commit: "a".repeat(40),
            applied_commit: "a".repeat(40),
            last_good_commit: "a".repeat(40),
            applied_at: String::new(),
            waiting: String::new(),
            reboot_required: None,
            last_reboot: None,
            checked_at: "2026-11-26T10:00:00Z".into(),
            message: "drift corrected on 1 resource".into(),
            reason: None,
            age_recipient: None,
            facts: None,
            upgrades: None,
            container_updates: vec![],
            resources: vec![ResourceReport {
                kind: Kind::File,
                name: "/etc/motd".into(),
                state: ResourceState::DriftCorrected,
                detail: "content".into(),
            }],
        };
        let text = r.to_toml();
        assert!(text.contains("outcome = \"drifted\""), "{text}");
        assert!(text.contains("state = \"drift-corrected\""), "{text}");
        assert!(text.contains("[[resources]]"), "{text}");
        assert_eq!(Report::from_toml(&text).unwrap(), r);
        let mut later = r.clone();
        later.checked_at = "2026-11-26T11:00:00Z".into();
        assert!(later.same_meaning(&r));
        later.outcome = Outcome::Converged;
        assert!(!later.same_meaning(&r));
    }
}
