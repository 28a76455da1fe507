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
    if let Some(token_file) = &ep.token_file {
        let token = crate::source::git::read_token(token_file)?;
        let user = gix::url::parse(gix::bstr::BStr::new(ep.url.as_str()))
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| "plumb".into());
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
}
