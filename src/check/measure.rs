//! Fills the [`Ladder`] model from disk: playlists parsed with m3u8-rs, each segment opened on
//! its own through the FFmpeg libraries (in-process, nothing spawned), as a player that joins
//! the stream there would open it: MPEG-TS alone, fMP4 behind its EXT-X-MAP init section, a
//! byte range through libavformat's `subfile` protocol.

use std::path::{Component, Path, PathBuf};

use ffmpeg::{codec, format, frame, media, Packet, Rational};
use ffmpeg_next as ffmpeg;
use m3u8_rs::{MediaPlaylistType, Playlist};

use super::model::{
    AudioRendition, AudioTrack, IFrameVariant, Ladder, Master, Media, Segment, SegmentMedia,
    Variant, VideoTrack,
};
use crate::media::ffi;

/// Protocols a segment URL may use: files, byte ranges of files, an init section + a segment.
const PROTOCOL_WHITELIST: &str = "file,subfile,concat";
/// Containers HLS segments come in (mov is fMP4's demuxer; aac, ac3, eac3, mp3 packed audio).
const FORMAT_WHITELIST: &str = "mpegts,mov,mp4,m4a,3gp,3g2,mj2,aac,ac3,eac3,mp3";

/// Why a ladder could not be measured at all (its master playlist is missing or is not one).
pub type MeasureError = String;

/// Reads the master playlist at `master` and everything it names.
pub fn measure(master: &Path) -> Result<Ladder, MeasureError> {
    let bytes = std::fs::read(master).map_err(|e| format!("reading {}: {e}", master.display()))?;
    let parsed = m3u8_rs::parse_playlist_res(&bytes)
        .map_err(|_| format!("{} is not an HLS playlist", master.display()))?;
    let Playlist::MasterPlaylist(pl) = parsed else {
        return Err(format!(
            "{} is a media playlist; check reads a multivariant (master) playlist",
            master.display()
        ));
    };
    let root = match master.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut ladder = Ladder {
        master: Master {
            independent_segments: pl.independent_segments,
            ..Default::default()
        },
        ..Default::default()
    };
    for v in &pl.variants {
        let resolution = v.resolution.map(|r| (r.width, r.height));
        if v.is_i_frame {
            ladder.master.iframe_variants.push(IFrameVariant {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                codecs: v.codecs.clone(),
                resolution,
            });
        } else {
            ladder.master.variants.push(Variant {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: v.average_bandwidth,
                codecs: v.codecs.clone(),
                resolution,
                frame_rate: v.frame_rate,
                audio_group: v.audio.clone(),
            });
        }
    }
    for a in &pl.alternatives {
        if matches!(a.media_type, m3u8_rs::AlternativeMediaType::Audio) {
            ladder.master.audio.push(AudioRendition {
                group: a.group_id.clone(),
                name: a.name.clone(),
                uri: a.uri.clone(),
                language: a.language.clone(),
            });
        }
    }
    let mut uris: Vec<(String, bool)> = Vec::new();
    let named = ladder
        .master
        .variants
        .iter()
        .map(|v| (v.uri.clone(), false))
        .chain(
            ladder
                .master
                .audio
                .iter()
                .filter_map(|a| Some((a.uri.clone()?, false))),
        )
        .chain(
            ladder
                .master
                .iframe_variants
                .iter()
                .map(|v| (v.uri.clone(), true)),
        );
    for (uri, iframe) in named {
        if !uris.iter().any(|(u, _)| *u == uri) {
            uris.push((uri, iframe));
        }
    }
    for (uri, iframe) in uris {
        match read_media(&root, &uri, iframe, &mut ladder.unreadable) {
            Ok(m) => ladder.media.push(m),
            Err(e) => ladder.unreadable.push((uri, e)),
        }
    }
    Ok(ladder)
}

/// `uri` as a path under `root`: relative URIs and `file:` URLs only, never above `root` (a
/// playlist from elsewhere does not get to name any file on this machine).
fn resolve(root: &Path, base: &Path, uri: &str) -> Result<PathBuf, String> {
    let path = match uri.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if uri.contains("://") => return Err(format!("{uri}: only local files are read")),
        None => base.join(uri),
    };
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let root_abs = std::path::absolute(root).map_err(|e| e.to_string())?;
    let abs = std::path::absolute(&clean).map_err(|e| e.to_string())?;
    if !abs.starts_with(&root_abs) {
        return Err(format!("{uri}: outside the ladder's folder"));
    }
    Ok(abs)
}

fn read_media(
    root: &Path,
    uri: &str,
    iframe: bool,
    unreadable: &mut Vec<(String, String)>,
) -> Result<Media, String> {
    let path = resolve(root, root, uri)?;
    let bytes = std::fs::read(&path).map_err(|e| format!("reading: {e}"))?;
    let parsed =
        m3u8_rs::parse_playlist_res(&bytes).map_err(|_| "not an HLS playlist".to_string())?;
    let Playlist::MediaPlaylist(pl) = parsed else {
        return Err("a multivariant playlist where a media playlist belongs".into());
    };
    let base = path.parent().unwrap_or(root).to_path_buf();
    let mut media = Media {
        uri: uri.to_string(),
        target_duration: pl.target_duration,
        playlist_type: pl.playlist_type.as_ref().map(|t| match t {
            MediaPlaylistType::Vod => "VOD".to_string(),
            MediaPlaylistType::Event => "EVENT".to_string(),
            MediaPlaylistType::Other(o) => o.clone(),
        }),
        end_list: pl.end_list,
        i_frames_only: pl.i_frames_only,
        segments: Vec::new(),
    };
    // EXT-X-MAP applies to every segment after it; m3u8-rs attaches it to the first only.
    let mut init: Option<String> = None;
    // A byte range without an offset continues where the previous one of the file ended.
    let mut next_offset: (String, u64) = (String::new(), 0);
    for s in &pl.segments {
        if let Some(map) = &s.map {
            if map.byte_range.is_some() {
                unreadable.push((
                    format!("{uri}: EXT-X-MAP {}", map.uri),
                    "a byte range of an init section is not supported".into(),
                ));
            }
            init = Some(url_of(&resolve(root, &base, &map.uri)?));
        }
        let seg_path = match resolve(root, &base, &s.uri) {
            Ok(p) => p,
            Err(e) => {
                unreadable.push((format!("{uri}: {}", s.uri), e));
                continue;
            }
        };
        let (bytes, url) = match &s.byte_range {
            Some(r) => {
                let start = r.offset.unwrap_or(if next_offset.0 == s.uri {
                    next_offset.1
                } else {
                    0
                });
                next_offset = (s.uri.clone(), start + r.length);
                let url = format!(
                    "subfile,,start,{start},end,{},,:{}",
                    start + r.length,
                    url_of(&seg_path)
                );
                (r.length, url)
            }
            None => match std::fs::metadata(&seg_path) {
                Ok(m) => (m.len(), url_of(&seg_path)),
                Err(e) => {
                    unreadable.push((format!("{uri}: {}", s.uri), e.to_string()));
                    continue;
                }
            },
        };
        let measured = if iframe {
            None
        } else {
            // A TS segment is read as TS, as a player reads it (its playlist says so), not
            // as whatever the probe guesses from its first bytes.
            let (url, format) = match &init {
                Some(i) => (format!("concat:{i}|{url}"), None),
                None if s.uri.ends_with(".ts") => (url, Some("mpegts")),
                None => (url, None),
            };
            match probe_segment(&url, format) {
                Ok(m) => Some(m),
                Err(e) => {
                    unreadable.push((format!("{uri}: {}", s.uri), e));
                    None
                }
            }
        };
        media.segments.push(Segment {
            uri: s.uri.clone(),
            duration: f64::from(s.duration),
            bytes,
            media: measured,
        });
    }
    Ok(media)
}

fn url_of(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

/// Opens one segment and measures its first video and audio stream.
fn probe_segment(url: &str, format: Option<&str>) -> Result<SegmentMedia, String> {
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("protocol_whitelist", PROTOCOL_WHITELIST);
    opts.set("format_whitelist", FORMAT_WHITELIST);
    let mut input = match format.and_then(crate::media::ffi::input_format) {
        Some(demuxer) => format::open_with(&url, &format::format::Format::Input(demuxer), opts)
            .map(format::context::Context::input),
        None => format::input_with_dictionary(&url, opts),
    }
    .map_err(|e| e.to_string())?;
    let is_mp4 = input.format().name().contains("mp4");
    let video_index = input.streams().best(media::Type::Video).map(|s| s.index());
    let audio_index = input.streams().best(media::Type::Audio).map(|s| s.index());

    let mut video = match video_index {
        Some(i) => Some(VideoProbe::new(&input, i, is_mp4)?),
        None => None,
    };
    let mut audio = match audio_index {
        Some(i) => Some(AudioProbe::new(&input, i)?),
        None => None,
    };
    let mut read_errors = 0;
    loop {
        // A fresh packet per read (rust-ffmpeg issue #260).
        let mut p = Packet::empty();
        match p.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => {
                read_errors += 1;
                if read_errors > 100 {
                    return Err(format!("reading packets: {e}"));
                }
                continue;
            }
        }
        if Some(p.stream()) == video_index {
            if let Some(v) = video.as_mut() {
                v.push(&p);
            }
        } else if Some(p.stream()) == audio_index {
            if let Some(a) = audio.as_mut() {
                a.push(&p);
            }
        }
    }
    Ok(SegmentMedia {
        video: video.map(VideoProbe::finish),
        audio: audio.and_then(AudioProbe::finish),
    })
}

/// Video timing, key frames, and the first picture decoded by a fresh decoder.
struct VideoProbe {
    track: VideoTrack,
    time_base: Rational,
    hevc: bool,
    /// NAL length size of length-prefixed (mp4) samples; None for Annex B.
    nal_length: Option<usize>,
    first_packet: bool,
    min_pts: Option<i64>,
    max_end: Option<i64>,
    frame_ticks: i64,
    decoder: Option<ffmpeg::decoder::Video>,
    /// pts of the first picture the decoder gave, and whether it was a key frame.
    first_picture: Option<(Option<i64>, bool)>,
}

impl VideoProbe {
    fn new(input: &format::context::Input, index: usize, is_mp4: bool) -> Result<Self, String> {
        let stream = input.stream(index).ok_or("no video stream")?;
        let params = stream.parameters();
        let details = ffi::codec_details(&params);
        let id = params.id();
        let time_base = stream.time_base();
        let rate = ffi::guess_frame_rate(input, index);
        let frame_duration = if rate.numerator() > 0 && rate.denominator() > 0 {
            1.0 / f64::from(rate)
        } else {
            0.0
        };
        let frame_ticks = (frame_duration / f64::from(time_base)).round().max(1.0) as i64;
        let decoder = codec::context::Context::from_parameters(params)
            .and_then(|c| c.decoder().video())
            .map_err(|e| format!("video decoder: {e}"))?;
        let hevc = id == codec::Id::HEVC;
        let fourcc = (details.tag != 0 && is_mp4)
            .then(|| String::from_utf8_lossy(&details.tag.to_le_bytes()).into_owned());
        let avcc = details.extradata.first() == Some(&1);
        let codec = match id {
            codec::Id::H264 if avcc && details.extradata.len() >= 4 => format!(
                "avc1.{:02x}{:02x}{:02x}",
                details.extradata[1], details.extradata[2], details.extradata[3]
            ),
            codec::Id::H264 => {
                crate::media::rendition::avc_codec_string(&details.extradata).unwrap_or_default()
            }
            codec::Id::HEVC => fourcc.clone().unwrap_or_else(|| "hvc1".into()),
            other => format!("{other:?}").to_ascii_lowercase(),
        };
        let nal_length = if avcc && details.extradata.len() > 4 {
            Some(usize::from(details.extradata[4] & 3) + 1)
        } else if hevc && details.extradata.len() > 22 && details.extradata[0] == 1 {
            Some(usize::from(details.extradata[21] & 3) + 1)
        } else {
            None
        };
        Ok(VideoProbe {
            track: VideoTrack {
                codec,
                sample_entry: fourcc,
                width: decoder.width(),
                height: decoder.height(),
                frame_duration,
                ..Default::default()
            },
            time_base,
            hevc,
            nal_length,
            first_packet: true,
            min_pts: None,
            max_end: None,
            frame_ticks,
            decoder: Some(decoder),
            first_picture: None,
        })
    }

    fn push(&mut self, p: &Packet) {
        let Some(pts) = p.pts().or(p.dts()) else {
            return;
        };
        if self.first_packet {
            self.first_packet = false;
            if let Some(data) = p.data() {
                self.track.starts_with_idr = self.has_idr(data);
                if self.track.codec.is_empty() {
                    self.track.codec =
                        crate::media::rendition::avc_codec_string(data).unwrap_or_default();
                }
            }
        }
        self.min_pts = Some(self.min_pts.map_or(pts, |m| m.min(pts)));
        let duration = if p.duration() > 0 {
            p.duration()
        } else {
            self.frame_ticks
        };
        self.max_end = Some(
            self.max_end
                .map_or(pts + duration, |m| m.max(pts + duration)),
        );
        if p.is_key() {
            self.track.keyframes.push(secs(pts, self.time_base));
        }
        if self.first_picture.is_none() {
            self.decode(Some(p));
        }
    }

    /// Feeds the decoder until its first picture comes out (`None` drains it).
    fn decode(&mut self, p: Option<&Packet>) {
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        let sent = match p {
            Some(p) => dec.send_packet(p),
            None => dec.send_eof(),
        };
        if sent.is_err() && p.is_none() {
            return;
        }
        let mut picture = frame::Video::empty();
        if dec.receive_frame(&mut picture).is_ok() {
            self.first_picture = Some((picture.pts().or(picture.timestamp()), picture.is_key()));
            // One picture is all it takes: the rest of the segment is only demuxed.
            self.decoder = None;
        }
    }

    /// Whether an access unit holds an IDR picture (H.264 NAL type 5; HEVC IDR_W_RADL or
    /// IDR_N_LP), Annex B or length-prefixed.
    fn has_idr(&self, data: &[u8]) -> bool {
        let is_idr = |header: u8| {
            if self.hevc {
                matches!((header >> 1) & 0x3f, 19 | 20)
            } else {
                header & 0x1f == 5
            }
        };
        match self.nal_length {
            Some(n) => {
                let mut i = 0;
                while i + n < data.len() {
                    let len = data[i..i + n]
                        .iter()
                        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                    if is_idr(data[i + n]) {
                        return true;
                    }
                    i += n + len;
                }
                false
            }
            None => {
                let mut i = 0;
                while i + 3 < data.len() {
                    if data[i..].starts_with(&[0, 0, 1]) {
                        if is_idr(data[i + 3]) {
                            return true;
                        }
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
                false
            }
        }
    }

    fn finish(mut self) -> VideoTrack {
        if self.first_picture.is_none() {
            self.decode(None);
        }
        let tb = self.time_base;
        self.track.start = self.min_pts.map(|t| secs(t, tb)).unwrap_or(0.0);
        self.track.end = self.max_end.map(|t| secs(t, tb)).unwrap_or(0.0);
        self.track.decodes_alone = matches!(
            self.first_picture,
            Some((Some(pts), true)) if Some(pts) == self.min_pts
        );
        self.track.keyframes.sort_by(f64::total_cmp);
        self.track
    }
}

struct AudioProbe {
    track: AudioTrack,
    time_base: Rational,
    min_pts: Option<i64>,
    max_end: Option<i64>,
}

impl AudioProbe {
    fn new(input: &format::context::Input, index: usize) -> Result<Self, String> {
        let stream = input.stream(index).ok_or("no audio stream")?;
        let params = stream.parameters();
        let details = ffi::codec_details(&params);
        let id = params.id();
        let decoder = codec::context::Context::from_parameters(params)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| format!("audio decoder: {e}"))?;
        let codec = match id {
            codec::Id::AAC => format!("mp4a.40.{}", aac_object_type(&details)),
            codec::Id::MP3 => "mp4a.40.34".into(),
            codec::Id::AC3 => "ac-3".into(),
            codec::Id::EAC3 => "ec-3".into(),
            other => format!("{other:?}").to_ascii_lowercase(),
        };
        Ok(AudioProbe {
            track: AudioTrack {
                codec,
                is_aac: id == codec::Id::AAC,
                channels: decoder.channels(),
                sample_rate: decoder.rate(),
                ..Default::default()
            },
            time_base: stream.time_base(),
            min_pts: None,
            max_end: None,
        })
    }

    fn push(&mut self, p: &Packet) {
        let Some(pts) = p.pts().or(p.dts()) else {
            return;
        };
        self.min_pts = Some(self.min_pts.map_or(pts, |m| m.min(pts)));
        let end = pts + p.duration().max(0);
        self.max_end = Some(self.max_end.map_or(end, |m| m.max(end)));
    }

    fn finish(mut self) -> Option<AudioTrack> {
        let tb = self.time_base;
        self.track.start = secs(self.min_pts?, tb);
        self.track.end = self
            .max_end
            .map(|t| secs(t, tb))
            .unwrap_or(self.track.start);
        Some(self.track)
    }
}

/// The MPEG-4 audio object type of an AAC stream (RFC 6381 `mp4a.40.<type>`): from the
/// profile FFmpeg reports, else the AudioSpecificConfig, else 2 (AAC-LC, what encoders make).
fn aac_object_type(d: &ffi::CodecDetails) -> u8 {
    match d.profile {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 4,
        4 => 5,
        28 => 29,
        _ => d
            .extradata
            .first()
            .map(|b| b >> 3)
            .filter(|t| *t > 0)
            .unwrap_or(2),
    }
}
