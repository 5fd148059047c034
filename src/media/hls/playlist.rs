//! Playlists as values (m3u8-rs), written atomically: one VOD media playlist per rendition
//! (video, and the audio rendition when audio is its own), one I-frame playlist per video
//! rendition, and the master playlist whose attributes are measured from what was written.

use std::path::Path;

use ffmpeg_next::Rational;
use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, ByteRange, Map, MasterPlaylist, MediaPlaylistType,
    MediaSegment, Resolution, VariantStream,
};

use crate::error::{JobError, Result};
use crate::media::hls::bitrate::{self, Sized};
use crate::media::hls::{IFrame, Segment};
use crate::media::output::write_atomic;
use crate::media::{AudioOutcome, RenditionOutcome};

pub const MASTER: &str = "master.m3u8";
/// EXT-X-VERSION 3: floating-point EXTINF durations.
const VERSION: usize = 3;
/// EXT-X-VERSION 4: EXT-X-BYTERANGE and EXT-X-I-FRAMES-ONLY (RFC 8216 §7).
const IFRAME_VERSION: usize = 4;
/// EXT-X-VERSION 6: EXT-X-MAP in a playlist that is not I-frames only (fMP4 segments).
const MAP_VERSION: usize = 6;
/// The audio rendition's playlist and segment names (`audio.m3u8`, `audio_000.ts`), and the
/// GROUP-ID every variant names.
pub const AUDIO_NAME: &str = "audio";
pub const AUDIO_GROUP: &str = "audio";

/// One segment as listed: its file, exact duration and size (of its byte range, if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub file_name: String,
    pub duration: f64,
    pub bytes: u64,
    /// Where in the file the entry starts (EXT-X-BYTERANGE `bytes@offset`); `None`: all of it.
    pub offset: Option<u64>,
}

/// A media playlist, measured from the written segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub name: String,
    pub entries: Vec<Entry>,
    /// An I-frame playlist (EXT-X-I-FRAMES-ONLY, entries are byte ranges of keyframes).
    pub i_frames_only: bool,
    /// The init segment every entry needs (fMP4: EXT-X-MAP).
    pub init: Option<String>,
}

impl MediaPlaylist {
    /// Durations are the segmenter's: frame counts at the constant output rate (exact, and the
    /// same in every rendition since all share the cut grid), or sample counts for audio.
    pub fn measure(
        dir: &Path,
        name: &str,
        segments: &[Segment],
        init: Option<String>,
    ) -> Result<Self> {
        let entries = segments
            .iter()
            .map(|s| {
                let path = dir.join(&s.file_name);
                let bytes = std::fs::metadata(&path)
                    .map_err(|e| JobError::output_io(format!("reading {}: {e}", path.display())))?
                    .len();
                Ok(Entry {
                    file_name: s.file_name.clone(),
                    duration: s.duration,
                    bytes,
                    offset: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MediaPlaylist {
            name: name.to_string(),
            entries,
            i_frames_only: false,
            init,
        })
    }

    /// The I-frame playlist of a rendition named `name`: each keyframe's byte range, lasting
    /// until the next keyframe (the last one until the end of the video).
    pub fn iframes(
        name: &str,
        segments: &[Segment],
        iframes: &[IFrame],
        frame_rate: Rational,
        init: Option<String>,
    ) -> MediaPlaylist {
        let fps = f64::from(frame_rate);
        let end = segments.last().map(|s| s.end_frame).unwrap_or(0);
        let entries = iframes
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let next = iframes.get(i + 1).map(|n| n.frame).unwrap_or(end);
                let segment = segments.get(f.segment)?;
                Some(Entry {
                    file_name: segment.file_name.clone(),
                    duration: next.saturating_sub(f.frame) as f64 / fps,
                    bytes: f.length,
                    offset: Some(f.offset),
                })
            })
            .collect();
        MediaPlaylist {
            name: iframe_playlist_name(name),
            entries,
            i_frames_only: true,
            init,
        }
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

    /// EXT-X-TARGETDURATION: EXTINF rounded to the nearest integer must not exceed it
    /// (RFC 8216 §4.3.3.1).
    pub fn target_duration(&self) -> u64 {
        let longest = self.entries.iter().map(|e| e.duration).fold(0.0, f64::max);
        longest.round().max(1.0) as u64
    }

    fn sized(&self) -> Vec<Sized> {
        self.entries
            .iter()
            .map(|e| Sized {
                duration: e.duration,
                bytes: e.bytes,
            })
            .collect()
    }

    /// The peak segment bit rate (RFC 8216 §4.3.4.2), transport overhead included.
    pub fn peak_bandwidth(&self) -> u64 {
        bitrate::peak(&self.sized(), self.target_duration() as f64)
    }

    /// The average segment bit rate: all bytes over the whole duration.
    pub fn average_bandwidth(&self) -> u64 {
        bitrate::average(&self.sized())
    }

    pub fn to_m3u8(&self) -> m3u8_rs::MediaPlaylist {
        let mut segments: Vec<MediaSegment> = self
            .entries
            .iter()
            .map(|e| MediaSegment {
                uri: e.file_name.clone(),
                duration: e.duration as f32,
                byte_range: e.offset.map(|offset| ByteRange {
                    length: e.bytes,
                    offset: Some(offset),
                }),
                ..Default::default()
            })
            .collect();
        if let (Some(init), Some(first)) = (&self.init, segments.first_mut()) {
            first.map = Some(Map {
                uri: init.clone(),
                ..Default::default()
            });
        }
        let version = match (&self.init, self.i_frames_only) {
            (Some(_), _) => MAP_VERSION,
            (None, true) => IFRAME_VERSION,
            (None, false) => VERSION,
        };
        m3u8_rs::MediaPlaylist {
            version: Some(version),
            target_duration: self.target_duration(),
            media_sequence: 0,
            playlist_type: Some(MediaPlaylistType::Vod),
            i_frames_only: self.i_frames_only,
            end_list: true,
            segments,
            ..Default::default()
        }
    }

    /// The playlist's text. m3u8-rs leaves out a zero EXT-X-MEDIA-SEQUENCE (0 is the
    /// default); some packagers' validators want it spelled out, so it goes before the first
    /// segment's tags (it must precede every segment, RFC 8216 §4.3.3.2).
    pub fn to_text(&self) -> Result<Vec<u8>> {
        let mut text = Vec::new();
        set_precision();
        self.to_m3u8()
            .write_to(&mut text)
            .map_err(|e| JobError::internal(format!("media playlist: {e}")))?;
        let text = String::from_utf8(text)
            .map_err(|e| JobError::internal(format!("media playlist: {e}")))?;
        let first_segment = ["\n#EXT-X-MAP", "\n#EXT-X-BYTERANGE", "\n#EXTINF"]
            .iter()
            .filter_map(|tag| text.find(tag))
            .min();
        let text = match first_segment {
            Some(at) => format!("{}\n#EXT-X-MEDIA-SEQUENCE:0{}", &text[..at], &text[at..]),
            None => text,
        };
        Ok(text.into_bytes())
    }

    pub fn write_to(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(self.file_name()), &self.to_text()?)
    }
}

/// `<name>_iframes`: the I-frame playlist of rendition `name`.
pub fn iframe_playlist_name(name: &str) -> String {
    format!("{name}_iframes")
}

/// EXTINF with millisecond precision (m3u8-rs' setting is process-wide).
fn set_precision() {
    m3u8_rs::WRITE_OPT_FLOAT_PRECISION.store(3, std::sync::atomic::Ordering::Relaxed);
}

/// LANGUAGE and NAME of the audio rendition from the source stream's language tag: RFC 5646
/// wants the shortest code (ISO 639-1 `en` for ISO 639-2 `eng`), `und` when the source does
/// not say (or says `und`).
pub fn audio_language(tag: Option<&str>) -> (String, String) {
    // The languages most uploads are tagged with; other valid codes pass through as given.
    const KNOWN: &[(&str, &str, &str, &str)] = &[
        ("eng", "en", "en", "English"),
        ("fre", "fra", "fr", "Français"),
        ("ger", "deu", "de", "Deutsch"),
        ("spa", "spa", "es", "Español"),
        ("ita", "ita", "it", "Italiano"),
        ("por", "por", "pt", "Português"),
        ("dut", "nld", "nl", "Nederlands"),
        ("rus", "rus", "ru", "Русский"),
        ("jpn", "jpn", "ja", "日本語"),
        ("chi", "zho", "zh", "中文"),
        ("kor", "kor", "ko", "한국어"),
        ("ara", "ara", "ar", "العربية"),
        ("hin", "hin", "hi", "हिन्दी"),
        ("pol", "pol", "pl", "Polski"),
        ("tur", "tur", "tr", "Türkçe"),
        ("swe", "swe", "sv", "Svenska"),
    ];
    let tag = tag
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if let Some(&(_, _, short, name)) = KNOWN
        .iter()
        .find(|(b, t, s, _)| tag == *b || tag == *t || tag == *s)
    {
        return (short.to_string(), name.to_string());
    }
    let plausible = (2..=3).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_lowercase());
    if plausible && tag != "und" && tag != "mul" && tag != "zxx" {
        (tag.clone(), tag)
    } else {
        ("und".to_string(), "Audio".to_string())
    }
}

pub fn master(renditions: &[RenditionOutcome], audio: Option<&AudioOutcome>) -> MasterPlaylist {
    let alternatives = audio
        .map(|a| AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(a.playlist.clone()),
            group_id: a.group_id.clone(),
            language: Some(a.language.clone()),
            name: a.name.clone(),
            default: true,
            autoselect: true,
            channels: Some(a.channels.to_string()),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let variants = renditions.iter().map(|r| VariantStream {
        uri: r.playlist.clone(),
        bandwidth: r.bandwidth,
        average_bandwidth: Some(r.average_bandwidth),
        codecs: Some(r.codecs.clone()),
        resolution: Some(Resolution {
            width: r.width as u64,
            height: r.height as u64,
        }),
        frame_rate: Some((r.frame_rate * 1000.0).round() / 1000.0),
        audio: audio.map(|a| a.group_id.clone()),
        ..Default::default()
    });
    let iframe_variants = renditions.iter().filter_map(|r| {
        let i = r.iframes.as_ref()?;
        Some(VariantStream {
            is_i_frame: true,
            uri: i.playlist.clone(),
            bandwidth: i.bandwidth,
            average_bandwidth: Some(i.average_bandwidth),
            codecs: Some(i.codecs.clone()),
            resolution: Some(Resolution {
                width: r.width as u64,
                height: r.height as u64,
            }),
            ..Default::default()
        })
    });
    MasterPlaylist {
        version: Some(VERSION),
        // Every segment starts with an IDR and carries its own PAT/PMT and SPS/PPS.
        independent_segments: true,
        alternatives,
        variants: variants.chain(iframe_variants).collect(),
        ..Default::default()
    }
}

pub fn write_master(
    dir: &Path,
    renditions: &[RenditionOutcome],
    audio: Option<&AudioOutcome>,
) -> Result<()> {
    let mut text = Vec::new();
    set_precision();
    master(renditions, audio)
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
                    offset: None,
                },
                Entry {
                    file_name: "360p_001.ts".into(),
                    duration: 2.04,
                    bytes: 100_000,
                    offset: None,
                },
            ],
            i_frames_only: false,
            init: None,
        };
        assert_eq!(
            String::from_utf8(p.to_text().unwrap()).unwrap(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:6.000,\n360p_000.ts\n#EXTINF:2.040,\n360p_001.ts\n\
             #EXT-X-ENDLIST\n"
        );
        // Target 6: runs of 3 to 9 s; 6 s + 2.04 s = 8.04 s is one, at a lower rate.
        assert_eq!(p.peak_bandwidth(), 800_000);
        assert_eq!(
            p.average_bandwidth(),
            (700_000.0f64 * 8.0 / 8.04).ceil() as u64
        );
    }

    #[test]
    fn iframe_playlist_lists_each_keyframe_as_a_byte_range_until_the_next() {
        let segments = vec![
            Segment {
                file_name: "360p_000.ts".into(),
                start_frame: 0,
                end_frame: 100,
                duration: 4.0,
            },
            Segment {
                file_name: "360p_001.ts".into(),
                start_frame: 100,
                end_frame: 130,
                duration: 1.2,
            },
        ];
        let iframes = [
            IFrame {
                segment: 0,
                offset: 376,
                length: 18_800,
                frame: 0,
            },
            IFrame {
                segment: 0,
                offset: 94_000,
                length: 9_400,
                frame: 50,
            },
            IFrame {
                segment: 1,
                offset: 376,
                length: 3_760,
                frame: 100,
            },
        ];
        let p = MediaPlaylist::iframes("360p", &segments, &iframes, Rational::new(25, 1), None);
        assert_eq!(p.file_name(), "360p_iframes.m3u8");
        assert_eq!(
            String::from_utf8(p.to_text().unwrap()).unwrap(),
            "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-I-FRAMES-ONLY\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-BYTERANGE:18800@376\n#EXTINF:2.000,\n360p_000.ts\n\
             #EXT-X-BYTERANGE:9400@94000\n#EXTINF:2.000,\n360p_000.ts\n\
             #EXT-X-BYTERANGE:3760@376\n#EXTINF:1.200,\n360p_001.ts\n#EXT-X-ENDLIST\n"
        );
        // Target 2: runs of 1 to 3 s; each keyframe alone, the last (1.2 s) too.
        assert_eq!(p.peak_bandwidth(), 75_200);
        let parsed = m3u8_rs::parse_media_playlist_res(&p.to_text().unwrap()).unwrap();
        assert!(parsed.i_frames_only);
        assert_eq!(
            parsed.segments[1].byte_range,
            Some(ByteRange {
                length: 9_400,
                offset: Some(94_000)
            })
        );
    }

    #[test]
    fn fmp4_playlists_name_their_init_segment_at_version_6() {
        let p = MediaPlaylist {
            name: "audio".into(),
            entries: vec![Entry {
                file_name: "audio_000.m4s".into(),
                duration: 2.005,
                bytes: 32_000,
                offset: None,
            }],
            i_frames_only: false,
            init: Some("audio_init.mp4".into()),
        };
        assert_eq!(
            String::from_utf8(p.to_text().unwrap()).unwrap(),
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"audio_init.mp4\"\n\
             #EXTINF:2.005,\naudio_000.m4s\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn audio_language_is_the_shortest_tag_or_und() {
        assert_eq!(audio_language(Some("eng")), ("en".into(), "English".into()));
        assert_eq!(audio_language(Some("ger")).0, "de");
        assert_eq!(audio_language(Some("deu")).0, "de");
        assert_eq!(audio_language(Some("fin")).0, "fin");
        assert_eq!(audio_language(None), ("und".into(), "Audio".into()));
        assert_eq!(audio_language(Some("und")).0, "und");
        assert_eq!(audio_language(Some("x\"y")).0, "und");
    }
}
