//! A read-only view of a fleet-repo tree: a Git commit, or a checkout on disk (`plumb validate`).

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

/// Where the spec is read from.
pub trait FleetTree {
    /// Every entry below `dir` (repo-relative, `/`-separated), depth first, with paths relative to
    /// `dir`; `None` when `dir` is not a directory of the tree. Names must be UTF-8.
    fn walk(&self, dir: &str) -> Result<Option<Vec<(String, Node)>>>;
    /// Describes the tree in errors ("commit 3f2a9c1", "checkout ./fleet").
    fn describe(&self) -> String;
}

/// A fleet-repo checkout on disk. Symlinks are read as symlinks, never followed.
pub struct DirTree {
    pub root: PathBuf,
}

impl FleetTree for DirTree {
    fn walk(&self, dir: &str) -> Result<Option<Vec<(String, Node)>>> {
        let base = self.root.join(dir);
        match std::fs::symlink_metadata(&base) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(None),
        }
        let mut out = Vec::new();
        walk_dir(&base, "", &mut out)?;
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        format!("checkout {}", self.root.display())
    }
}

fn walk_dir(dir: &Path, prefix: &str, out: &mut Vec<(String, Node)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            bail!(
                "{}: file name {:?} is not UTF-8: rename it",
                dir.display(),
                os_name
            );
        };
        if prefix.is_empty() && name == ".git" {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.is_symlink() {
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
            out.push((rel.clone(), Node::Dir));
            walk_dir(&path, &rel, out)?;
        } else if meta.is_file() {
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
    Ok(())
}

/// An in-memory tree, for unit tests.
#[derive(Default)]
pub struct MemTree {
    pub entries: Vec<(String, Node)>,
}

impl MemTree {
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
    fn walk(&self, dir: &str) -> Result<Option<Vec<(String, Node)>>> {
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
}
