//! Playlists as values (m3u8-rs), written atomically: one VOD media playlist per rendition
//! and the master playlist whose attributes are measured from what was written.

use std::path::Path;

use ffmpeg_next::Rational;
use m3u8_rs::{ExtTag, MasterPlaylist, MediaPlaylistType, MediaSegment, Resolution, VariantStream};

use crate::error::{JobError, Result};
use crate::media::hls::Segment;
use crate::media::output::write_atomic;
use crate::media::RenditionOutcome;

pub const MASTER: &str = "master.m3u8";
/// EXT-X-VERSION 3: floating-point EXTINF durations.
const VERSION: usize = 3;

/// One segment as listed: its file, exact duration and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub file_name: String,
    pub duration: f64,
    pub bytes: u64,
}

/// A rendition's media playlist, measured from the written segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub name: String,
    pub entries: Vec<Entry>,
}

impl MediaPlaylist {
    /// Durations come from frame counts at the constant output rate: exact, and the same in
    /// every rendition since all share the cut grid.
    pub fn measure(
        dir: &Path,
        name: &str,
        segments: &[Segment],
        frame_rate: Rational,
    ) -> Result<Self> {
        let fps = f64::from(frame_rate);
        let entries = segments
            .iter()
            .map(|s| {
                let path = dir.join(&s.file_name);
                let bytes = std::fs::metadata(&path)
                    .map_err(|e| JobError::output_io(format!("reading {}: {e}", path.display())))?
                    .len();
                Ok(Entry {
                    file_name: s.file_name.clone(),
                    duration: (s.end_frame - s.start_frame) as f64 / fps,
                    bytes,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MediaPlaylist {
            name: name.to_string(),
            entries,
        })
    }

    pub fn file_name(&self) -> String {
        format!("{}.m3u8", self.name)
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    pub fn duration(&self) -> f64 {
        self.entries.iter().map(|e| e.duration).sum()
    }

    /// BANDWIDTH: the peak segment bitrate (RFC 8216 §4.3.4.2), transport overhead included.
    pub fn peak_bandwidth(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.duration > 0.0)
            .map(|e| (e.bytes as f64 * 8.0 / e.duration).ceil() as u64)
            .max()
            .unwrap_or(0)
    }

    /// AVERAGE-BANDWIDTH: all bytes over the whole duration.
    pub fn average_bandwidth(&self) -> u64 {
        let d = self.duration();
        if d <= 0.0 {
            return 0;
        }
        (self.total_bytes() as f64 * 8.0 / d).ceil() as u64
    }

    pub fn to_m3u8(&self) -> m3u8_rs::MediaPlaylist {
        let longest = self.entries.iter().map(|e| e.duration).fold(0.0, f64::max);
        let mut segments: Vec<MediaSegment> = self
            .entries
            .iter()
            .map(|e| MediaSegment {
                uri: e.file_name.clone(),
                duration: e.duration as f32,
                ..Default::default()
            })
            .collect();
        // m3u8-rs leaves out a zero EXT-X-MEDIA-SEQUENCE (0 is the default); some packagers'
        // validators want it spelled out, so it rides on the first segment, before its EXTINF.
        if let Some(first) = segments.first_mut() {
            first.unknown_tags.push(ExtTag {
                tag: "X-MEDIA-SEQUENCE".into(),
                rest: Some("0".into()),
            });
        }
        m3u8_rs::MediaPlaylist {
            version: Some(VERSION),
            // EXTINF rounded to the nearest integer must not exceed it (RFC 8216 §4.3.3.1).
            target_duration: longest.round().max(1.0) as u64,
            media_sequence: 0,
            playlist_type: Some(MediaPlaylistType::Vod),
            end_list: true,
            segments,
            ..Default::default()
        }
    }

    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let mut text = Vec::new();
        set_precision();
        self.to_m3u8()
            .write_to(&mut text)
            .map_err(|e| JobError::internal(format!("media playlist: {e}")))?;
        write_atomic(&dir.join(self.file_name()), &text)
    }
}

/// EXTINF with millisecond precision (m3u8-rs' setting is process-wide).
fn set_precision() {
    m3u8_rs::WRITE_OPT_FLOAT_PRECISION.store(3, std::sync::atomic::Ordering::Relaxed);
}

pub fn master(renditions: &[RenditionOutcome]) -> MasterPlaylist {
    MasterPlaylist {
        version: Some(VERSION),
        // Every segment starts with an IDR and carries its own PAT/PMT and SPS/PPS.
        independent_segments: true,
        variants: renditions
            .iter()
            .map(|r| VariantStream {
                uri: r.playlist.clone(),
                bandwidth: r.bandwidth,
                average_bandwidth: Some(r.average_bandwidth),
                codecs: Some(r.codecs.clone()),
                resolution: Some(Resolution {
                    width: r.width as u64,
                    height: r.height as u64,
                }),
                frame_rate: Some((r.frame_rate * 1000.0).round() / 1000.0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn write_master(dir: &Path, renditions: &[RenditionOutcome]) -> Result<()> {
    let mut text = Vec::new();
    set_precision();
    master(renditions)
        .write_to(&mut text)
        .map_err(|e| JobError::internal(format!("master playlist: {e}")))?;
    write_atomic(&dir.join(MASTER), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_playlist_is_a_complete_vod_playlist() {
        let p = MediaPlaylist {
            name: "360p".into(),
            entries: vec![
                Entry {
                    file_name: "360p_000.ts".into(),
                    duration: 6.0,
                    bytes: 600_000,
                },
                Entry {
                    file_name: "360p_001.ts".into(),
                    duration: 2.04,
                    bytes: 100_000,
                },
            ],
        };
        let mut out = Vec::new();
        set_precision();
        p.to_m3u8().write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:6.000,\n360p_000.ts\n#EXTINF:2.040,\n360p_001.ts\n\
             #EXT-X-ENDLIST\n"
        );
        assert_eq!(p.peak_bandwidth(), 800_000);
        assert_eq!(
            p.average_bandwidth(),
            (700_000.0f64 * 8.0 / 8.04).ceil() as u64
        );
    }
}
