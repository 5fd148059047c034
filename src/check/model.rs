//! The measured model of a ladder: what the playlists declare, next to what the segments hold.
//! `measure` fills it from disk; the rules only read it, so they are tested on values.

use serde::Serialize;

/// One HLS VOD ladder as read: the multivariant (master) playlist and every media playlist it
/// names, each segment measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ladder {
    pub master: Master,
    /// Media playlists by the URI the master gives them.
    pub media: Vec<Media>,
    /// Playlists or segments that could not be read or parsed: `(what, why)`.
    pub unreadable: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Master {
    pub independent_segments: bool,
    pub variants: Vec<Variant>,
    pub iframe_variants: Vec<IFrameVariant>,
    pub audio: Vec<AudioRendition>,
}

/// An `EXT-X-STREAM-INF`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub codecs: Option<String>,
    pub resolution: Option<(u64, u64)>,
    pub frame_rate: Option<f64>,
    /// Its `AUDIO` group.
    pub audio_group: Option<String>,
}

/// An `EXT-X-I-FRAME-STREAM-INF`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IFrameVariant {
    pub uri: String,
    pub bandwidth: u64,
    pub codecs: Option<String>,
    pub resolution: Option<(u64, u64)>,
}

/// An `EXT-X-MEDIA:TYPE=AUDIO`; without a URI its audio is muxed into the variants.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AudioRendition {
    pub group: String,
    pub name: String,
    pub uri: Option<String>,
    pub language: Option<String>,
}

/// A media playlist and its segments.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Media {
    pub uri: String,
    pub target_duration: u64,
    /// `VOD`, `EVENT` or absent.
    pub playlist_type: Option<String>,
    pub end_list: bool,
    pub i_frames_only: bool,
    pub segments: Vec<Segment>,
}

/// One media segment: declared duration and size, and what its media holds (not measured for
/// I-frame playlists, whose segments are byte ranges of single frames).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Segment {
    pub uri: String,
    /// EXTINF, seconds.
    pub duration: f64,
    /// Bytes (the byte range's length when there is one; the init section not included).
    pub bytes: u64,
    pub media: Option<SegmentMedia>,
}

/// What the FFmpeg libraries found in one segment, opened on its own as a player joining there
/// would (with its init section for fMP4).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SegmentMedia {
    pub video: Option<VideoTrack>,
    pub audio: Option<AudioTrack>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoTrack {
    /// RFC 6381 name of what the bitstream carries, e.g. `avc1.64001f` (`hvc1`, `hev1` for
    /// HEVC without profile details).
    pub codec: String,
    /// The sample entry's four-character code in fMP4 (`avc1`, `avc3`, …); None in MPEG-TS.
    pub sample_entry: Option<String>,
    pub width: u32,
    pub height: u32,
    /// One frame, seconds.
    pub frame_duration: f64,
    /// Presentation time of the first frame, seconds, on the stream's own clock.
    pub start: f64,
    /// Presentation end (last frame's time + one frame), seconds.
    pub end: f64,
    /// Presentation times of the key frames.
    pub keyframes: Vec<f64>,
    /// The first access unit in decode order holds an IDR picture (H.264 NAL type 5, HEVC IRAP).
    pub starts_with_idr: bool,
    /// A fresh decoder's first picture is a key frame at `start`: the segment decodes on its own.
    pub decodes_alone: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AudioTrack {
    /// RFC 6381 name, e.g. `mp4a.40.2` (AAC-LC), `ac-3`.
    pub codec: String,
    /// AAC of any profile (LC, HE, HEv2).
    pub is_aac: bool,
    pub channels: u16,
    pub sample_rate: u32,
    pub start: f64,
    pub end: f64,
}

impl Ladder {
    pub fn media(&self, uri: &str) -> Option<&Media> {
        self.media.iter().find(|m| m.uri == uri)
    }

    /// The media playlists that variants and audio renditions play (I-frame playlists not
    /// included).
    pub fn playback_media(&self) -> impl Iterator<Item = &Media> {
        self.media
            .iter()
            .filter(|m| !m.i_frames_only && !self.is_iframe_uri(&m.uri))
    }

    fn is_iframe_uri(&self, uri: &str) -> bool {
        self.master.iframe_variants.iter().any(|v| v.uri == uri)
    }

    /// The audio renditions with their own playlist in `group`.
    pub fn audio_playlists(&self, group: &str) -> Vec<&Media> {
        self.master
            .audio
            .iter()
            .filter(|a| a.group == group)
            .filter_map(|a| a.uri.as_deref())
            .filter_map(|u| self.media(u))
            .collect()
    }

    /// One video frame of the ladder (the first video track found), for the "within one frame"
    /// rules; 1/30 s when the ladder has no video.
    pub fn frame_duration(&self) -> f64 {
        self.media
            .iter()
            .flat_map(|m| &m.segments)
            .filter_map(|s| s.media.as_ref()?.video.as_ref())
            .map(|v| v.frame_duration)
            .find(|d| *d > 0.0)
            .unwrap_or(1.0 / 30.0)
    }
}

impl Ladder {
    /// The presentation time of the ladder's first video frame (its earliest video segment).
    pub fn video_start(&self) -> Option<f64> {
        self.playback_media()
            .filter_map(|m| m.video().map(|v| v.start))
            .reduce(f64::min)
    }

    /// The unit "one frame" means for `m`'s timing: a video frame, or for an audio-only playlist
    /// the longer of a video frame and one AAC frame (1024 samples), since audio can only be cut
    /// at whole audio frames and so lands up to one of them off the video grid.
    pub fn time_unit(&self, m: &Media) -> f64 {
        let frame = self.frame_duration();
        if m.has_video() {
            return frame;
        }
        m.audio()
            .filter(|a| a.sample_rate > 0)
            .map(|a| frame.max(1024.0 / f64::from(a.sample_rate)))
            .unwrap_or(frame)
    }
}

impl Media {
    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    pub fn has_video(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.media.as_ref().is_some_and(|m| m.video.is_some()))
    }

    /// The first measured video track (codec, size).
    pub fn video(&self) -> Option<&VideoTrack> {
        self.segments
            .iter()
            .find_map(|s| s.media.as_ref()?.video.as_ref())
    }

    /// The first measured audio track muxed in this playlist's segments.
    pub fn audio(&self) -> Option<&AudioTrack> {
        self.segments
            .iter()
            .find_map(|s| s.media.as_ref()?.audio.as_ref())
    }

    /// Peak segment bit rate (RFC 8216bis §4.4.6.2 / RFC 8216 §4.3.4.2): the largest bit rate
    /// of any run of contiguous segments whose total duration is 0.5–1.5 × the target
    /// duration; the whole playlist when no run qualifies (a playlist shorter than that).
    pub fn peak_bit_rate(&self) -> f64 {
        let target = self.target_duration as f64;
        let (lo, hi) = (0.5 * target, 1.5 * target);
        let mut peak: Option<f64> = None;
        for i in 0..self.segments.len() {
            let (mut bytes, mut secs) = (0u64, 0.0);
            for s in &self.segments[i..] {
                bytes += s.bytes;
                secs += s.duration;
                if secs > hi + 1e-9 {
                    break;
                }
                if secs >= lo - 1e-9 && secs > 0.0 {
                    let rate = bytes as f64 * 8.0 / secs;
                    peak = Some(peak.map_or(rate, |p: f64| p.max(rate)));
                }
            }
        }
        peak.unwrap_or_else(|| self.average_bit_rate())
    }

    /// Average segment bit rate: every segment's bytes over the playlist's duration.
    pub fn average_bit_rate(&self) -> f64 {
        let secs = self.total_duration();
        if secs <= 0.0 {
            return 0.0;
        }
        self.segments.iter().map(|s| s.bytes).sum::<u64>() as f64 * 8.0 / secs
    }
}
