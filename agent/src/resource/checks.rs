//! Commands from host.toml that judge new content before it goes live: a file's `validate` runs
//! on a staged copy before anything of the commit is written (Ansible's `validate:`, Puppet's
//! `validate_cmd`), and a unit's `check` runs on the written files before the unit restarts or
//! reloads (`nginx -t`). A refusal is a verdict on the commit; a command that cannot be run at all
//! is not (its program may come with a package of this very commit).

use crate::host::fs::{HostFs, Observed};
use crate::reason::Reason;
use crate::spec::{Content, FileSpec, SpecError, UnitSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// How long one `validate` or `check` command may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A unit's `check` refused the files this pass wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailed {
    pub unit: String,
    pub command: String,
    pub output: String,
    /// The command could not be run at all: a fault on the host, not a verdict on the commit.
    pub fault: bool,
}

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check of {} (`{}`) failed: {}",
            self.unit, self.command, self.output
        )
    }
}

/// Whether every program these files' `validate` names exists on the host now.
pub fn validators_present(files: &BTreeMap<String, FileSpec>) -> bool {
    files
        .values()
        .filter_map(|f| f.validate.as_ref())
        .all(|argv| Path::new(&argv[0]).exists())
}

/// Runs `validate` for every file whose content on the host differs from Git, on a staged copy
/// under `staging` (plumb's own, 0700). A refusal rejects the commit (`validate-failed`); with
/// `require_programs` false, a validator that is not installed yet is skipped (the caller runs
/// this again once the commit's packages are in).
pub fn validate_files(
    fs: &HostFs,
    files: &BTreeMap<String, FileSpec>,
    staging: &Path,
    require_programs: bool,
) -> Result<(), SpecError> {
    for (path, spec) in files {
        let (Some(argv), Content::Regular(data)) = (&spec.validate, &spec.content) else {
            continue;
        };
        if matches!(fs.observe(path), Ok(Observed::File { data: ref have, .. }) if have == data) {
            continue; // already there: validated when it was written
        }
        if !Path::new(&argv[0]).exists() {
            if require_programs {
                return Err(refused(path, argv, "the program is not installed".into()));
            }
            continue;
        }
        let staged = stage(staging, path, data)
            .map_err(|e| refused(path, argv, format!("staging the file: {e:#}")))?;
        let args: Vec<String> = argv
            .iter()
            .map(|a| a.replace("%s", &staged.to_string_lossy()))
            .collect();
        let result = crate::health::run_command(&args, TIMEOUT);
        let _ = std::fs::remove_file(&staged);
        let result = match result {
            Ok(finding) => finding,
            Err(fault) => {
                return Err(SpecError::new(
                    Reason::CheckFault,
                    format!(
                        "{path}: `validate` ({}) could not be run: {fault}; the commit is tried again on the next pass",
                        argv.join(" ")
                    ),
                ))
            }
        };
        if let Err(output) = result {
            let output = if spec.is_secret() {
                "(output not shown: the file is secret)".to_string()
            } else {
                output
            };
            return Err(refused(path, argv, output));
        }
        tracing::debug!(path, "validate passed");
    }
    Ok(())
}

fn refused(path: &str, argv: &[String], why: String) -> SpecError {
    SpecError::new(
        Reason::ValidateFailed,
        format!(
            "{path}: `validate` ({}) refused the new content, so nothing of this commit was written: {why}",
            argv.join(" ")
        ),
    )
}

/// Writes `data` to a private file under `staging` named after `path`'s file name (validators
/// such as visudo look at the name).
fn stage(staging: &Path, path: &str, data: &[u8]) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(staging)?;
    let name = path.rsplit('/').next().unwrap_or("file");
    let staged = staging.join(format!("validate-{name}"));
    let _ = std::fs::remove_file(&staged);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)?;
    f.write_all(data)?;
    Ok(staged)
}

/// Runs the `check` of every unit that has one, after a pass wrote `changed` files and before any
/// unit restarts or reloads. The first refusal is returned.
pub fn check_units(
    units: &BTreeMap<String, UnitSpec>,
    changed: &BTreeSet<String>,
) -> Result<(), CheckFailed> {
    if changed.is_empty() {
        return Ok(());
    }
    for (name, spec) in units {
        let Some(argv) = &spec.check else {
            continue;
        };
        let (output, fault) = match crate::health::run_command(argv, TIMEOUT) {
            Ok(Ok(())) => {
                tracing::info!(unit = %name, "check of {name} passed");
                continue;
            }
            Ok(Err(output)) => (output, false),
            Err(fault) => (fault.to_string(), true),
        };
        tracing::warn!(unit = %name, output = %output, fault, "check of {name} failed: {output}");
        return Err(CheckFailed {
            unit: name.clone(),
            command: argv.join(" "),
            output,
            fault,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, validate: &[&str]) -> FileSpec {
        FileSpec {
            content: Content::Regular(data.as_bytes().to_vec()),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            origin: "hosts/h/files/etc/app.conf".into(),
            validate: Some(validate.iter().map(|s| s.to_string()).collect()),
            secret: None,
        }
    }

    #[test]
    fn validate_runs_on_a_staged_copy_and_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let fs = HostFs::open(root.path()).unwrap();
        let staging = state.path().join("staging");
        let grep = ["/bin/grep", "-q", "^ok", "%s"];
        let ok: BTreeMap<String, FileSpec> = [("/etc/app.conf".into(), file("ok\n", &grep))].into();
        validate_files(&fs, &ok, &staging, true).unwrap();
        let bad: BTreeMap<String, FileSpec> =
            [("/etc/app.conf".into(), file("broken\n", &grep))].into();
        let e = validate_files(&fs, &bad, &staging, true).unwrap_err();
        assert_eq!(e.reason, Reason::ValidateFailed);
        assert!(
            e.message
                .starts_with("/etc/app.conf: `validate` (/bin/grep"),
            "{}",
            e.message
        );
        assert!(
            !root.path().join("etc/app.conf").exists(),
            "nothing written"
        );
        assert_eq!(
            std::fs::read_dir(&staging).unwrap().count(),
            0,
            "staged copy removed"
        );

        // Content already on the host is not validated again; a missing program waits for its
        // package unless required.
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/app.conf"), "broken\n").unwrap();
        validate_files(&fs, &bad, &staging, true).unwrap();
        let later: BTreeMap<String, FileSpec> = [(
            "/etc/app.conf".into(),
            file("new\n", &["/nonexistent/nginx", "-t", "-c", "%s"]),
        )]
        .into();
        validate_files(&fs, &later, &staging, false).unwrap();
        assert!(!validators_present(&later));
        let e = validate_files(&fs, &later, &staging, true).unwrap_err();
        assert!(e.message.contains("not installed"), "{}", e.message);
    }

    #[test]
    fn unit_checks_run_only_after_changes() {
        let unit = |argv: &[&str]| UnitSpec {
            name: "app.service".into(),
            file: None,
            dropins: BTreeMap::new(),
            enabled: None,
            state: None,
            restart_on: vec![],
            reload_on: vec![],
            check: Some(argv.iter().map(|s| s.to_string()).collect()),
        };
        let failing: BTreeMap<String, UnitSpec> = [(
            "app.service".into(),
            unit(&["/bin/sh", "-c", "echo bad config; exit 1"]),
        )]
        .into();
        check_units(&failing, &BTreeSet::new()).unwrap();
        let changed: BTreeSet<String> = ["/etc/app.conf".to_string()].into();
        let e = check_units(&failing, &changed).unwrap_err();
        assert_eq!(e.unit, "app.service");
        assert!(e.output.contains("bad config"), "{e}");
        let passing: BTreeMap<String, UnitSpec> =
            [("app.service".into(), unit(&["/bin/true"]))].into();
        check_units(&passing, &changed).unwrap();
    }
}
