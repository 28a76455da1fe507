//! Running the `git` binary for what gix cannot do (push, gc): the host's git config and
//! environment kept out, the agent's credentials passed in the environment.

use super::remote::Endpoint;
use anyhow::Result;
use base64::Engine as _;
use std::path::Path;
use std::process::Command;

/// The reason from `git push --porcelain` when our lease did not hold (the branch is not what we
/// thought), as opposed to a refusal by the server.
pub fn moved(porcelain: &str) -> Option<String> {
    porcelain
        .lines()
        .filter(|l| l.starts_with('!'))
        .map(|l| l.split('\t').next_back().unwrap_or(l))
        .find(|s| {
            s.starts_with("[rejected]")
                && [
                    "stale info",
                    "fetch first",
                    "non-fast-forward",
                    "already exists",
                ]
                .iter()
                .any(|r| s.contains(r))
        })
        .map(str::to_string)
}

/// `git -C <dir>` with the host's git config and environment kept out, and the agent's
/// credentials passed in the environment (never on the command line, which is logged).
pub fn git_command(dir: &Path, ep: &Endpoint) -> Result<Command> {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("LC_ALL", "C");
    // The fetch (rustls) trusts SSL_CERT_FILE; git's libcurl may be built on GnuTLS, which does not.
    if let Some(ca) = std::env::var_os("SSL_CERT_FILE") {
        cmd.env("GIT_SSL_CAINFO", ca);
    }
    cmd.env("GIT_SSH_COMMAND", ep.ssh_command());
    let (_, in_url) = split_password(&ep.url);
    let login = match &ep.token_file {
        Some(token_file) => {
            let token = crate::source::git::read_token(token_file)?;
            let user = gix::url::parse(gix::bstr::BStr::new(ep.url.as_str()))
                .ok()
                .and_then(|u| u.user().map(str::to_string))
                .unwrap_or_else(|| "plumb".into());
            Some((user, token))
        }
        None => in_url,
    };
    if let Some((user, token)) = login {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    Ok(cmd)
}

/// `git push` to `ep`: the URL after `--` (never an option, whatever agent.toml says) and without
/// its password, which `git_command` passes in the environment instead: argv is world-readable in
/// /proc/PID/cmdline, of `git push` and of the `git-remote-http` it starts.
pub fn push_args(ep: &Endpoint) -> [String; 2] {
    ["--".to_string(), split_password(&ep.url).0]
}

/// A URL without the password of its user info, and the (percent-decoded) user and password.
pub fn split_password(url: &str) -> (String, Option<(String, String)>) {
    let Some(s) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[s + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let Some((user, pass)) = authority[..at].split_once(':') else {
        return (url.to_string(), None);
    };
    let stripped = format!("{}{user}@{}", &url[..s + 3], &rest[at + 1..]);
    (stripped, Some((percent_decode(user), percent_decode(pass))))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_failures_are_told_from_refusals() {
        let stale =
            "To git://h/s.git\n!\t0123:refs/heads/status/a\t[rejected] (stale info)\nDone\n";
        assert!(moved(stale).unwrap().contains("stale info"));
        let hook = "To git://h/s.git\n!\t0123:refs/heads/status/a\t[remote rejected] (pre-receive hook declined)\nDone\n";
        assert_eq!(moved(hook), None);
        assert_eq!(moved(""), None);
    }

    #[test]
    fn passwords_leave_the_url() {
        let (u, c) = split_password("https://ops:s%40cret@git.example.org:8443/fleet.git");
        assert_eq!(u, "https://ops@git.example.org:8443/fleet.git");
        assert_eq!(c, Some(("ops".into(), "s@cret".into())));
        for plain in [
            "https://ops@h/x.git",
            "git://h/x",
            "/srv/fleet.git",
            "https://h/a@b",
        ] {
            assert_eq!(split_password(plain), (plain.to_string(), None));
        }
        let ep = Endpoint {
            url: "--receive-pack=touch /tmp/pwned".into(),
            ssh_key: None,
            token_file: None,
            known_hosts: None,
        };
        assert_eq!(push_args(&ep)[0], "--");
    }
}
