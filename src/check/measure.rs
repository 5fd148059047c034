//! Fills the [`Ladder`] model from a folder or a web server: playlists parsed with m3u8-rs,
//! each segment opened on its own through the FFmpeg libraries (in-process, nothing spawned),
//! as a player that joins the stream there would open it: MPEG-TS alone, fMP4 behind its
//! EXT-X-MAP init section, a byte range through libavformat's `subfile` protocol. Over
//! http(s), playlists and segments are read through libavformat's own protocols (AVIO) too.

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ffmpeg::{codec, format, frame, media, Packet, Rational};
use ffmpeg_next as ffmpeg;
use m3u8_rs::{MediaPlaylistType, Playlist};

use super::model::{
    AudioRendition, AudioTrack, IFrameVariant, Ladder, Master, Media, Segment, SegmentMedia,
    Variant, VideoTrack,
};
use crate::media::ffi;

/// Protocols a local ladder's segments may be read with: files, byte ranges of files, an init
/// section + a segment.
const FILE_PROTOCOLS: &str = "file,subfile,concat";
/// Protocols a ladder on a web server is read with: http and https (TLS over TCP), never a
/// file of this machine.
const WEB_PROTOCOLS: &str = "http,https,tls,tcp";
/// A web server that stops answering fails the read after this long (µs, libavformat's
/// `rw_timeout`).
const WEB_TIMEOUT_MICROSECONDS: &str = "20000000";
/// More than this is not a playlist, whatever a server sends.
const MAX_PLAYLIST_BYTES: u64 = 64 << 20;
/// Nor a segment (a 6 s segment at 50 Mbit/s is under 40 MB).
const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Containers HLS segments come in (mov is fMP4's demuxer; aac, ac3, eac3, mp3 packed audio).
const FORMAT_WHITELIST: &str = "mpegts,mov,mp4,m4a,3gp,3g2,mj2,aac,ac3,eac3,mp3";

/// Why a ladder could not be measured at all (its master playlist is missing or is not one).
pub type MeasureError = String;

/// Where a playlist or a segment is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file of this machine. `root` is the master playlist's folder: the ladder may name
    /// files under it only (a playlist from elsewhere does not get to name any file here).
    File { path: PathBuf, root: PathBuf },
    /// An http(s) URL: only `video-worker check` given one reads the web (jobs never do);
    /// everything the ladder names is then an http(s) URL, relative URIs resolved against
    /// the URL of the playlist that holds them.
    Web(url::Url),
}

impl Location {
    /// The master playlist at `path`; its folder is the ladder's.
    pub fn master_file(path: PathBuf) -> Location {
        let root = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Location::File { path, root }
    }

    /// What `uri`, found in the playlist here, names.
    fn resolve(&self, uri: &str) -> Result<Location, String> {
        match self {
            Location::File { path, root } => {
                let base = path.parent().unwrap_or(root);
                Ok(Location::File {
                    path: resolve_file(root, base, uri)?,
                    root: root.clone(),
                })
            }
            Location::Web(base) => {
                let url = base.join(uri).map_err(|e| format!("{uri}: {e}"))?;
                match url.scheme() {
                    "http" | "https" => Ok(Location::Web(url)),
                    _ => Err(format!(
                        "{uri}: a ladder on the web names http(s) URLs only"
                    )),
                }
            }
        }
    }

    /// libavformat's options for opening it: the protocols it may use (and over the web, a
    /// timeout and a verified certificate).
    fn options(&self) -> ffmpeg::Dictionary<'static> {
        match self {
            Location::File { .. } => {
                let mut opts = ffmpeg::Dictionary::new();
                opts.set("protocol_whitelist", FILE_PROTOCOLS);
                opts
            }
            Location::Web(_) => web_options(),
        }
    }

    /// The URL libavformat opens.
    fn url(&self) -> String {
        match self {
            Location::File { path, .. } => path.to_string_lossy().into_owned(),
            Location::Web(url) => url.to_string(),
        }
    }

    fn open_web(&self) -> Result<ffi::UrlReader, String> {
        ffi::UrlReader::open(&self.url(), self.options()).map_err(|e| e.to_string())
    }

    /// The whole playlist.
    fn read_playlist(&self) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        match self {
            Location::File { path, .. } => {
                std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_PLAYLIST_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(|e| e.to_string())?;
            }
            Location::Web(_) => {
                self.open_web()?
                    .take(MAX_PLAYLIST_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| e.to_string())?;
            }
        }
        if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
            return Err(format!("over {MAX_PLAYLIST_BYTES} bytes: not a playlist"));
        }
        Ok(bytes)
    }

    /// Its size in bytes (the server's Content-Length, or what it sends).
    fn size(&self) -> Result<u64, String> {
        match self {
            Location::File { path, .. } => std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| e.to_string()),
            Location::Web(_) => {
                let mut reader = self.open_web()?;
                match reader.size() {
                    Some(size) => Ok(size),
                    None => {
                        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())
                    }
                }
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, .. } => write!(f, "{}", path.display()),
            Location::Web(url) => write!(f, "{url}"),
        }
    }
}

/// Reads the master playlist at `master` and everything it names, measuring segments on up to
/// `threads` threads.
pub fn measure(master: &Location, threads: usize) -> Result<Ladder, MeasureError> {
    let bytes = master
        .read_playlist()
        .map_err(|e| format!("reading {master}: {e}"))?;
    let parsed = m3u8_rs::parse_playlist_res(&bytes)
        .map_err(|_| format!("{master} is not an HLS playlist"))?;
    let Playlist::MasterPlaylist(pl) = parsed else {
        return Err(format!(
            "{master} is a media playlist; check reads a multivariant (master) playlist"
        ));
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
    // The playlists are read one by one, then every segment of every playlist is measured on
    // up to `threads` threads: measuring decodes a picture per segment, most of the check.
    let mut planned = Vec::new();
    for (uri, iframe) in uris {
        match plan_media(master, &uri, iframe) {
            Ok(p) => planned.push(p),
            Err(e) => ladder.unreadable.push((uri, e)),
        }
    }
    let reads: Vec<&SegmentRead> = planned
        .iter()
        .flat_map(|p| p.segments.iter().map(|(_, _, read)| read))
        .collect();
    let mut results = parallel_map(&reads, threads, |read| read.read()).into_iter();
    for p in planned {
        let n = p.segments.len();
        let media = p.assemble(results.by_ref().take(n), &mut ladder.unreadable);
        ladder.media.push(media);
    }
    Ok(ladder)
}

/// `uri` as a path under `root`: relative URIs and `file:` URLs only, never above `root` (a
/// playlist from elsewhere does not get to name any file on this machine).
fn resolve_file(root: &Path, base: &Path, uri: &str) -> Result<PathBuf, String> {
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

/// The media playlist `uri` read and parsed, and how each of its segments is to be read (no
/// segment is read yet, except an init section over http).
fn plan_media(master: &Location, uri: &str, iframe: bool) -> Result<PlannedMedia, String> {
    let playlist = master.resolve(uri)?;
    let bytes = playlist
        .read_playlist()
        .map_err(|e| format!("reading: {e}"))?;
    let parsed =
        m3u8_rs::parse_playlist_res(&bytes).map_err(|_| "not an HLS playlist".to_string())?;
    let Playlist::MediaPlaylist(pl) = parsed else {
        return Err("a multivariant playlist where a media playlist belongs".into());
    };
    let mut planned = PlannedMedia {
        media: Media {
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
        },
        segments: Vec::new(),
        unreadable: Vec::new(),
    };
    // EXT-X-MAP applies to every segment after it; m3u8-rs attaches it to the first only.
    let mut init: Option<Location> = None;
    // Over http: the init section's bytes, read once (or why they could not be).
    let mut init_bytes: Option<Arc<Result<Vec<u8>, String>>> = None;
    // A byte range without an offset continues where the previous one of the file ended.
    let mut next_offset: (String, u64) = (String::new(), 0);
    for s in &pl.segments {
        if let Some(map) = &s.map {
            if map.byte_range.is_some() {
                planned.unreadable.push((
                    format!("{uri}: EXT-X-MAP {}", map.uri),
                    "a byte range of an init section is not supported".into(),
                ));
            }
            init = Some(playlist.resolve(&map.uri)?);
            init_bytes = None;
        }
        let segment = match playlist.resolve(&s.uri) {
            Ok(p) => p,
            Err(e) => {
                planned.unreadable.push((format!("{uri}: {}", s.uri), e));
                continue;
            }
        };
        let range = s.byte_range.as_ref().map(|r| {
            let start = r.offset.unwrap_or(if next_offset.0 == s.uri {
                next_offset.1
            } else {
                0
            });
            next_offset = (s.uri.clone(), start + r.length);
            ByteRange {
                start,
                length: r.length,
            }
        });
        // A TS segment is read as TS, as a player reads it (its playlist says so), not as
        // whatever the probe guesses from its first bytes.
        let demuxer = (init.is_none() && s.uri.ends_with(".ts")).then_some("mpegts");
        let read = match (segment, iframe) {
            // An I-frame playlist's ranges are the keyframes of the video playlists'
            // segments, measured there: only their sizes count here.
            (segment, true) => SegmentRead::Size { segment, range },
            (segment @ Location::File { .. }, false) => SegmentRead::File {
                segment,
                range,
                init: init.clone(),
                demuxer,
            },
            (Location::Web(url), false) => {
                if let (Some(Location::Web(init_url)), None) = (&init, &init_bytes) {
                    init_bytes = Some(Arc::new(
                        fetch(init_url, None).map_err(|e| format!("init section: {e}")),
                    ));
                }
                SegmentRead::Web {
                    url,
                    range,
                    init: init_bytes.clone(),
                    demuxer,
                }
            }
        };
        planned
            .segments
            .push((s.uri.clone(), f64::from(s.duration), read));
    }
    Ok(planned)
}

/// A media playlist, parsed; its segments not read yet.
struct PlannedMedia {
    media: Media,
    /// Each segment's URI, EXTINF and how it is to be read, in the playlist's order.
    segments: Vec<(String, f64, SegmentRead)>,
    /// What could not even be named (a URI outside the ladder, an init section's byte range).
    unreadable: Vec<(String, String)>,
}

impl PlannedMedia {
    /// The media with its segments, from their reads (in the same order); a segment that
    /// could not be found is left out, one found but not readable is kept unmeasured, and
    /// both are added to `unreadable`.
    fn assemble(
        mut self,
        reads: impl Iterator<Item = ReadResult>,
        unreadable: &mut Vec<(String, String)>,
    ) -> Media {
        unreadable.append(&mut self.unreadable);
        let uri = &self.media.uri;
        for ((segment_uri, duration, _), read) in self.segments.into_iter().zip(reads) {
            let (bytes, measured) = match read {
                Ok(read) => read,
                Err(e) => {
                    unreadable.push((format!("{uri}: {segment_uri}"), e));
                    continue;
                }
            };
            let measured = match measured {
                Some(Err(e)) => {
                    unreadable.push((format!("{uri}: {segment_uri}"), e));
                    None
                }
                Some(Ok(m)) => Some(m),
                None => None,
            };
            self.media.segments.push(Segment {
                uri: segment_uri,
                duration,
                bytes,
                media: measured,
            });
        }
        self.media
    }
}

/// How one segment is read.
enum SegmentRead {
    /// Only its size (an I-frame playlist's range).
    Size {
        segment: Location,
        range: Option<ByteRange>,
    },
    /// A local file, opened by libavformat by its path.
    File {
        segment: Location,
        range: Option<ByteRange>,
        init: Option<Location>,
        demuxer: Option<&'static str>,
    },
    /// Over http(s), with its init section's bytes (or why they could not be read).
    Web {
        url: url::Url,
        range: Option<ByteRange>,
        init: Option<Arc<Result<Vec<u8>, String>>>,
        demuxer: Option<&'static str>,
    },
}

/// A segment that cannot be found (outer error), or its size and, unless only its size was
/// asked for, what it holds (inner error: found but unreadable).
type ReadResult = Result<(u64, Option<Result<SegmentMedia, String>>), String>;

impl SegmentRead {
    fn read(&self) -> ReadResult {
        match self {
            SegmentRead::Size { segment, range } => range
                .map(|r| Ok(r.length))
                .unwrap_or_else(|| segment.size())
                .map(|bytes| (bytes, None)),
            SegmentRead::File {
                segment,
                range,
                init,
                demuxer,
            } => measure_file_segment(segment, *range, init.as_ref(), *demuxer)
                .map(|(bytes, m)| (bytes, Some(m))),
            SegmentRead::Web {
                url,
                range,
                init,
                demuxer,
            } => {
                let init = match init.as_deref() {
                    Some(Ok(b)) => Ok(Some(b.as_slice())),
                    Some(Err(e)) => Err(e.clone()),
                    None => Ok(None),
                };
                measure_web_segment(url, *range, init, *demuxer).map(|(bytes, m)| (bytes, Some(m)))
            }
        }
    }
}

/// `f` over `items` on up to `threads` threads (each takes the next item when it is done with
/// one), the results in the items' order. A panic in `f` is resumed on the calling thread.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads.clamp(1, items.len().max(1)))
            .map(|_| scope.spawn(work))
            .collect();
        let mine = work();
        let theirs = workers.into_iter().map(|w| {
            w.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        for (i, r) in theirs.flatten().chain(mine) {
            results[i] = Some(r);
        }
    });
    results.into_iter().flatten().collect()
}

/// `EXT-X-BYTERANGE`, its offset resolved.
#[derive(Debug, Clone, Copy)]
struct ByteRange {
    start: u64,
    length: u64,
}

/// A segment that cannot be found (outer error), or its size and what it holds (inner error:
/// found but unreadable).
type Measured = Result<(u64, Result<SegmentMedia, String>), String>;

/// A local segment, opened by libavformat by its path: a byte range through `subfile`, behind
/// its init section through `concat`.
fn measure_file_segment(
    segment: &Location,
    range: Option<ByteRange>,
    init: Option<&Location>,
    demuxer: Option<&str>,
) -> Measured {
    let (bytes, url) = match range {
        Some(r) => (
            r.length,
            format!(
                "subfile,,start,{},end,{},,:{}",
                r.start,
                r.start + r.length,
                segment.url()
            ),
        ),
        None => (segment.size()?, segment.url()),
    };
    let url = match init {
        Some(i) => format!("concat:{}|{url}", i.url()),
        None => url,
    };
    Ok((
        bytes,
        open_url(&url, demuxer, segment.options()).and_then(measure_input),
    ))
}

/// A segment on a web server: read once (a byte range with an HTTP Range request), put behind
/// its init section (`init`: its bytes, or why they could not be read) and opened in memory,
/// so that no seek goes back to the server.
fn measure_web_segment(
    url: &url::Url,
    range: Option<ByteRange>,
    init: Result<Option<&[u8]>, String>,
    demuxer: Option<&str>,
) -> Measured {
    let data = fetch(url, range)?;
    let bytes = data.len() as u64;
    let measured = init.and_then(|init| {
        let whole = match init {
            Some(i) => [i, &data].concat(),
            None => data,
        };
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("format_whitelist", FORMAT_WHITELIST);
        ffi::input_from_bytes(whole, demuxer.and_then(ffi::input_format), opts)
            .map_err(|e| e.to_string())
            .and_then(measure_input)
    });
    Ok((bytes, measured))
}

/// Certificate authorities (a PEM file) trusted for https instead of the system's, for this
/// process: `video-worker check --ca-file`. Set once, before the first web read.
static CA_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Trusts the certificate authorities in `pem` (instead of the system's) for every https read
/// of this process. The first call wins.
pub fn trust_ca_file(pem: &std::path::Path) {
    let _ = CA_FILE.set(pem.to_path_buf());
}

/// How libavformat reads the web here: http(s) only, a timeout, and the server's certificate
/// verified (libavformat's TLS does not verify it unless told) against the system's
/// authorities or `--ca-file`'s.
fn web_options() -> ffmpeg::Dictionary<'static> {
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("protocol_whitelist", WEB_PROTOCOLS);
    opts.set("rw_timeout", WEB_TIMEOUT_MICROSECONDS);
    opts.set("tls_verify", "1");
    if let Some(ca) = CA_FILE.get() {
        opts.set("ca_file", &ca.to_string_lossy());
    }
    opts
}

/// The resource at `url` (or its byte `range`), read through libavformat's http(s).
fn fetch(url: &url::Url, range: Option<ByteRange>) -> Result<Vec<u8>, String> {
    let mut opts = web_options();
    let limit = match range {
        Some(r) => {
            opts.set("offset", &r.start.to_string());
            opts.set("end_offset", &(r.start + r.length).to_string());
            r.length
        }
        None => MAX_SEGMENT_BYTES,
    };
    let mut data = Vec::new();
    ffi::UrlReader::open(url.as_str(), opts)
        .map_err(|e| e.to_string())?
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > limit {
        return Err(match range {
            Some(r) => format!("the server sent more than the {} bytes asked for", r.length),
            None => format!("over {MAX_SEGMENT_BYTES} bytes"),
        });
    }
    Ok(data)
}

fn secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

/// Opens `url` (with `opts`: the protocols its location allows) as `demuxer` when given.
fn open_url(
    url: &str,
    demuxer: Option<&str>,
    mut opts: ffmpeg::Dictionary,
) -> Result<format::context::Input, String> {
    opts.set("format_whitelist", FORMAT_WHITELIST);
    match demuxer.and_then(ffi::input_format) {
        Some(demuxer) => format::open_with(&url, &format::format::Format::Input(demuxer), opts)
            .map(format::context::Context::input),
        None => format::input_with_dictionary(&url, opts),
    }
    .map_err(|e| e.to_string())
}

/// Measures the first video and audio stream of an opened segment.
fn measure_input(mut input: format::context::Input) -> Result<SegmentMedia, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_the_items_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..50).collect();
        for threads in [0, 1, 2, 7, 64] {
            // Uneven work, so that the threads finish out of order.
            let out = parallel_map(&items, threads, |&i| {
                std::thread::sleep(std::time::Duration::from_micros((i * 37) % 500));
                i * i
            });
            assert_eq!(out, items.iter().map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(parallel_map(&[] as &[u64], 4, |&i| i).is_empty());
    }

    #[test]
    fn parallel_map_uses_several_threads() {
        let items: Vec<u64> = (0..8).collect();
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        parallel_map(&items, 4, |_| {
            seen.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        assert!(seen.lock().unwrap().len() > 1);
    }

    #[test]
    fn a_panic_while_measuring_reaches_the_caller() {
        let items: Vec<u64> = (0..6).collect();
        let r = std::panic::catch_unwind(|| {
            parallel_map(&items, 3, |&i| {
                assert_ne!(i, 4, "boom");
                i
            })
        });
        assert!(r.is_err());
    }
}
