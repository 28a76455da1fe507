//! Status push at fleet scale: one host pushes a new status commit (one changed file) to a status
//! repository that already holds N other hosts' status branches. This is the `git push` that
//! plumb's status publishing runs (gix has no push); measured with git itself.

use crate::fixture::{self, git};
use crate::measure::{self, Stats};
use crate::proxy::{Proxy, Traffic};
use anyhow::Result;
use std::path::Path;

pub struct PushFigures {
    pub branches: usize,
    pub wall_ms: Stats,
    pub traffic: Vec<Traffic>,
}

/// For each N in `sizes`: `runs` pushes of a one-file commit to `status/bench` in a repository with
/// N status branches (served from `base`, reached through `proxy`).
pub fn status_pushes(
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
        let pusher = work.join(format!("pusher-{n}"));
        git(
            work,
            &[
                "init",
                "-q",
                "-b",
                "status/bench",
                &pusher.display().to_string(),
            ],
        )?;
        let url = proxy.url(&name);
        let mut f = PushFigures {
            branches: n,
            wall_ms: Stats::default(),
            traffic: vec![],
        };
        // The first push creates the branch; the measured ones update it, as every later push does.
        for i in 0..=runs {
            std::fs::write(
                pusher.join("status.toml"),
                format!("host = \"bench\"\noutcome = \"converged\"\nchecked_at = \"2026-11-26T09:{:02}:00Z\"\n", i % 60),
            )?;
            git(&pusher, &["add", "status.toml"])?;
            git(&pusher, &["commit", "-q", "-m", "status"])?;
            proxy.take()?;
            let r = measure::run(fixture::git_cmd(&pusher).args([
                "push",
                "-q",
                &url,
                "HEAD:refs/heads/status/bench",
            ]))?
            .expect_code("git push of the status commit", &[0])?;
            let t = proxy.take()?;
            if i > 0 {
                f.wall_ms.push(r.wall.as_secs_f64() * 1e3);
                f.traffic.push(t);
            }
        }
        all.push(f);
    }
    Ok(all)
}
