//! The host filesystem under `root`, confined: every path is resolved from a handle on the root
//! directory one component at a time, and no symlink is ever followed, so nothing Git says (and no
//! symlink swapped in on the host) can make plumb write outside `root`.

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What is at a path on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Missing,
    File {
        data: Vec<u8>,
        meta: Meta,
    },
    Symlink {
        target: String,
        meta: Meta,
    },
    Dir,
    /// A device, socket or fifo: never touched.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub struct HostFs {
    root: OwnedFd,
    root_path: PathBuf,
    /// Directories with a rename or unlink not yet made durable, one fd each (by device and
    /// inode). Synced once per directory by `sync_dirs` (or on drop), not once per file: that
    /// halves the fsyncs of a pass writing many files in few directories.
    unsynced_dirs: Mutex<BTreeMap<(u64, u64), OwnedFd>>,
    /// Between `begin_batch` and `commit_batch`: file writes whose temp file is written but not
    /// yet synced and renamed into place.
    batch: Mutex<Option<Vec<Staged>>>,
    /// Users and groups resolved so far: (passwd|group, name) -> id. Misses are not kept.
    ids: Mutex<BTreeMap<(String, String), u32>>,
    /// Directories opened so far, by path: a pass over 1,000 files in a dozen directories walks
    /// each directory once, not once per file. Cleared when a directory is removed.
    dirs: Mutex<HashMap<String, Arc<OwnedFd>>>,
}

/// A path's directory (opened), its final name, and the directories created to reach it.
type Parent = (Arc<OwnedFd>, String, Vec<String>);

/// A temp file waiting in its directory for `commit_batch`.
struct Staged {
    dir: (u64, u64),
    tmp: String,
    name: String,
    path: String,
}

/// fsyncs in flight at once in `commit_batch`: the filesystem's journal commits them together,
/// so 1,000 small files take a few commits instead of 1,000.
const SYNC_WORKERS: usize = 16;

const TMP_SUFFIX: &str = ".plumb-new";

impl HostFs {
    pub fn open(root: &Path) -> Result<HostFs> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening root directory {}", root.display()))?;
        Ok(HostFs {
            root: fd,
            root_path: root.to_path_buf(),
            unsynced_dirs: Mutex::new(BTreeMap::new()),
            batch: Mutex::new(None),
            ids: Mutex::new(BTreeMap::new()),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The host path of `path` for messages ("/etc/motd", or "<root>/etc/motd").
    pub fn display(&self, path: &str) -> String {
        if self.root_path == Path::new("/") {
            path.to_string()
        } else {
            format!("{}{}", self.root_path.display(), path)
        }
    }

    /// Opens the parent directory of an absolute `path`, creating missing directories (mode 0755,
    /// root-owned) when `create` is set. Returns the fd, the final name, and the directories created.
    fn parent(&self, path: &str, create: bool) -> Result<Option<Parent>> {
        let comps = components(path)?;
        let (name, dirs) = comps
            .split_last()
            .ok_or_else(|| anyhow!("{path}: the root itself cannot be managed"))?;
        let key = path[..path.len() - name.len()].to_string();
        if let Some(fd) = self.dirs.lock().expect("not poisoned").get(&key) {
            return Ok(Some((fd.clone(), name.to_string(), Vec::new())));
        }
        let mut fd = self.root.try_clone()?;
        let mut created = Vec::new();
        let mut sofar = String::new();
        for c in dirs {
            sofar.push('/');
            sofar.push_str(c);
            let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            fd = match openat(&fd, *c, flags, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&fd, *c, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => created.push(sofar.clone()),
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e).with_context(|| format!("creating directory {}", self.display(&sofar))),
                    }
                    openat(&fd, *c, flags, Mode::empty()).with_context(|| format!("opening {}", self.display(&sofar)))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => bail!(
                    "{} is a symlink or not a directory: plumb does not follow symlinks under root; replace it with a real directory or name the real path in Git",
                    self.display(&sofar)
                ),
                Err(e) => return Err(e).with_context(|| format!("opening {}", self.display(&sofar))),
            };
        }
        let fd = Arc::new(fd);
        self.dirs
            .lock()
            .expect("not poisoned")
            .insert(key, fd.clone());
        Ok(Some((fd, name.to_string(), created)))
    }

    /// What is at `path` now (never following a symlink).
    pub fn observe(&self, path: &str) -> Result<Observed> {
        let Some((dir, name, _)) = self.parent(path, false)? else {
            return Ok(Observed::Missing);
        };
        let st = match fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Observed::Missing),
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", self.display(path))),
        };
        let meta = meta_of(&st);
        Ok(
            match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                SFlag::S_IFREG => {
                    // O_NONBLOCK and a second look at the opened fd: a fifo swapped in after the
                    // fstatat must not hang the pass.
                    let fd = openat(
                        &dir,
                        name.as_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                        Mode::empty(),
                    )
                    .with_context(|| format!("opening {}", self.display(path)))?;
                    let st = nix::sys::stat::fstat(&fd)
                        .with_context(|| format!("inspecting {}", self.display(path)))?;
                    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
                        return Ok(Observed::Other);
                    }
                    let meta = meta_of(&st);
                    let data = read_all(&fd, st.st_size as usize)
                        .with_context(|| format!("reading {}", self.display(path)))?;
                    Observed::File { data, meta }
                }
                SFlag::S_IFLNK => {
                    let t = nix::fcntl::readlinkat(&dir, name.as_str())
                        .with_context(|| format!("reading link {}", self.display(path)))?;
                    Observed::Symlink {
                        target: t.to_string_lossy().into_owned(),
                        meta,
                    }
                }
                SFlag::S_IFDIR => Observed::Dir,
                _ => Observed::Other,
            },
        )
    }

    /// Replaces `path` atomically with a regular file: temp file in the same directory, fsync,
    /// rename (the directory is fsynced by `sync_dirs`). Returns the directories it had to create.
    /// In a batch, the fsync and rename wait for `commit_batch`.
    pub fn write_file(&self, path: &str, data: &[u8], meta: Meta) -> Result<Vec<String>> {
        let (dir, name, created) = self.parent(path, true)?.expect("created");
        let tmp = tmp_name(&name);
        self.refuse_dir(&dir, &name, path)?;
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let fd = openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .with_context(|| format!("creating a temp file beside {}", self.display(path)))?;
        let written = (|| -> Result<()> {
            fchown(
                &fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
            fchmod(&fd, Mode::from_bits_truncate(meta.mode))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(data)?;
            if self.batch.lock().expect("not poisoned").is_none() {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e).with_context(|| format!("writing {}", self.display(path)));
        }
        if let Some(batch) = self.batch.lock().expect("not poisoned").as_mut() {
            batch.push(Staged {
                dir: self.defer_dir_sync(&dir, path)?,
                tmp,
                name,
                path: path.to_string(),
            });
            return Ok(created);
        }
        self.commit_tmp(&dir, &tmp, &name, path)?;
        Ok(created)
    }

    /// From now on file writes are staged: written to their temp file only, until `commit_batch`
    /// syncs them all at once and renames them into place. One fsync per file in a row costs a
    /// journal commit each (~5 s for 1,000 files on a VM disk); together they take a fraction.
    pub fn begin_batch(&self) {
        self.batch
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(Vec::new);
    }

    /// Puts every staged file in place: fsync the temp files (in parallel), rename each, fsync
    /// each directory. A failure names the file; the files not yet renamed keep their old content.
    pub fn commit_batch(&self) -> Result<()> {
        let Some(staged) = self.batch.lock().expect("not poisoned").take() else {
            return Ok(());
        };
        let result = self.sync_staged(&staged).and_then(|()| {
            let dirs = self.unsynced_dirs.lock().expect("not poisoned");
            for (i, s) in staged.iter().enumerate() {
                if let Err(e) = renameat(
                    &dirs[&s.dir],
                    s.tmp.as_str(),
                    &dirs[&s.dir],
                    s.name.as_str(),
                ) {
                    discard(&dirs, &staged[i..]);
                    return Err(e)
                        .with_context(|| format!("renaming into place {}", self.display(&s.path)));
                }
            }
            Ok(())
        });
        if result.is_err() {
            // Nothing half-done: staged files not renamed are removed (no-op for renamed ones).
            discard(&self.unsynced_dirs.lock().expect("not poisoned"), &staged);
        }
        result?;
        self.sync_dirs()
    }

    fn sync_staged(&self, staged: &[Staged]) -> Result<()> {
        let dirs = self.unsynced_dirs.lock().expect("not poisoned");
        let dirs = &*dirs;
        let sync = |chunk: &[Staged]| -> Result<()> {
            for s in chunk {
                openat(
                    &dirs[&s.dir],
                    s.tmp.as_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .and_then(|fd| fsync(&fd))
                .with_context(|| format!("syncing {}", self.display(&s.path)))?;
            }
            Ok(())
        };
        if staged.len() <= 2 {
            return sync(staged);
        }
        let per = staged.len().div_ceil(SYNC_WORKERS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = staged
                .chunks(per)
                .map(|chunk| scope.spawn(move || sync(chunk)))
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("an fsync worker panicked"))
        })
    }

    /// Replaces `path` atomically with a symlink to `target`.
    pub fn write_symlink(&self, path: &str, target: &str, meta: Meta) -> Result<Vec<String>> {
        let (dir, name, created) = self.parent(path, true)?.expect("created");
        let tmp = tmp_name(&name);
        self.refuse_dir(&dir, &name, path)?;
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, &dir, tmp.as_str())
            .with_context(|| format!("creating symlink {}", self.display(path)))?;
        nix::unistd::fchownat(
            &dir,
            tmp.as_str(),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the owner of {}", self.display(path)))?;
        self.commit_tmp(&dir, &tmp, &name, path)?;
        Ok(created)
    }

    /// A directory in the way: an empty one (left by the managed files that were in it, when a
    /// path turns from a directory into a file) is removed; one holding anything is refused.
    fn refuse_dir(&self, dir: &OwnedFd, name: &str, path: &str) -> Result<()> {
        if let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
                self.dirs.lock().expect("not poisoned").clear();
                if unlinkat(dir, name, UnlinkatFlags::RemoveDir).is_err() {
                    bail!("{} is a directory on the host: plumb does not replace directories; remove it or change Git", self.display(path));
                }
            }
        }
        Ok(())
    }

    fn commit_tmp(&self, dir: &OwnedFd, tmp: &str, name: &str, path: &str) -> Result<()> {
        if let Err(e) = renameat(dir, tmp, dir, name) {
            let _ = unlinkat(dir, tmp, UnlinkatFlags::NoRemoveDir);
            return Err(e).with_context(|| format!("renaming into place {}", self.display(path)));
        }
        self.defer_dir_sync(dir, path).map(drop)
    }

    /// Remembers `dir` for `sync_dirs`; returns its key.
    fn defer_dir_sync(&self, dir: &OwnedFd, path: &str) -> Result<(u64, u64)> {
        let st = nix::sys::stat::fstat(dir)
            .with_context(|| format!("inspecting the directory of {}", self.display(path)))?;
        let key = (st.st_dev, st.st_ino);
        let mut dirs = self.unsynced_dirs.lock().expect("not poisoned");
        if let std::collections::btree_map::Entry::Vacant(e) = dirs.entry(key) {
            e.insert(dir.try_clone()?);
        }
        Ok(key)
    }

    /// Makes every rename and unlink so far durable: one fsync per directory touched.
    pub fn sync_dirs(&self) -> Result<()> {
        let dirs = std::mem::take(&mut *self.unsynced_dirs.lock().expect("not poisoned"));
        for fd in dirs.values() {
            fsync(fd).with_context(|| {
                format!("syncing a directory under {}", self.root_path.display())
            })?;
        }
        Ok(())
    }

    /// Sets owner and mode of an existing regular file in place (no content change).
    pub fn set_meta(&self, path: &str, meta: Meta) -> Result<()> {
        let (dir, name, _) = self
            .parent(path, false)?
            .ok_or_else(|| anyhow!("{} vanished", self.display(path)))?;
        let fd = openat(
            &dir,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", self.display(path)))?;
        let st = nix::sys::stat::fstat(&fd)
            .with_context(|| format!("inspecting {}", self.display(path)))?;
        if st.st_nlink > 1 || st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            // A hard link (say, to /etc/shadow) made on the host: chmod would change the other
            // name too. Write a fresh copy in its place instead.
            drop(fd);
            let Observed::File { data, .. } = self.observe(path)? else {
                bail!("{} is no longer a regular file", self.display(path));
            };
            self.write_file(path, &data, meta)?;
            return Ok(());
        }
        fchown(
            &fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .and_then(|_| fchmod(&fd, Mode::from_bits_truncate(meta.mode)))
        .with_context(|| format!("setting owner and mode of {}", self.display(path)))?;
        fsync(&fd).with_context(|| format!("syncing {}", self.display(path)))
    }

    /// Removes a file or symlink at `path`; a missing one is fine.
    pub fn remove(&self, path: &str) -> Result<()> {
        let Some((dir, name, _)) = self.parent(path, false)? else {
            return Ok(());
        };
        match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => self.defer_dir_sync(&dir, path).map(drop),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.display(path))),
        }
    }

    /// Removes the directory `path` if it is empty; says whether it did.
    pub fn remove_empty_dir(&self, path: &str) -> Result<bool> {
        let Some((dir, name, _)) = self.parent(path, false)? else {
            return Ok(false);
        };
        // A cached fd of it (or of a directory below) would now point at a removed directory.
        self.dirs.lock().expect("not poisoned").clear();
        match unlinkat(&dir, name.as_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing directory {}", self.display(path))),
        }
    }

    /// Resolves a user name to a uid: in the host's NSS when root is `/`, else in `<root>/etc/passwd`.
    pub fn uid(&self, name: &str) -> Result<u32> {
        self.account(name, "passwd", |n| {
            Ok(nix::unistd::User::from_name(n)?.map(|u| u.uid.as_raw()))
        })
        .with_context(|| format!("user {name:?}"))
    }

    pub fn gid(&self, name: &str) -> Result<u32> {
        self.account(name, "group", |n| {
            Ok(nix::unistd::Group::from_name(n)?.map(|g| g.gid.as_raw()))
        })
        .with_context(|| format!("group {name:?}"))
    }

    fn account(
        &self,
        name: &str,
        db: &str,
        nss: impl Fn(&str) -> Result<Option<u32>>,
    ) -> Result<u32> {
        if let Ok(id) = name.parse::<u32>() {
            return Ok(id);
        }
        // Every file asks for its owner and group (usually root:root): look each name up once.
        let key = (db.to_string(), name.to_string());
        if let Some(id) = self.ids.lock().expect("not poisoned").get(&key) {
            return Ok(*id);
        }
        let found = if self.root_path == Path::new("/") {
            nss(name)?
        } else {
            match self.observe(&format!("/etc/{db}"))? {
                Observed::File { data, .. } => lookup_db(&data, name),
                _ if name == "root" => Some(0),
                _ => None,
            }
        };
        let id = found.ok_or_else(|| anyhow!("does not exist on the host: create it (a package or a sysusers.d file) or change owner/group in host.toml"))?;
        self.ids.lock().expect("not poisoned").insert(key, id);
        Ok(id)
    }
}

impl Drop for HostFs {
    /// A caller that did not call `sync_dirs` (or an early return) still gets durable renames;
    /// a batch never committed is discarded.
    fn drop(&mut self) {
        if let Some(staged) = self.batch.lock().expect("not poisoned").take() {
            discard(&self.unsynced_dirs.lock().expect("not poisoned"), &staged);
        }
        if let Err(e) = self.sync_dirs() {
            tracing::warn!(error = %format!("{e:#}"), "syncing directories");
        }
    }
}

/// Removes staged temp files.
fn discard(dirs: &BTreeMap<(u64, u64), OwnedFd>, staged: &[Staged]) {
    for s in staged {
        let _ = unlinkat(&dirs[&s.dir], s.tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
}

fn lookup_db(data: &[u8], name: &str) -> Option<u32> {
    data.split(|b| *b == b'\n').find_map(|line| {
        let mut f = line.split(|b| *b == b':');
        (f.next()? == name.as_bytes()).then_some(())?;
        f.next()?;
        std::str::from_utf8(f.next()?).ok()?.parse().ok()
    })
}

/// Reads `fd` to its end, expecting about `size` bytes: without the size probes
/// (`fstat`, `lseek`) `read_to_end` makes for each file.
fn read_all(fd: &OwnedFd, size: usize) -> nix::Result<Vec<u8>> {
    // One byte more than expected, so that the read after the data already sees the end.
    let mut data = vec![0u8; size + 1];
    let mut len = 0;
    loop {
        if len == data.len() {
            data.resize(len * 2, 0);
        }
        match nix::unistd::read(fd, &mut data[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    data.truncate(len);
    Ok(data)
}

fn meta_of(st: &FileStat) -> Meta {
    Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// Splits an absolute path into checked components.
fn components(path: &str) -> Result<Vec<&str>> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| anyhow!("{path:?} is not an absolute path"))?;
    let comps: Vec<&str> = rest.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        bail!("{path:?}: empty, `.` and `..` components are not allowed");
    }
    Ok(comps)
}

/// The temp file a write of `name` goes through: a fixed length (so any name up to NAME_MAX can
/// be written), and of the `.*.plumb-new` form the spec loader refuses for managed files, so no
/// file Git names can be mistaken for (or overwritten as) another's temp file.
pub fn tmp_name(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    format!(".{}{TMP_SUFFIX}", hex::encode(&h[..8]))
}

/// Is this a temp file of ours (left by a pass that was killed)? Managed names of this form are
/// refused when a commit is loaded.
pub fn is_tmp_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".") && name.as_bytes().ends_with(TMP_SUFFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> Meta {
        Meta {
            mode: 0o640,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    #[test]
    fn write_observe_remove() {
        let t = tempfile::tempdir().unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        assert_eq!(fs.observe("/etc/app/x").unwrap(), Observed::Missing);
        let created = fs.write_file("/etc/app/x", b"hello", me()).unwrap();
        assert_eq!(created, ["/etc", "/etc/app"]);
        assert_eq!(
            fs.observe("/etc/app/x").unwrap(),
            Observed::File {
                data: b"hello".to_vec(),
                meta: me()
            }
        );
        assert_eq!(
            std::fs::metadata(t.path().join("etc/app/x"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o640
        );
        fs.write_symlink("/etc/app/l", "x", me()).unwrap();
        assert!(
            matches!(fs.observe("/etc/app/l").unwrap(), Observed::Symlink { target, .. } if target == "x")
        );
        fs.remove("/etc/app/x").unwrap();
        fs.remove("/etc/app/l").unwrap();
        assert!(fs.remove_empty_dir("/etc/app").unwrap());
        assert_eq!(std::fs::read_dir(t.path().join("etc")).unwrap().count(), 0);
    }

    #[test]
    fn a_removed_directory_is_not_written_through_a_cached_handle() {
        let t = tempfile::tempdir().unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        fs.write_file("/etc/app/x", b"one", me()).unwrap();
        fs.remove("/etc/app/x").unwrap();
        assert!(fs.remove_empty_dir("/etc/app").unwrap());
        let created = fs.write_file("/etc/app/y", b"two", me()).unwrap();
        assert_eq!(created, ["/etc/app"]);
        assert_eq!(std::fs::read(t.path().join("etc/app/y")).unwrap(), b"two");
        // A big file read whole (more than the size seen before the read).
        let big = vec![7u8; 300_000];
        fs.write_file("/etc/app/big", &big, me()).unwrap();
        assert!(
            matches!(fs.observe("/etc/app/big").unwrap(), Observed::File { data, .. } if data == big)
        );
    }

    #[test]
    fn batch_puts_files_in_place_on_commit_only() {
        let t = tempfile::tempdir().unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        fs.write_file("/etc/a/old", b"before", me()).unwrap();
        fs.begin_batch();
        for i in 0..40 {
            fs.write_file(&format!("/etc/{}/f{i}", i % 3), b"new", me())
                .unwrap();
        }
        fs.write_file("/etc/a/old", b"after", me()).unwrap();
        // Staged: not visible yet, the old content still is.
        assert_eq!(fs.observe("/etc/1/f1").unwrap(), Observed::Missing);
        assert!(
            matches!(fs.observe("/etc/a/old").unwrap(), Observed::File { data, .. } if data == b"before")
        );
        fs.commit_batch().unwrap();
        for i in 0..40 {
            assert!(
                matches!(fs.observe(&format!("/etc/{}/f{i}", i % 3)).unwrap(), Observed::File { data, meta } if data == b"new" && meta == me())
            );
        }
        assert!(
            matches!(fs.observe("/etc/a/old").unwrap(), Observed::File { data, .. } if data == b"after")
        );
        let leftovers = ["0", "1", "2", "a"]
            .iter()
            .flat_map(|d| std::fs::read_dir(t.path().join("etc").join(d)).unwrap())
            .filter(|e| is_tmp_name(&e.as_ref().unwrap().file_name()))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn batch_not_committed_is_discarded() {
        let t = tempfile::tempdir().unwrap();
        {
            let fs = HostFs::open(t.path()).unwrap();
            fs.begin_batch();
            fs.write_file("/etc/x", b"new", me()).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(t.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn symlinked_parent_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("etc")).unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        let e = format!(
            "{:#}",
            fs.write_file("/etc/passwd", b"x", me()).unwrap_err()
        );
        assert!(e.contains("symlink"), "{e}");
        assert!(fs.observe("/etc/passwd").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn set_meta_does_not_chmod_through_a_hard_link() {
        let t = tempfile::tempdir().unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        fs.write_file("/etc/shadow", b"secret", me()).unwrap();
        std::fs::hard_link(t.path().join("etc/shadow"), t.path().join("etc/motd")).unwrap();
        let open = Meta {
            mode: 0o644,
            ..me()
        };
        fs.set_meta("/etc/motd", open).unwrap();
        fs.commit_batch().unwrap();
        let mode = |p: &str| {
            std::fs::metadata(t.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("etc/shadow"), mode("etc/motd")), (0o640, 0o644));
        assert_eq!(std::fs::read(t.path().join("etc/motd")).unwrap(), b"secret");
    }

    #[test]
    fn a_fifo_in_place_of_a_file_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        nix::unistd::mkfifo(&t.path().join("etc/motd"), Mode::from_bits_truncate(0o644)).unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        assert_eq!(fs.observe("/etc/motd").unwrap(), Observed::Other);
    }

    #[test]
    fn directory_is_not_replaced() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/d")).unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        std::fs::write(t.path().join("etc/d/keep"), "x").unwrap();
        assert!(fs.write_file("/etc/d", b"x", me()).is_err());
        assert!(t.path().join("etc/d").is_dir());
        // An empty one (its managed files just removed) gives way.
        std::fs::remove_file(t.path().join("etc/d/keep")).unwrap();
        fs.write_file("/etc/d", b"x", me()).unwrap();
        assert_eq!(std::fs::read(t.path().join("etc/d")).unwrap(), b"x");
        // Any name up to NAME_MAX can be written: the temp name is short.
        let long = format!("/etc/{}", "n".repeat(255));
        fs.write_file(&long, b"y", me()).unwrap();
        fs.write_symlink(&format!("/etc/{}", "l".repeat(255)), "d", me())
            .unwrap();
    }

    #[test]
    fn accounts_resolve_in_root() {
        let t = tempfile::tempdir().unwrap();
        let fs = HostFs::open(t.path()).unwrap();
        assert_eq!(fs.uid("root").unwrap(), 0);
        assert_eq!(fs.uid("1234").unwrap(), 1234);
        assert!(fs.uid("app").is_err());
        fs.write_file(
            "/etc/passwd",
            b"root:x:0:0::/root:/bin/sh\napp:x:999:998::/:/bin/false\n",
            me(),
        )
        .unwrap();
        fs.write_file("/etc/group", b"app:x:998:\n", me()).unwrap();
        assert_eq!(fs.uid("app").unwrap(), 999);
        assert_eq!(fs.gid("app").unwrap(), 998);
    }

    #[test]
    fn tmp_names() {
        assert!(is_tmp_name(OsStr::new(".motd.plumb-new")));
        let long = "x".repeat(255);
        assert!(is_tmp_name(OsStr::new(&tmp_name(&long))));
        assert!(tmp_name(&long).len() < 32);
        assert_ne!(tmp_name("motd"), tmp_name("issue"));
        assert!(!is_tmp_name(OsStr::new("motd")));
    }
}
