//! The wire contract: a job payload (`video.process`, `video.thumbnail`, `video.metadata`)
//! parsed and validated into a [`Job`] (sizes bounded, paths confined, the output checked
//! against what it would replace), and the event payloads the worker publishes (`video.processed`,
//! `video.failed`, `video.progress.<video_id>`). No NATS and no FFmpeg here: the queue
//! side turns messages into these values, the media side never sees them.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, JobError, Result};
use crate::ladder::Quality;
use crate::media::output::{check_replaceable, Claim};
use crate::media::Stage;
use crate::storage::{is_object_url, Location, ObjectUrl};

/// Largest job payload accepted. A real job is well under 2 KiB; nats-server's default
/// `max_payload` is 1 MiB, and every event echoes parts of the job, so a huge payload could
/// be accepted here and then make each of its events unpublishable.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest `metadata` (serialised) accepted: it is echoed into `video.processed` and the
/// callback, which must stay far below the server's 1 MiB `max_payload`.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a job asks for; each kind has its own subject and durable consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `video.process`: the full HLS ladder.
    #[default]
    Process,
    /// `video.thumbnail`: `thumbnail.jpg` only.
    Thumbnail,
    /// `video.metadata`: probe only; the result travels in `video.processed`.
    Metadata,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Process, JobKind::Thumbnail, JobKind::Metadata];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Process => "process",
            JobKind::Thumbnail => "thumbnail",
            JobKind::Metadata => "metadata",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<JobKind, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind {s:?} (process, thumbnail, metadata)"))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload as producers send it (the platform guide's shape). Unknown fields are
/// ignored; the encoding knobs at the end are this worker's extensions (tests and operators
/// use them; the platform's producers do not send them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Vec<String>>,
    /// `"00:00:05"` or a number of seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_time: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The producer's own data, echoed back in the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gop_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
}

/// Where jobs may read and write: `--allow-root` directories, canonicalised once at start,
/// and object prefixes (`s3://bucket/prefix/`, `nats-object://bucket/`). Empty means
/// unconfined (the worker warns about it at start); once any root is given, a path or an
/// object outside every root is refused.
#[derive(Debug, Clone, Default)]
pub struct PathPolicy {
    pub roots: Vec<PathBuf>,
    pub object_roots: Vec<ObjectUrl>,
}

/// Splits a `:`-separated list of roots (`VW_ALLOW_ROOTS`, as `PATH`), keeping the `:` of an
/// object URL's scheme (`s3://…`, `nats-object://…`).
pub fn split_roots(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(':') {
        match out.last_mut() {
            Some(last) if piece.starts_with("//") && (last == "s3" || last == "nats-object") => {
                last.push(':');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

impl PathPolicy {
    /// Canonicalises each root; a root that does not exist is a configuration error. Each
    /// entry may hold several roots separated by `:`.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<PathPolicy> {
        let mut policy = PathPolicy::default();
        for entry in roots {
            for text in split_roots(&entry.to_string_lossy()) {
                if is_object_url(&text) {
                    let url = ObjectUrl::parse(&text, true).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("allowed root {text}: {}", e.message),
                        )
                    })?;
                    policy.object_roots.push(url);
                    continue;
                }
                let r = PathBuf::from(&text);
                policy.roots.push(r.canonicalize().map_err(|e| {
                    std::io::Error::new(e.kind(), format!("allowed root {}: {e}", r.display()))
                })?);
            }
        }
        Ok(policy)
    }

    /// True when any root (path or object) was given.
    pub fn is_confined(&self) -> bool {
        !self.roots.is_empty() || !self.object_roots.is_empty()
    }

    /// `text` as an object location when it is one (`s3://`, `nats-object://`), confined to
    /// the object roots; None for anything else (a path, checked by the caller).
    pub fn object(&self, what: &str, text: &str) -> Result<Option<ObjectUrl>> {
        if !is_object_url(text) {
            return Ok(None);
        }
        let url = ObjectUrl::parse(text, false)
            .map_err(|e| JobError::invalid_request(format!("{what}: {}", e.message)))?;
        if self.is_confined() && !self.object_roots.iter().any(|r| url.is_within(r)) {
            tracing::warn!(field = what, url = %url, roots = ?self.object_roots,
                "job object outside the allowed roots");
            return Err(JobError::invalid_request(format!(
                "{what} {:?} is outside the allowed roots",
                truncate(text, 200)
            )));
        }
        if what == "output_path" && self.object_roots.iter().any(|r| r == &url) {
            return Err(JobError::invalid_request(format!(
                "output_path {text:?} is an allowed root itself; it would be replaced"
            )));
        }
        Ok(Some(url))
    }

    /// Refuses a resolved path outside the roots. The message names only the job's own text:
    /// failed events are public, the server's layout and its roots are not (they are logged).
    fn check(&self, what: &str, original: &str, resolved: &Path) -> Result<()> {
        if !self.is_confined() || self.roots.iter().any(|r| resolved.starts_with(r)) {
            return Ok(());
        }
        tracing::warn!(
            field = what,
            path = original,
            resolved = %resolved.display(),
            roots = ?self.roots,
            "job path outside the allowed roots"
        );
        Err(JobError::invalid_request(format!(
            "{what} {:?} is outside the allowed roots",
            truncate(original, 200)
        )))
    }

    /// The source after resolving `..` and symlinks; it must exist, be a regular file and
    /// lie inside a root.
    pub fn source(&self, text: &str) -> Result<PathBuf> {
        let path = plain_path("source_path", text)?;
        let resolved = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Still refuse a missing path outside the roots as such, not as "missing".
                if let Some(outside) = resolve_path(&path) {
                    self.check("source_path", text, &outside)?;
                }
                return Err(JobError::source_not_found(format!(
                    "source {text:?} does not exist"
                )));
            }
            Err(e) => {
                return Err(JobError::source_not_found(format!(
                    "source {text:?} cannot be resolved: {e}"
                )))
            }
        };
        self.check("source_path", text, &resolved)?;
        if !resolved.is_file() {
            return Err(JobError::source_not_found(format!(
                "source {text:?} is not a regular file"
            )));
        }
        Ok(resolved)
    }

    /// The output directory: its deepest existing ancestor resolved (symlinks and `..`),
    /// the rest appended as plain names. The output itself may not exist yet.
    pub fn output(&self, text: &str) -> Result<PathBuf> {
        let path = plain_path("output_path", text)?;
        if path.file_name().is_none() {
            return Err(JobError::invalid_request(format!(
                "output_path {text:?} has no directory name"
            )));
        }
        let resolved = resolve_path(&path).ok_or_else(|| {
            JobError::invalid_request(format!(
                "output_path {text:?} cannot be resolved (\"..\" after a missing directory?)"
            ))
        })?;
        self.check("output_path", text, &resolved)?;
        if self.roots.iter().any(|r| r == &resolved) {
            return Err(JobError::invalid_request(format!(
                "output_path {text:?} is an allowed root itself; it would be replaced"
            )));
        }
        Ok(resolved)
    }
}

/// Canonicalises the deepest existing ancestor of `path` and appends the rest, which must
/// consist of plain names: the path with every symlink resolved, whether or not it exists.
pub fn resolve_path(path: &Path) -> Option<PathBuf> {
    let mut tail: Vec<&std::ffi::OsStr> = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(base) = cur.canonicalize() {
            let mut out = base;
            for name in tail.iter().rev() {
                out.push(name);
            }
            return Some(out);
        }
        match cur.components().next_back() {
            Some(Component::Normal(name)) => tail.push(name),
            _ => return None,
        }
        cur = cur.parent()?;
    }
}

/// An absolute, local path: no URL-like prefix, no NUL.
fn plain_path(what: &str, text: &str) -> Result<PathBuf> {
    if text.is_empty() {
        return Err(JobError::invalid_request(format!("{what} is empty")));
    }
    if text.contains('\0') {
        return Err(JobError::invalid_request(format!(
            "{what} contains a NUL byte"
        )));
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(JobError::invalid_request(format!(
            "{what} {text:?} is not an absolute path"
        )));
    }
    Ok(path)
}

/// `[A-Za-z0-9_-]{1,128}`: safe in a subject token, a file name and a log line. UUIDs fit.
///
/// No '.' can occur in a video id: that keeps a namespace free for the worker's own event
/// message ids (which contain '.'), so that no producer can take one and have the worker's
/// event dropped as a duplicate.
pub fn check_video_id(id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(JobError::invalid_request(format!(
            "invalid video_id {:?}: expected 1-128 characters from [A-Za-z0-9_-]",
            truncate(id, 160)
        )))
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A validated job: every path resolved and confined, every value parsed.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: JobKind,
    pub video_id: String,
    /// Canonical source path (inside the allowed roots); empty for an object source.
    pub source: PathBuf,
    /// Output directory (its existing ancestor canonical, inside the allowed roots); unused
    /// by metadata jobs; empty for an object output.
    pub output: PathBuf,
    /// An object source (`s3://`, `nats-object://`), inside the object roots.
    pub source_object: Option<ObjectUrl>,
    /// An object output prefix, inside the object roots.
    pub output_object: Option<ObjectUrl>,
    pub user_id: Option<String>,
    pub qualities: Vec<Quality>,
    pub thumbnail_time: f64,
    pub callback_url: Option<String>,
    pub metadata: Option<Value>,
    pub segment_seconds: Option<f64>,
    pub gop_seconds: Option<f64>,
    pub preset: Option<String>,
}

impl Job {
    /// Parses and validates a payload. Every failure is permanent by kind: malformed JSON,
    /// a missing or invalid field, a path outside the roots are `invalid_request`; a
    /// missing source is `source_not_found`.
    pub fn parse(kind: JobKind, payload: &[u8], policy: &PathPolicy) -> Result<Job> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(JobError::invalid_request(format!(
                "job payload is {} bytes; at most {MAX_PAYLOAD_BYTES} are accepted",
                payload.len()
            )));
        }
        let req: JobRequest = serde_json::from_slice(payload)
            .map_err(|e| JobError::invalid_request(format!("malformed job JSON: {e}")))?;
        Job::from_request(kind, req, policy)
    }

    pub fn from_request(kind: JobKind, req: JobRequest, policy: &PathPolicy) -> Result<Job> {
        let required = |name: &str, v: &Option<String>| -> Result<String> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(JobError::invalid_request(format!(
                    "missing required field {name:?}"
                ))),
            }
        };
        let video_id = required("video_id", &req.video_id)?;
        check_video_id(&video_id)?;
        if let Some(metadata) = &req.metadata {
            let size = serde_json::to_vec(metadata)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(JobError::invalid_request(format!(
                    "metadata is {size} bytes serialised; at most {MAX_METADATA_BYTES} are accepted"
                )));
            }
        }
        let source_text = required("source_path", &req.source_path)?;
        // Metadata jobs write nothing: their output_path is optional.
        let output_text = match kind {
            JobKind::Metadata => req.output_path.clone().filter(|s| !s.trim().is_empty()),
            _ => Some(required("output_path", &req.output_path)?),
        };
        let qualities = match &req.quality {
            Some(list) => Quality::parse_list(list)?,
            None => Quality::parse_list(crate::ladder::DEFAULT_QUALITIES)?,
        };
        let thumbnail_time = match &req.thumbnail_time {
            None | Some(Value::Null) => crate::media::DEFAULT_THUMBNAIL_SECONDS,
            Some(Value::String(s)) => parse_timestamp(s)?,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => v,
                _ => {
                    return Err(JobError::invalid_request(format!(
                        "invalid thumbnail_time {n}"
                    )))
                }
            },
            Some(other) => {
                return Err(JobError::invalid_request(format!(
                    "invalid thumbnail_time {other}: expected \"HH:MM:SS\" or seconds"
                )))
            }
        };
        if let Some(url) = &req.callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(JobError::invalid_request(format!(
                    "callback_url {:?} is not an http(s) URL",
                    truncate(url, 200)
                )));
            }
        }
        // Paths last: the output is checked before the source so that a job naming a missing
        // source outside the roots is refused for the roots.
        let output_object = match &output_text {
            Some(text) => policy.object("output_path", text)?,
            None => None,
        };
        let output = match &output_text {
            Some(text) if output_object.is_none() => policy.output(text)?,
            _ => PathBuf::new(),
        };
        let source_object = policy.object("source_path", &source_text)?;
        let source = match source_object {
            None => policy.source(&source_text)?,
            Some(_) => PathBuf::new(),
        };
        let local_output = output_text
            .as_deref()
            .filter(|_| kind != JobKind::Metadata && output_object.is_none());
        if let Some(text) = local_output {
            let claim = Claim {
                source: &source,
                video_id: Some(&video_id),
                force: false,
                thumbnail_only: kind == JobKind::Thumbnail,
            };
            check_replaceable(&output, &claim).map_err(|refusal| {
                JobError::invalid_request(format!(
                    "output_path {:?} {refusal}",
                    truncate(text, 200)
                ))
            })?;
        }
        Ok(Job {
            kind,
            video_id,
            source,
            output,
            source_object,
            output_object,
            user_id: req.user_id,
            qualities,
            thumbnail_time,
            callback_url: req.callback_url,
            metadata: req.metadata,
            segment_seconds: req.segment_seconds,
            gop_seconds: req.gop_seconds,
            preset: req.preset,
        })
    }
}

impl Job {
    /// True when the source or the output is in object storage.
    pub fn uses_objects(&self) -> bool {
        self.source_object.is_some() || self.output_object.is_some()
    }

    pub fn source_location(&self) -> Location {
        match &self.source_object {
            Some(url) => Location::Object(url.clone()),
            None => Location::Local(self.source.clone()),
        }
    }

    /// None for a metadata job (it writes nothing).
    pub fn output_location(&self) -> Option<Location> {
        match (&self.output_object, self.kind) {
            (_, JobKind::Metadata) => None,
            (Some(url), _) => Some(Location::Object(url.clone())),
            (None, _) => Some(Location::Local(self.output.clone())),
        }
    }

    /// The source and output as the producer named them (URLs or resolved paths): what the
    /// fingerprint covers, so that it does not depend on a scratch folder.
    pub fn public_paths(&self) -> (PathBuf, PathBuf) {
        let source = match &self.source_object {
            Some(url) => PathBuf::from(url.to_string()),
            None => self.source.clone(),
        };
        let output = match &self.output_object {
            Some(url) => PathBuf::from(url.to_string()),
            None => self.output.clone(),
        };
        (source, output)
    }
}

/// `video_id` from a payload that may not be valid as a whole (for the failed event of a
/// rejected job), only when it is itself valid.
pub fn peek_video_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("video_id")?.as_str()?;
    check_video_id(id).ok()?;
    Some(id.to_string())
}

/// `video.processed`: a job succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessedEvent {
    pub video_id: String,
    /// Which kind of job this was: `process`, `thumbnail` or `metadata`.
    pub job: JobKind,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_playlist: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<PathBuf>,
    /// The transcode's outcome (renditions, duration…) for `process`, the thumbnail's size
    /// for `thumbnail`, the probe for `metadata`.
    pub result: Value,
    /// True when a redelivered job found its output already complete (not transcoded again).
    pub reused_output: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The producer's `metadata`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub attempt: u64,
    pub stream_sequence: u64,
    pub worker: String,
    pub completed_at_unix: u64,
}

/// `video.failed`: a job failed for good (it also went to `video.dlq`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedEvent {
    pub video_id: Option<String>,
    pub job: JobKind,
    pub kind: ErrorKind,
    pub message: String,
    /// Always true here: the job will not be retried. `retries_exhausted` says whether
    /// the error itself was transient (and the attempts ran out).
    pub permanent: bool,
    pub retries_exhausted: bool,
    pub attempt: u64,
    pub max_deliver: i64,
    pub stream_sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub worker: String,
    pub failed_at_unix: u64,
}

/// `video.progress.<video_id>` (core NATS, not stored), at most once a second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub video_id: String,
    pub job: JobKind,
    pub stage: Stage,
    pub percent: f64,
    pub frames: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_frames: Option<u64>,
    pub fps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    pub attempt: u64,
    /// Bytes of an object source downloaded so far (object jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_downloaded: Option<u64>,
    /// Bytes of an object output uploaded so far (object jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_uploaded: Option<u64>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `HH:MM:SS[.fff]`, `MM:SS[.fff]` or plain seconds (`5`, `5.5`) into seconds.
pub fn parse_timestamp(text: &str) -> Result<f64> {
    let bad = || {
        JobError::invalid_request(format!(
            "invalid time {text:?}: expected HH:MM:SS[.fff] or seconds"
        ))
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() > 3 {
        return Err(bad());
    }
    let mut total = 0.0;
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let valid = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_digit() || (last && c == '.'))
            && part.matches('.').count() <= 1;
        if !valid {
            return Err(bad());
        }
        let v: f64 = part.parse().map_err(|_| bad())?;
        if i > 0 && v >= 60.0 {
            return Err(bad());
        }
        total = total * 60.0 + v;
    }
    if !total.is_finite() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_ids() {
        for ok in [
            "a",
            "d94b4f37-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
            "video_123",
            &"x".repeat(128),
        ] {
            assert!(check_video_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a.b", "a/b", "é", "*", ">", &"x".repeat(129)] {
            assert!(check_video_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_errors_are_invalid_requests_or_missing_sources() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let src = root.join("in.mp4");
        std::fs::write(&src, b"x").unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&root)).unwrap();
        let parse = |v: Value| Job::parse(JobKind::Process, v.to_string().as_bytes(), &policy);
        let out = root.join("out").display().to_string();
        let srcs = src.display().to_string();

        let job = parse(serde_json::json!({"video_id": "v1", "source_path": srcs,
            "output_path": out, "quality": ["720p"], "thumbnail_time": "00:00:02",
            "unknown": 1}))
        .unwrap();
        assert_eq!(job.source, src);
        assert_eq!(job.output, root.join("out"));
        assert_eq!(job.thumbnail_time, 2.0);

        let kind = |r: Result<Job>| r.unwrap_err().kind;
        assert_eq!(
            kind(Job::parse(JobKind::Process, b"{not json", &policy)),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "v1", "source_path": srcs})
            )),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "../x", "source_path": srcs,
                "output_path": out})
            )),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "v1", "source_path": "/etc/passwd",
                "output_path": out})
            )),
            ErrorKind::InvalidRequest
        );
        let escape = format!("{}/../../tmp/x", root.display());
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "v1", "source_path": srcs,
                "output_path": escape})
            )),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(parse(serde_json::json!({"video_id": "v1",
                "source_path": root.join("missing.mp4"), "output_path": out}))),
            ErrorKind::SourceNotFound
        );
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "v1", "source_path": srcs,
                "output_path": out, "quality": ["9000p"]})
            )),
            ErrorKind::InvalidRequest
        );
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert_eq!(
            kind(parse(
                serde_json::json!({"video_id": "v1", "source_path": srcs,
                "output_path": root.join("link/out")})
            )),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            peek_video_id(br#"{"video_id":"abc"}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(peek_video_id(br#"{"video_id":"a b"}"#), None);
    }

    #[test]
    fn a_video_id_with_a_dot_is_refused_so_worker_event_ids_cannot_be_taken() {
        for id in ["processed.VIDEO_PROCESSING.6", "vw.1", "a.b", "."] {
            assert_eq!(
                check_video_id(id).unwrap_err().kind,
                ErrorKind::InvalidRequest,
                "{id}"
            );
        }
    }

    /// A root with `uploads/a.mp4`, `uploads/notes.txt`, and `out/` holding one finished
    /// output of video `other`.
    fn platform_tree() -> (tempfile::TempDir, PathBuf, PathPolicy) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("uploads")).unwrap();
        std::fs::write(root.join("uploads/a.mp4"), b"x").unwrap();
        std::fs::write(root.join("uploads/notes.txt"), b"important").unwrap();
        std::fs::create_dir_all(root.join("out/other")).unwrap();
        std::fs::write(
            root.join("out/other/manifest.json"),
            br#"{"video_id":"other"}"#,
        )
        .unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&root)).unwrap();
        (dir, root, policy)
    }

    fn parse_with_output(
        policy: &PathPolicy,
        root: &Path,
        kind: JobKind,
        output: &Path,
    ) -> Result<Job> {
        let payload = serde_json::json!({"video_id": "vid-a",
            "source_path": root.join("uploads/a.mp4"), "output_path": output});
        Job::parse(kind, payload.to_string().as_bytes(), policy)
    }

    #[test]
    fn an_output_holding_the_source_other_outputs_or_foreign_files_is_an_invalid_request() {
        let (_dir, root, policy) = platform_tree();
        let std_file = root.join("uploads/notes.txt");
        for (output, why) in [
            (root.join("uploads"), "the source's folder"),
            (root.join("uploads/a.mp4"), "the source itself"),
            (root.join("out"), "the folder of every output"),
            (root.join("out/other"), "another video's output"),
            (std_file.clone(), "a regular file"),
        ] {
            for kind in [JobKind::Process, JobKind::Thumbnail] {
                let err = parse_with_output(&policy, &root, kind, &output).unwrap_err();
                assert_eq!(err.kind, ErrorKind::InvalidRequest, "{why} ({kind}): {err}");
            }
        }
        assert_eq!(std::fs::read(&std_file).unwrap(), b"important");
        // A fresh folder, an empty one, and a metadata job (writes nothing) are fine.
        std::fs::create_dir(root.join("out/empty")).unwrap();
        for output in [root.join("out/vid-a"), root.join("out/empty")] {
            parse_with_output(&policy, &root, JobKind::Process, &output).unwrap();
        }
        parse_with_output(&policy, &root, JobKind::Metadata, &root.join("uploads")).unwrap();
    }

    #[test]
    fn refusals_name_the_jobs_own_text_not_the_servers_paths_or_roots() {
        let (_dir, root, policy) = platform_tree();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let payload = serde_json::json!({"video_id": "v1",
            "source_path": root.join("uploads/a.mp4"), "output_path": root.join("link/out")});
        let err =
            Job::parse(JobKind::Process, payload.to_string().as_bytes(), &policy).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert!(err.message.contains("link/out"), "{}", err.message);
        assert!(
            !err.message.contains("/etc"),
            "resolved path leaked: {}",
            err.message
        );
        let root_text = root.display().to_string();
        assert_eq!(
            err.message.matches(root_text.as_str()).count(),
            1,
            "only the job's own text names the root: {}",
            err.message
        );
    }

    #[test]
    fn oversized_payloads_and_metadata_are_invalid_requests() {
        let (_dir, root, policy) = platform_tree();
        let job = |metadata: Value, pad: usize| {
            serde_json::json!({"video_id": "v1", "source_path": root.join("uploads/a.mp4"),
                "output_path": root.join("out/v1"), "metadata": metadata,
                "padding": "p".repeat(pad)})
            .to_string()
        };
        let ok = job(serde_json::json!({"title": "t".repeat(15_000)}), 40_000);
        Job::parse(JobKind::Process, ok.as_bytes(), &policy).unwrap();
        let big_metadata = job(
            serde_json::json!({"title": "t".repeat(MAX_METADATA_BYTES)}),
            0,
        );
        let big_payload = job(Value::Null, MAX_PAYLOAD_BYTES);
        for payload in [big_metadata, big_payload] {
            let err = Job::parse(JobKind::Process, payload.as_bytes(), &policy).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest, "{err}");
        }
    }

    #[test]
    fn allowed_roots_split_on_colons_but_keep_object_url_schemes() {
        assert_eq!(
            split_roots("/a:/b:s3://media/uploads/:nats-object://hls"),
            vec!["/a", "/b", "s3://media/uploads/", "nats-object://hls"]
        );
        assert_eq!(split_roots("s3://b/p"), vec!["s3://b/p"]);
    }

    #[test]
    fn object_paths_are_confined_to_object_roots_and_local_paths_to_local_roots() {
        let (_dir, root, _) = platform_tree();
        let policy = PathPolicy::new(&[
            root.clone(),
            PathBuf::from("s3://media/uploads/:s3://media/hls/"),
        ])
        .unwrap();
        assert_eq!(policy.object_roots.len(), 2);
        let parse = |src: &str, out: &str| {
            let payload =
                serde_json::json!({"video_id": "v1", "source_path": src, "output_path": out});
            Job::parse(JobKind::Process, payload.to_string().as_bytes(), &policy)
        };
        let job = parse("s3://media/uploads/a.mp4", "s3://media/hls/v1").unwrap();
        assert_eq!(job.source_object.as_ref().unwrap().key, "uploads/a.mp4");
        assert_eq!(
            job.output_object.as_ref().unwrap().to_string(),
            "s3://media/hls/v1"
        );
        assert!(job.source.as_os_str().is_empty() && job.uses_objects());
        let local = root.join("uploads/a.mp4").display().to_string();
        let mixed = parse(&local, "s3://media/hls/v1").unwrap();
        assert_eq!(mixed.source, root.join("uploads/a.mp4"));
        for (src, out) in [
            ("s3://media/other/a.mp4", "s3://media/hls/v1"),
            ("s3://media/uploads/a.mp4", "s3://elsewhere/hls/v1"),
            ("s3://media/uploads/a.mp4", "s3://media/hls"),
            ("nats-object://media/uploads/a.mp4", "s3://media/hls/v1"),
            ("s3://media/uploads/../x", "s3://media/hls/v1"),
            ("/etc/passwd", "s3://media/hls/v1"),
        ] {
            let e = parse(src, out).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest, "{src} -> {out}: {e}");
        }
        // Only object roots: local paths are refused.
        let objects_only = PathPolicy::new(&[PathBuf::from("s3://media/")]).unwrap();
        let payload = serde_json::json!({"video_id": "v1", "source_path": local,
            "output_path": "s3://media/hls/v1"});
        let e = Job::parse(
            JobKind::Process,
            payload.to_string().as_bytes(),
            &objects_only,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        assert_eq!(parse_timestamp("00:00:05").unwrap(), 5.0);
        assert_eq!(parse_timestamp("01:02:03.5").unwrap(), 3723.5);
        assert_eq!(parse_timestamp("2:30").unwrap(), 150.0);
        assert_eq!(parse_timestamp("7.25").unwrap(), 7.25);
        for bad in ["", "-1", "1:99", "a", "1:2:3:4", "1e3", "1..2", "nan"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
