//! Podman for container image updates: `podman auto-update` (and the few inspect/tag calls a
//! rollback needs). Every call runs outside plumb.service's sandbox (podman does not work inside
//! it), within a time limit, its output read up to a bound.

use super::command::{self, find_program};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::process::Command;
use std::time::Duration;

/// A look (`--dry-run`, an inspect, a tag): a registry round trip at most.
pub const LOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// `podman auto-update`: pulls images and restarts their units.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(900);
/// Most bytes of podman's stdout read (a report line per container).
const MAX_OUTPUT: usize = 1 << 20;

/// One line of `podman auto-update --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutoUpdate {
    /// The systemd unit running the container ("web.service").
    pub unit: String,
    pub container_name: String,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// The image reference the container was created from ("registry:5000/web:latest").
    pub image: String,
    pub policy: String,
    /// "false", "pending" (dry run), "true", "rolled back", "failed".
    pub updated: String,
}

impl AutoUpdate {
    pub fn pending(&self) -> bool {
        self.updated == "pending"
    }
}

/// Parses `podman auto-update --format json` (nothing or `null` when no container has a policy).
pub fn parse_auto_update(out: &[u8]) -> Result<Vec<AutoUpdate>> {
    let text = String::from_utf8_lossy(out);
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(vec![]);
    }
    serde_json::from_str(text).context("reading the JSON of podman auto-update")
}

/// `podman auto-update`: with `dry_run`, which containers have a newer image (no pull, no
/// restart); else updates them, podman rolling back a unit that fails to start.
pub fn auto_update(dry_run: bool) -> Result<Vec<AutoUpdate>> {
    let timeout = if dry_run {
        LOOK_TIMEOUT
    } else {
        UPDATE_TIMEOUT
    };
    let mut args = vec!["auto-update", "--format", "json"];
    if dry_run {
        args.push("--dry-run");
    }
    let (cmd, out) = podman(&args, timeout)?;
    match parse_auto_update(&out.stdout) {
        Ok(list) => Ok(list),
        Err(e) if !out.status.success() => {
            command::check(&cmd, &out)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The image id a container was created from.
pub fn container_image(container: &str) -> Result<String> {
    let out = podman_ok(&["container", "inspect", "--format", "{{.Image}}", container])?;
    one_word(&out, "an image id")
}

/// An image's id and the digest `reference` has it under in its registry ("sha256:..."; the
/// image's own digest when podman knows none for that repository). `image` is an id or a
/// reference.
pub fn image_id_digest(image: &str, reference: &str) -> Result<(String, String)> {
    let out = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Digest}}{{range .RepoDigests}} {{.}}{{end}}",
        image,
    ])?;
    let mut words = out.split_whitespace();
    let Some(id) = words.next() else {
        bail!("podman image inspect {image} printed no id");
    };
    let own = words.next().unwrap_or_default();
    let prefix = format!("{}@", repository(reference));
    let digest = words.find_map(|w| w.strip_prefix(&prefix)).unwrap_or(own);
    Ok((id.to_string(), digest.to_string()))
}

/// "host:5000/web:latest" -> "host:5000/web" (a tag is after the last slash; a digest after @).
fn repository(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].find(':') {
        Some(i) => &reference[..name_start + i],
        None => reference,
    }
}

/// Pulls `reference` and returns the id of the image the registry has for it. The name then
/// points to that image: the caller puts it back if that is not wanted.
pub fn pull(reference: &str) -> Result<String> {
    let out = podman_ok(&["pull", "--quiet", reference])?;
    one_word(&out, "an image id")
}

/// Points `reference` at image `id` again (a rollback).
pub fn tag(id: &str, reference: &str) -> Result<()> {
    podman_ok(&["tag", id, reference]).map(|_| ())
}

fn podman(args: &[&str], timeout: Duration) -> Result<(Command, std::process::Output)> {
    let program = find_program("podman").ok_or_else(|| anyhow!("podman is not installed"))?;
    let mut cmd = command::outside_sandbox(&program.to_string_lossy(), timeout, &[]);
    cmd.args(args);
    let out = command::run_capped(&mut cmd, timeout + Duration::from_secs(5), MAX_OUTPUT)?;
    Ok((cmd, out))
}

fn podman_ok(args: &[&str]) -> Result<String> {
    let (cmd, out) = podman(args, LOOK_TIMEOUT)?;
    command::check(&cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn one_word(out: &str, what: &str) -> Result<String> {
    match out.lines().last().map(str::trim) {
        Some(w) if !w.is_empty() && !w.contains(char::is_whitespace) => Ok(w.to_string()),
        _ => bail!("podman printed {out:?} where {what} was expected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_update_json() {
        // As podman 5.4 prints it.
        let out = br#"[
    {
        "Unit": "web.service",
        "Container": "cbaa2f487f62 (systemd-web)",
        "ContainerName": "systemd-web",
        "ContainerID": "cbaa2f487f621c57ddb7217b8a9676d25405c736c75ef677c49e47428c8598e3",
        "Image": "10.78.59.1:36071/web:latest",
        "Policy": "registry",
        "Updated": "pending"
    }
]
"#;
        let got = parse_auto_update(out).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].pending());
        assert_eq!(got[0].unit, "web.service");
        assert_eq!(got[0].image, "10.78.59.1:36071/web:latest");
        assert!(parse_auto_update(b"").unwrap().is_empty());
        assert!(parse_auto_update(b"null\n").unwrap().is_empty());
        assert!(parse_auto_update(b"Error: oops").is_err());
    }

    #[test]
    fn repository_of_a_reference() {
        assert_eq!(repository("10.0.0.1:5000/web:latest"), "10.0.0.1:5000/web");
        assert_eq!(repository("10.0.0.1:5000/web"), "10.0.0.1:5000/web");
        assert_eq!(repository("quay.io/a/b@sha256:00"), "quay.io/a/b");
    }

    #[test]
    fn one_word_takes_the_last_line() {
        assert_eq!(one_word("Trying...\nabc\n", "x").unwrap(), "abc");
        assert!(one_word("", "x").is_err());
        assert!(one_word("a b", "x").is_err());
    }
}
