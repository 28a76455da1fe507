//! Metrics: after every pass, the Prometheus text format written atomically to `[metrics]
//! textfile` (node_exporter's textfile collector reads it). Counters survive restarts: they are
//! kept in `state_dir` (`metrics.toml`), so a `plumb apply` from cron counts as the daemon does.

use super::report::{Kind, Outcome, Report, ResourceState};
use crate::config::MetricsTarget;
use crate::state::StateDir;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const COUNTERS_DOC: &str = "metrics.toml";

/// What one pass tells the metrics beyond its report.
#[derive(Debug, Clone, Copy)]
pub struct PassFacts {
    pub finished: SystemTime,
    pub duration: Duration,
    pub fetch_failed: bool,
    /// The rollout gate (section 11) holds a newer commit back.
    pub rollout_waiting: bool,
}

/// The counters, kept between passes and processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub passes: BTreeMap<String, u64>,
    #[serde(default)]
    pub fetch_failures: u64,
    #[serde(default)]
    pub drift_corrections: u64,
    /// Unix time of the last pass that ended converged, changed or drifted (not failed/rejected).
    #[serde(default)]
    pub last_success: Option<f64>,
}

impl Counters {
    pub fn count(&mut self, report: &Report, facts: &PassFacts) {
        *self
            .passes
            .entry(report.outcome.as_str().into())
            .or_default() += 1;
        self.fetch_failures += u64::from(facts.fetch_failed);
        self.drift_corrections += report.count(ResourceState::DriftCorrected) as u64;
        if !matches!(report.outcome, Outcome::Failed | Outcome::Rejected) {
            self.last_success = Some(unix(facts.finished));
        }
    }
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Converged,
    Outcome::Changed,
    Outcome::Drifted,
    Outcome::Failed,
    Outcome::Rejected,
];
const KINDS: [(Kind, &str); 4] = [
    (Kind::File, "file"),
    (Kind::Unit, "unit"),
    (Kind::Container, "container"),
    (Kind::Package, "package"),
];
const STATES: [(ResourceState, &str); 6] = [
    (ResourceState::Ok, "ok"),
    (ResourceState::Changed, "changed"),
    (ResourceState::DriftCorrected, "drift-corrected"),
    (ResourceState::Drifted, "drifted"),
    (ResourceState::Failed, "failed"),
    (ResourceState::Pruned, "pruned"),
];

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Pure: the text of the textfile.
pub fn render(report: &Report, facts: &PassFacts, counters: &Counters) -> String {
    let mut o = Out(String::new());
    let host = report.host.as_str();
    o.family(
        "plumb_agent_info",
        "gauge",
        "The agent's version and host name (always 1).",
    );
    o.sample(
        "plumb_agent_info",
        &[("version", &report.agent_version), ("host", host)],
        1.0,
    );
    o.family(
        "plumb_last_pass_timestamp_seconds",
        "gauge",
        "Unix time the last pass finished.",
    );
    o.sample(
        "plumb_last_pass_timestamp_seconds",
        &[],
        unix(facts.finished).floor(),
    );
    o.family(
        "plumb_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last pass that was not failed or rejected (0: none yet).",
    );
    o.sample(
        "plumb_last_success_timestamp_seconds",
        &[],
        counters.last_success.unwrap_or(0.0).floor(),
    );
    o.family(
        "plumb_pass_duration_seconds",
        "gauge",
        "How long the last pass took, fetch to record.",
    );
    o.sample(
        "plumb_pass_duration_seconds",
        &[],
        (facts.duration.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    o.family(
        "plumb_outcome",
        "gauge",
        "1 for the last pass's outcome, 0 for the others.",
    );
    for out in OUTCOMES {
        let v = f64::from(u8::from(report.outcome == out));
        o.sample("plumb_outcome", &[("outcome", out.as_str())], v);
    }
    o.family(
        "plumb_reason_info",
        "gauge",
        "The reason code of a failed or rejected pass (docs/reasons.md); absent otherwise.",
    );
    if let Some(r) = report.reason {
        o.sample("plumb_reason_info", &[("reason", r.as_str())], 1.0);
    }
    o.family(
        "plumb_resources",
        "gauge",
        "Managed resources by kind and by their state in the last pass.",
    );
    for (kind, kname) in KINDS {
        for (state, sname) in STATES {
            let n = report
                .resources
                .iter()
                .filter(|r| r.kind == kind && r.state == state)
                .count();
            o.sample(
                "plumb_resources",
                &[("kind", kname), ("state", sname)],
                n as f64,
            );
        }
    }
    o.family(
        "plumb_applied_commit_info",
        "gauge",
        "The commit the host runs (always 1).",
    );
    o.sample(
        "plumb_applied_commit_info",
        &[("commit", &report.applied_commit)],
        1.0,
    );
    o.family(
        "plumb_desired_commit_info",
        "gauge",
        "The commit Git asks for (always 1).",
    );
    o.sample(
        "plumb_desired_commit_info",
        &[("commit", &report.desired_commit)],
        1.0,
    );
    o.family("plumb_passes_total", "counter", "Passes run, by outcome.");
    for out in OUTCOMES {
        let n = counters.passes.get(out.as_str()).copied().unwrap_or(0);
        o.sample("plumb_passes_total", &[("outcome", out.as_str())], n as f64);
    }
    o.family(
        "plumb_fetch_failures_total",
        "counter",
        "Passes whose fetch failed (the last fetched commit stayed in force).",
    );
    o.sample(
        "plumb_fetch_failures_total",
        &[],
        counters.fetch_failures as f64,
    );
    o.family(
        "plumb_drift_corrections_total",
        "counter",
        "Resources put back after drifting from Git.",
    );
    o.sample(
        "plumb_drift_corrections_total",
        &[],
        counters.drift_corrections as f64,
    );
    o.family(
        "plumb_rollout_waiting",
        "gauge",
        "1 while a rollout gate holds a newer commit back, else 0.",
    );
    o.sample(
        "plumb_rollout_waiting",
        &[],
        f64::from(u8::from(facts.rollout_waiting)),
    );
    if let Some(required) = report.reboot_required {
        o.family(
            "plumb_reboot_required",
            "gauge",
            "1 while the OS says a reboot is needed (/run/reboot-required, needs-restarting -r).",
        );
        o.sample("plumb_reboot_required", &[], f64::from(u8::from(required)));
    }
    o.0
}

/// Counts the pass and writes the textfile. Errors are the caller's to log: metrics never fail a
/// pass.
pub fn record(
    target: &MetricsTarget,
    state_dir: &StateDir,
    report: &Report,
    facts: &PassFacts,
) -> Result<()> {
    let mut counters: Counters = match state_dir.read_doc(COUNTERS_DOC)? {
        Some(t) => toml::from_str(&t).unwrap_or_default(),
        None => Counters::default(),
    };
    counters.count(report, facts);
    state_dir.write_doc_unsynced(COUNTERS_DOC, &toml::to_string(&counters)?)?;
    let path = match target {
        MetricsTarget::Off => return Ok(()),
        MetricsTarget::File(p) => p.as_path(),
        // node_exporter not installed: no metrics, no error.
        MetricsTarget::Collector(p) if !p.parent().is_some_and(Path::is_dir) => return Ok(()),
        MetricsTarget::Collector(p) => p.as_path(),
    };
    write_textfile(path, &render(report, facts, &counters))
}

/// Atomic, and readable by node_exporter (which runs as its own user): temp file in the same
/// directory, mode 0644, rename. Not fsynced: a crash costs one pass's numbers.
fn write_textfile(path: &Path, text: &str) -> Result<()> {
    use anyhow::Context;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .context("the metrics textfile has no directory")?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // node_exporter skips files not ending in .prom: a dot-file temp name is never read half-way.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing the metrics textfile {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming the metrics textfile into {}", path.display()))
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::ResourceReport;

    #[test]
    fn text_format_names_and_values() {
        let report = Report {
            host: "web-01".into(),
            agent_version: "0.1.0".into(),
            outcome: Outcome::Rejected,
            desired_commit: "b".repeat(40),
            applied_commit: "a".repeat(40),
            last_good_commit: "a".repeat(40),
            checked_at: "2026-11-26T10:00:00Z".into(),
            message: "bad \"quote\"".into(),
            reason: Some(crate::reason::Reason::UnsignedCommit),
            applied_at: String::new(),
            waiting: String::new(),
            reboot_required: Some(true),
            last_reboot: None,
            age_recipient: None,
            facts: None,
            upgrades: None,
            container_updates: vec![],
            resources: vec![ResourceReport {
                kind: Kind::File,
                name: "/etc/motd".into(),
                state: ResourceState::DriftCorrected,
                detail: String::new(),
            }],
        };
        let facts = PassFacts {
            finished: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(23),
            fetch_failed: true,
            rollout_waiting: false,
        };
        let mut c = Counters::default();
        c.count(&report, &facts);
        c.count(&report, &facts);
        let t = render(&report, &facts, &c);
        for line in [
            "plumb_last_pass_timestamp_seconds 1700000000\n",
            "plumb_pass_duration_seconds 0.023\n",
            "plumb_outcome{outcome=\"rejected\"} 1\n",
            "plumb_outcome{outcome=\"converged\"} 0\n",
            "plumb_reason_info{reason=\"unsigned-commit\"} 1\n",
            "plumb_resources{kind=\"file\",state=\"drift-corrected\"} 1\n",
            "plumb_resources{kind=\"unit\",state=\"ok\"} 0\n",
            "plumb_passes_total{outcome=\"rejected\"} 2\n",
            "plumb_fetch_failures_total 2\n",
            "plumb_drift_corrections_total 2\n",
            "plumb_rollout_waiting 0\n",
            "plumb_reboot_required 1\n",
            "plumb_last_success_timestamp_seconds 0\n",
            "# TYPE plumb_fetch_failures_total counter\n",
        ] {
            assert!(t.contains(line), "{line:?} missing in:\n{t}");
        }
        assert!(t.contains(&format!(
            "plumb_applied_commit_info{{commit=\"{}\"}} 1",
            "a".repeat(40)
        )));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
