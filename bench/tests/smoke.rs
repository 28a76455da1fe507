//! A smoke run of the benchmark command with tiny sizes (no peers): the harness works end to end,
//! and a no-op poll is one round trip of a few hundred bytes (the ref listing) while a
//! protocol-v0 client receives every branch.

use std::path::PathBuf;
use std::process::Command;

/// The plumb binary built beside plumb-bench (`cargo build --workspace --bins`, as CI does).
fn plumb_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_plumb-bench"));
    let plumb = bench.with_file_name("plumb");
    assert!(
        plumb.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        plumb.display()
    );
    plumb
}

/// The plumb column of the results row that starts with `label`.
fn cell<'a>(out: &'a str, label: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {label}")))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{out}"));
    line.split('|').nth(2).unwrap().trim()
}

/// The leading number of a cell ("196 (190–200, n=2) bytes" -> 196).
fn number(cell: &str) -> f64 {
    cell.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn bench_smoke_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_plumb-bench"))
        .arg("--plumb")
        .arg(plumb_bin())
        .args([
            "--files",
            "10",
            "--branches",
            "300",
            "--runs",
            "2",
            "--passes",
            "2",
        ])
        .args([
            "--interval",
            "2",
            "--status-branches",
            "3,30",
            "--skip-peers",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plumb-bench failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let poll = number(cell(&text, "no-op poll: received"));
    assert!(
        poll > 0.0 && poll <= 2048.0,
        "no-op poll received {poll} bytes"
    );
    assert_eq!(number(cell(&text, "no-op poll: round trips")), 1.0);
    let v0 = number(cell(&text, "same poll by `git fetch`, protocol v0"));
    assert!(
        v0 > 300.0 * 40.0,
        "a v0 client receives every branch, got {v0} bytes"
    );
    assert!(number(cell(&text, "idle RSS")) > 0.0);
    assert!(number(cell(&text, "first apply of 10 files")) > 0.0);
    assert!(text.contains("| 30 |"), "status push rows:\n{text}");
    // A status repository of the host's own: the push receives only that host's ref.
    let own = text
        .lines()
        .find(|l| l.starts_with("| own repository per host"))
        .unwrap_or_else(|| panic!("no per-host push row:\n{text}"));
    let received = number(own.split('|').nth(4).unwrap().trim());
    assert!(received > 0.0 && received < 1024.0, "{own}");
}
