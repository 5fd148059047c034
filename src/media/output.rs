//! Where a job's files go: a staging directory beside the output, renamed into place only
//! when complete (an existing output is swapped atomically), removed on any failure.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{JobError, Result};
use crate::media::{Outcome, SourceInfo, TranscodeRequest};

pub const MANIFEST: &str = "manifest.json";

/// A staging directory that disappears unless published.
pub struct Staging {
    path: PathBuf,
    target: PathBuf,
    published: bool,
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

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '.', '-'], "_"))
        .unwrap_or_else(|_| "host".into())
}

/// `.<name>.staging-<host>-<pid>-<n>` beside the target: same filesystem, so the final rename
/// is atomic; a dot name that a web server listing or a player will not pick up; and the
/// owner's host and pid, so that the leftovers of a killed worker can be recognised.
pub fn staging_path(target: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(
        ".{}.{tag}-{}-{}-{n}",
        target_name(target),
        host_name(),
        std::process::id()
    ))
}

/// Removes staging directories of `target` left by workers on this host that no longer run
/// (killed mid-job: SIGKILL, OOM). Those of live processes, or of other hosts sharing the
/// filesystem, are left alone.
pub fn sweep_stale(target: &Path) {
    let Some(parent) = target.parent() else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.", target_name(target));
    let host = host_name();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(owner) = rest
            .strip_prefix("staging-")
            .or_else(|| rest.strip_prefix("old-"))
        else {
            continue;
        };
        // owner = <host>-<pid>-<n>
        let mut parts = owner.rsplitn(3, '-');
        let (_n, pid, h) = (parts.next(), parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if h != Some(host.as_str()) || pid == std::process::id() {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(dir = %entry.path().display(), "removing a dead worker's staging dir");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Staging {
    pub fn create(target: &Path) -> Result<Staging> {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        if target.exists() && !target.is_dir() {
            return Err(JobError::output_io(format!(
                "output {} exists and is not a directory",
                target.display()
            )));
        }
        sweep_stale(target);
        let path = staging_path(target, "staging");
        std::fs::create_dir(&path).map_err(|e| io("creating", &path, e))?;
        Ok(Staging {
            path,
            target: target.to_path_buf(),
            published: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the staging directory to the target. An existing target is exchanged in one
    /// `renameat2(RENAME_EXCHANGE)` (readers see the old or the new tree, never neither),
    /// then the old tree is removed.
    pub fn publish(mut self) -> Result<()> {
        sync_dir(&self.path);
        if self.target.exists() {
            match exchange(&self.path, &self.target) {
                Ok(()) => {
                    // `self.path` now holds the previous output: Drop removes it.
                    self.published = false;
                    return Ok(());
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.raw_os_error() == Some(libc::ENOSYS) =>
                {
                    // Filesystem without RENAME_EXCHANGE: move the old tree aside first.
                    let old = staging_path(&self.target, "old");
                    std::fs::rename(&self.target, &old)
                        .map_err(|e| io("moving aside", &self.target, e))?;
                    std::fs::rename(&self.path, &self.target)
                        .map_err(|e| io("publishing", &self.target, e))?;
                    self.published = true;
                    let _ = std::fs::remove_dir_all(&old);
                }
                Err(e) => return Err(io("publishing", &self.target, e)),
            }
        } else {
            std::fs::rename(&self.path, &self.target)
                .map_err(|e| io("publishing", &self.target, e))?;
            self.published = true;
        }
        if let Some(parent) = self.target.parent() {
            sync_dir(parent);
        }
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

fn sync_dir(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
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

#[derive(Serialize)]
struct Manifest<'a> {
    /// Identifies the request that made this output (idempotent redelivery).
    fingerprint: Option<&'a str>,
    video_id: Option<&'a str>,
    worker_version: &'static str,
    ffmpeg_version: String,
    created_unix: u64,
    request: RequestRecord<'a>,
    source: &'a SourceInfo,
    result: &'a Outcome,
}

#[derive(Serialize)]
struct RequestRecord<'a> {
    qualities: Vec<&'a str>,
    segment_seconds: f64,
    gop_seconds: f64,
    thumbnail_time: f64,
    preset: &'a str,
    audio_bitrate: u64,
}

pub fn write_manifest(
    dir: &Path,
    req: &TranscodeRequest,
    source: &SourceInfo,
    outcome: &Outcome,
) -> Result<()> {
    let manifest = Manifest {
        fingerprint: req.fingerprint.as_deref(),
        video_id: req.video_id.as_deref(),
        worker_version: env!("CARGO_PKG_VERSION"),
        ffmpeg_version: crate::media::ffi::runtime_version(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        request: RequestRecord {
            qualities: req.qualities.iter().map(|q| q.name.as_str()).collect(),
            segment_seconds: req.segment_seconds,
            gop_seconds: req.gop_seconds,
            thumbnail_time: req.thumbnail_time,
            preset: &req.preset,
            audio_bitrate: req.audio_bitrate,
        },
        source,
        result: outcome,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| JobError::internal(format!("manifest: {e}")))?;
    write_atomic(&dir.join(MANIFEST), &text)
}

/// Writes a file through a temporary name and a rename, so that nobody reads half of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpublished_staging_is_removed_and_publish_replaces_an_existing_output() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("video-1");
        {
            let s = Staging::create(&target).unwrap();
            std::fs::write(s.path().join("a"), b"x").unwrap();
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

        let s = Staging::create(&target).unwrap();
        std::fs::write(s.path().join("old"), b"1").unwrap();
        s.publish().unwrap();
        let s = Staging::create(&target).unwrap();
        std::fs::write(s.path().join("new"), b"2").unwrap();
        s.publish().unwrap();
        assert!(target.join("new").exists());
        assert!(!target.join("old").exists());
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("video-1")]);
    }

    #[test]
    fn a_dead_workers_staging_dir_is_swept_and_a_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("v");
        let host = host_name();
        // pid 0x7ffffffe is above any pid_max: nobody runs there.
        let dead = root.path().join(format!(".v.staging-{host}-2147483646-0"));
        let live = root.path().join(format!(".v.staging-{host}-1-0"));
        let other_host = root.path().join(".v.staging-elsewhere-2147483646-0");
        for d in [&dead, &live, &other_host] {
            std::fs::create_dir(d).unwrap();
        }
        sweep_stale(&target);
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other_host.exists());
    }
}
