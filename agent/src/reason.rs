//! Stable, machine-readable reasons for a failed or rejected report (`reason` in status.toml,
//! `plumb status --json`, the journal). Operators alert and script on these: never rename one;
//! add new ones. docs/reasons.md explains each.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    // The commit is bad (rejected: nothing of it applied).
    /// host.toml, fleet.toml or the tree is malformed: a parse error, an unknown key, a bad value.
    InvalidSpec,
    /// A path outside the allowed roots, a symlink escaping them, a name plumb cannot write.
    InvalidPath,
    /// A unit or Quadlet file systemd would not load.
    InvalidUnit,
    /// A file, path, depth, include count or total over a `[limits]` bound.
    SizeLimit,
    /// `[trust]` is on and the commit is not signed.
    UnsignedCommit,
    /// Signed, but not by a key in allowed_signers, or the signature does not verify.
    UntrustedSignature,
    /// The new commit does not descend from the applied one (a rewind or force-push).
    NotFastForward,
    /// A file's `validate` command refused the staged file.
    ValidateFailed,
    /// A template could not be rendered (section 9).
    TemplateError,
    /// A secret could not be decrypted for this host (section 10).
    CannotDecrypt,
    /// The commit would break plumb itself (its config, state, binary or service).
    SelfProtection,
    // The commit was applied and judged bad (failed: rolled back).
    /// A unit's `check` command failed before its restart: files put back.
    CheckFailed,
    /// A `[[health]]` check failed after the apply: rolled back.
    HealthCheckFailed,
    /// The commit failed its checks before and stays rolled back until a newer one (or a retry).
    BadCommit,
    // Faults: nothing was judged; retried.
    /// The fleet repository could not be fetched.
    FetchFailed,
    /// One or more resources could not be applied.
    ApplyFailed,
    /// A check could not be run (D-Bus gone, systemd restarting): retried, the commit not judged.
    CheckFault,
    // Maintenance (DESIGN section 13): the commit stays good; the disruption slot stays held.
    /// `[packages] upgrade`: the package tool failed to apply the upgrades.
    UpgradeFailed,
    /// The upgrades were applied, then a `[[health]]` check of the applied commit failed.
    UpgradeUnhealthy,
    /// A container image update failed its health checks or did not start: the old image runs.
    ContainerUpdateFailed,
    /// plumb asked for a reboot that did not happen (the D-Bus call failed, or the host is
    /// still up long after it): not asked again in this window.
    RebootFailed,
    /// The `[[health]]` checks failed after a reboot plumb made: the disruption slot is kept,
    /// so no further host reboots, until it expires (`lock_ttl`).
    RebootHealthFailed,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::InvalidSpec => "invalid-spec",
            Reason::InvalidPath => "invalid-path",
            Reason::InvalidUnit => "invalid-unit",
            Reason::SizeLimit => "size-limit",
            Reason::UnsignedCommit => "unsigned-commit",
            Reason::UntrustedSignature => "untrusted-signature",
            Reason::NotFastForward => "not-fast-forward",
            Reason::ValidateFailed => "validate-failed",
            Reason::TemplateError => "template-error",
            Reason::CannotDecrypt => "cannot-decrypt",
            Reason::SelfProtection => "self-protection",
            Reason::CheckFailed => "check-failed",
            Reason::HealthCheckFailed => "health-check-failed",
            Reason::BadCommit => "bad-commit",
            Reason::FetchFailed => "fetch-failed",
            Reason::ApplyFailed => "apply-failed",
            Reason::CheckFault => "check-fault",
            Reason::UpgradeFailed => "upgrade-failed",
            Reason::UpgradeUnhealthy => "upgrade-unhealthy",
            Reason::ContainerUpdateFailed => "container-update-failed",
            Reason::RebootFailed => "reboot-failed",
            Reason::RebootHealthFailed => "reboot-health-failed",
        }
    }

    pub const ALL: [Reason; 22] = [
        Reason::InvalidSpec,
        Reason::InvalidPath,
        Reason::InvalidUnit,
        Reason::SizeLimit,
        Reason::UnsignedCommit,
        Reason::UntrustedSignature,
        Reason::NotFastForward,
        Reason::ValidateFailed,
        Reason::TemplateError,
        Reason::CannotDecrypt,
        Reason::SelfProtection,
        Reason::CheckFailed,
        Reason::HealthCheckFailed,
        Reason::BadCommit,
        Reason::FetchFailed,
        Reason::ApplyFailed,
        Reason::CheckFault,
        Reason::UpgradeFailed,
        Reason::UpgradeUnhealthy,
        Reason::ContainerUpdateFailed,
        Reason::RebootFailed,
        Reason::RebootHealthFailed,
    ];
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_serialized_names_and_documented() {
        let doc = include_str!("../../docs/reasons.md");
        for r in Reason::ALL {
            let toml = toml::to_string(&std::collections::BTreeMap::from([("r", r)])).unwrap();
            assert_eq!(toml.trim(), format!("r = \"{}\"", r.as_str()));
            assert!(
                doc.contains(&format!("`{}`", r.as_str())),
                "docs/reasons.md lacks {r}"
            );
        }
    }
}
