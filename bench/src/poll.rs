//! What a plain git client receives on a no-op poll of the same server in the same run: protocol v0
//! (what go-git based agents such as fetchit and comin speak on every poll) and protocol v2.

use crate::fixture::git;
use crate::proxy::{Proxy, Traffic};
use anyhow::Result;
use std::path::Path;

pub struct GitPolls {
    pub v0_fetch: Vec<Traffic>,
    pub v2_fetch: Vec<Traffic>,
}

/// `runs` no-op `git fetch` of branch main over protocol 0 and 2, into a clone that is up to date.
pub fn git_fetches(proxy: &Proxy, work: &Path, runs: usize) -> Result<GitPolls> {
    let url = proxy.url("fleet.git");
    git(work, &["init", "-q", "--bare", "poller.git"])?;
    let repo = work.join("poller.git");
    let spec = "+refs/heads/main:refs/remotes/origin/main";
    git(&repo, &["fetch", "-q", &url, spec])?;
    proxy.take()?;
    let mut polls = GitPolls {
        v0_fetch: vec![],
        v2_fetch: vec![],
    };
    for _ in 0..runs {
        for (version, out) in [("0", &mut polls.v0_fetch), ("2", &mut polls.v2_fetch)] {
            git(
                &repo,
                &[
                    "-c",
                    &format!("protocol.version={version}"),
                    "fetch",
                    "-q",
                    &url,
                    spec,
                ],
            )?;
            out.push(proxy.traffic("git-upload-pack")?);
        }
    }
    Ok(polls)
}
