//! One job's object side, around the unchanged local pipeline:
//!
//! 1. [`ObjectRun::begin`]: a scratch folder for the job; the source's size and version
//!    (HEAD), the output's store checked, before any work.
//! 2. [`ObjectRun::finished`]: a redelivered job whose output prefix already holds a master
//!    and a manifest with its fingerprint is done (nothing is downloaded or transcoded).
//! 3. [`ObjectRun::claim_output`]: a prefix holding another video's output is refused; an
//!    earlier master of this video is withdrawn before anything is overwritten.
//! 4. [`ObjectRun::fetch_source`]: the source streamed into scratch, digest checked.
//! 5. [`ObjectRun::produce`]: the media work runs (in a job process, or in `transcode`) into
//!    a local staging folder under scratch; meanwhile each segment the segmenter has closed
//!    (the next one exists: the segmenter closes a file before it opens the next) is uploaded,
//!    concurrently and bounded. When the job succeeded, the rest follows: remaining segments,
//!    thumbnail, media playlists, manifest.json, and master.m3u8 last (the commit point). When
//!    it failed, everything uploaded is deleted.
//!
//! The segments are found by watching the staging folder rather than through a hook in the
//! segmenter: the media code and the job process stay exactly as for local outputs, and the
//! delay (one poll, 200 ms) is nothing next to a 6 s segment.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Failure, Location, ObjectMeta, ObjectUrl, Role, SourceRead, Stores, Transfer};
use crate::error::{JobError, Result};
use crate::media::arriving::{Arriving, MapWriter};
use crate::media::hls::playlist::MASTER;
use crate::media::manifest::{Manifest, MANIFEST};
use crate::media::Outcome;

/// How often the staging folder is looked at for closed segments.
const POLL: Duration = Duration::from_millis(200);
/// A manifest is a few KiB; anything far larger is not ours.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A job's scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// When the uploads of an object output reached their milestones (for logs and the bench).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UploadReport {
    pub files: usize,
    pub bytes: u64,
    /// Seconds from the start of the job to the first segment stored.
    pub first_segment_seconds: Option<f64>,
    /// Seconds from the start of the job to the master stored (the output complete).
    pub master_seconds: Option<f64>,
}

/// The object side of one job. Local parts pass through unchanged.
pub struct ObjectRun {
    stores: Arc<Stores>,
    /// Removed when the run is dropped.
    _scratch: Scratch,
    source_url: Option<ObjectUrl>,
    output_url: Option<ObjectUrl>,
    /// The local file the media code reads (scratch for an object source).
    pub source: PathBuf,
    /// The local folder the media code writes (scratch for an object output).
    pub output_dir: PathBuf,
    /// Size and version of an object source (for the fingerprint).
    pub source_meta: Option<ObjectMeta>,
    pub transfer: Arc<Transfer>,
    started: Instant,
    /// Set when the media work reads the source as it arrives (`--source-read overlap`).
    arrival: Option<MapWriter>,
}

fn scratch_dir(root: &Path, tag: &str) -> Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // Canonical: the media code opens paths without following any symlink on them.
    std::fs::create_dir_all(root)
        .map_err(|e| JobError::output_io(format!("scratch {}: {e}", root.display())))?;
    let root = root
        .canonicalize()
        .map_err(|e| JobError::output_io(format!("scratch {}: {e}", root.display())))?;
    let dir = root.join(format!("vw-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(dir.join("out"))
        .map_err(|e| JobError::output_io(format!("scratch {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Removes the scratch folders (`vw-<tag>-<pid>-<n>` holding `out/`) that jobs of processes
/// no longer running left in `root`: a worker killed mid-job cannot remove its own. Folders of
/// live processes (other workers sharing the scratch) are left alone. Blocking.
pub fn sweep_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vw-") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (n, pid) = (
            parts.next(),
            parts.next().and_then(|p| p.parse::<u32>().ok()),
        );
        let ours = n.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && parts.next().is_some()
            && entry.path().join("out").is_dir();
        let Some(pid) = pid.filter(|_| ours) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            tracing::info!(dir = %entry.path().display(), pid, "removing the scratch of a dead worker's job");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl ObjectRun {
    /// Starts the object side of a job: scratch, the source's HEAD, the output's store.
    /// `tag` names the scratch folder (the video id).
    pub async fn begin(
        stores: Arc<Stores>,
        tag: &str,
        source: &Location,
        output: Option<&Location>,
    ) -> Result<ObjectRun> {
        let dir = scratch_dir(&stores.args.scratch, tag)?;
        let scratch = Scratch(dir.clone());
        let (source_url, source_path, source_meta) = match source {
            Location::Local(p) => (None, p.clone(), None),
            Location::Object(url) => {
                let meta = stores
                    .head(url)
                    .await
                    .map_err(|e| e.into_job(Role::Source))?;
                let max = stores.args.max_source_bytes;
                if meta.size > max {
                    return Err(JobError::limit_exceeded(format!(
                        "source {url} is {} bytes; at most {max} are accepted (--max-source-bytes)",
                        meta.size
                    )));
                }
                (Some(url.clone()), dir.join("source"), Some(meta))
            }
        };
        let (output_url, output_dir) = match output {
            None => (None, PathBuf::new()),
            Some(Location::Local(p)) => (None, p.clone()),
            Some(Location::Object(url)) => {
                stores
                    .check_output(url)
                    .await
                    .map_err(|e| e.into_job(Role::Output))?;
                (Some(url.clone()), dir.join("out").join(url.last_segment()))
            }
        };
        Ok(ObjectRun {
            stores,
            _scratch: scratch,
            source_url,
            output_url,
            source: source_path,
            output_dir,
            source_meta,
            transfer: Arc::new(Transfer::default()),
            started: Instant::now(),
            arrival: None,
        })
    }

    /// The object output's prefix, if the output is an object.
    pub fn output_url(&self) -> Option<&ObjectUrl> {
        self.output_url.as_ref()
    }

    pub fn source_url(&self) -> Option<&ObjectUrl> {
        self.source_url.as_ref()
    }

    /// The manifest stored under the output prefix, if any.
    async fn stored_manifest(&self, prefix: &ObjectUrl) -> Result<Option<Manifest>> {
        let bytes = self
            .stores
            .get_small(&prefix.join(MANIFEST), MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| e.into_job(Role::Output))?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The stored outcome when the object output is complete for this `fingerprint` (master
    /// present, manifest with the same fingerprint). Local outputs: None (the caller checks).
    pub async fn finished(&self, fingerprint: &str) -> Result<Option<Outcome>> {
        let Some(prefix) = &self.output_url else {
            return Ok(None);
        };
        let Some(manifest) = self.stored_manifest(prefix).await? else {
            return Ok(None);
        };
        if manifest.fingerprint.as_deref() != Some(fingerprint) {
            return Ok(None);
        }
        let master = self
            .stores
            .exists(&prefix.join(MASTER))
            .await
            .map_err(|e| e.into_job(Role::Output))?;
        Ok(master.then_some(manifest.result))
    }

    /// Refuses a prefix that holds another video's output (as for a local folder), and
    /// withdraws this video's earlier master before its files are overwritten, so that no
    /// reader sees a master over a half-replaced ladder.
    pub async fn claim_output(&self, video_id: Option<&str>) -> Result<()> {
        let Some(prefix) = &self.output_url else {
            return Ok(());
        };
        if let Some(m) = self.stored_manifest(prefix).await? {
            if m.video_id.as_deref() != video_id {
                return Err(JobError::invalid_request(format!(
                    "output_path {prefix} holds the output of another video; it is never replaced"
                )));
            }
        }
        self.stores
            .delete(&prefix.join(MASTER))
            .await
            .map_err(|e| e.into_job(Role::Output))
    }

    /// With `--source-read overlap` and an object source: prepares the scratch file for a
    /// transcode that reads the source as it arrives, and says so for its request. Then
    /// [`ObjectRun::fetch_source`] runs alongside the media work ([`ObjectRun::alongside`]).
    pub fn read_as_it_arrives(&mut self) -> Result<Option<Arriving>> {
        let (Some(_), Some(meta)) = (&self.source_url, &self.source_meta) else {
            return Ok(None);
        };
        if self.stores.args.source_read != SourceRead::Overlap {
            return Ok(None);
        }
        let map = MapWriter::create(&self.source, meta.size)
            .map_err(|e| JobError::output_io(format!("scratch {}: {e}", self.source.display())))?;
        let arriving = map.arriving().clone();
        self.arrival = Some(map);
        Ok(Some(arriving))
    }

    /// True when the source is read as it arrives (see [`ObjectRun::read_as_it_arrives`]).
    pub fn overlapped(&self) -> bool {
        self.arrival.is_some()
    }

    /// Runs `media` while the source arrives (`download`: [`ObjectRun::fetch_source`]): the
    /// media work's result, or the download's error when the download failed (the media
    /// work then fails too, on the map's failed state, for that reason). A media work that
    /// fails first ends the download.
    pub async fn alongside<T>(
        &self,
        download: impl Future<Output = Result<()>>,
        media: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        // On the heap: a job's media future is large, and two of them side by side in the
        // caller's state overflowed a worker thread's stack (debug builds).
        let (mut download, mut media) = (Box::pin(download), Box::pin(media));
        let mut fetched: Option<Result<()>> = None;
        loop {
            tokio::select! {
                r = &mut download, if fetched.is_none() => fetched = Some(r),
                m = &mut media => {
                    return match fetched {
                        Some(Err(e)) => Err(e),
                        _ => m,
                    };
                }
            }
        }
    }

    /// Streams an object source into scratch (nothing to do for a local one). When the media
    /// work reads it as it arrives, the map ends verified only after the digest matched, and
    /// failed on any other end (an error, or this future dropped).
    pub async fn fetch_source(&self) -> Result<()> {
        let Some(url) = &self.source_url else {
            return Ok(());
        };
        /// Fails the arrival map unless the download ended verified.
        struct Ending<'a>(Option<&'a MapWriter>);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                if let Some(map) = self.0 {
                    map.failed();
                }
            }
        }
        let mut ending = Ending(self.arrival.as_ref());
        let started = Instant::now();
        let bytes = self
            .stores
            .download(
                url,
                &self.source,
                self.stores.args.max_source_bytes,
                &self.transfer.downloaded,
                self.arrival.as_ref(),
            )
            .await
            .map_err(|e| match e.failure {
                Failure::Invalid if e.message.contains("max-source-bytes") => {
                    JobError::limit_exceeded(e.message)
                }
                _ => e.into_job(Role::Source),
            })?;
        if let Some(map) = ending.0 {
            map.verified()
                .map_err(|e| JobError::output_io(format!("arrival map: {e}")))?;
        }
        ending.0 = None;
        tracing::info!(source = %url, bytes, seconds = started.elapsed().as_secs_f64(),
            overlapped = self.overlapped(), "source downloaded to scratch");
        Ok(())
    }

    /// The outcome as the job's events and manifest show it: the URLs, not scratch paths.
    pub fn publicise(&self, outcome: &mut Outcome) {
        if let Some(url) = &self.source_url {
            outcome.source = PathBuf::from(url.to_string());
        }
        if let Some(url) = &self.output_url {
            outcome.output_dir = PathBuf::from(url.to_string());
        }
    }

    /// An object source with a local output: the published manifest names the source's URL,
    /// not its scratch copy.
    fn publicise_local_manifest(&self) -> Result<()> {
        let Some(url) = &self.source_url else {
            return Ok(());
        };
        if self.output_dir.as_os_str().is_empty() {
            return Ok(());
        }
        match Manifest::read(&self.output_dir) {
            Some(mut m) if m.result.source == self.source => {
                m.result.source = PathBuf::from(url.to_string());
                m.write_to(&self.output_dir)
            }
            _ => Ok(()),
        }
    }

    /// Runs `media` (which writes `self.output_dir` through a staging folder) while uploading
    /// the segments it closes; then stores the rest, master last. On any failure, what was
    /// uploaded is deleted. A local output: just `media`.
    pub async fn produce<T>(
        &self,
        media: impl Future<Output = Result<T>>,
    ) -> Result<(T, Option<UploadReport>)> {
        let Some(prefix) = self.output_url.clone() else {
            let t = media.await?;
            self.publicise_local_manifest()?;
            return Ok((t, None));
        };
        let mut up = Uploader::new(
            Arc::clone(&self.stores),
            prefix,
            self.source_url.clone(),
            self.output_dir.clone(),
            Arc::clone(&self.transfer),
            self.started,
        );
        tokio::pin!(media);
        let mut tick = tokio::time::interval(POLL);
        let result = loop {
            tokio::select! {
                r = &mut media => break r,
                _ = tick.tick() => up.upload_closed_segments().await,
            }
        };
        let outcome = match result {
            Ok(t) => up.finish().await.map(|report| (t, Some(report))),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            up.remove_uploaded().await;
        }
        outcome
    }
}

/// `video-worker transcode` with object locations: the same steps as a job, in this process
/// (the media work on a blocking thread). `req` carries the settings; its paths are replaced
/// by the scratch ones.
pub async fn transcode(
    stores: Arc<Stores>,
    source: &Location,
    output: &Location,
    mut req: crate::media::TranscodeRequest,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    progress: Arc<dyn Fn(&crate::media::ProgressTick) + Send + Sync>,
) -> Result<(Outcome, Option<UploadReport>)> {
    let mut run = ObjectRun::begin(stores, "transcode", source, Some(output)).await?;
    run.claim_output(req.video_id.as_deref()).await?;
    req.source = run.source.clone();
    req.output_dir = run.output_dir.clone();
    req.arriving = run.read_as_it_arrives()?;
    if !run.overlapped() {
        run.fetch_source().await?;
    }
    let media = async move {
        tokio::task::spawn_blocking(move || crate::media::transcode(&req, &cancel, &*progress))
            .await
            .map_err(|e| JobError::internal(format!("transcode thread: {e}")))?
    };
    let (mut outcome, report) = match run.overlapped() {
        true => {
            run.produce(run.alongside(run.fetch_source(), media))
                .await?
        }
        false => run.produce(media).await?,
    };
    run.publicise(&mut outcome);
    Ok((outcome, report))
}

/// A file name `<stem>_<digits>.<ext>` (a segment), split.
fn segment_parts(name: &str) -> Option<(&str, u64, usize, &str)> {
    let (base, ext) = name.rsplit_once('.')?;
    let (stem, digits) = base.rsplit_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || stem.is_empty() {
        return None;
    }
    Some((stem, digits.parse().ok()?, digits.len(), ext))
}

/// The segments in `names` that are closed: the segmenter has opened the next one.
pub(crate) fn closed_segments(names: &HashSet<String>) -> Vec<String> {
    let mut closed: Vec<String> = names
        .iter()
        .filter(|n| {
            segment_parts(n).is_some_and(|(stem, i, width, ext)| {
                names.contains(&format!("{stem}_{:0width$}.{ext}", i + 1))
            })
        })
        .cloned()
        .collect();
    closed.sort();
    closed
}

/// Uploads of one object output: concurrent and bounded, each key remembered for cleanup.
struct Uploader {
    stores: Arc<Stores>,
    prefix: ObjectUrl,
    /// An object source, named in the stored manifest instead of its scratch copy.
    source_url: Option<ObjectUrl>,
    /// The published local folder; its staging folder is a dot-name beside it.
    output_dir: PathBuf,
    transfer: Arc<Transfer>,
    started: Instant,
    permits: Arc<Semaphore>,
    tasks: JoinSet<std::result::Result<(), JobError>>,
    /// Names whose upload was started (deleted again if the job fails).
    started_names: HashSet<String>,
    first_segment: Arc<Mutex<Option<f64>>>,
    error: Option<JobError>,
}

/// `dir/name` if it exists, else `fallback/name` (the staging folder was renamed into place
/// between the segment's discovery and its upload).
fn existing(dir: &Path, fallback: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    if p.exists() {
        p
    } else {
        fallback.join(name)
    }
}

impl Uploader {
    fn new(
        stores: Arc<Stores>,
        prefix: ObjectUrl,
        source_url: Option<ObjectUrl>,
        output_dir: PathBuf,
        transfer: Arc<Transfer>,
        started: Instant,
    ) -> Uploader {
        let permits = Arc::new(Semaphore::new(stores.args.upload_concurrency.clamp(1, 64)));
        Uploader {
            stores,
            prefix,
            source_url,
            output_dir,
            transfer,
            started,
            permits,
            tasks: JoinSet::new(),
            started_names: HashSet::new(),
            first_segment: Arc::new(Mutex::new(None)),
            error: None,
        }
    }

    /// The staging folders beside the output (normally one: this job's).
    fn staging_dirs(&self) -> Vec<PathBuf> {
        let Some(parent) = self.output_dir.parent() else {
            return Vec::new();
        };
        let name = self
            .output_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.staging-");
        std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    fn spawn_upload(&mut self, name: String, from: PathBuf, segment: bool) {
        if !self.started_names.insert(name.clone()) {
            return;
        }
        let stores = Arc::clone(&self.stores);
        let url = self.prefix.join(&name);
        let permits = Arc::clone(&self.permits);
        let transfer = Arc::clone(&self.transfer);
        let fallback = self.output_dir.clone();
        let first = Arc::clone(&self.first_segment);
        let started = self.started;
        self.tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| JobError::internal("upload permits closed"))?;
            let dir = from.parent().map(Path::to_path_buf).unwrap_or_default();
            let path = existing(&dir, &fallback, &name);
            stores
                .put_file(&url, &path, &transfer.uploaded)
                .await
                .map_err(|e| e.into_job(Role::Output))?;
            if segment {
                if let Ok(mut f) = first.lock() {
                    if f.is_none() {
                        let s = started.elapsed().as_secs_f64();
                        tracing::info!(object = %url, seconds = s, "first segment uploaded");
                        *f = Some(s);
                    }
                }
            }
            Ok(())
        });
    }

    /// Collects finished uploads; the first error is kept (the job then fails at its end).
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            self.record(done);
        }
    }

    fn record(
        &mut self,
        done: std::result::Result<std::result::Result<(), JobError>, tokio::task::JoinError>,
    ) {
        let r = done.unwrap_or_else(|e| Err(JobError::internal(format!("upload task: {e}"))));
        if let Err(e) = r {
            if self.error.is_none() {
                tracing::warn!(error = %e, "an upload failed");
                self.error = Some(e);
            }
        }
    }

    async fn upload_closed_segments(&mut self) {
        self.reap();
        let dirs = self.staging_dirs();
        for dir in dirs {
            let names: HashSet<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            for name in closed_segments(&names) {
                let from = dir.join(&name);
                self.spawn_upload(name, from, true);
            }
        }
    }

    async fn wait_all(&mut self) -> Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            self.record(done);
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After a successful job: the rest of the files, then the manifest, then the master.
    async fn finish(&mut self) -> Result<UploadReport> {
        let dir = self.output_dir.clone();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| JobError::output_io(format!("reading {}: {e}", dir.display())))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let is_playlist = |n: &str| n.ends_with(".m3u8");
        // 1. Everything a playlist refers to (segments, thumbnail, init sections).
        for n in names.iter().filter(|n| !is_playlist(n) && *n != MANIFEST) {
            self.spawn_upload(n.clone(), dir.join(n), segment_parts(n).is_some());
        }
        self.wait_all().await?;
        // 2. Media playlists.
        for n in names.iter().filter(|n| is_playlist(n) && *n != MASTER) {
            self.spawn_upload(n.clone(), dir.join(n), false);
        }
        self.wait_all().await?;
        // 3. The manifest, with the job's URLs rather than scratch paths.
        if names.iter().any(|n| n == MANIFEST) {
            self.rewrite_manifest(&dir)?;
            self.spawn_upload(MANIFEST.into(), dir.join(MANIFEST), false);
            self.wait_all().await?;
        }
        // 4. The commit point.
        if names.iter().any(|n| n == MASTER) {
            self.spawn_upload(MASTER.into(), dir.join(MASTER), false);
            self.wait_all().await?;
        }
        let master_seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(prefix = %self.prefix, files = self.started_names.len(),
            bytes = self.transfer.uploaded.load(Ordering::Relaxed), seconds = master_seconds,
            "master uploaded: output complete");
        Ok(UploadReport {
            files: self.started_names.len(),
            bytes: self.transfer.uploaded.load(Ordering::Relaxed),
            first_segment_seconds: self.first_segment.lock().ok().and_then(|f| *f),
            master_seconds: Some(master_seconds),
        })
    }

    fn rewrite_manifest(&self, dir: &Path) -> Result<()> {
        let Some(mut m) = Manifest::read(dir) else {
            return Ok(());
        };
        m.result.output_dir = PathBuf::from(self.prefix.to_string());
        if let Some(source) = &self.source_url {
            m.result.source = PathBuf::from(source.to_string());
        }
        m.write_to(dir)
    }

    /// After a failed or cancelled job: stop the uploads and delete what was stored. The
    /// master is never among them (it goes up only after everything else succeeded).
    async fn remove_uploaded(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for name in std::mem::take(&mut self.started_names) {
            let url = self.prefix.join(&name);
            if let Err(e) = self.stores.delete(&url).await {
                tracing::warn!(object = %url, error = %e.message, "could not delete an upload of a failed job");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_folders_of_dead_processes_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("vw-video-1-4194999-0");
        let live = root
            .path()
            .join(format!("vw-video-1-{}-3", std::process::id()));
        let foreign = root.path().join("vw-notes-4194999-x");
        let plain = root.path().join("vw-video-2-4194999-1");
        for d in [&dead, &live, &foreign] {
            std::fs::create_dir_all(d.join("out")).unwrap();
        }
        std::fs::create_dir_all(&plain).unwrap();
        sweep_scratch(root.path());
        assert!(!dead.exists());
        for kept in [&live, &foreign, &plain] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }

    #[test]
    fn a_segment_is_closed_once_the_next_one_exists() {
        let names: HashSet<String> = [
            "720p_000.ts",
            "720p_001.ts",
            "720p_002.ts",
            "360p_000.ts",
            "thumbnail.jpg",
            "720p.m3u8",
            "a_b_999.ts",
            "a_b_1000.ts",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            closed_segments(&names),
            vec!["720p_000.ts", "720p_001.ts", "a_b_999.ts"]
        );
    }
}
