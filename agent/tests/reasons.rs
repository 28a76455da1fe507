//! Issue 12: every failed or rejected report carries its stable reason code, the same in
//! status.toml, `plumb status --json` and the pass's log line ("pass done", field `reason`).

mod common;

use common::trust::*;

/// `plumb -v apply` (debug logs, so the pass's info line is there), then the reason everywhere.
fn apply_expecting(host: &Host, outcome: &str, reason: &str) {
    let out = host.plumb(&["-v", "apply"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let r = host.report().expect("a report");
    assert_eq!(r.outcome.as_str(), outcome, "{}", r.message);
    assert_eq!(r.reason.map(|r| r.as_str()), Some(reason), "{}", r.message);

    let toml = std::fs::read_to_string(host.state.join("report.toml")).unwrap();
    assert!(toml.contains(&format!("reason = \"{reason}\"")), "{toml}");

    let json = host.plumb(&["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["reason"], reason, "{json}");

    let line = stderr
        .lines()
        .find(|l| l.contains("pass done"))
        .unwrap_or_else(|| panic!("no pass line in {stderr}"));
    assert!(line.contains(&format!("reason=\"{reason}\"")), "{line}");
    assert!(line.contains(&format!("outcome=\"{outcome}\"")), "{line}");
}

#[test]
fn failed_and_rejected_reports_carry_their_reason_issue_12() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    let host = Host::new(tmp.path(), &fleet.url(), "[limits]\nmax_file_size = 8\n");

    // The commit is bad: rejected before anything is written.
    fleet.write("hosts/h1/host.toml", "packagez = 1\n");
    fleet.commit("typo", None);
    apply_expecting(&host, "rejected", "invalid-spec");

    fleet.write("hosts/h1/host.toml", "");
    fleet.write("hosts/h1/files/etc/big", "more than eight bytes\n");
    fleet.commit("too big", None);
    apply_expecting(&host, "rejected", "size-limit");

    // Applied, and one resource could not be: a directory is in the way.
    fleet.remove("hosts/h1/files/etc/big");
    fleet.write("hosts/h1/files/etc/motd", "hi\n");
    fleet.commit("motd", None);
    std::fs::create_dir_all(host.root.join("etc/motd")).unwrap();
    apply_expecting(&host, "failed", "apply-failed");
    std::fs::remove_dir(host.root.join("etc/motd")).unwrap();

    // Applied, and judged bad by its health check.
    fleet.write(
        "hosts/h1/host.toml",
        "[[health]]\ncommand = [\"/bin/false\"]\ntimeout = \"5s\"\n",
    );
    fleet.write("hosts/h1/files/etc/motd", "changed\n");
    fleet.commit("unhealthy", None);
    apply_expecting(&host, "failed", "health-check-failed");

    // The server is gone and nothing was ever fetched.
    let lost = tempfile::tempdir().unwrap();
    let gone = Host::new(
        lost.path(),
        &format!("file://{}/nothing.git", lost.path().display()),
        "",
    );
    apply_expecting(&gone, "failed", "fetch-failed");
}
