//! `manifest.json`: the one record of what an output directory holds and which request made
//! it. Written last into the staging directory, read back to decide two things: whether a
//! redelivered job is already done (same fingerprint, master playlist present), and whether
//! an existing directory may be replaced at all (made by this worker for the same video).
//! Nothing else parses the file: renaming a field here changes both sides at once.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{JobError, Result};
use crate::media::{AudioLayout, Outcome, SourceInfo, TranscodeRequest};

pub const MANIFEST: &str = "manifest.json";

/// The typed content of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Identifies the request that made this output (idempotent redelivery); `None` for a
    /// command-line `transcode`.
    pub fingerprint: Option<String>,
    /// The job's `video_id`; `None` for a command-line `transcode`. Only a job for the same
    /// id may replace this directory.
    pub video_id: Option<String>,
    pub worker_version: String,
    pub ffmpeg_version: String,
    pub created_unix: u64,
    pub request: RequestRecord,
    /// The source's probe as `SourceInfo` serialises it. Kept as JSON: the probe also has
    /// in-memory fields (frame rate as a rational, colour tags) that are not written.
    pub source: Value,
    pub result: Outcome,
}

/// The encoding settings the output was made with (for audit; the fingerprint covers them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub qualities: Vec<String>,
    pub segment_seconds: f64,
    pub gop_seconds: f64,
    pub thumbnail_time: f64,
    pub preset: String,
    pub audio_bitrate: u64,
    /// Absent in manifests written before audio could be its own rendition (they are muxed).
    #[serde(default = "AudioLayout::before_layouts")]
    pub audio_layout: AudioLayout,
}

impl Manifest {
    pub fn new(req: &TranscodeRequest, source: &SourceInfo, outcome: &Outcome) -> Manifest {
        Manifest {
            fingerprint: req.fingerprint.clone(),
            video_id: req.video_id.clone(),
            worker_version: env!("CARGO_PKG_VERSION").into(),
            ffmpeg_version: crate::media::ffi::runtime_version(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            request: RequestRecord {
                qualities: req.qualities.iter().map(|q| q.name.clone()).collect(),
                segment_seconds: req.segment_seconds,
                gop_seconds: req.gop_seconds,
                thumbnail_time: req.thumbnail_time,
                preset: req.preset.clone(),
                audio_bitrate: req.audio_bitrate,
                audio_layout: req.audio_layout,
            },
            source: serde_json::to_value(source).unwrap_or(Value::Null),
            result: outcome.clone(),
        }
    }

    /// Writes `dir/manifest.json` (through a temporary name and a rename).
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| JobError::internal(format!("manifest: {e}")))?;
        crate::media::output::write_atomic(&dir.join(MANIFEST), &text)
    }

    /// The manifest of `dir`, if it has a readable one.
    pub fn read(dir: &Path) -> Option<Manifest> {
        let text = std::fs::read(dir.join(MANIFEST)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The outcome recorded in `dir` when it holds a complete output made for the request
    /// with this `fingerprint` (its master playlist present): a redelivered job whose ack was
    /// lost is then already done.
    pub fn finished(dir: &Path, fingerprint: &str) -> Option<Outcome> {
        let manifest = Manifest::read(dir)?;
        let complete = dir.join(crate::media::hls::playlist::MASTER).is_file();
        (complete && manifest.fingerprint.as_deref() == Some(fingerprint))
            .then_some(manifest.result)
    }

    /// True when `dir` holds a complete output (a manifest and the master playlist it names).
    pub fn complete(dir: &Path) -> bool {
        Manifest::read(dir).is_some_and(|m| dir.join(&m.result.master_playlist).is_file())
    }
}

/// Identifies a request and the source it was made from: sha256 over the canonical request
/// (paths, ladder, encoding settings, video id) and the source's size and modification time.
/// A redelivered job whose published output carries the same fingerprint is already done.
pub fn fingerprint(req: &TranscodeRequest) -> Result<String> {
    let meta = std::fs::metadata(&req.source)
        .map_err(|e| JobError::source_not_found(format!("source {}: {e}", req.source.display())))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(fingerprint_of(req, meta.len(), &mtime_ns.to_string()))
}

/// [`fingerprint`] with the source's size and version given: an object source has no file
/// to stat (its version is the store's ETag or digest, in the place of the mtime).
pub fn fingerprint_of(req: &TranscodeRequest, source_size: u64, source_version: &str) -> String {
    // Field names and order unchanged since version 1 (`kind` was always "process"), so the
    // outputs of earlier workers are still recognised.
    let mut canonical = serde_json::json!({
        "v": 1,
        "kind": "process",
        "video_id": req.video_id.as_deref().unwrap_or_default(),
        "source": req.source,
        "source_size": source_size,
        "source_mtime_ns": source_version,
        "output": req.output_dir,
        "qualities": req.qualities.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
        "thumbnail_time": req.thumbnail_time,
        "segment_seconds": req.segment_seconds,
        "gop_seconds": req.gop_seconds,
        "preset": req.preset,
        "audio_bitrate": req.audio_bitrate,
        "limits": req.limits,
    });
    // Outputs made before the audio layout was a choice were muxed: that layout adds nothing,
    // so their fingerprints still match, and a separate-audio request never reuses them.
    if req.audio_layout != AudioLayout::Muxed {
        canonical["audio_layout"] = serde_json::json!(req.audio_layout);
    }
    if req.measure_quality {
        canonical["measure_quality"] = serde_json::json!(true);
    }
    if req.segments != crate::media::hls::SegmentFormat::Ts {
        canonical["segments"] = serde_json::json!(req.segments);
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
impl Manifest {
    /// A manifest as a finished job for `video_id` would write into `dir`.
    pub(crate) fn sample(video_id: Option<&str>, fingerprint: &str, dir: &Path) -> Manifest {
        Manifest {
            fingerprint: Some(fingerprint.into()),
            video_id: video_id.map(str::to_string),
            worker_version: "test".into(),
            ffmpeg_version: "test".into(),
            created_unix: 0,
            request: RequestRecord {
                qualities: vec!["144p".into()],
                segment_seconds: 6.0,
                gop_seconds: 2.0,
                thumbnail_time: 0.0,
                preset: "medium".into(),
                audio_bitrate: 128_000,
                audio_layout: AudioLayout::Separate,
            },
            source: Value::Null,
            result: Outcome {
                source: "/src.mp4".into(),
                output_dir: dir.to_path_buf(),
                duration: 1.0,
                frame_rate: 25.0,
                frames_decoded: 25,
                frames_encoded: 25,
                source_bytes: 0,
                has_audio: false,
                audio_layout: crate::media::AudioLayout::default(),
                audio: None,
                segment_format: Default::default(),
                renditions: Vec::new(),
                skipped: Vec::new(),
                thumbnail: "thumbnail.jpg".into(),
                master_playlist: crate::media::hls::playlist::MASTER.into(),
                elapsed_seconds: 0.1,
                encode_seconds: Default::default(),
                threads: Default::default(),
                warnings: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_output_is_recognised_only_with_its_fingerprint_and_master_playlist() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(Manifest::read(dir).is_none());
        Manifest::sample(Some("v1"), "fp-1", dir)
            .write_to(dir)
            .unwrap();
        let back = Manifest::read(dir).expect("typed read-back");
        assert_eq!(back.video_id.as_deref(), Some("v1"));
        assert_eq!(back.request.qualities, ["144p"]);
        assert!(
            Manifest::finished(dir, "fp-1").is_none(),
            "no master playlist yet: not complete"
        );
        std::fs::write(dir.join(crate::media::hls::playlist::MASTER), "#EXTM3U\n").unwrap();
        assert_eq!(
            Manifest::finished(dir, "fp-1").map(|o| o.frames_encoded),
            Some(25)
        );
        assert!(Manifest::finished(dir, "fp-2").is_none(), "another request");
        assert!(Manifest::complete(dir));
        std::fs::write(dir.join(MANIFEST), b"{\"fingerprint\": \"fp-1\"}").unwrap();
        assert!(
            Manifest::read(dir).is_none(),
            "an untyped manifest is not ours"
        );
    }

    #[test]
    fn the_fingerprint_follows_the_request_and_the_source_file() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("in.mp4");
        std::fs::write(&source, b"one").unwrap();
        let mut req = TranscodeRequest::new(&source, tmp.path().join("out")).unwrap();
        req.video_id = Some("v1".into());
        let first = fingerprint(&req).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(fingerprint(&req).unwrap(), first, "stable");
        let mut other = req.clone();
        other.video_id = Some("v2".into());
        assert_ne!(fingerprint(&other).unwrap(), first);
        let mut muxed = req.clone();
        muxed.audio_layout = AudioLayout::Muxed;
        assert_ne!(
            fingerprint(&muxed).unwrap(),
            first,
            "another audio layout is another output"
        );
        std::fs::write(&source, b"longer").unwrap();
        assert_ne!(fingerprint(&req).unwrap(), first, "a changed source");
    }
}
