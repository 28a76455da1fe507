//! Hostile or mistyped agent.toml values (issue 12): every duration and count has a range checked
//! when the config is loaded, and values that would hand git an option or plumb's state to a
//! system directory are refused. Each row: `plumb apply` exits 1, stderr names the file and key
//! and says what to do, the host, the directory beside it and the last report are unchanged.
//! Also: `plumb validate` (run by CI on untrusted branches) never reads outside the checkout.

mod common;

use common::trust::*;
use std::path::{Path, PathBuf};

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    host: Host,
    url: String,
    outside: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let fleet = Fleet::new(&dir);
    fleet.write("hosts/h1/files/etc/motd", "v1\n");
    fleet.commit("v1", None);
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("app.conf"), "outside\n").unwrap();
    let host = Host::new(&dir, &fleet.url(), "");
    assert_eq!(host.converge().outcome.as_str(), "changed");
    Env {
        _tmp: tmp,
        dir,
        host,
        url: fleet.url(),
        outside,
    }
}

/// (key as the error names it, agent.toml text after the base, what the error must also say).
fn cases(e: &Env) -> Vec<(&'static str, String, &'static str)> {
    let mut v: Vec<(&'static str, String, &'static str)> = Vec::new();
    v.push(("interval", "interval = \"8d\"".into(), "use 1s to 7days"));
    for bad in ["0s", "99999999999d", "18446744073709551615s"] {
        v.push(("interval", format!("interval = {bad:?}"), ""));
        v.push((
            "status.heartbeat",
            format!("[status]\nheartbeat = {bad:?}"),
            "",
        ));
    }
    v.push((
        "status.heartbeat",
        "[status]\nheartbeat = \"31d\"".into(),
        "out of range",
    ));
    for bad in ["0", "1", "9223372036854775807", "100001"] {
        v.push((
            "status.history",
            format!("[status]\nhistory = {bad}"),
            "out of range",
        ));
    }
    for (key, bad) in [
        ("max_file_size", "0"),
        ("max_file_size", "9223372036854775807"),
        ("max_total_size", "0"),
        ("max_total_size", "9223372036854775807"),
        ("max_files", "0"),
        ("max_files", "9223372036854775807"),
        ("max_depth", "0"),
        ("max_depth", "100000"),
        ("max_includes", "0"),
        ("max_includes", "9223372036854775807"),
    ] {
        let k: &'static str = Box::leak(format!("limits.{key}").into_boxed_str());
        v.push((k, format!("[limits]\n{key} = {bad}"), "out of range"));
    }
    let pwned = e.dir.join("pwned");
    v.push((
        "status.repo",
        format!(
            "[status]\nrepo = \"--receive-pack=touch {}\"",
            pwned.display()
        ),
        "git would take it for an option",
    ));
    v.push((
        "state_dir",
        format!("state_dir = {:?}", e.host.root.display().to_string()),
        "is the managed root or a directory above it",
    ));
    v.push((
        "state_dir",
        "state_dir = \"/\"".into(),
        "the managed root or a directory above it",
    ));
    v.push((
        "state_dir",
        "state_dir = \"/etc\"".into(),
        "is a system directory",
    ));
    v.push((
        "state_dir",
        format!("state_dir = {:?}", e.outside.display().to_string()),
        "holds files that are not plumb's",
    ));
    v
}

/// The base config with `extra` (replacing a key the base sets, or adding a section).
fn config(e: &Env, extra: &str) -> String {
    let mut base = format!(
        "repo = {:?}\nhost = \"h1\"\nroot = {:?}\nstate_dir = {:?}\n",
        e.url,
        e.host.root.display().to_string(),
        e.host.state.display().to_string()
    );
    let key = extra.split(" =").next().unwrap_or("");
    if !extra.starts_with('[') {
        base = base
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    format!("{base}{extra}\n")
}

#[test]
fn out_of_range_and_dangerous_values_are_config_errors() {
    let e = env();
    let before = (snapshot(&e.host.root), snapshot(&e.outside));
    let report_before = e.host.report();
    let mut failures = Vec::new();
    for (key, extra, says) in cases(&e) {
        std::fs::write(&e.host.config, config(&e, &extra)).unwrap();
        let a = e.host.apply(&[]);
        let want = format!("agent.toml: key `{key}`");
        let problems: Vec<String> = [
            (a.code != 1).then(|| format!("exit code {}", a.code)),
            (!a.stderr.contains(&want) || !a.stderr.contains(says))
                .then(|| format!("stderr {:?} (want {want:?} ... {says:?})", a.stderr)),
            ((snapshot(&e.host.root), snapshot(&e.outside)) != before)
                .then(|| "the host changed".to_string()),
            (e.host.report() != report_before).then(|| "the report changed".to_string()),
            e.dir
                .join("pwned")
                .exists()
                .then(|| "git ran the injected option".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{extra:?}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The same config with sane values still works.
    std::fs::write(&e.host.config, config(&e, "interval = \"7d\"")).unwrap();
    assert_eq!(e.host.converge().outcome.as_str(), "converged");
}

/// `plumb validate DIR` on a checkout whose roles/ (or hosts/) is a symlink out of it: an error
/// naming the symlink, and nothing read there is echoed.
#[test]
fn validate_never_reads_outside_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(secret.join("web/files/etc")).unwrap();
    std::fs::write(secret.join("web/files/etc/shadow"), "TOPSECRET\n").unwrap();
    std::fs::write(secret.join("web/host.toml"), "TOPSECRET = [\n").unwrap();
    let co = tmp.path().join("checkout");
    std::fs::create_dir_all(co.join("hosts/h1")).unwrap();
    std::fs::write(co.join("hosts/h1/host.toml"), "include = [\"roles/web\"]\n").unwrap();
    std::os::unix::fs::symlink(&secret, co.join("roles")).unwrap();
    let validate = |dir: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
            .arg("validate")
            .arg(dir)
            .env("PLUMB_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = validate(&co);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("roles is a symlink"), "{text}");
    assert!(!text.contains("TOPSECRET"), "{text}");

    // hosts/ itself a symlink.
    let co2 = tmp.path().join("checkout2");
    std::fs::create_dir_all(&co2).unwrap();
    std::fs::create_dir_all(secret.join("h1")).unwrap();
    std::fs::write(secret.join("h1/host.toml"), "TOPSECRET = 1\n").unwrap();
    std::os::unix::fs::symlink(&secret, co2.join("hosts")).unwrap();
    let (code, text) = validate(&co2);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("hosts is a symlink"), "{text}");
    assert!(!text.contains("TOPSECRET"), "{text}");
}
