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

/// `.<name>.staging-<pid>-<n>` beside the target: same filesystem, so the final rename is
/// atomic, and a dot name that a web server listing or a player will not pick up.
pub fn staging_path(target: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let n = N.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
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
}
