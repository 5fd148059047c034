//! Playlist tags (8.6, 9.1, 9.2, 9.11, 9.15), I-frame playlists (6.1, 6.8, 9.3, 9.4), codec
//! naming (1.10), stereo AAC (2.3), and the files themselves.

use super::timing::r7_4;
use super::{Outcome, Verdict};
use crate::check::model::{AudioTrack, IFrameVariant, Ladder, Media};

pub(super) fn files(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .unreadable
        .iter()
        .map(|(what, why)| format!("{what}: {why}"))
        .collect();
    let segments: usize = l.media.iter().map(|m| m.segments.len()).sum();
    Outcome::of(
        format!(
            "{} playlists, {segments} segments read; {} unreadable",
            l.media.len() + 1,
            failures.len()
        ),
        failures,
    )
}

pub(super) fn r8_6(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .media
        .iter()
        .filter(|m| m.playlist_type.as_deref() != Some("VOD"))
        .map(|m| {
            format!(
                "{}: EXT-X-PLAYLIST-TYPE {}{}",
                m.uri,
                m.playlist_type.as_deref().unwrap_or("absent"),
                if m.end_list { "" } else { ", no EXT-X-ENDLIST" }
            )
        })
        .collect();
    Outcome::of(
        format!(
            "{} of {} media playlists are VOD",
            l.media.len() - failures.len(),
            l.media.len()
        ),
        failures,
    )
}

/// Splits a CODECS attribute into its lower-case entries.
pub(super) fn codec_list(codecs: &str) -> Vec<String> {
    codecs
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Whether a CODECS entry names `measured`: the same format and, for AVC, the same
/// profile/constraints/level (the sample entry prefix avc1/avc3 is 1.10's business).
pub(super) fn names(entry: &str, measured: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.to_ascii_lowercase();
        for p in ["avc1.", "avc3."] {
            if let Some(rest) = s.strip_prefix(p) {
                return format!("avc.{rest}");
            }
        }
        for p in ["hvc1", "hev1"] {
            if s.starts_with(p) {
                return "hevc".into();
            }
        }
        s
    };
    strip(entry) == strip(measured)
}

pub(super) fn r9_1(l: &Ladder) -> Outcome {
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in &l.master.variants {
        let Some(codecs) = &v.codecs else {
            failures.push(format!("{}: no CODECS", v.uri));
            continue;
        };
        checked += 1;
        let listed = codec_list(codecs);
        let mut present: Vec<String> = Vec::new();
        if let Some(m) = l.media(&v.uri) {
            present.extend(m.video().map(|t| t.codec.clone()));
            present.extend(m.audio().map(|a| a.codec.clone()));
        }
        for a in v
            .audio_group
            .as_deref()
            .map(|g| l.audio_playlists(g))
            .unwrap_or_default()
        {
            present.extend(a.audio().map(|a| a.codec.clone()));
        }
        present.dedup();
        for p in present {
            if !listed.iter().any(|e| names(e, &p)) {
                failures.push(format!(
                    "{}: CODECS=\"{codecs}\" does not name {p}, which its media carries",
                    v.uri
                ));
            }
        }
    }
    Outcome::of(
        format!(
            "{checked} of {} EXT-X-STREAM-INF have CODECS naming their media",
            l.master.variants.len()
        ),
        failures,
    )
}

pub(super) fn r9_2(l: &Ladder) -> Outcome {
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for v in &l.master.variants {
        let Some(video) = l.media(&v.uri).and_then(Media::video) else {
            continue;
        };
        match v.resolution {
            None => failures.push(format!(
                "{}: no RESOLUTION (video {}x{})",
                v.uri, video.width, video.height
            )),
            Some((w, h)) => seen.push(format!(
                "{}: {w}x{h} (coded {}x{})",
                v.uri, video.width, video.height
            )),
        }
    }
    if seen.is_empty() && failures.is_empty() {
        return Outcome::na("no variant with measured video");
    }
    let measured = match seen.is_empty() {
        true => format!("{} variant(s) without it", failures.len()),
        false => seen.join("; "),
    };
    Outcome::of(measured, failures)
}

pub(super) fn r9_11(l: &Ladder) -> Outcome {
    let all_idr = r7_4(l);
    if all_idr.verdict != Verdict::Pass {
        return Outcome::na("video segments do not all start with an IDR (7.4)");
    }
    let failures = if l.master.independent_segments {
        vec![]
    } else {
        vec!["master: no EXT-X-INDEPENDENT-SEGMENTS".to_string()]
    };
    Outcome::of(
        format!(
            "EXT-X-INDEPENDENT-SEGMENTS {}",
            if l.master.independent_segments {
                "present"
            } else {
                "absent"
            }
        ),
        failures,
    )
}

pub(super) fn r9_15(l: &Ladder) -> Outcome {
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for v in &l.master.variants {
        let Some(video) = l.media(&v.uri).and_then(Media::video) else {
            continue;
        };
        let fps = if video.frame_duration > 0.0 {
            1.0 / video.frame_duration
        } else {
            0.0
        };
        match v.frame_rate {
            None => failures.push(format!("{}: no FRAME-RATE (video {fps:.3} fps)", v.uri)),
            Some(r) => seen.push(format!("{}: {r} (measured {fps:.3})", v.uri)),
        }
    }
    if seen.is_empty() && failures.is_empty() {
        return Outcome::na("no variant with measured video");
    }
    let measured = match seen.is_empty() {
        true => format!("{} variant(s) without it", failures.len()),
        false => seen.join("; "),
    };
    Outcome::of(measured, failures)
}

pub(super) fn r6_1(l: &Ladder) -> Outcome {
    let n = l.master.iframe_variants.len();
    let failures = if n == 0 {
        vec!["master: no EXT-X-I-FRAME-STREAM-INF".to_string()]
    } else {
        vec![]
    };
    Outcome::of(format!("{n} EXT-X-I-FRAME-STREAM-INF"), failures)
}

pub(super) fn r6_8(l: &Ladder) -> Outcome {
    if l.master.iframe_variants.is_empty() {
        return Outcome::na("no I-frame playlists");
    }
    let failures: Vec<String> = l
        .master
        .iframe_variants
        .iter()
        .filter(|v| l.media(&v.uri).is_some_and(|m| !m.i_frames_only))
        .map(|v| format!("{}: no EXT-X-I-FRAMES-ONLY", v.uri))
        .collect();
    Outcome::of(
        format!(
            "{} of {} I-frame playlists have EXT-X-I-FRAMES-ONLY",
            l.master.iframe_variants.len() - failures.len(),
            l.master.iframe_variants.len()
        ),
        failures,
    )
}

pub(super) fn iframe_attribute(l: &Ladder, name: &str, has: fn(&IFrameVariant) -> bool) -> Outcome {
    if l.master.iframe_variants.is_empty() {
        return Outcome::na("no EXT-X-I-FRAME-STREAM-INF");
    }
    let failures: Vec<String> = l
        .master
        .iframe_variants
        .iter()
        .filter(|v| !has(v))
        .map(|v| format!("{}: no {name}", v.uri))
        .collect();
    Outcome::of(
        format!(
            "{} of {} EXT-X-I-FRAME-STREAM-INF have {name}",
            l.master.iframe_variants.len() - failures.len(),
            l.master.iframe_variants.len()
        ),
        failures,
    )
}

pub(super) fn r9_3(l: &Ladder) -> Outcome {
    iframe_attribute(l, "CODECS", |v| v.codecs.is_some())
}

pub(super) fn r9_4(l: &Ladder) -> Outcome {
    iframe_attribute(l, "RESOLUTION", |v| v.resolution.is_some())
}

pub(super) fn r1_10(l: &Ladder) -> Outcome {
    const IN_BAND: [&str; 3] = ["avc3", "hev1", "dvhe"];
    let mut names: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let declared = l
        .master
        .variants
        .iter()
        .map(|v| (&v.uri, &v.codecs))
        .chain(l.master.iframe_variants.iter().map(|v| (&v.uri, &v.codecs)));
    for (uri, codecs) in declared {
        for c in codec_list(codecs.as_deref().unwrap_or("")) {
            let fourcc = c.split('.').next().unwrap_or("").to_string();
            if IN_BAND.contains(&fourcc.as_str()) {
                failures.push(format!("{uri}: CODECS names {c}"));
            }
            names.push(fourcc);
        }
    }
    for m in l.playback_media() {
        if let Some(entry) = m.video().and_then(|v| v.sample_entry.clone()) {
            if IN_BAND.contains(&entry.as_str()) {
                failures.push(format!("{}: sample entry '{entry}'", m.uri));
            }
            names.push(format!("'{entry}'"));
        }
    }
    names.sort();
    names.dedup();
    Outcome::of(format!("formats named: {}", names.join(", ")), failures)
}

pub(super) fn r2_3(l: &Ladder) -> Outcome {
    let tracks: Vec<(&str, &AudioTrack)> = l
        .playback_media()
        .filter_map(|m| Some((m.uri.as_str(), m.audio()?)))
        .collect();
    if tracks.is_empty() {
        return Outcome::na("the ladder has no audio");
    }
    let stereo_aac = tracks.iter().find(|(_, a)| a.is_aac && a.channels == 2);
    let measured = match stereo_aac {
        Some((uri, a)) => format!("{uri}: {} {} channels", a.codec, a.channels),
        None => tracks
            .iter()
            .map(|(u, a)| format!("{u}: {} {} channel(s)", a.codec, a.channels))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let failures = if stereo_aac.is_some() {
        vec![]
    } else {
        vec![format!("no stereo AAC: {measured}")]
    };
    Outcome::of(measured, failures)
}
