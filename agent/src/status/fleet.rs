//! `plumb fleet`: every host's last report, read from the status branches with one filtered,
//! shallow fetch (protocol v2 `ref-prefix refs/heads/status/`), plus the fleet branch's head.
//! Needs no plumb state: it works from an operator's laptop with plain Git access.

use super::chain;
use super::remote::{self, Endpoint};
use super::report::Report;
use super::tipcache::{Tip, TipCache, MAX_ENTRY};
use crate::rollout::progress::Rollout;
use anyhow::{Context, Result};
use serde::Serialize;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

/// Where the status branches live: `refs/heads/status/<host>`.
pub const STATUS_PREFIX: &str = "status/";

pub struct FleetQuery {
    /// Repository holding the status branches.
    pub status: Endpoint,
    /// Repository and branch whose head the hosts should run.
    pub fleet: Endpoint,
    pub branch: String,
    pub heartbeat: Duration,
}

/// One host's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostLine {
    pub host: String,
    /// The report's outcome; "unreadable" when status.toml could not be read or parsed;
    /// "never-reported" for a host the fleet repository names that has no status branch.
    pub outcome: String,
    /// The reason code of a failed or rejected report (docs/reasons.md), else "".
    pub reason: String,
    /// The rollout wave (DESIGN section 11), 1-based; "all" without `[rollout]` in fleet.toml.
    pub wave: String,
    pub applied_commit: String,
    /// "current" (runs the fleet branch's head), "behind", or "unknown".
    pub commit: &'static str,
    pub checked_at: String,
    /// Seconds since checked_at; None when it cannot be parsed.
    pub age_seconds: Option<u64>,
    /// Older than twice the heartbeat, or never reported: the host is not reporting.
    pub stale: bool,
    /// The host's OS says a reboot is needed (`reboot_required` of its report).
    pub reboot_required: bool,
    pub message: String,
}

/// The outcome of a host with no status branch.
pub const NEVER_REPORTED: &str = "never-reported";
/// The one wave every host is in without `[rollout]` in fleet.toml.
pub const ALL_WAVE: &str = "all";

/// What `plumb fleet` read: the fleet branch's head, one line per host, and the rollout
/// progress (from the same reports: the status branches are read once).
pub struct FleetRead {
    pub head: Option<String>,
    pub lines: Vec<HostLine>,
    /// None without `[rollout]` in fleet.toml; an error when it could not be read.
    pub rollout: Result<Option<Rollout>>,
    /// Status packs fetched (with one repository per host, the others came from the cache).
    pub fetched: usize,
}

/// Fetches the status branches and the fleet branch; one line per host, sorted by host: every
/// host with a status branch, and every host directory of the fleet branch (those without a
/// status branch as "never-reported"). With `{host}` in the status URL, `cache` saves the
/// fetch of every host whose status branch did not move since the last read.
pub fn read(q: &FleetQuery, cache: &mut TipCache) -> Result<FleetRead> {
    if q.status.url.contains(HOST_PLACEHOLDER) {
        return read_per_host(q, cache);
    }
    let dir = scratch_dir()?;
    let repo = crate::source::repo::open_bare(dir.path(), Some(q.status.ssh_command()))?;
    let spec = format!("+refs/heads/{STATUS_PREFIX}*:refs/remotes/origin/{STATUS_PREFIX}*");
    let fleet_ref = format!("refs/heads/{}", q.branch);
    let fleet_spec = fleet_ref.clone();
    // One connection when the status branches live in the fleet repository.
    let same = q.status.url == q.fleet.url;
    let specs = if same {
        vec![spec, fleet_spec.clone()]
    } else {
        vec![spec]
    };
    let fetched = remote::fetch(&repo, &q.status, &specs, Some(NonZeroU32::MIN))?;
    let head = if same {
        find_ref(&fetched, &fleet_ref)
    } else {
        let f = remote::fetch(&repo, &q.fleet, &[fleet_spec], Some(NonZeroU32::MIN))?;
        find_ref(&f, &fleet_ref)
    };
    let known = match head {
        Some(h) => host_dirs(&repo, h)?,
        None => Vec::new(),
    };
    let mut tips = Vec::new();
    for (name, id) in &fetched.remote_refs {
        let Some(branch_host) = name.strip_prefix(&format!("refs/heads/{STATUS_PREFIX}")) else {
            continue;
        };
        let tip = tip_of(&repo, *id).with_context(|| name.clone());
        tips.push((branch_host.to_string(), tip));
    }
    Ok(finish(&repo, head, &known, tips, q.heartbeat, 1))
}

/// Lines and rollout progress from what was read.
fn finish(
    repo: &gix::Repository,
    head: Option<gix::ObjectId>,
    known: &[String],
    tips: Vec<(String, Result<Tip>)>,
    heartbeat: Duration,
    fetched: usize,
) -> FleetRead {
    let rollout = match head {
        Some(h) => {
            let ok: Vec<(&str, &Tip)> = tips
                .iter()
                .filter_map(|(host, t)| Some((host.as_str(), t.as_ref().ok()?)))
                .collect();
            crate::rollout::progress::of_fleet(repo, h, &ok)
        }
        None => Ok(None),
    };
    let reports = tips
        .into_iter()
        .map(|(host, t)| {
            let r = t.and_then(|t| {
                Report::from_toml(&t.status).with_context(|| {
                    format!("{STATUS_PREFIX}{host} at {}: parsing status.toml", t.tip)
                })
            });
            (host, r)
        })
        .collect();
    let head = head.map(|h| h.to_string());
    let lines = summarize(
        reports,
        known,
        head.as_deref(),
        SystemTime::now(),
        heartbeat,
    );
    FleetRead {
        head,
        lines,
        rollout,
        fetched,
    }
}

/// The commit `id` (raw, for its signature) and its status.toml, bounded in size.
fn tip_of(repo: &gix::Repository, id: gix::ObjectId) -> Result<Tip> {
    let commit = repo
        .find_commit(id)
        .with_context(|| format!("reading status commit {id}"))?;
    let raw = commit.data.clone();
    let tree = commit.tree().context("reading the status tree")?;
    let entry = tree
        .find_entry(chain::STATUS_FILE)
        .with_context(|| format!("commit {id} has no {}", chain::STATUS_FILE))?;
    let size = repo.find_header(entry.object_id())?.size();
    if size > MAX_ENTRY as u64 {
        anyhow::bail!("status.toml of {id} is {size} bytes, more than {MAX_ENTRY}");
    }
    let blob = repo.find_blob(entry.object_id())?;
    Ok(Tip {
        tip: id.to_string(),
        commit: String::from_utf8(raw).with_context(|| format!("commit {id} is not UTF-8"))?,
        status: String::from_utf8_lossy(&blob.data).into_owned(),
    })
}

fn find_ref(f: &remote::Fetched, name: &str) -> Option<gix::ObjectId> {
    f.remote_refs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| *id)
}

const HOST_PLACEHOLDER: &str = "{host}";

/// Where the host directories are in the fleet repository (docs/design.md, "The fleet repository").
const HOSTS_DIR: &str = "hosts";

/// Connections at once when every host has a status repository of its own.
pub const PER_HOST_CONNECTIONS: usize = 16;

/// Fetches into one scratch repository before a worker starts a new one (gix opens a repository
/// with index slots for its packs on disk plus a margin, at least 32).
const SCRATCH_FETCHES: usize = 24;

/// One status repository per host (`{host}` in its URL; a push then receives only its own
/// repository's refs, whatever the fleet size): the hosts are the directories under `hosts/` at
/// the fleet branch's head, and each one's status branch is listed in its own repository,
/// [`PER_HOST_CONNECTIONS`] at a time, and fetched only when its tip is not the one in `cache`
/// (each worker into a scratch repository of its own, so their ref and pack writes never meet).
/// A host without a status branch is "never-reported".
fn read_per_host(q: &FleetQuery, cache: &mut TipCache) -> Result<FleetRead> {
    let dir = scratch_dir()?;
    let repo =
        crate::source::repo::open_bare(&dir.path().join("fleet"), Some(q.fleet.ssh_command()))?;
    let fleet_ref = format!("refs/heads/{}", q.branch);
    let spec = format!("+{fleet_ref}:refs/remotes/origin/{}", q.branch);
    let fetched = remote::fetch(&repo, &q.fleet, &[spec], Some(NonZeroU32::MIN))?;
    let head = find_ref(&fetched, &fleet_ref)
        .with_context(|| format!("the fleet repository has no branch {}", q.branch))?;
    let hosts = host_dirs(&repo, head)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let packs = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(hosts.len()));
    let cached: &TipCache = cache;
    std::thread::scope(|s| -> Result<()> {
        let workers = PER_HOST_CONNECTIONS.min(hosts.len());
        let mut handles = Vec::new();
        for w in 0..workers {
            let (hosts, next, results, packs) = (&hosts, &next, &results, &packs);
            let scratch = dir.path().join(format!("w{w}"));
            handles.push(s.spawn(move || -> Result<()> {
                let open =
                    || crate::source::repo::open_bare(&scratch, Some(q.status.ssh_command()));
                let mut repo = open()?;
                let mut fetches = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(host) = hosts.get(i) else {
                        return Ok(());
                    };
                    if fetches == SCRATCH_FETCHES {
                        // Every fetch adds a pack, and gix's object store has a fixed number
                        // of index slots per opening: start afresh now and then.
                        drop(repo);
                        crate::state::reset_dir(&scratch)?;
                        repo = open()?;
                        fetches = 0;
                    }
                    let r = read_one(&repo, q, host, cached);
                    if let Ok((_, true)) = r {
                        fetches += 1;
                        packs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((host.clone(), r.map(|(t, _)| t)));
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a fleet reader thread panicked"))??;
        }
        Ok(())
    })?;
    let mut tips = Vec::new();
    for (host, r) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Ok(None) => {}
            Ok(Some(t)) => tips.push((host, Ok(t))),
            Err(e) => tips.push((host, Err(e))),
        }
    }
    let keep = tips
        .iter()
        .filter_map(|(h, t)| Some((h.clone(), t.as_ref().ok()?.clone())))
        .collect();
    if let Err(e) = cache.save(keep) {
        tracing::warn!("{e:#}");
    }
    let packs = packs.into_inner();
    tracing::info!(
        hosts = hosts.len(),
        fetched = packs,
        "read {} status repositories, fetched {packs}",
        hosts.len()
    );
    Ok(finish(&repo, Some(head), &hosts, tips, q.heartbeat, packs))
}

/// One host's status branch from its own repository (None when it has none yet), and whether
/// a pack was fetched for it: not when the tip is the one in `cache`.
fn read_one(
    repo: &gix::Repository,
    q: &FleetQuery,
    host: &str,
    cache: &TipCache,
) -> Result<(Option<Tip>, bool)> {
    let ep = Endpoint {
        url: q.status.url.replace(HOST_PLACEHOLDER, host),
        ..q.status.clone()
    };
    let branch = format!("refs/heads/{STATUS_PREFIX}{host}");
    // No destination: the objects are fetched, no local ref is written.
    let spec = branch.clone();
    let known = |refs: &[(String, gix::ObjectId)]| {
        refs.iter()
            .any(|(n, id)| *n == branch && cache.get(host, *id).is_some())
    };
    let (f, fetched) = remote::fetch_unless(repo, &ep, &[spec], Some(NonZeroU32::MIN), known)?;
    let Some(id) = find_ref(&f, &branch) else {
        return Ok((None, fetched));
    };
    if !fetched {
        if let Some(t) = cache.get(host, id) {
            return Ok((Some(t.clone()), false));
        }
    }
    let tip = tip_of(repo, id).with_context(|| format!("{}: {branch}", ep.redacted()))?;
    Ok((Some(tip), fetched))
}

/// The names of the directories under `hosts/` in `commit`'s tree.
fn host_dirs(repo: &gix::Repository, commit: gix::ObjectId) -> Result<Vec<String>> {
    let tree = repo.find_commit(commit)?.tree()?;
    let Some(entry) = tree.lookup_entry_by_path(HOSTS_DIR)? else {
        return Ok(Vec::new());
    };
    let hosts = repo.find_tree(entry.object_id())?;
    let mut out = Vec::new();
    for e in hosts.iter() {
        let e = e?;
        let name = e.filename().to_string();
        // A name that is no host name could not be put into a URL safely: skipped.
        if e.mode().is_tree() && crate::config::validate_host(&name).is_ok() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Pure: reports (by branch host name), and the hosts the fleet repository names -> lines.
pub fn summarize(
    reports: Vec<(String, Result<Report>)>,
    known: &[String],
    head: Option<&str>,
    now: SystemTime,
    heartbeat: Duration,
) -> Vec<HostLine> {
    let reported: std::collections::BTreeSet<String> =
        reports.iter().map(|(h, _)| h.clone()).collect();
    let mut lines: Vec<HostLine> = reports
        .into_iter()
        .map(|(branch_host, r)| match r {
            Ok(r) => {
                let age_seconds = humantime::parse_rfc3339_weak(&r.checked_at)
                    .ok()
                    .map(|t| now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0));
                HostLine {
                    host: r.host.clone(),
                    outcome: r.outcome.as_str().into(),
                    reason: r.reason.map(|x| x.as_str()).unwrap_or("").into(),
                    wave: ALL_WAVE.into(),
                    commit: match head {
                        _ if r.applied_commit.is_empty() => "unknown",
                        Some(h) if h == r.applied_commit => "current",
                        Some(_) => "behind",
                        None => "unknown",
                    },
                    applied_commit: r.applied_commit,
                    checked_at: r.checked_at,
                    stale: age_seconds.is_none_or(|a| a > 2 * heartbeat.as_secs()),
                    age_seconds,
                    reboot_required: r.reboot_required == Some(true),
                    message: r.message,
                }
            }
            Err(e) => HostLine {
                host: branch_host,
                outcome: "unreadable".into(),
                reason: String::new(),
                wave: ALL_WAVE.into(),
                applied_commit: String::new(),
                commit: "unknown",
                checked_at: String::new(),
                age_seconds: None,
                stale: true,
                reboot_required: false,
                message: format!("{e:#}"),
            },
        })
        .collect();
    for host in known.iter().filter(|h| !reported.contains(*h)) {
        lines.push(HostLine {
            host: host.clone(),
            outcome: NEVER_REPORTED.into(),
            reason: String::new(),
            wave: ALL_WAVE.into(),
            applied_commit: String::new(),
            commit: "unknown",
            checked_at: String::new(),
            age_seconds: None,
            stale: true,
            reboot_required: false,
            message:
                "never reported: no status branch (not installed, or died before its first report)"
                    .into(),
        });
    }
    lines.sort_by(|a, b| a.host.cmp(&b.host));
    lines
}

/// The table `plumb fleet` prints.
pub fn table(head: Option<&str>, lines: &[HostLine]) -> String {
    let mut rows = vec![[
        "HOST".to_string(),
        "OUTCOME".into(),
        "APPLIED".into(),
        "AGE".into(),
        "MESSAGE".into(),
    ]];
    for l in lines {
        let applied = match l.applied_commit.get(..7) {
            Some(c) => format!("{c} {}", l.commit),
            None => "- unknown".into(),
        };
        let age = match l.age_seconds {
            Some(a) => short_age(a),
            None => "?".into(),
        };
        let age = if l.stale { format!("{age} stale") } else { age };
        let mut message = l.message.replace('\n', " ");
        if l.reboot_required {
            message.insert_str(0, "[reboot required] ");
        }
        rows.push([
            l.host.clone(),
            l.outcome.clone(),
            applied,
            age,
            message.trim_end().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "fleet head: {}\n",
        head.map(|h| &h[..h.len().min(7)])
            .unwrap_or("(branch not found)")
    );
    for r in &rows {
        let mut line = String::new();
        for i in 0..4 {
            line.push_str(&format!("{:<w$}  ", r[i], w = widths[i]));
        }
        line.push_str(&r[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// 45s, 12m, 5h, 3d.
pub(crate) fn short_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A scratch directory for the shallow fetch, removed when dropped.
fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("plumb-fleet-")
        .tempdir()
        .context("creating a scratch directory for the fetch")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::Outcome;

    fn report(host: &str, outcome: Outcome, applied: &str, checked_at: &str) -> Report {
        Report {
            host: host.into(),
            agent_version: "0.1.0".into(),
            outcome,
            desired_commit: applied.into(),
            applied_commit: applied.into(),
            last_good_commit: applied.into(),
            applied_at: String::new(),
            waiting: String::new(),
            reboot_required: None,
            last_reboot: None,
            checked_at: checked_at.into(),
            message: String::new(),
            reason: None,
            age_recipient: None,
            facts: None,
            upgrades: None,
            container_updates: vec![],
            resources: vec![],
        }
    }

    #[test]
    fn lines_current_behind_stale_unreadable() {
        let head = "a".repeat(40);
        let old = "b".repeat(40);
        let now = humantime::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
        let hb = Duration::from_secs(3600);
        let lines = summarize(
            vec![
                (
                    "web-02".into(),
                    Ok(Report {
                        reboot_required: Some(true),
                        ..report("web-02", Outcome::Converged, &old, "2026-11-26T09:00:00Z")
                    }),
                ),
                (
                    "web-01".into(),
                    Ok(report(
                        "web-01",
                        Outcome::Changed,
                        &head,
                        "2026-11-26T11:59:15Z",
                    )),
                ),
                ("db-1".into(), Err(anyhow::anyhow!("bad toml"))),
                (
                    "new".into(),
                    Ok(report("new", Outcome::Rejected, "", "2026-11-26T10:00:01Z")),
                ),
            ],
            &["web-01".to_string(), "web-03".to_string()],
            Some(&head),
            now,
            hb,
        );
        let got: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.host.as_str(),
                    l.outcome.as_str(),
                    l.commit,
                    l.age_seconds,
                    l.stale,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("db-1", "unreadable", "unknown", None, true),
                ("new", "rejected", "unknown", Some(7199), false),
                ("web-01", "changed", "current", Some(45), false),
                ("web-02", "converged", "behind", Some(3 * 3600), true),
                ("web-03", "never-reported", "unknown", None, true),
            ]
        );
        let t = table(Some(&head), &lines);
        assert!(
            t.contains("web-01  changed         aaaaaaa current  45s"),
            "{t}"
        );
        assert!(
            t.contains("web-02  converged       bbbbbbb behind   3h stale  [reboot required]"),
            "{t}"
        );
        assert!(
            t.contains("db-1    unreadable      - unknown        ? stale   bad toml"),
            "{t}"
        );
        assert!(
            t.contains("web-03  never-reported  - unknown        ? stale   never reported"),
            "{t}"
        );
    }
}
