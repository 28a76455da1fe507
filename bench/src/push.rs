//! Status push at fleet scale: plumb's own status publishing (a gix commit of status.toml, then
//! `git push --force-with-lease`) into a status repository that already holds N other hosts'
//! status branches. A heartbeat of 1s makes every `plumb apply` push.

use crate::fixture;
use crate::measure::Stats;
use crate::plumb::{Host, StatusTo};
use crate::proxy::{Proxy, Traffic};
use anyhow::{bail, Result};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub struct PushFigures {
    pub branches: usize,
    /// One status repository per host (`{host}` in `[status] repo`): the host's repository holds
    /// only its own branch, whatever the fleet size.
    pub per_host: bool,
    /// The whole `plumb apply` (a no-op pass plus the push).
    pub apply_ms: Stats,
    /// The push connection, from connect to close, as the proxy saw it.
    pub push_ms: Stats,
    pub traffic: Vec<Traffic>,
}

/// For each N in `sizes`: `runs` no-op passes that each push a heartbeat to `status/bench` in a
/// status repository with N status branches (served from `base`, reached through `proxy`); then
/// the same into a repository of the host's own (`status-{host}.git`).
pub fn status_pushes(
    plumb: &Path,
    proxy: &Proxy,
    base: &Path,
    work: &Path,
    sizes: &[usize],
    runs: usize,
) -> Result<Vec<PushFigures>> {
    let mut all = Vec::new();
    let scenarios = sizes.iter().map(|&n| (n, false)).chain([(0, true)]);
    for (n, per_host) in scenarios {
        let host_name = if per_host {
            "push-own".to_string()
        } else {
            format!("push-{n}")
        };
        let url = if per_host {
            fixture::status_repo(base, &format!("status-{host_name}.git"), 0)?;
            proxy.url("status-{host}.git")
        } else {
            let name = format!("status-{n}.git");
            fixture::status_repo(base, &name, n)?;
            proxy.url(&name)
        };
        let status = StatusTo {
            url: &url,
            heartbeat: "1s",
        };
        let host = Host::new(
            &work.join(&host_name),
            &proxy.url("fleet.git"),
            "1h",
            &status,
        )?;
        // First apply (pushes the first report), then converged (pushes again): not counted.
        host.apply(plumb)?;
        host.apply(plumb)?;
        let mut f = PushFigures {
            branches: n,
            per_host,
            apply_ms: Stats::default(),
            push_ms: Stats::default(),
            traffic: vec![],
        };
        for _ in 0..runs {
            wait_heartbeat_due();
            proxy.take()?;
            let r = host.apply(plumb)?;
            let push = Traffic::of(&proxy.take()?, "git-receive-pack");
            if push.connections == 0 || !r.stderr.contains("status pushed") {
                bail!("plumb apply did not push its heartbeat:\n{}", r.stderr);
            }
            f.apply_ms.push(r.wall.as_secs_f64() * 1e3);
            f.push_ms.push(push.duration.as_secs_f64() * 1e3);
            f.traffic.push(push);
        }
        all.push(f);
    }
    Ok(all)
}

/// The heartbeat (1s) counts whole seconds since the last push: wait for the next second + 1.
fn wait_heartbeat_due() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let next = Duration::from_secs(now.as_secs() + 1) + Duration::from_millis(20);
    std::thread::sleep(next.saturating_sub(now));
}
