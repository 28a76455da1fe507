//! Issue 16: the outputs of the report. The metrics textfile after converged, failed and rejected
//! passes, read by a real Prometheus parser (python3-prometheus-client); the webhook posting to a
//! local HTTPS server with a test CA: once per change of outcome, retried after a 500, silent on
//! unchanged passes, and never slowing a pass when the endpoint hangs.

mod common;

use common::https::HttpsServer;
use common::{wait_until, Fleet, Host, PLUMB};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One sample as the parser read it: (name, labels) -> value, and each family's type.
struct Parsed {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    types: BTreeMap<String, String>,
}

impl Parsed {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let l = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), l)).copied()
    }
}

/// The textfile through prometheus_client's text parser (which raises on malformed input).
fn parse_metrics(path: &Path) -> Parsed {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"samples": [], "types": {}}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    out["types"][fam.name] = fam.type
    for s in fam.samples:
        out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    // The system python, where Debian's python3-prometheus-client is.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .expect("running /usr/bin/python3 (apt-get install python3-prometheus-client)");
    assert!(
        out.status.success(),
        "the Prometheus parser refused {}: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = BTreeMap::new();
    for s in v["samples"].as_array().unwrap() {
        let labels = s[1]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        samples.insert(
            (s[0].as_str().unwrap().to_string(), labels),
            s[2].as_f64().unwrap(),
        );
    }
    let types = v["types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    Parsed { samples, types }
}

fn outcome_is(m: &Parsed, outcome: &str) {
    for o in ["converged", "changed", "drifted", "failed", "rejected"] {
        assert_eq!(
            m.get("plumb_outcome", &[("outcome", o)]),
            Some(if o == outcome { 1.0 } else { 0.0 }),
            "plumb_outcome{{outcome={o}}}"
        );
    }
}

#[test]
fn metrics_textfile_after_converged_failed_and_rejected_passes_issue_16() {
    let fleet = Fleet::new();
    fleet.write("hosts/h1/files/etc/motd", "hello\n");
    let good = fleet.commit("motd");
    let prom_dir = tempfile::tempdir().unwrap();
    let prom = prom_dir.path().join("plumb.prom");
    let host = Host::new(
        "h1",
        &format!("file://{}", fleet.bare().display()),
        &format!("[metrics]\ntextfile = \"{}\"\n", prom.display()),
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    host.apply_expect(0);
    host.apply_expect(0);
    let m = parse_metrics(&prom);
    outcome_is(&m, "converged");
    // Names per Prometheus conventions: units in the name, counters end in _total.
    assert_eq!(m.types["plumb_fetch_failures"], "counter");
    assert_eq!(m.types["plumb_drift_corrections"], "counter");
    assert_eq!(m.types["plumb_passes"], "counter");
    assert_eq!(m.types["plumb_pass_duration_seconds"], "gauge");
    let ts = m.get("plumb_last_pass_timestamp_seconds", &[]).unwrap();
    assert!(
        ts >= before.floor() && ts < before + 120.0,
        "{ts} vs {before}"
    );
    let took = m.get("plumb_pass_duration_seconds", &[]).unwrap();
    assert!((0.0..30.0).contains(&took), "{took}");
    assert_eq!(
        m.get("plumb_resources", &[("kind", "file"), ("state", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_applied_commit_info", &[("commit", &good)]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_passes_total", &[("outcome", "changed")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_passes_total", &[("outcome", "converged")]),
        Some(1.0)
    );
    assert_eq!(m.get("plumb_rollout_waiting", &[]), Some(0.0));
    assert_eq!(m.get("plumb_fetch_failures_total", &[]), Some(0.0));

    // Drift put back: counted.
    std::fs::write(host.path("/etc/motd"), "by hand\n").unwrap();
    host.apply_expect(0);
    let m = parse_metrics(&prom);
    outcome_is(&m, "drifted");
    assert_eq!(m.get("plumb_drift_corrections_total", &[]), Some(1.0));

    // Failed: a directory is where the file goes.
    fleet.write("hosts/h1/files/etc/issue", "x\n");
    fleet.commit("issue");
    std::fs::create_dir_all(host.path("/etc/issue")).unwrap();
    host.apply_expect(1);
    let m = parse_metrics(&prom);
    outcome_is(&m, "failed");
    assert_eq!(
        m.get("plumb_reason_info", &[("reason", "apply-failed")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_resources", &[("kind", "file"), ("state", "failed")]),
        Some(1.0)
    );
    std::fs::remove_dir(host.path("/etc/issue")).unwrap();

    // Rejected: a typo in host.toml; the applied commit is still the one before.
    fleet.write("hosts/h1/host.toml", "packagez = 1\n");
    let bad = fleet.commit("typo");
    host.apply_expect(1);
    let m = parse_metrics(&prom);
    outcome_is(&m, "rejected");
    assert_eq!(
        m.get("plumb_reason_info", &[("reason", "invalid-spec")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_desired_commit_info", &[("commit", &bad)]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_passes_total", &[("outcome", "rejected")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("plumb_passes_total", &[("outcome", "failed")]),
        Some(1.0)
    );
    let success = m.get("plumb_last_success_timestamp_seconds", &[]).unwrap();
    assert!(success >= before.floor(), "{success}");

    // Git gone: the fetch failure is counted.
    std::fs::rename(fleet.bare(), fleet.dir.path().join("moved.git")).unwrap();
    host.apply_expect(1);
    let m = parse_metrics(&prom);
    assert_eq!(m.get("plumb_fetch_failures_total", &[]), Some(1.0));
    // Readable by node_exporter's own user; no temp file left beside it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = std::fs::read_dir(prom_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["plumb.prom"]);

    // `plan` is not a pass: the file is left as it was.
    let text = std::fs::read_to_string(&prom).unwrap();
    let _ = host.plumb(&["plan"]);
    assert_eq!(std::fs::read_to_string(&prom).unwrap(), text);
}

/// A `plumb run` child, stopped (by its pid) when the test ends however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_daemon(host: &Host, log: &Path) -> Daemon {
    let child = Command::new(PLUMB)
        .args(["run", "--config"])
        .arg(host.config())
        .env("PLUMB_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// Passes counted so far (all outcomes), from the textfile; 0 before the first.
fn passes(prom: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(prom) else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("plumb_passes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn webhook_host(fleet: &Fleet, server: &HttpsServer, dir: &Path) -> Host {
    std::fs::write(dir.join("token"), "s3cr3t-t0ken\n").unwrap();
    Host::new(
        "h1",
        &format!("file://{}", fleet.bare().display()),
        &format!(
            "[metrics]\ntextfile = \"{}\"\n[notify]\nwebhook = \"{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
            dir.join("plumb.prom").display(),
            server.url(),
            dir.join("token").display(),
            server.ca_file.display()
        ),
    )
}

#[test]
fn webhook_posts_each_change_of_outcome_once_and_retries_issue_16() {
    let server = HttpsServer::start();
    let fleet = Fleet::new();
    fleet.write("hosts/h1/files/etc/motd", "hello\n");
    fleet.commit("motd");
    let dir = tempfile::tempdir().unwrap();
    let host = webhook_host(&fleet, &server, dir.path());
    let prom = dir.path().join("plumb.prom");
    let log = dir.path().join("plumb.log");
    let _d = run_daemon(&host, &log);

    // Healthy from the start: nothing to announce.
    wait_until("two passes", Duration::from_secs(60), || passes(&prom) >= 2);
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // A bad commit: one change of outcome; the first POST gets a 500 and is retried.
    server.answer(&[500]);
    fleet.write("hosts/h1/host.toml", "packagez = 1\n");
    let bad = fleet.commit("typo");
    wait_until("the retried POST", Duration::from_secs(60), || {
        server.requests().len() >= 2
    });
    let reqs = server.requests();
    for r in &reqs {
        assert_eq!(r.line, "POST /hook HTTP/1.1");
        assert_eq!(r.header("authorization"), Some("Bearer s3cr3t-t0ken"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let j = r.json();
        assert_eq!(j["host"], "h1");
        assert_eq!(j["outcome"], "rejected");
        assert_eq!(j["previous_outcome"], "converged");
        assert_eq!(j["commit"], bad.as_str());
        assert_eq!(j["reason"], "invalid-spec");
        assert!(j["message"].as_str().unwrap().contains("packagez"), "{j}");
    }
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(500), "retried after {gap:?}");

    // Unchanged passes (still rejected): nothing more.
    let seen = passes(&prom);
    wait_until("three more passes", Duration::from_secs(60), || {
        passes(&prom) >= seen + 3
    });
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());

    // Fixed: back to healthy, announced once.
    fleet.write("hosts/h1/host.toml", "");
    let fixed = fleet.commit("fix");
    wait_until("the recovery POST", Duration::from_secs(60), || {
        server.requests().len() >= 3
    });
    let j = server.requests()[2].json();
    // The fix changes nothing on the host (the bad commit never reached it).
    assert_eq!(j["outcome"], "converged");
    assert_eq!(j["previous_outcome"], "rejected");
    assert_eq!(j["commit"], fixed.as_str());
    assert_eq!(j["reason"], "");
    let seen = passes(&prom);
    wait_until("three more passes", Duration::from_secs(60), || {
        passes(&prom) >= seen + 3
    });
    assert_eq!(server.requests().len(), 3);

    // The token is never logged (the log is at debug).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("webhook"), "{text}");
    assert!(!text.contains("s3cr3t"), "the token leaked into the log");
}

#[test]
fn a_hanging_webhook_never_slows_a_pass_issue_16() {
    let server = HttpsServer::start();
    server.hang(true);
    let fleet = Fleet::new();
    fleet.write("hosts/h1/host.toml", "packagez = 1\n");
    fleet.commit("typo");
    let dir = tempfile::tempdir().unwrap();
    let host = webhook_host(&fleet, &server, dir.path());
    let prom = dir.path().join("plumb.prom");
    let _d = run_daemon(&host, &dir.path().join("plumb.log"));

    // The first pass is rejected: its POST hangs (the sender's attempt lasts up to 30 s).
    wait_until("the POST", Duration::from_secs(60), || {
        !server.requests().is_empty()
    });
    let hung_at = Instant::now();
    let seen = passes(&prom);
    // interval = 1s: three passes take ~3 s; far less than one stuck attempt.
    wait_until(
        "three passes while the POST hangs",
        Duration::from_secs(20),
        || passes(&prom) >= seen + 3,
    );
    assert!(
        hung_at.elapsed() < Duration::from_secs(15),
        "passes waited for the webhook: {:?}",
        hung_at.elapsed()
    );
    let m = parse_metrics(&prom);
    let took = m.get("plumb_pass_duration_seconds", &[]).unwrap();
    assert!(took < 5.0, "a pass took {took} s");
    assert_eq!(server.requests().len(), 1);
}
