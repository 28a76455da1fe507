//! The status branch's commits: one `status.toml` per commit, at most `history` of them. When a
//! new report would exceed that, only the newest half is kept: the oldest kept commit becomes a
//! root (its tree, no parent) and the newer ones are rewritten on top of it. Trimming to half
//! rather than by one makes the rewrite (new commit objects on the server) happen once every
//! history/2 reports instead of on every report, and a year of reports does not grow the repo.

use anyhow::{Context, Result};
use gix::ObjectId;

pub const STATUS_FILE: &str = "status.toml";

/// Signs a commit's payload: the armored signature for its `gpgsig` header.
pub type Sign<'a> = &'a dyn Fn(&[u8]) -> Result<String>;

/// Writes a commit holding `status_toml` on top of `base` (the branch's current head, if any),
/// keeping at most `history` commits in its first-parent chain. Returns the new head. The new
/// commit is signed by `sign` (git's `gpgsig` header: an SSH signature for a host
/// key). Older commits rewritten by a trim lose their signatures (their parents changed); only
/// the tip is ever checked.
pub fn append_signed(
    repo: &gix::Repository,
    base: Option<ObjectId>,
    status_toml: &str,
    message: &str,
    who: &gix::actor::Signature,
    history: usize,
    sign: Option<Sign>,
) -> Result<ObjectId> {
    let history = history.max(2);
    let blob = repo
        .write_blob(status_toml.as_bytes())
        .context("writing status.toml")?
        .detach();
    let tree = gix::objs::Tree {
        entries: vec![gix::objs::tree::Entry {
            mode: gix::objs::tree::EntryKind::Blob.into(),
            filename: STATUS_FILE.into(),
            oid: blob,
        }],
    };
    let tree = repo
        .write_object(&tree)
        .context("writing the status tree")?
        .detach();

    // Newest first; one more than fits tells us whether to trim.
    let mut chain: Vec<gix::objs::Commit> = Vec::new();
    let mut next = base;
    while let Some(id) = next {
        if chain.len() == history {
            break;
        }
        let commit = repo
            .find_commit(id)
            .with_context(|| format!("reading status commit {id}"))?
            .decode()
            .with_context(|| format!("decoding status commit {id}"))?
            .to_owned()
            .context("decoding status commit")?;
        next = commit.parents.first().copied();
        chain.push(commit);
    }
    let parent = if chain.len() < history {
        base
    } else {
        // Keep the newest half: the oldest of them loses its parents.
        chain.truncate(kept_after_trim(history));
        let mut parent: Option<ObjectId> = None;
        for mut c in chain.into_iter().rev() {
            c.parents = parent.into_iter().collect();
            c.extra_headers.retain(|(k, _)| k != "gpgsig");
            parent = Some(
                repo.write_object(&c)
                    .context("rewriting a status commit")?
                    .detach(),
            );
        }
        parent
    };
    let mut commit = gix::objs::Commit {
        tree,
        parents: parent.into_iter().collect(),
        author: who.clone(),
        committer: who.clone(),
        encoding: None,
        message: format!("{message}\n").into(),
        extra_headers: vec![],
    };
    if let Some(sign) = sign {
        use gix::objs::WriteTo;
        let mut payload = Vec::new();
        commit
            .write_to(&mut payload)
            .context("serializing the status commit")?;
        let sig = sign(&payload)?;
        commit.extra_headers.push(("gpgsig".into(), sig.into()));
    }
    Ok(repo
        .write_object(&commit)
        .context("writing the status commit")?
        .detach())
}

/// Old commits kept when a report would exceed `history`; with the new one, the branch then holds
/// history/2 + 1 commits.
pub fn kept_after_trim(history: usize) -> usize {
    (history / 2).max(1)
}

/// `status.toml` as stored in `commit` (readers use status::fleet's bounded read).
#[cfg(test)]
pub fn read_status(repo: &gix::Repository, commit: ObjectId) -> Result<String> {
    let tree = repo
        .find_commit(commit)
        .with_context(|| format!("reading status commit {commit}"))?
        .tree()
        .context("reading the status tree")?;
    let entry = tree
        .find_entry(STATUS_FILE)
        .with_context(|| format!("commit {commit} has no {STATUS_FILE}"))?;
    let blob = repo.find_blob(entry.object_id())?;
    Ok(String::from_utf8_lossy(&blob.data).into_owned())
}

/// plumb's own signature on status commits.
pub fn signature(host: &str) -> gix::actor::Signature {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    gix::actor::Signature {
        name: "plumb".into(),
        email: format!("plumb@{host}").into(),
        time: gix::date::Time { seconds, offset: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Number of commits in the first-parent chain from `head`.
    fn depth(repo: &gix::Repository, head: ObjectId) -> Result<usize> {
        let mut n = 0;
        let mut next = Some(head);
        while let Some(id) = next {
            n += 1;
            next = repo
                .find_commit(id)?
                .parent_ids()
                .next()
                .map(|p| p.detach());
        }
        Ok(n)
    }

    #[test]
    fn history_is_trimmed_to_half_at_the_limit_keeping_the_newest() {
        let t = tempfile::tempdir().unwrap();
        let repo = crate::source::repo::open_bare(t.path(), None).unwrap();
        let who = signature("h1");
        let mut head = None;
        let mut depths = vec![];
        for i in 0..9 {
            let id = append_signed(
                &repo,
                head,
                &format!("n = {i}\n"),
                &format!("report {i}"),
                &who,
                4,
                None,
            )
            .unwrap();
            head = Some(id);
            depths.push(depth(&repo, id).unwrap());
        }
        // 4 is the limit: the 5th report keeps 2 old ones, and so on.
        assert_eq!(depths, [1, 2, 3, 4, 3, 4, 3, 4, 3]);
        let head = head.unwrap();
        assert_eq!(read_status(&repo, head).unwrap(), "n = 8\n");
        // The root holds the oldest kept report, with its own message.
        let mut c = repo.find_commit(head).unwrap();
        let mut seen = vec![];
        loop {
            seen.push(c.message_raw().unwrap().to_string());
            let parent = c.parent_ids().next().map(|p| p.detach());
            match parent {
                Some(p) => c = repo.find_commit(p).unwrap(),
                None => break,
            }
        }
        assert_eq!(seen, ["report 8\n", "report 7\n", "report 6\n"]);
        assert_eq!(read_status(&repo, c.id).unwrap(), "n = 6\n");
    }
}
