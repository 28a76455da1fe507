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
    /// The whole `plumb apply` (a no-op pass plus the push).
    pub apply_ms: Stats,
    /// The push connection, from connect to close, as the proxy saw it.
    pub push_ms: Stats,
    pub traffic: Vec<Traffic>,
}

/// For each N in `sizes`: `runs` no-op passes that each push a heartbeat to `status/bench` in a
/// status repository with N status branches (served from `base`, reached through `proxy`).
pub fn status_pushes(
    plumb: &Path,
    proxy: &Proxy,
    base: &Path,
    work: &Path,
    sizes: &[usize],
    runs: usize,
) -> Result<Vec<PushFigures>> {
    let mut all = Vec::new();
    for &n in sizes {
        let name = format!("status-{n}.git");
        fixture::status_repo(base, &name, n)?;
        let url = proxy.url(&name);
        let status = StatusTo {
            url: &url,
            heartbeat: "1s",
        };
        let host = Host::new(
            &work.join(format!("push-{n}")),
            &proxy.url("fleet.git"),
            "1h",
            &status,
        )?;
        // First apply (pushes the first report), then converged (pushes again): not counted.
        host.apply(plumb)?;
        host.apply(plumb)?;
        let mut f = PushFigures {
            branches: n,
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
