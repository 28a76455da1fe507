//! A read-only view of a fleet-repo tree: a Git commit, or a checkout on disk (`plumb validate`).

use crate::config::Limits;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a tree, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { data: Vec<u8>, executable: bool },
    Symlink { target: String },
    Dir,
}

/// What the walks of one load may still read. Shared by every walk of a load (the host's
/// directory and each role), so a commit with 100,000 files or a pile of 16 MiB blobs is refused
/// after `max_files` entries or `max_total_size` bytes were read, not after all of it was.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub limits: Limits,
    files: usize,
    dirs: usize,
    bytes: u64,
}

impl Budget {
    pub fn new(limits: &Limits) -> Budget {
        Budget {
            limits: limits.clone(),
            ..Budget::default()
        }
    }

    pub fn max_depth(&self) -> usize {
        self.limits.max_depth
    }

    /// Counts a file or symlink of `size` bytes at `rel`, before it is read.
    pub fn take_file(&mut self, rel: &str, size: u64) -> Result<()> {
        self.take_path(rel)?;
        if rel == "host.toml" {
            // Not installed: bounded by its own size limit and limits.max_includes.
            return Ok(());
        }
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.files > self.limits.max_files {
            return Err(too_much(format!(
                "{rel}: more than {} files for this host (limits.max_files in agent.toml)",
                self.limits.max_files
            )));
        }
        if self.bytes > self.limits.max_total_size {
            return Err(too_much(format!(
                "{rel}: this host's files add up to more than allowed, over the limit of {} (limits.max_total_size in agent.toml)",
                self.limits.max_total_size
            )));
        }
        Ok(())
    }

    /// Counts a directory: a useful tree has about as many directories as files (a deep chain
    /// leading to them aside).
    pub fn take_dir(&mut self, rel: &str) -> Result<()> {
        self.take_path(rel)?;
        self.dirs += 1;
        let max = self.limits.max_files * 2 + self.limits.max_depth;
        if self.dirs > max {
            return Err(too_much(format!(
                "{rel}: more than {max} directories for this host (twice limits.max_files in agent.toml)"
            )));
        }
        Ok(())
    }

    /// An entry's path is held in memory: its bytes count against the total, and one longer
    /// than the kernel takes is refused here (the installed path is checked exactly later).
    fn take_path(&mut self, rel: &str) -> Result<()> {
        if rel.len() > PATH_MAX {
            let shown: String = rel.chars().take(120).collect();
            return Err(crate::spec::SpecError::new(
                crate::reason::Reason::InvalidPath,
                format!(
                    "{shown}...: a path of {} bytes, over PATH_MAX ({PATH_MAX}): shorten it",
                    rel.len()
                ),
            )
            .into());
        }
        self.bytes = self.bytes.saturating_add(rel.len() as u64);
        Ok(())
    }
}

/// Longest path the kernel takes (with its NUL).
const PATH_MAX: usize = 4096;

fn too_much(msg: String) -> anyhow::Error {
    crate::spec::SpecError::new(crate::reason::Reason::SizeLimit, msg).into()
}

/// Where the spec is read from.
pub trait FleetTree {
    /// Every entry below `dir` (repo-relative, `/`-separated), depth first, with paths relative to
    /// `dir`; `None` when `dir` is not a directory of the tree. Names must be UTF-8.
    /// Directories `budget.max_depth()` levels down are listed but not entered, so the caller sees
    /// (and refuses) anything deeper without the walk ever going there: walks are iterative, and
    /// no tree, however deep, costs more than `max_depth` levels of work. Every entry is counted
    /// against `budget` before it is read.
    fn walk(&self, dir: &str, budget: &mut Budget) -> Result<Option<Vec<(String, Node)>>>;
    /// Describes the tree in errors ("commit 3f2a9c1", "checkout ./fleet").
    fn describe(&self) -> String;
    /// One regular file (repo-relative path, already checked to stay inside the repo): `None`
    /// when there is none (a directory, a symlink or nothing). Larger than `max` is an error.
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>>;
}

/// A path of the tree that is not where it claims to be (a symlinked directory on the way).
fn outside(msg: String) -> anyhow::Error {
    crate::spec::SpecError::new(crate::reason::Reason::InvalidPath, msg).into()
}

/// A fleet-repo checkout on disk (`plumb validate`, run by CI on untrusted branches). Symlinks are
/// read as symlinks, never followed, on the way to a host or role directory too: nothing outside
/// the checkout is ever read.
pub struct DirTree {
    pub root: PathBuf,
}

impl DirTree {
    /// `rel` under the checkout, every component checked not to be a symlink; `None` when it is
    /// not a directory.
    pub fn dir(&self, rel: &str) -> Result<Option<PathBuf>> {
        let mut p = self.root.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            if c == ".." || c == "." {
                return Err(outside(format!("{rel}: `.` and `..` are not allowed")));
            }
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_symlink() => {
                    return Err(outside(format!(
                    "{} is a symlink: plumb never reads outside the checkout; make it a directory",
                    p.strip_prefix(&self.root).unwrap_or(&p).display()
                )))
                }
                Ok(m) if m.is_dir() => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(p))
    }
}

impl FleetTree for DirTree {
    fn walk(&self, dir: &str, budget: &mut Budget) -> Result<Option<Vec<(String, Node)>>> {
        let Some(base) = self.dir(dir)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        // Pending entries, popped in name order: (path, path relative to `dir`, depth).
        let mut stack: Vec<(PathBuf, String, usize)> = Vec::new();
        push_children(&base, "", 1, &mut stack)?;
        while let Some((path, rel, depth)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.is_symlink() {
                budget.take_file(&rel, 0)?;
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("reading link {}", path.display()))?;
                let Some(target) = target.to_str() else {
                    bail!("{}: symlink target is not UTF-8", path.display());
                };
                out.push((
                    rel,
                    Node::Symlink {
                        target: target.to_string(),
                    },
                ));
            } else if meta.is_dir() {
                budget.take_dir(&rel)?;
                out.push((rel.clone(), Node::Dir));
                if depth <= budget.max_depth() {
                    push_children(&path, &rel, depth + 1, &mut stack)?;
                }
            } else if meta.is_file() {
                budget.take_file(&rel, meta.len())?;
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.push((
                    rel,
                    Node::File {
                        data,
                        executable: meta.permissions().mode() & 0o111 != 0,
                    },
                ));
            } else {
                bail!(
                    "{}: not a regular file, directory or symlink",
                    path.display()
                );
            }
        }
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        format!("checkout {}", self.root.display())
    }

    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let Some(dir) = self.dir(parent)? else {
            return Ok(None);
        };
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => {
                if m.len() > max {
                    bail!("{path} is larger than {max} bytes");
                }
                Ok(Some(
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                ))
            }
            _ => Ok(None),
        }
    }
}

/// Pushes the entries of `dir` onto `stack` so that they pop in name order.
fn push_children(
    dir: &Path,
    prefix: &str,
    depth: usize,
    stack: &mut Vec<(PathBuf, String, usize)>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
    for entry in entries {
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            return Err(outside(format!(
                "{}: file name {:?} is not UTF-8: rename it",
                dir.display(),
                os_name
            )));
        };
        if prefix.is_empty() && name == ".git" {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        stack.push((entry.path(), rel, depth));
    }
    Ok(())
}

/// An in-memory tree, for unit tests.
#[derive(Default, Clone)]
pub struct MemTree {
    pub entries: Vec<(String, Node)>,
}

impl MemTree {
    pub fn bytes(mut self, path: &str, data: Vec<u8>) -> Self {
        self.entries.push((
            path.into(),
            Node::File {
                data,
                executable: false,
            },
        ));
        self
    }
    pub fn file(mut self, path: &str, data: &str) -> Self {
        self.entries.push((
            path.into(),
            Node::File {
                data: data.as_bytes().to_vec(),
                executable: false,
            },
        ));
        self
    }
    pub fn exec(mut self, path: &str, data: &str) -> Self {
        self.entries.push((
            path.into(),
            Node::File {
                data: data.as_bytes().to_vec(),
                executable: true,
            },
        ));
        self
    }
    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.entries.push((
            path.into(),
            Node::Symlink {
                target: target.into(),
            },
        ));
        self
    }
}

impl FleetTree for MemTree {
    fn walk(&self, dir: &str, _budget: &mut Budget) -> Result<Option<Vec<(String, Node)>>> {
        let prefix = format!("{dir}/");
        let mut out: Vec<(String, Node)> = Vec::new();
        for (path, node) in &self.entries {
            if let Some(rel) = path.strip_prefix(&prefix) {
                // Synthesize the directories a flat list implies.
                let parts: Vec<&str> = rel.split('/').collect();
                for i in 1..parts.len() {
                    let d = parts[..i].join("/");
                    if !out.iter().any(|(p, _)| *p == d) {
                        out.push((d, Node::Dir));
                    }
                }
                out.push((rel.to_string(), node.clone()));
            }
        }
        if out.is_empty() && !self.entries.iter().any(|(p, _)| p.starts_with(&prefix)) {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        "test tree".into()
    }

    fn read(&self, path: &str, _max: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.iter().find_map(|(p, n)| match n {
            Node::File { data, .. } if p == path => Some(data.clone()),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_tree_stops_at_max_depth_and_never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("hosts/h1/files/a/b/c/d");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        std::fs::write(t.path().join("hosts/h1/files/a/top"), "y").unwrap();
        let tree = DirTree {
            root: t.path().to_path_buf(),
        };
        let all = tree.walk("hosts/h1", &mut depth(32)).unwrap().unwrap();
        let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "files",
                "files/a",
                "files/a/b",
                "files/a/b/c",
                "files/a/b/c/d",
                "files/a/b/c/d/f",
                "files/a/top"
            ]
        );
        // Two levels entered: the third is listed (for the caller to refuse), not read.
        let cut = tree.walk("hosts/h1", &mut depth(2)).unwrap().unwrap();
        let names: Vec<&str> = cut.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["files", "files/a", "files/a/b", "files/a/top"]);

        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("web")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("roles")).unwrap();
        let e = tree.walk("roles/web", &mut depth(32)).unwrap_err();
        assert!(format!("{e:#}").contains("roles is a symlink"), "{e:#}");
    }

    fn depth(max_depth: usize) -> Budget {
        Budget::new(&Limits {
            max_depth,
            ..Limits::default()
        })
    }

    /// The walk stops at the first entry over a limit: what it would have read after is never
    /// read (the 100,000-file commit of issue 12 peaked at 66 MB when it was counted afterwards).
    #[test]
    fn dir_tree_stops_reading_at_the_budget() {
        let t = tempfile::tempdir().unwrap();
        let files = t.path().join("hosts/h1/files");
        std::fs::create_dir_all(&files).unwrap();
        for i in 0..10 {
            std::fs::write(files.join(format!("f{i}")), "0123456789").unwrap();
        }
        let tree = DirTree {
            root: t.path().to_path_buf(),
        };
        let limited = |max_files, max_total_size| {
            let mut b = Budget::new(&Limits {
                max_files,
                max_total_size,
                ..Limits::default()
            });
            tree.walk("hosts/h1", &mut b).map(|_| ())
        };
        // 10 files of 10 bytes, and their paths: "files" (5) and "files/fN" (8 each).
        assert!(limited(10, 185).is_ok());
        let e = limited(9, 1000).unwrap_err();
        assert!(format!("{e:#}").contains("limits.max_files"), "{e:#}");
        let e = limited(100, 184).unwrap_err();
        assert!(format!("{e:#}").contains("limits.max_total_size"), "{e:#}");
        assert_eq!(
            e.downcast_ref::<crate::spec::SpecError>().unwrap().reason,
            crate::reason::Reason::SizeLimit
        );
    }
}
