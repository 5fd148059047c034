//! Where a job's files go, and which directory a job may replace.
//!
//! - [`check_replaceable`] decides, before any work, whether an output path may be used: a
//!   directory is replaced only when it is empty or this worker made it for the same video,
//!   and never when it holds the source or other outputs.
//! - [`Staging`] is a directory beside the output, made under the output's lock. When the job
//!   is complete every file in it is fsynced and it is renamed into place (an existing output
//!   is exchanged atomically); on any failure it is removed.
//! - [`sweep_stale`] and [`remove_staging_of`] clear what crashed jobs leave behind.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{JobError, Result};
use crate::media::confine::{self, WalkError};
use crate::media::manifest::Manifest;
use crate::media::TranscodeRequest;

pub use crate::media::manifest::MANIFEST;

/// How long a job waits for another job that holds the same output's lock before it fails as
/// `output_io` (transient: the queue retries it later, when the other job has published).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// A staging directory untouched this long belongs to a job that died (a running job adds a
/// segment file every few seconds, which updates the directory's times). Six hours is far
/// beyond any pause between two segments, whatever the host or the pid that made it.
const STALE_STAGING_AGE: Duration = Duration::from_secs(6 * 3600);

/// Who asks to write an output directory: decides [`check_replaceable`].
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The job's source: a folder that holds it is never replaced.
    pub source: &'a Path,
    /// The job's video; an output made for another video is not replaced. `None` is the
    /// command line's `transcode`, which may replace its own earlier `None` outputs.
    pub video_id: Option<&'a str>,
    /// `transcode --force`: replace a folder the user named even if this worker did not make
    /// it (never one that holds the source).
    pub force: bool,
    /// A thumbnail job writes only `thumbnail.jpg` (and no manifest): a folder that holds
    /// nothing else is its own earlier output.
    pub thumbnail_only: bool,
}

/// Why an output path is refused (`invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `/`: no folder name.
    Root,
    /// A file (or something else that is not a folder) is in the way.
    NotADirectory,
    /// The folder is the source's folder or one of its ancestors.
    HoldsSource,
    /// The folder is not empty and has no manifest: this worker did not make it.
    NotAnOutput,
    /// The folder's manifest is for another video.
    OtherVideo,
    /// A folder below it holds an output (a `manifest.json`): those would be deleted.
    HoldsOutputs,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Root => "is the root directory",
            Refusal::NotADirectory => "exists and is not a directory",
            Refusal::HoldsSource => {
                "holds the source: replacing it would delete the upload and its neighbours"
            }
            Refusal::NotAnOutput => {
                "exists, is not empty and was not made by this worker (no manifest.json); \
                 it is never replaced"
            }
            Refusal::OtherVideo => "holds the output of another video; it is never replaced",
            Refusal::HoldsOutputs => {
                "holds other outputs (a manifest.json below it); it is never replaced"
            }
        })
    }
}

/// Decides whether `target` may be written by `claim`. A missing target or an empty folder
/// is fine; an existing folder only when this worker made it for the same video, without
/// other outputs below it. Symlinks are followed, as the rename will act on what they name.
pub fn check_replaceable(target: &Path, claim: &Claim) -> std::result::Result<(), Refusal> {
    if target.file_name().is_none() {
        return Err(Refusal::Root);
    }
    let Ok(real) = target.canonicalize() else {
        // Missing: a fresh output (other errors surface when it is created).
        return Ok(());
    };
    if real.parent().is_none() {
        return Err(Refusal::Root);
    }
    let source = claim
        .source
        .canonicalize()
        .unwrap_or_else(|_| claim.source.to_path_buf());
    if source.starts_with(&real) {
        return Err(Refusal::HoldsSource);
    }
    if !real.is_dir() {
        return Err(Refusal::NotADirectory);
    }
    if claim.force {
        return Ok(());
    }
    let names: Vec<std::ffi::OsString> = match std::fs::read_dir(&real) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| !is_add_file_temp(n))
            .collect(),
        Err(_) => return Err(Refusal::NotAnOutput),
    };
    if names.is_empty() {
        return Ok(());
    }
    match Manifest::read(&real) {
        Some(m) if m.video_id.as_deref() == claim.video_id => {}
        Some(_) => return Err(Refusal::OtherVideo),
        None if claim.thumbnail_only
            && names == [std::ffi::OsString::from(crate::media::thumbnail::FILE_NAME)] =>
        {
            return Ok(())
        }
        None => return Err(Refusal::NotAnOutput),
    }
    let mut budget = 10_000;
    if holds_manifest_below(&real, &mut budget) {
        return Err(Refusal::HoldsOutputs);
    }
    Ok(())
}

/// True when a folder below `dir` holds a manifest, or when the tree is too big to be one of
/// our outputs (more than `budget` entries: a worker output is a few hundred files, flat).
fn holds_manifest_below(dir: &Path, budget: &mut usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return true;
        }
        *budget -= 1;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir
            && (entry.path().join(MANIFEST).exists() || holds_manifest_below(&entry.path(), budget))
        {
            return true;
        }
    }
    false
}

fn claim(req: &TranscodeRequest) -> Claim<'_> {
    Claim {
        source: &req.source,
        video_id: req.video_id.as_deref(),
        force: req.force,
        thumbnail_only: false,
    }
}

fn refused(req: &TranscodeRequest, refusal: Refusal) -> JobError {
    JobError::invalid_request(format!(
        "output directory {} {refusal}",
        req.output_dir.display()
    ))
}

/// [`check_replaceable`] for a transcode request, as a job error.
pub fn check_request(req: &TranscodeRequest) -> Result<()> {
    check_replaceable(&req.output_dir, &claim(req)).map_err(|r| refused(req, r))
}

/// A staging directory that disappears unless published; it holds the output's lock.
pub struct Staging {
    path: PathBuf,
    target: PathBuf,
    published: bool,
    /// Held from creation until after publish (dropped after `Drop::drop` has run).
    _lock: OutputLock,
    /// The output's parent, opened without following symlinks; `path` and `target` name
    /// entries in it through `/proc/self/fd`. Declared last: it outlives the lock's removal.
    _parent: File,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> JobError {
    JobError::output_io(format!("{what} {}: {e}", path.display()))
}

fn target_name(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into())
}

fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '.', '-'], "_"))
        .unwrap_or_else(|_| "host".into())
}

/// `.<name>.<tag>-<host>-<pid>-<n>` beside the target: same filesystem, so the final rename
/// is atomic; a dot name that a web server listing or a player will not pick up; and the
/// owner's host and pid, for the log and for [`remove_staging_of`].
pub fn staging_path(target: &Path, tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(
        ".{}.{tag}-{}-{}-{n}",
        target_name(target),
        host_name(),
        std::process::id()
    ))
}

/// What a crashed job can leave beside its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeftoverKind {
    /// A staging directory (possibly holding an exchanged previous output).
    Staging,
    /// A previous output moved aside by the two-rename publish.
    Old,
    /// A file being added to a published output (`add_file`: the thumbnail job's JPEG).
    Temp,
}

struct Leftover {
    path: PathBuf,
    kind: LeftoverKind,
    host: String,
    pid: u32,
}

fn leftovers(target: &Path) -> Vec<Leftover> {
    let prefix = format!(".{}.", target_name(target));
    let Ok(entries) = std::fs::read_dir(parent_of(target)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (kind, owner) = if let Some(owner) = rest.strip_prefix("staging-") {
            (LeftoverKind::Staging, owner)
        } else if let Some(owner) = rest.strip_prefix("old-") {
            (LeftoverKind::Old, owner)
        } else if let Some(owner) = rest.strip_prefix("tmp-") {
            (LeftoverKind::Temp, owner)
        } else {
            continue;
        };
        let Some((host, pid)) = owner_of(owner) else {
            continue;
        };
        found.push(Leftover {
            path: entry.path(),
            kind,
            host: host.to_string(),
            pid,
        });
    }
    found
}

/// The host and pid in a leftover's `<host>-<pid>-<n>` suffix (the host has no '-', see
/// host_name).
fn owner_of(owner: &str) -> Option<(&str, u32)> {
    let mut parts = owner.rsplitn(3, '-');
    let (_n, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
    Some((host, pid.parse().ok()?))
}

/// Whether `name` is a temporary file `add_file` writes (`.<file>.tmp-<host>-<pid>-<n>`):
/// one a crash left behind does not make a folder foreign.
fn is_add_file_temp(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(_, owner)| owner_of(owner).is_some())
}

/// Time since an entry was last added to or removed from the directory `path` (its mtime).
fn idle_for(path: &Path) -> Option<Duration> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let changed = meta.mtime();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(
        now.saturating_sub(u64::try_from(changed).unwrap_or(0)),
    ))
}

/// Removes what crashed jobs left beside `target`. Called under the output's lock, so no
/// live job is writing a staging directory for this target, if the lock works:
/// - a staging directory made on this host by a process that no longer runs goes at once
///   (same host, same kernel: the lock is reliable there, even across pid namespaces);
/// - any other staging directory goes once it has been idle for the stale age (six hours by
///   default), whatever host made it: a replacement pod has another hostname, and a lock may
///   not be shared between hosts on some network filesystems;
/// - a previous output moved aside by a two-rename publish goes once the target is complete.
pub fn sweep_stale(target: &Path) {
    sweep_older_than(target, STALE_STAGING_AGE);
}

/// Whether process `pid` of this host still runs. A zombie does not: a job process killed
/// with its worker stays one until a reaper collects it, and its staging is dead already.
fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) STATE …`: the state follows the last `)` (comm may hold one).
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn sweep_older_than(target: &Path, max_age: Duration) {
    let host = host_name();
    let mut target_complete = None;
    for l in leftovers(target) {
        let remove = match l.kind {
            LeftoverKind::Staging | LeftoverKind::Temp => {
                let dead_here =
                    l.host == host && l.pid != std::process::id() && !process_runs(l.pid);
                dead_here || idle_for(&l.path).is_some_and(|idle| idle > max_age)
            }
            LeftoverKind::Old => *target_complete.get_or_insert_with(|| Manifest::complete(target)),
        };
        if remove {
            tracing::info!(dir = %l.path.display(), host = %l.host, pid = l.pid,
                "removing a crashed job's leftover");
            let _ = match l.kind {
                LeftoverKind::Temp => std::fs::remove_file(&l.path),
                _ => std::fs::remove_dir_all(&l.path),
            };
        }
    }
}

/// Removes the staging directories of `target` made by process `pid` on this host: a parent
/// calls this when the child that ran the job died.
pub(crate) fn remove_staging_of(target: &Path, pid: u32) {
    let host = host_name();
    for l in leftovers(target) {
        if l.kind == LeftoverKind::Staging && l.pid == pid && l.host == host {
            tracing::info!(dir = %l.path.display(), pid, "removing a dead job's staging dir");
            let _ = std::fs::remove_dir_all(&l.path);
        }
    }
}

/// When a worker died between the two renames of a fallback publish, the target is missing
/// and the previous complete output sits in `.<name>.old-…`: put it back.
fn restore_previous(target: &Path) {
    if std::fs::symlink_metadata(target).is_ok() {
        return;
    }
    let mut olds: Vec<Leftover> = leftovers(target)
        .into_iter()
        .filter(|l| l.kind == LeftoverKind::Old && Manifest::complete(&l.path))
        .collect();
    // The most recently moved aside is the latest output.
    olds.sort_by_key(|l| idle_for(&l.path).unwrap_or(Duration::MAX));
    if let Some(old) = olds.first() {
        match std::fs::rename(&old.path, target) {
            Ok(()) => {
                sync_dir(parent_of(target)).ok();
                tracing::warn!(target = %target.display(), from = %old.path.display(),
                    "restored the previous output left aside by a publish that did not finish");
            }
            Err(e) => tracing::warn!(target = %target.display(), error = %e,
                "could not restore the previous output"),
        }
    }
}

/// An exclusive `flock` on `.<name>.lock` beside the output, held from the staging
/// directory's creation until after publish, so that two jobs for one folder cannot
/// interleave their sweep, check and publish. Its holder removes the file before unlocking;
/// a waiter that then locks the removed file sees that the path names another inode and
/// starts again.
struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    fn acquire(target: &Path, wait: Duration) -> Result<OutputLock> {
        let path = target.with_file_name(format!(".{}.lock", target_name(target)));
        let deadline = Instant::now() + wait;
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io("creating the lock", &path, e))?;
            // SAFETY: flock takes a descriptor that `file` owns and keeps open for the call.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                let held = file.metadata().map_err(|e| io("locking", &path, e))?;
                match std::fs::symlink_metadata(&path) {
                    Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                        return Ok(OutputLock { path, _file: file });
                    }
                    // The previous holder removed it: lock the new file.
                    _ => continue,
                }
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io("locking", &path, e));
            }
            if Instant::now() >= deadline {
                return Err(JobError::output_io(format!(
                    "output {} is being written by another job (waited {} s for its lock)",
                    target.display(),
                    wait.as_secs()
                )));
            }
            drop(file);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this): see the type's comment.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A confined walk's failure for the output `shown`: a symlink swapped in since the path was
/// checked refuses the job; anything else is an I/O failure at `at`.
fn confined(shown: &Path, at: &Path, e: WalkError) -> JobError {
    match e {
        WalkError::Symlink(_) => {
            JobError::invalid_request(format!("output directory {}: {e}", shown.display()))
        }
        WalkError::Io(e) => io("creating", at, e),
    }
}

/// Opens (creating what is missing) the parent of the output directory `shown` without
/// following any symlink on the way, and returns it with the output's name.
fn open_parent(shown: &Path) -> Result<(File, std::ffi::OsString)> {
    let absolute = std::path::absolute(shown).map_err(|e| io("resolving", shown, e))?;
    let name = absolute
        .file_name()
        .map(|n| n.to_os_string())
        .ok_or_else(|| {
            JobError::invalid_request(format!("output directory {} has no name", shown.display()))
        })?;
    let parent = parent_of(&absolute);
    let parent_dir = confine::open_dir(parent, true).map_err(|e| confined(shown, parent, e))?;
    Ok((parent_dir, name))
}

/// Adds the one file `name` to the output directory `output_dir` (made when missing), for a
/// job that adds a file to an output instead of replacing it (`video.thumbnail`); `write`
/// writes the file at the path it is given. Returns the file's size.
///
/// Under the output's lock, so that a job publishing the same output meanwhile (which
/// exchanges the directory) cannot make the file vanish with the old tree; through the
/// directory opened without following symlinks, so a symlink swapped onto the checked path
/// cannot redirect the write; under a temporary name in that directory, fsynced, renamed into
/// place, then the directory and its parent fsynced: nobody reads half a file, and once this
/// returns the file survives a power cut.
pub(crate) fn add_file(
    output_dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<u64> {
    let (parent_dir, dir_name) = open_parent(output_dir)?;
    let target = confine::fd_path(&parent_dir).join(&dir_name);
    let _lock = OutputLock::acquire(&target, LOCK_WAIT)?;
    // A publish that died between its two renames left the previous output aside: put it
    // back before adding to it, or this would make a fresh folder in its place.
    restore_previous(&target);
    let dir = confine::open_child_dir(&parent_dir, &dir_name, output_dir, true)
        .map_err(|e| confined(output_dir, output_dir, e))?;
    let shown = output_dir.join(name);
    let file = confine::fd_path(&dir).join(name);
    // A thumbnail job that died while writing left its temporary file: remove it (under the
    // lock, so it is not a live writer's).
    sweep_stale(&file);
    let tmp = staging_path(&file, "tmp");
    let added = write(&tmp)
        .and_then(|()| {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", &shown, e))
        })
        .and_then(|()| std::fs::rename(&tmp, &file).map_err(|e| io("renaming to", &shown, e)));
    if let Err(e) = added {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    dir.sync_all()
        .and_then(|()| parent_dir.sync_all())
        .map_err(|e| io("syncing", output_dir, e))?;
    std::fs::metadata(&file)
        .map(|m| m.len())
        .map_err(|e| io("reading", &shown, e))
}

impl Staging {
    /// Opens (creating what is missing) the output's parent without following a symlink
    /// swapped in since the path was checked, takes the output's lock, puts back a previous
    /// output a crashed publish left aside, sweeps stale leftovers, checks again (under the
    /// lock) that the output may be replaced, and makes the staging directory. Everything
    /// after the parent is opened goes through `/proc/self/fd/<parent>`, so a component of
    /// the path renamed or swapped later cannot redirect the job's writes or its publish.
    pub fn create(req: &TranscodeRequest) -> Result<Staging> {
        let (parent_dir, name) = open_parent(&req.output_dir)?;
        let target = confine::fd_path(&parent_dir).join(name);
        let lock = OutputLock::acquire(&target, LOCK_WAIT)?;
        restore_previous(&target);
        sweep_stale(&target);
        check_replaceable(&target, &claim(req)).map_err(|r| refused(req, r))?;
        let path = staging_path(&target, "staging");
        std::fs::create_dir(&path).map_err(|e| io("creating", &path, e))?;
        Ok(Staging {
            path,
            target,
            published: false,
            _lock: lock,
            _parent: parent_dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every file in the staging directory durable, then moves it to the target. An
    /// existing target is exchanged in one `renameat2(RENAME_EXCHANGE)` (readers see the old
    /// or the new tree, never neither), then the old tree is removed. The parent is fsynced
    /// last: when this returns, the new output survives a power cut.
    pub fn publish(mut self) -> Result<()> {
        sync_tree(&self.path)?;
        let parent = parent_of(&self.target).to_path_buf();
        if std::fs::symlink_metadata(&self.target).is_ok() {
            match exchange(&self.path, &self.target) {
                Ok(()) => {
                    // `self.path` now holds the previous output: Drop removes it.
                    self.published = false;
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.raw_os_error() == Some(libc::ENOSYS)
                        || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    self.publish_by_two_renames()?;
                }
                Err(e) => return Err(io("publishing", &self.target, e)),
            }
        } else {
            std::fs::rename(&self.path, &self.target)
                .map_err(|e| io("publishing", &self.target, e))?;
            self.published = true;
        }
        sync_dir(&parent).map_err(|e| io("syncing", &parent, e))
    }

    /// For filesystems without `RENAME_EXCHANGE` (NFS, CIFS, many FUSE filesystems): the
    /// previous output is renamed aside to `.<name>.old-…`, then the new one into place. A
    /// worker dying in between leaves the target missing but the old tree complete:
    /// `restore_previous` puts it back before the next job for this output, and the sweep
    /// removes an `.old-` tree only once the target is complete.
    fn publish_by_two_renames(&mut self) -> Result<()> {
        let old = staging_path(&self.target, "old");
        std::fs::rename(&self.target, &old).map_err(|e| io("moving aside", &self.target, e))?;
        if let Err(e) = std::fs::rename(&self.path, &self.target) {
            let _ = std::fs::rename(&old, &self.target);
            return Err(io("publishing", &self.target, e));
        }
        self.published = true;
        let parent = parent_of(&self.target);
        sync_dir(parent).map_err(|e| io("syncing", parent, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// fsync of every regular file under `dir` (segments written through avio, playlists, the
/// manifest, the thumbnail), then of each directory, deepest first.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| io("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("reading", dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io("reading", &path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", &path, e))?;
        }
    }
    sync_dir(dir).map_err(|e| io("syncing", dir, e))
}

#[cfg(test)]
thread_local! {
    /// Makes `exchange` fail as on a filesystem without RENAME_EXCHANGE, for this thread only,
    /// so that the unchanged fallback path runs in a unit test.
    static NO_RENAME_EXCHANGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if NO_RENAME_EXCHANGE.get() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths that outlive the call; renameat2 reads them only.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes a file through a temporary name and a rename, so that nobody reads half of it.
/// (Durability comes at publish, which fsyncs the whole staging directory.)
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_process_does_not_count_as_running() {
        assert!(process_runs(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for yet: once it exits it is a zombie until reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_runs(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_runs(pid), "a zombie is not a running worker");
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "still a zombie"
        );
        child.wait().unwrap();
    }
    use crate::media::manifest::Manifest;

    fn request(source: &Path, target: &Path, video_id: Option<&str>) -> TranscodeRequest {
        let mut req = TranscodeRequest::new(source, target).unwrap();
        req.video_id = video_id.map(str::to_string);
        req
    }

    /// Writes what a finished job leaves: a manifest for `video_id` and its master playlist.
    fn fake_output(dir: &Path, video_id: Option<&str>, marker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = Manifest::sample(video_id, &format!("fp-{marker}"), dir);
        manifest.write_to(dir).unwrap();
        std::fs::write(dir.join("master.m3u8"), marker).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unpublished_staging_is_removed_and_publish_replaces_an_own_output() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("in.mp4");
        std::fs::write(&source, b"x").unwrap();
        let target = root.path().join("video-1");
        let req = request(&source, &target, Some("v1"));
        {
            let s = Staging::create(&req).unwrap();
            std::fs::write(s.path().join("a"), b"x").unwrap();
        }
        assert_eq!(names(root.path()), ["in.mp4"], "staging and lock removed");

        let s = Staging::create(&req).unwrap();
        fake_output(s.path(), Some("v1"), "old");
        s.publish().unwrap();
        let s = Staging::create(&req).unwrap();
        fake_output(s.path(), Some("v1"), "new");
        std::fs::write(s.path().join("new"), b"2").unwrap();
        s.publish().unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("master.m3u8")).unwrap(),
            "new"
        );
        assert_eq!(names(root.path()), ["in.mp4", "video-1"]);
    }

    #[test]
    fn a_thumbnail_temp_left_by_a_dead_job_neither_blocks_nor_survives_the_next_thumbnail() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("a.mp4");
        std::fs::write(&source, b"x").unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // What a thumbnail job killed mid-write leaves: its temp, named for a process that no
        // longer runs on this host.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        let name = crate::media::thumbnail::FILE_NAME;
        let temp = out.join(format!(".{name}.tmp-{}-{pid}-0", host_name()));
        std::fs::write(&temp, b"half a jpeg").unwrap();
        let claim = Claim {
            source: &source,
            video_id: Some("v1"),
            force: false,
            thumbnail_only: true,
        };
        assert_eq!(check_replaceable(&out, &claim), Ok(()));
        // A foreign file still makes the folder someone else's.
        std::fs::write(out.join(".notes.tmp-x"), b"mine").unwrap();
        assert_eq!(check_replaceable(&out, &claim), Err(Refusal::NotAnOutput));
        std::fs::remove_file(out.join(".notes.tmp-x")).unwrap();

        add_file(&out, name, |tmp| {
            std::fs::write(tmp, b"jpeg").map_err(|e| io("writing", tmp, e))
        })
        .unwrap();
        assert_eq!(names(&out), [name], "the dead job's temp is swept");
    }

    #[test]
    fn a_folder_is_replaced_only_when_empty_or_made_by_this_worker_for_the_same_video() {
        let root = tempfile::tempdir().unwrap();
        let uploads = root.path().join("uploads");
        std::fs::create_dir(&uploads).unwrap();
        let source = uploads.join("a.mp4");
        std::fs::write(&source, b"x").unwrap();
        let claim = |video_id| Claim {
            source: &source,
            video_id,
            force: false,
            thumbnail_only: false,
        };
        let check = |target: &Path, video_id| check_replaceable(target, &claim(video_id));

        assert_eq!(check(&root.path().join("new"), Some("v1")), Ok(()));
        std::fs::create_dir(root.path().join("empty")).unwrap();
        assert_eq!(check(&root.path().join("empty"), Some("v1")), Ok(()));
        assert_eq!(check(&uploads, Some("v1")), Err(Refusal::HoldsSource));
        assert_eq!(check(root.path(), Some("v1")), Err(Refusal::HoldsSource));
        assert_eq!(check(&source, Some("v1")), Err(Refusal::HoldsSource));
        assert_eq!(check(Path::new("/"), Some("v1")), Err(Refusal::Root));

        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(check(&file, Some("v1")), Err(Refusal::NotADirectory));

        let mine = root.path().join("out/v1");
        fake_output(&mine, Some("v1"), "m");
        assert_eq!(check(&mine, Some("v1")), Ok(()));
        assert_eq!(check(&mine, Some("v2")), Err(Refusal::OtherVideo));
        assert_eq!(check(&mine, None), Err(Refusal::OtherVideo));
        // The folder of all outputs: not an output itself.
        assert_eq!(
            check(&root.path().join("out"), Some("v1")),
            Err(Refusal::NotAnOutput)
        );

        // An output of v1 with another output nested inside it.
        fake_output(&mine.join("nested/deeper"), Some("v9"), "n");
        assert_eq!(check(&mine, Some("v1")), Err(Refusal::HoldsOutputs));

        let thumbs = root.path().join("thumbs");
        std::fs::create_dir(&thumbs).unwrap();
        std::fs::write(thumbs.join("thumbnail.jpg"), b"jpg").unwrap();
        assert_eq!(check(&thumbs, Some("v1")), Err(Refusal::NotAnOutput));
        let thumb_claim = Claim {
            thumbnail_only: true,
            ..claim(Some("v1"))
        };
        assert_eq!(check_replaceable(&thumbs, &thumb_claim), Ok(()));

        let forced = Claim {
            force: true,
            ..claim(None)
        };
        assert_eq!(check_replaceable(&root.path().join("out"), &forced), Ok(()));
        assert_eq!(
            check_replaceable(&uploads, &forced),
            Err(Refusal::HoldsSource)
        );
    }

    #[test]
    fn without_rename_exchange_the_two_rename_fallback_replaces_the_output() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        fake_output(&target, Some("v1"), "old");
        let req = request(Path::new("/src.mp4"), &target, Some("v1"));
        NO_RENAME_EXCHANGE.set(true);
        let s = Staging::create(&req).unwrap();
        fake_output(s.path(), Some("v1"), "new");
        let published = s.publish();
        NO_RENAME_EXCHANGE.set(false);
        published.unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("master.m3u8")).unwrap(),
            "new"
        );
        assert_eq!(
            names(root.path()),
            ["v"],
            "no .old- tree, staging or lock left"
        );
    }

    #[test]
    fn a_previous_output_left_aside_by_a_dead_worker_is_restored_before_the_next_job() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        fake_output(&target, Some("v1"), "previous");
        // The state after the worker died between the fallback's two renames.
        let aside = root.path().join(".v.old-otherhost-4242-0");
        std::fs::rename(&target, &aside).unwrap();

        let req = request(Path::new("/src.mp4"), &target, Some("v1"));
        let s = Staging::create(&req).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("master.m3u8")).unwrap(),
            "previous",
            "the previous output is back before the new job writes anything"
        );
        drop(s); // this job fails: the previous output stays
        assert_eq!(names(root.path()), ["v"]);
    }

    #[test]
    fn an_old_tree_is_swept_only_once_the_target_is_complete() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        let aside = root.path().join(".v.old-h-1-0");
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join("half"), b"").unwrap();
        sweep_stale(&target);
        assert!(aside.exists(), "kept while the target is missing");
        std::fs::create_dir(&target).unwrap();
        sweep_stale(&target);
        assert!(aside.exists(), "kept while the target is incomplete");
        fake_output(&target, None, "t");
        sweep_stale(&target);
        assert!(!aside.exists());
    }

    #[test]
    fn stale_staging_is_swept_by_age_whatever_host_and_a_dead_local_ones_at_once() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        let host = host_name();
        let me = std::process::id();
        // A fresh dir of a running process on this host, and fresh dirs of another host
        // (whose pids cannot be checked from here).
        let fresh = [
            root.path().join(format!(".v.staging-{host}-{me}-99")),
            root.path().join(".v.staging-otherpod-7-0"),
            root.path().join(".v.staging-otherpod-2147483646-0"),
        ];
        // pid 0x7ffffffe is above any pid_max: nobody runs there.
        let dead_here = root.path().join(format!(".v.staging-{host}-2147483646-0"));
        for d in fresh.iter().chain([&dead_here]) {
            std::fs::create_dir(d).unwrap();
        }
        sweep_stale(&target);
        assert!(
            !dead_here.exists(),
            "a dead process's dir on this host goes at once"
        );
        assert!(
            fresh.iter().all(|d| d.exists()),
            "a fresh staging dir is kept"
        );

        // Times are in whole seconds: 2.1 s idle is more than 1 s whatever the rounding.
        std::thread::sleep(Duration::from_millis(2100));
        sweep_older_than(&target, Duration::from_secs(1));
        for d in &fresh {
            assert!(!d.exists(), "{} is stale", d.display());
        }
    }

    #[test]
    fn staging_of_one_dead_process_is_removed_and_others_kept() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        let host = host_name();
        let dead = root.path().join(format!(".v.staging-{host}-31337-0"));
        let other = root.path().join(format!(".v.staging-{host}-31338-0"));
        let elsewhere = root.path().join(".v.staging-otherpod-31337-0");
        for d in [&dead, &other, &elsewhere] {
            std::fs::create_dir(d).unwrap();
        }
        remove_staging_of(&target, 31337);
        assert!(!dead.exists());
        assert!(other.exists());
        assert!(elsewhere.exists());
    }

    #[test]
    fn a_symlink_swapped_onto_the_checked_output_path_is_refused_and_nothing_is_written_behind_it()
    {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        // Checked when `jobs` was a real folder; then swapped for a symlink.
        let req = request(Path::new("/src.mp4"), &root.join("jobs/v1"), Some("v1"));
        std::os::unix::fs::symlink(&elsewhere, root.join("jobs")).unwrap();
        let err = Staging::create(&req).err().expect("refused");
        assert_eq!(err.kind, crate::ErrorKind::InvalidRequest, "{err}");
        assert_eq!(
            names(&elsewhere),
            Vec::<String>::new(),
            "written behind the symlink"
        );

        // A folder renamed after the staging dir was made does not redirect the publish.
        let real = root.join("real/v1");
        let s = Staging::create(&request(Path::new("/src.mp4"), &real, Some("v1"))).unwrap();
        fake_output(s.path(), Some("v1"), "m");
        std::fs::rename(root.join("real"), root.join("moved")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        s.publish().unwrap();
        assert!(root.join("moved/v1/master.m3u8").is_file());
        assert_eq!(names(&root.join("real")), Vec::<String>::new());
    }

    #[test]
    fn a_held_output_lock_makes_a_second_job_wait_then_fail_as_output_io() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        let held = OutputLock::acquire(&target, Duration::ZERO).unwrap();
        let started = Instant::now();
        let second = OutputLock::acquire(&target, Duration::from_millis(300));
        assert_eq!(
            second.err().map(|e| e.kind),
            Some(crate::ErrorKind::OutputIo)
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        let waiter = std::thread::spawn({
            let target = target.clone();
            move || OutputLock::acquire(&target, Duration::from_secs(10)).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        waiter.join().unwrap().unwrap();
        assert_eq!(
            names(root.path()),
            Vec::<String>::new(),
            "lock file removed"
        );
    }
}
