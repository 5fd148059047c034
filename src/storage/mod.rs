//! Sources and outputs in object storage: S3 (or any S3-compatible store) as
//! `s3://BUCKET/KEY`, and the NATS JetStream object store as `nats-object://BUCKET/NAME`.
//! No FFmpeg here: the media code only ever sees local files (with `--source-read overlap`,
//! one that is still arriving: `media::arriving`).
//!
//! ```text
//!  s3://… / nats-object://…            scratch dir (--scratch, one per job, removed after)
//!  source ──streamed GET (digest checked)──► source file ──► media::transcode (job process)
//!         (overlap: S3 tail by ranged GET first; chunks marked as they land, the job decodes
//!          meanwhile and publishes only after the digest matched)
//!                                                               │ segments into staging
//!  PREFIX/<q>_NNN.ts ◄── uploader: each closed segment, concurrent, bounded ◄──┘
//!  PREFIX/<q>.m3u8, manifest.json, thumbnail.jpg ◄── after the job ends
//!  PREFIX/master.m3u8 ◄── last: the commit point (a reader who sees it sees a full ladder)
//! ```
//!
//! - this module: [`ObjectUrl`] (a parsed, validated object location and its confinement),
//!   [`StorageConfig`] (flags and the AWS_* environment), [`Stores`] (the operations, with every
//!   store error classified into a `JobError` kind that decides retry or not).
//! - `s3`: the S3 side through the `object_store` crate.
//! - `nats_object`: the JetStream object store through async-nats.
//! - `run`: one job's object side: scratch, source download, the segment uploader, master last,
//!   cleanup of a failed job, reuse of a finished output.

pub(crate) mod nats_object;
pub mod run;
pub(crate) mod s3;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};
use crate::media::arriving::{MapWriter, CHUNK_BYTES};

pub use run::ObjectRun;

/// The URL scheme of an S3 location.
pub const S3_SCHEME: &str = "s3://";
/// The URL scheme of a JetStream object store location.
pub const NATS_OBJECT_SCHEME: &str = "nats-object://";

/// Which store an [`ObjectUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    S3,
    NatsObject,
}

/// A validated object location: a bucket and a key (a prefix, for an output). The key has no
/// empty, `.` or `..` segment, no control character, and no leading or doubled `/`, so that
/// prefix confinement by string comparison means what it says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    pub scheme: Scheme,
    pub bucket: String,
    /// Without a trailing `/`; may be empty only for a root (`s3://bucket/`).
    pub key: String,
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::S3 => S3_SCHEME,
            Scheme::NatsObject => NATS_OBJECT_SCHEME,
        };
        write!(f, "{scheme}{}/{}", self.bucket, self.key)
    }
}

/// True when `text` names an object store location (whether or not it is a valid one).
pub fn is_object_url(text: &str) -> bool {
    text.starts_with(S3_SCHEME) || text.starts_with(NATS_OBJECT_SCHEME)
}

impl ObjectUrl {
    /// Parses `s3://BUCKET/KEY` or `nats-object://BUCKET/NAME`. `allow_empty_key`: a root
    /// (`--allow-root s3://bucket/`) may name a whole bucket; a job's path may not.
    pub fn parse(text: &str, allow_empty_key: bool) -> Result<ObjectUrl> {
        let bad = |why: &str| {
            JobError::invalid_request(format!(
                "{:?} is not a valid object URL: {why}",
                crate::job::truncate(text, 200)
            ))
        };
        let (scheme, rest) = if let Some(rest) = text.strip_prefix(S3_SCHEME) {
            (Scheme::S3, rest)
        } else if let Some(rest) = text.strip_prefix(NATS_OBJECT_SCHEME) {
            (Scheme::NatsObject, rest)
        } else {
            return Err(bad("expected s3://BUCKET/KEY or nats-object://BUCKET/NAME"));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = match scheme {
            // S3's rules (3-63 of [a-z0-9.-]), loosened to the characters S3-compatible stores
            // accept; the store itself refuses what it does not like.
            Scheme::S3 => {
                (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b)
                    })
            }
            // JetStream bucket names become stream names (`OBJ_<bucket>`): [A-Za-z0-9_-].
            Scheme::NatsObject => {
                !bucket.is_empty()
                    && bucket.len() <= 128
                    && bucket
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
        };
        if !bucket_ok {
            return Err(bad("invalid bucket name"));
        }
        let key = key.strip_suffix('/').unwrap_or(key);
        if key.is_empty() {
            if allow_empty_key {
                return Ok(ObjectUrl {
                    scheme,
                    bucket: bucket.into(),
                    key: String::new(),
                });
            }
            return Err(bad("no key"));
        }
        if key.len() > 900 {
            return Err(bad("key too long"));
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad("empty, \".\" or \"..\" segment in the key"));
            }
            if segment.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad("control character in the key"));
            }
        }
        Ok(ObjectUrl {
            scheme,
            bucket: bucket.into(),
            key: key.into(),
        })
    }

    /// The object `name` under this prefix.
    pub fn join(&self, name: &str) -> ObjectUrl {
        let key = match self.key.is_empty() {
            true => name.to_string(),
            false => format!("{}/{name}", self.key),
        };
        ObjectUrl {
            key,
            ..self.clone()
        }
    }

    /// True when this location lies under `root` (same store and bucket, and the key is the
    /// root's key or below it, on a `/` boundary).
    pub fn is_within(&self, root: &ObjectUrl) -> bool {
        self.scheme == root.scheme
            && self.bucket == root.bucket
            && (root.key.is_empty()
                || self.key == root.key
                || self
                    .key
                    .strip_prefix(&root.key)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// The last segment of the key (the output's folder name in scratch).
    pub fn last_segment(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or("output")
    }
}

/// Where a job reads or writes: a local path (confined by `job::PathPolicy`) or an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Object(ObjectUrl),
}

/// A secret flag value: never printed by `Debug` (the worker's arguments may be logged).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Object storage options (`run`, `transcode`, `submit --upload`; the `[storage]` table of the
/// configuration file). The binary fills them from flags and the environment AWS tools use;
/// secret values never show in `Debug` and [`StorageConfig::redacted`] hides them for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Local directory for object sources and outputs while a job runs (one folder per job,
    /// removed after it).
    pub scratch: PathBuf,
    /// Largest object source accepted, bytes (its download is refused beyond).
    pub max_source_bytes: u64,
    /// Concurrent uploads of one job's output files.
    pub upload_concurrency: usize,
    /// Create a missing JetStream object store bucket for an output (never for a source).
    pub create_buckets: bool,
    /// NATS server of the object store (default: the worker's own connection; `transcode`
    /// and `submit` use their NATS URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_nats_url: Option<String>,
    /// S3 endpoint (MinIO, Ceph, R2…); path-style requests are used whenever it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_access_key_id: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_secret_access_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_session_token: Option<Secret>,
    /// Allow plain-HTTP S3 endpoints (a local store).
    pub s3_allow_http: bool,
    /// Tries of one S3 request on a 5xx, a timeout or throttling (with exponential backoff).
    pub s3_retries: usize,
    /// Timeout of one S3 request, seconds; of each read for a source's GET (its body may take
    /// longer as long as it keeps moving).
    pub s3_timeout: f64,
    /// How a transcode reads an object source: downloaded whole first, or decoded while it
    /// arrives.
    pub source_read: SourceRead,
}

/// How a transcode reads an object source (`--source-read`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceRead {
    /// Streamed whole into scratch and its digest checked, then decoded.
    Download,
    /// Decoded while it is streamed into scratch (an S3 source's tail first, by a ranged
    /// GET); published only once it is whole and its digest matched. The default: measured
    /// faster over a network and the same on loopback (README, object storage).
    #[default]
    Overlap,
}

named_enum!(SourceRead, "source read", { Download => "download", Overlap => "overlap" });

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            scratch: std::env::temp_dir(),
            max_source_bytes: 20 << 30,
            upload_concurrency: 4,
            create_buckets: false,
            object_nats_url: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_session_token: None,
            s3_allow_http: false,
            s3_retries: 5,
            s3_timeout: 60.0,
            source_read: SourceRead::default(),
        }
    }
}

impl StorageConfig {
    /// The same options with the S3 credentials replaced by `<redacted>` and the object store
    /// URL's userinfo hidden (for `video-worker config`).
    pub fn redacted(&self) -> StorageConfig {
        let hide = |s: &Option<Secret>| {
            s.as_ref()
                .map(|_| Secret(crate::queue::connect::REDACTED.to_string()))
        };
        StorageConfig {
            object_nats_url: self
                .object_nats_url
                .as_deref()
                .map(crate::queue::redact::url),
            s3_access_key_id: hide(&self.s3_access_key_id),
            s3_secret_access_key: hide(&self.s3_secret_access_key),
            s3_session_token: hide(&self.s3_session_token),
            ..self.clone()
        }
    }
}

/// What a failed store operation was about: it decides the error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reading the job's source: a missing object is `source_not_found`.
    Source,
    /// Writing or checking the job's output: a missing bucket is `invalid_request`.
    Output,
}

/// A store failure, classified once where the store's own error is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The object or its bucket does not exist: permanent.
    NotFound,
    /// Access denied or bad credentials: permanent (the same on every retry).
    Denied,
    /// The request itself is wrong (bad name, refused by the store): permanent.
    Invalid,
    /// A digest or size that does not match what the store announced.
    Corrupt,
    /// 5xx, timeout, throttling, connection: retried with backoff (by the store client, then
    /// by the queue).
    Transient,
}

/// A classified store error; `message` never holds a secret (URLs, keys and store messages
/// only; the credentials are not part of any of them).
#[derive(Debug, Clone)]
pub struct StoreError {
    pub failure: Failure,
    pub message: String,
}

impl StoreError {
    pub fn new(failure: Failure, message: impl Into<String>) -> StoreError {
        StoreError {
            failure,
            message: message.into(),
        }
    }

    /// The job error this store error ends a job with.
    pub fn into_job(self, role: Role) -> JobError {
        let message = format!("object storage: {}", self.message);
        match (self.failure, role) {
            (Failure::NotFound, Role::Source) => JobError::source_not_found(message),
            (Failure::NotFound | Failure::Denied | Failure::Invalid, _) => {
                JobError::invalid_request(message)
            }
            (Failure::Corrupt, Role::Source) => JobError::invalid_media(message),
            // No transient kind names storage: `output_io` is the one that says "I/O, retry".
            (Failure::Corrupt | Failure::Transient, _) => JobError::output_io(message),
        }
    }
}

/// What the store says about an object before it is read.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub size: u64,
    /// Identifies this version of the object: S3's ETag, the JetStream object's nuid and digest.
    pub version: String,
}

/// Byte counters of one job, for progress events.
#[derive(Debug, Default)]
pub struct Transfer {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
}

/// Where a download's bytes go: the scratch file, written from its start. With an arrival map
/// (`--source-read overlap`: a job already reads the file), the file exists at its full size
/// and each chunk that became whole is flushed and marked for the job.
pub(crate) struct Sink<'a> {
    file: tokio::fs::File,
    path: &'a Path,
    arrival: Option<&'a MapWriter>,
    written: u64,
    marked: u64,
}

impl<'a> Sink<'a> {
    pub(crate) async fn open(
        path: &'a Path,
        arrival: Option<&'a MapWriter>,
    ) -> std::result::Result<Sink<'a>, StoreError> {
        let file = match arrival {
            None => tokio::fs::File::create(path).await,
            // Made at its full size by the map's writer: not truncated (a retried download
            // writes the same bytes again from the start).
            Some(_) => tokio::fs::OpenOptions::new().write(true).open(path).await,
        }
        .map_err(|e| Sink::error(path, e))?;
        Ok(Sink {
            file,
            path,
            arrival,
            written: 0,
            marked: 0,
        })
    }

    fn error(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::new(
            Failure::Transient,
            format!("scratch {}: {e}", path.display()),
        )
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| Sink::error(self.path, e))?;
        self.written += bytes.len() as u64;
        if self.arrival.is_some() && self.written - self.marked >= CHUNK_BYTES {
            self.publish().await?;
        }
        Ok(())
    }

    /// Flushes what was written (tokio's file writes land on a blocking thread) and marks it.
    async fn publish(&mut self) -> std::result::Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|e| Sink::error(self.path, e))?;
        if let Some(map) = self.arrival {
            map.advance(self.written)
                .map_err(|e| Sink::error(&map.arriving().map, e))?;
        }
        self.marked = self.written;
        Ok(())
    }

    /// Everything written and (with a map) marked; the bytes written.
    pub(crate) async fn finish(mut self) -> std::result::Result<u64, StoreError> {
        self.publish().await?;
        Ok(self.written)
    }
}

/// The Content-Type of an output file, by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("aac") => "audio/aac",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The object stores of one process: S3 clients per bucket (built on first use), and the
/// JetStream context of the NATS connection.
pub struct Stores {
    pub args: StorageConfig,
    s3: s3::S3Stores,
    nats: Option<async_nats::jetstream::Context>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("args", &self.args).finish()
    }
}

impl Stores {
    /// `nats`: the connection of the worker (or of `--object-nats-url`), if any.
    pub fn new(args: StorageConfig, nats: Option<async_nats::Client>) -> Stores {
        Stores {
            s3: s3::S3Stores::new(&args),
            nats: nats.map(async_nats::jetstream::new),
            args,
        }
    }

    fn nats(&self) -> std::result::Result<nats_object::Nats<'_>, StoreError> {
        match &self.nats {
            Some(js) => Ok(nats_object::Nats {
                js,
                create_buckets: self.args.create_buckets,
            }),
            None => Err(StoreError::new(
                Failure::Invalid,
                "nats-object:// needs a NATS connection (--nats-url or --object-nats-url)",
            )),
        }
    }

    pub async fn head(&self, url: &ObjectUrl) -> std::result::Result<ObjectMeta, StoreError> {
        match url.scheme {
            Scheme::S3 => self.s3.head(url).await,
            Scheme::NatsObject => self.nats()?.head(url).await,
        }
    }

    /// Streams `url` into `dest` (created), never holding more than one chunk in memory;
    /// refuses more than `max_bytes`; checks the store's digest where it has one. With
    /// `arrival` (a job reads `dest` as it arrives), whole chunks are marked as they land, and
    /// an S3 source's tail is fetched first by a ranged GET (a demuxer reads an MP4's index
    /// there before anything else), and whatever the job waits for far ahead of the download
    /// by more ranged GETs. The map's end (verified or failed) is the caller's.
    pub async fn download(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        max_bytes: u64,
        counter: &AtomicU64,
        arrival: Option<&MapWriter>,
    ) -> std::result::Result<u64, StoreError> {
        match url.scheme {
            Scheme::S3 => {
                let whole = self.s3.download(url, dest, max_bytes, counter, arrival);
                match arrival {
                    Some(map) => {
                        // Beside the download: the tail and the job's reads far ahead (of the
                        // chunks before the tail). Both end with the download, which has then
                        // written every byte.
                        let ranged = async {
                            let ahead = self.s3.serve_reads_ahead(url, dest, map);
                            tokio::pin!(ahead);
                            tokio::select! {
                                r = self.s3.fetch_tail(url, dest, map) => r?,
                                e = &mut ahead => return Err(e),
                            }
                            Err(ahead.await)
                        };
                        tokio::select! {
                            r = whole => r,
                            e = ranged => e,
                        }
                    }
                    None => whole.await,
                }
            }
            Scheme::NatsObject => {
                self.nats()?
                    .download(url, dest, max_bytes, counter, arrival)
                    .await
            }
        }
    }

    /// Uploads the file at `path` to `url` with the Content-Type of its name.
    pub async fn put_file(
        &self,
        url: &ObjectUrl,
        path: &Path,
        counter: &AtomicU64,
    ) -> std::result::Result<u64, StoreError> {
        let ctype = content_type(&url.key);
        match url.scheme {
            Scheme::S3 => self.s3.put_file(url, path, ctype, counter).await,
            Scheme::NatsObject => self.nats()?.put_file(url, path, ctype, counter).await,
        }
    }

    /// A small object (a manifest), or None when it does not exist.
    pub async fn get_small(
        &self,
        url: &ObjectUrl,
        max: u64,
    ) -> std::result::Result<Option<Bytes>, StoreError> {
        match url.scheme {
            Scheme::S3 => self.s3.get_small(url, max).await,
            Scheme::NatsObject => self.nats()?.get_small(url, max).await,
        }
    }

    pub async fn exists(&self, url: &ObjectUrl) -> std::result::Result<bool, StoreError> {
        match self.head(url).await {
            Ok(_) => Ok(true),
            Err(e) if e.failure == Failure::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `url`; a missing object is not an error.
    pub async fn delete(&self, url: &ObjectUrl) -> std::result::Result<(), StoreError> {
        let r = match url.scheme {
            Scheme::S3 => self.s3.delete(url).await,
            Scheme::NatsObject => self.nats()?.delete(url).await,
        };
        match r {
            Err(e) if e.failure == Failure::NotFound => Ok(()),
            other => other,
        }
    }

    /// Fails early (before any work) when the output's store cannot be used at all: no NATS
    /// connection, or a missing JetStream bucket without `--create-buckets`.
    pub async fn check_output(&self, url: &ObjectUrl) -> std::result::Result<(), StoreError> {
        match url.scheme {
            Scheme::S3 => self.s3.client(&url.bucket).map(|_| ()),
            Scheme::NatsObject => self.nats()?.bucket(&url.bucket, true).await.map(|_| ()),
        }
    }
}

/// A NATS connection for the object store of `transcode` and `submit --upload` (the worker
/// uses its own). Credentials in the URL are used and never printed.
pub async fn connect_nats(url: &str) -> Result<async_nats::Client> {
    let (plain, credentials) = crate::queue::redact::split_nats_url(url);
    let mut options = async_nats::ConnectOptions::new();
    match credentials {
        Some(crate::queue::redact::UrlCredentials::UserPassword { user, password }) => {
            options = options.user_and_password(user, password);
        }
        Some(crate::queue::redact::UrlCredentials::Token(token)) => {
            options = options.token(token);
        }
        None => {}
    }
    options.connect(plain.as_str()).await.map_err(|e| {
        JobError::output_io(format!(
            "connecting to NATS at {} for the object store: {e}",
            crate::queue::redact::url(url)
        ))
    })
}

/// A shared handle, as the job glue holds it.
pub type SharedStores = Arc<Stores>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn object_urls_parse_and_join_as_prefixes() {
        let u = ObjectUrl::parse("s3://media-in/raw/video-1.mp4", false).unwrap();
        assert_eq!(u.scheme, Scheme::S3);
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("media-in", "raw/video-1.mp4")
        );
        assert_eq!(u.to_string(), "s3://media-in/raw/video-1.mp4");
        let out = ObjectUrl::parse("nats-object://hls/video-1/", false).unwrap();
        assert_eq!(out.key, "video-1");
        assert_eq!(
            out.join("master.m3u8").to_string(),
            "nats-object://hls/video-1/master.m3u8"
        );
        assert_eq!(out.last_segment(), "video-1");
        for bad in [
            "s3://",
            "s3://b/x",
            "s3://Bucket/x",
            "s3://bucket",
            "s3://bucket/",
            "s3://bucket/a//b",
            "s3://bucket/../b",
            "s3://bucket/a/./b",
            "s3://bucket/a\nb",
            "nats-object://bad.bucket/x",
            "http://bucket/x",
        ] {
            let e = ObjectUrl::parse(bad, false).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest, "{bad}");
        }
        assert_eq!(ObjectUrl::parse("s3://bucket/", true).unwrap().key, "");
    }

    #[test]
    fn confinement_is_by_bucket_and_prefix_on_a_segment_boundary() {
        let root = ObjectUrl::parse("s3://media/uploads/", true).unwrap();
        let inside = |t: &str| ObjectUrl::parse(t, false).unwrap().is_within(&root);
        assert!(inside("s3://media/uploads/a.mp4"));
        assert!(inside("s3://media/uploads/x/y"));
        assert!(!inside("s3://media/uploads-evil/a.mp4"));
        assert!(!inside("s3://media/other/a.mp4"));
        assert!(!inside("s3://media2/uploads/a.mp4"));
        assert!(!inside("nats-object://media/uploads/a.mp4"));
        let bucket = ObjectUrl::parse("nats-object://hls", true).unwrap();
        assert!(ObjectUrl::parse("nats-object://hls/v/1", false)
            .unwrap()
            .is_within(&bucket));
    }

    #[test]
    fn store_failures_map_to_kinds_that_decide_retry() {
        let kind = |f, r| StoreError::new(f, "x").into_job(r).kind;
        assert_eq!(
            kind(Failure::NotFound, Role::Source),
            ErrorKind::SourceNotFound
        );
        assert_eq!(
            kind(Failure::NotFound, Role::Output),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(Failure::Denied, Role::Source),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(Failure::Corrupt, Role::Source),
            ErrorKind::InvalidMedia
        );
        assert_eq!(kind(Failure::Transient, Role::Output), ErrorKind::OutputIo);
        assert!(!ErrorKind::OutputIo.is_permanent());
        assert!(ErrorKind::InvalidRequest.is_permanent());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s: Secret = "wJalrXUtnFEMI".parse().unwrap();
        assert_eq!(format!("{:?}", Some(s)), "Some(***)");
    }

    #[test]
    fn content_types_per_file() {
        assert_eq!(
            content_type("a/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type("720p_001.ts"), "video/mp2t");
        assert_eq!(content_type("thumbnail.jpg"), "image/jpeg");
        assert_eq!(content_type("manifest.json"), "application/json");
    }
}
