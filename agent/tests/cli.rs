//! What an operator sees of the CLI in a shell.

mod common;

use common::*;
use std::process::{Command, Stdio};

/// `plumb status | head -1` (issue 20, item 7): ends quietly on the closed pipe, as Unix tools do,
/// instead of panicking with "failed printing to stdout: Broken pipe".
#[test]
fn issue_20_status_into_a_closed_pipe_does_not_panic() {
    let f = Fleet::new();
    for i in 0..200 {
        f.write(&format!("hosts/h1/files/etc/many/{i:03}"), "x\n");
    }
    f.commit("many files: a long report");
    let h = Host::new("h1", &format!("file://{}", f.bare().display()), "");
    h.apply_expect(0);
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "\"{PLUMB}\" status --config \"{}\" | head -1",
            h.config().display()
        ))
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // The same without a shell: plumb ends with a shell's SIGPIPE code, nothing on stderr.
    let mut child = Command::new(PLUMB)
        .args(["status", "--config"])
        .arg(h.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{:?}", out.status);
}
