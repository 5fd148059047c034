//! The rules of Apple's "HLS Authoring Specification for Apple Devices" that `check` covers,
//! each a pure function of the measured [`Ladder`]. Numbers and texts are the spec's (rule
//! texts shortened); "one frame" tolerances follow 8.1's own unit.

use serde::Serialize;

use super::model::{Ladder, Media, Variant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Must,
    Should,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The rule's subject is absent (no audio, no I-frame playlists to inspect…).
    NotApplicable,
}

/// One rule's result on one ladder.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub level: Level,
    pub verdict: Verdict,
    pub text: &'static str,
    /// The measured value (the worst one over the ladder) and what it was compared with.
    pub measured: String,
    /// Each playlist, variant or segment that breaks the rule, with its value.
    pub failures: Vec<String>,
}

impl Finding {
    pub fn failed_must(&self) -> bool {
        self.verdict == Verdict::Fail && self.level == Level::Must
    }
}

struct Rule {
    id: &'static str,
    level: Level,
    text: &'static str,
    eval: fn(&Ladder) -> Outcome,
}

/// What a rule function returns; `Finding` adds the rule's id, level and text.
struct Outcome {
    verdict: Verdict,
    measured: String,
    failures: Vec<String>,
}

impl Outcome {
    fn na(why: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::NotApplicable,
            measured: why.into(),
            failures: Vec::new(),
        }
    }

    fn of(measured: impl Into<String>, failures: Vec<String>) -> Outcome {
        Outcome {
            verdict: if failures.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            measured: measured.into(),
            failures,
        }
    }
}

/// Seconds below which two times count as equal (EXTINF is written to the millisecond).
const EPSILON: f64 = 0.0015;

const RULES: &[Rule] = &[
    Rule {
        id: "files",
        level: Level::Must,
        text: "Every playlist and segment the multivariant playlist names can be read and \
               parsed (RFC 8216; not an Apple rule number: the others need it)",
        eval: files,
    },
    // --- bit rates -----------------------------------------------------------------------
    Rule {
        id: "1.26",
        level: Level::Must,
        text: "For VOD content, the average segment bit rate MUST be within 10% of the \
               AVERAGE-BANDWIDTH attribute",
        eval: r1_26,
    },
    Rule {
        id: "1.27",
        level: Level::Must,
        text: "For VOD content, the measured peak bit rate MUST be within 10% of the BANDWIDTH \
               attribute",
        eval: r1_27,
    },
    Rule {
        id: "1.30",
        level: Level::Should,
        text: "For VOD content, the peak bit rate SHOULD be no more than 200% of the average \
               bit rate",
        eval: r1_30,
    },
    Rule {
        id: "9.13",
        level: Level::Must,
        text: "The BANDWIDTH attribute MUST be the largest sum of peak segment bit rates that's \
               produced by any playable combination of renditions",
        eval: r9_13,
    },
    Rule {
        id: "9.14",
        level: Level::Must,
        text: "You MUST include the AVERAGE-BANDWIDTH attribute",
        eval: r9_14,
    },
    // --- segmentation and timing -----------------------------------------------------------
    Rule {
        id: "1.13",
        level: Level::Should,
        text: "Key frames (IDRs) SHOULD be present every two seconds",
        eval: r1_13,
    },
    Rule {
        id: "7.4",
        level: Level::Must,
        text: "Video segments MUST start with an IDR frame",
        eval: r7_4,
    },
    Rule {
        id: "7.5",
        level: Level::Should,
        text: "Target durations SHOULD be 6 seconds",
        eval: r7_5,
    },
    Rule {
        id: "7.6",
        level: Level::Should,
        text: "Segment durations SHOULD be nominally 6 seconds (NTSC 29.97 may be 6.006 s)",
        eval: r7_6,
    },
    Rule {
        id: "7.7",
        level: Level::Must,
        text: "Media Segments MUST NOT exceed the target duration by more than 0.5 seconds",
        eval: r7_7,
    },
    Rule {
        id: "8.1",
        level: Level::Must,
        text: "The sum of the EXTINF durations of any contiguous group of segments MUST be \
               within one video frame duration of the actual duration of the content",
        eval: r8_1,
    },
    Rule {
        id: "8.2",
        level: Level::Must,
        text: "Audio and video playlists MUST all use the same target duration",
        eval: r8_2,
    },
    Rule {
        id: "8.3",
        level: Level::Must,
        text: "Audio and video playlists MUST contain the same duration of the content",
        eval: r8_3,
    },
    Rule {
        id: "8.22",
        level: Level::Should,
        text: "All audio/video variants and renditions SHOULD have segment boundaries at the \
               same points in time",
        eval: r8_22,
    },
    // --- playlist tags ---------------------------------------------------------------------
    Rule {
        id: "8.6",
        level: Level::Must,
        text: "Media Playlists of static (VOD) content MUST have EXT-X-PLAYLIST-TYPE:VOD",
        eval: r8_6,
    },
    Rule {
        id: "9.1",
        level: Level::Must,
        text: "EXT-X-STREAM-INF MUST always provide the CODECS attribute (naming every format \
               in the variant, RFC 8216 §4.3.4.2)",
        eval: r9_1,
    },
    Rule {
        id: "9.2",
        level: Level::Must,
        text: "EXT-X-STREAM-INF MUST provide the RESOLUTION attribute if the rendition \
               includes video",
        eval: r9_2,
    },
    Rule {
        id: "9.11",
        level: Level::Should,
        text: "If video segments start with an IDR, the Multivariant Playlist SHOULD have \
               EXT-X-INDEPENDENT-SEGMENTS",
        eval: r9_11,
    },
    Rule {
        id: "9.15",
        level: Level::Must,
        text: "Each EXT-X-STREAM-INF with video MUST have a FRAME-RATE attribute",
        eval: r9_15,
    },
    // --- I-frame playlists -----------------------------------------------------------------
    Rule {
        id: "6.1",
        level: Level::Must,
        text: "I-frame playlists (EXT-X-I-FRAME-STREAM-INF) MUST be provided to support \
               scrubbing and scanning UI",
        eval: r6_1,
    },
    Rule {
        id: "6.8",
        level: Level::Must,
        text: "I-frame playlists MUST contain the EXT-X-I-FRAMES-ONLY tag",
        eval: r6_8,
    },
    Rule {
        id: "9.3",
        level: Level::Must,
        text: "EXT-X-I-FRAME-STREAM-INF MUST always provide the CODECS attribute",
        eval: r9_3,
    },
    Rule {
        id: "9.4",
        level: Level::Must,
        text: "EXT-X-I-FRAME-STREAM-INF MUST always provide the RESOLUTION attribute",
        eval: r9_4,
    },
    // --- codecs and audio ------------------------------------------------------------------
    Rule {
        id: "1.10",
        level: Level::Should,
        text: "Use formats whose parameter sets are in the sample descriptions: 'avc1', \
               'hvc1', 'dvh1' rather than 'avc3', 'hev1', 'dvhe'",
        eval: r1_10,
    },
    Rule {
        id: "2.3",
        level: Level::Must,
        text: "Stereo audio in AAC, HE-AAC v1, or HE-AAC v2 format MUST be provided",
        eval: r2_3,
    },
];

/// Every rule, in the order of the spec's sections.
pub fn evaluate(ladder: &Ladder) -> Vec<Finding> {
    RULES
        .iter()
        .map(|r| {
            let o = (r.eval)(ladder);
            Finding {
                rule: r.id,
                level: r.level,
                verdict: o.verdict,
                text: r.text,
                measured: o.measured,
                failures: o.failures,
            }
        })
        .collect()
}

/// The ids of the rules `check` covers.
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

fn kbps(bits: f64) -> String {
    format!("{:.0} kb/s", bits / 1000.0)
}

/// Relative difference of `measured` from `declared`, in percent of `declared`.
fn off_percent(declared: f64, measured: f64) -> f64 {
    if declared <= 0.0 {
        return f64::INFINITY;
    }
    (measured - declared).abs() / declared * 100.0
}

fn files(l: &Ladder) -> Outcome {
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

/// The playable combinations of one variant: its own playlist (video, and audio muxed in it)
/// with each audio rendition of its group that has a playlist of its own.
fn combinations<'a>(l: &'a Ladder, v: &Variant) -> Option<Vec<Vec<&'a Media>>> {
    let main = l.media(&v.uri)?;
    let audio = v
        .audio_group
        .as_deref()
        .map(|g| l.audio_playlists(g))
        .unwrap_or_default();
    if audio.is_empty() {
        return Some(vec![vec![main]]);
    }
    Some(audio.into_iter().map(|a| vec![main, a]).collect())
}

/// The largest sum over the variant's combinations of `rate` (peak or average).
fn combined(l: &Ladder, v: &Variant, rate: fn(&Media) -> f64) -> Option<f64> {
    combinations(l, v)?
        .iter()
        .map(|c| c.iter().map(|m| rate(m)).sum::<f64>())
        .reduce(f64::max)
}

/// A 10 % tolerance rule (1.26, 1.27) over every variant.
fn within_ten_percent(
    l: &Ladder,
    declared: fn(&Variant) -> Option<u64>,
    attribute: &str,
    rate: fn(&Media) -> f64,
) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for v in &l.master.variants {
        let (Some(d), Some(m)) = (declared(v), combined(l, v, rate)) else {
            continue;
        };
        let off = off_percent(d as f64, m);
        let line = format!(
            "{}: {attribute} {} vs measured {} ({off:.1}% off)",
            v.uri,
            kbps(d as f64),
            kbps(m)
        );
        if off > 10.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| off > *w) {
            worst = Some((off, line));
        }
    }
    match worst {
        None => Outcome::na(format!("no variant with {attribute} and readable segments")),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

fn r1_26(l: &Ladder) -> Outcome {
    within_ten_percent(
        l,
        |v| v.average_bandwidth,
        "AVERAGE-BANDWIDTH",
        Media::average_bit_rate,
    )
}

fn r1_27(l: &Ladder) -> Outcome {
    within_ten_percent(l, |v| Some(v.bandwidth), "BANDWIDTH", Media::peak_bit_rate)
}

fn r1_30(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for v in &l.master.variants {
        let (Some(peak), Some(avg)) = (
            combined(l, v, Media::peak_bit_rate),
            combined(l, v, Media::average_bit_rate),
        ) else {
            continue;
        };
        let ratio = if avg > 0.0 { peak / avg * 100.0 } else { 0.0 };
        let line = format!(
            "{}: peak {} is {ratio:.0}% of average {}",
            v.uri,
            kbps(peak),
            kbps(avg)
        );
        if ratio > 200.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| ratio > *w) {
            worst = Some((ratio, line));
        }
    }
    match worst {
        None => Outcome::na("no variant with readable segments"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

fn r9_13(l: &Ladder) -> Outcome {
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for v in &l.master.variants {
        let Some(combos) = combinations(l, v) else {
            continue;
        };
        let Some(peak) = combined(l, v, Media::peak_bit_rate) else {
            continue;
        };
        let line = format!(
            "{}: BANDWIDTH {} vs largest sum of peaks {} over {} combination(s)",
            v.uri,
            kbps(v.bandwidth as f64),
            kbps(peak),
            combos.len()
        );
        // Half a percent for the millisecond rounding of EXTINF in the measured durations.
        if (v.bandwidth as f64) < peak * 0.995 {
            failures.push(line.clone());
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Outcome::na("no variant with readable segments");
    }
    let measured = failures.first().unwrap_or(&lines[0]).clone();
    Outcome::of(measured, failures)
}

fn r9_14(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .master
        .variants
        .iter()
        .filter(|v| v.average_bandwidth.is_none())
        .map(|v| format!("{}: no AVERAGE-BANDWIDTH", v.uri))
        .collect();
    Outcome::of(
        format!(
            "{} of {} EXT-X-STREAM-INF have AVERAGE-BANDWIDTH",
            l.master.variants.len() - failures.len(),
            l.master.variants.len()
        ),
        failures,
    )
}

/// Video playlists of the variants (I-frame playlists not included).
fn video_media(l: &Ladder) -> Vec<&Media> {
    l.playback_media().filter(|m| m.has_video()).collect()
}

fn r1_13(l: &Ladder) -> Outcome {
    let frame = l.frame_duration();
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in video_media(l) {
        let mut keys: Vec<f64> = m
            .segments
            .iter()
            .filter_map(|s| s.media.as_ref()?.video.as_ref())
            .flat_map(|v| v.keyframes.iter().copied())
            .collect();
        keys.sort_by(f64::total_cmp);
        let end = m
            .segments
            .iter()
            .filter_map(|s| s.media.as_ref()?.video.as_ref())
            .map(|v| v.end)
            .fold(f64::NEG_INFINITY, f64::max);
        // The last GOP runs to the end of the video.
        let gaps = keys.windows(2).map(|w| w[1] - w[0]).chain(
            keys.last()
                .filter(|_| end.is_finite())
                .map(|k| end - k - frame),
        );
        let Some(gap) = gaps.reduce(f64::max) else {
            continue;
        };
        let line = format!("{}: longest key frame interval {gap:.3} s", m.uri);
        if gap > 2.0 + frame / 2.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| gap > *w) {
            worst = Some((gap, line));
        }
    }
    match worst {
        None => Outcome::na("no video segments measured"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

fn r7_4(l: &Ladder) -> Outcome {
    let mut total = 0;
    let mut failures = Vec::new();
    for m in video_media(l) {
        for s in &m.segments {
            let Some(v) = s.media.as_ref().and_then(|x| x.video.as_ref()) else {
                continue;
            };
            total += 1;
            if !v.starts_with_idr || !v.decodes_alone {
                failures.push(format!(
                    "{}: {}",
                    s.uri,
                    if !v.starts_with_idr {
                        "first access unit is not an IDR"
                    } else {
                        "a fresh decoder's first picture is not a key frame at the start"
                    }
                ));
            }
        }
    }
    if total == 0 {
        return Outcome::na("no video segments measured");
    }
    Outcome::of(
        format!(
            "{} of {total} video segments start with an IDR and decode alone",
            total - failures.len()
        ),
        failures,
    )
}

fn r7_5(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .playback_media()
        .filter(|m| m.target_duration != 6)
        .map(|m| format!("{}: EXT-X-TARGETDURATION {}", m.uri, m.target_duration))
        .collect();
    let mut targets: Vec<u64> = l.playback_media().map(|m| m.target_duration).collect();
    targets.sort();
    targets.dedup();
    Outcome::of(format!("target durations {targets:?} s"), failures)
}

fn r7_6(l: &Ladder) -> Outcome {
    let tolerance = l.frame_duration() + EPSILON;
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let n = m.segments.len();
        // The last segment holds whatever remains.
        for s in m.segments.iter().take(n.saturating_sub(1)) {
            let off = (s.duration - 6.0).abs();
            let line = format!("{}: {:.3} s", s.uri, s.duration);
            if off > tolerance {
                failures.push(line.clone());
            }
            if worst.as_ref().is_none_or(|(w, _)| off > *w) {
                worst = Some((off, line));
            }
        }
    }
    match worst {
        None => Outcome::na("no playlist with more than one segment"),
        Some((off, line)) => Outcome::of(
            format!("furthest from 6 s: {line} ({off:.3} s off; tolerance one frame)"),
            failures,
        ),
    }
}

/// A segment's real duration: from its first frame to the next segment's (or to its end).
fn actual_durations(m: &Media) -> Vec<Option<f64>> {
    let starts = track_starts(m);
    (0..m.segments.len())
        .map(|i| Some(starts.get(i + 1).copied().flatten()? - starts[i]?))
        .collect()
}

/// Start of each segment and, last, the end of the last one: video times when the playlist
/// has video, audio times otherwise.
fn track_starts(m: &Media) -> Vec<Option<f64>> {
    let video = m.has_video();
    let span = |s: &super::model::Segment| -> Option<(f64, f64)> {
        let media = s.media.as_ref()?;
        if video {
            media.video.as_ref().map(|v| (v.start, v.end))
        } else {
            media.audio.as_ref().map(|a| (a.start, a.end))
        }
    };
    let mut starts: Vec<Option<f64>> = m.segments.iter().map(|s| span(s).map(|x| x.0)).collect();
    starts.push(m.segments.last().and_then(|s| span(s).map(|x| x.1)));
    starts
}

fn r7_7(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let actual = actual_durations(m);
        for (s, a) in m.segments.iter().zip(actual) {
            let longest = a.unwrap_or(0.0).max(s.duration);
            let over = longest - m.target_duration as f64;
            let line = format!(
                "{}: {longest:.3} s against EXT-X-TARGETDURATION {}",
                s.uri, m.target_duration
            );
            if over > 0.5 + EPSILON {
                failures.push(line.clone());
            }
            if worst.as_ref().is_none_or(|(w, _)| over > *w) {
                worst = Some((over, line));
            }
        }
    }
    match worst {
        None => Outcome::na("no segments"),
        Some((_, line)) => Outcome::of(format!("longest {line}"), failures),
    }
}

fn r8_1(l: &Ladder) -> Outcome {
    let frame = l.frame_duration();
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let starts = track_starts(m);
        if starts.iter().any(Option::is_none) || starts.len() < 2 {
            continue;
        }
        let starts: Vec<f64> = starts.into_iter().flatten().collect();
        // E(k) = declared time − real time at boundary k; the error of any contiguous group
        // i..j is E(j+1) − E(i), so the worst group's error is max E − min E.
        let mut declared = 0.0;
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for (k, s) in m.segments.iter().enumerate() {
            declared += s.duration;
            let e = declared - (starts[k + 1] - starts[0]);
            lo = lo.min(e);
            hi = hi.max(e);
        }
        // Audio-only playlists: audio is cut at whole AAC frames, its own unit of time.
        let unit = if m.has_video() {
            frame
        } else {
            m.audio()
                .filter(|a| a.sample_rate > 0)
                .map(|a| frame.max(1024.0 / a.sample_rate as f64))
                .unwrap_or(frame)
        };
        let err = hi - lo;
        let line = format!(
            "{}: EXTINF sums drift {:.1} ms from the media (one frame: {:.1} ms)",
            m.uri,
            err * 1000.0,
            unit * 1000.0
        );
        if err > unit + EPSILON {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| err > *w) {
            worst = Some((err, line));
        }
    }
    match worst {
        None => Outcome::na("no playlist whose segments could all be measured"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

fn r8_2(l: &Ladder) -> Outcome {
    let all: Vec<(String, u64)> = l
        .playback_media()
        .map(|m| (m.uri.clone(), m.target_duration))
        .collect();
    let Some(first) = all.first().map(|x| x.1) else {
        return Outcome::na("no media playlists");
    };
    let failures: Vec<String> = all
        .iter()
        .filter(|(_, t)| *t != first)
        .map(|(u, t)| format!("{u}: {t} s, {} has {first} s", all[0].0))
        .collect();
    Outcome::of(
        format!("{} playlists, target duration {first} s", all.len()),
        failures,
    )
}

fn r8_3(l: &Ladder) -> Outcome {
    let frame = l.frame_duration();
    let all: Vec<(&str, f64)> = l
        .playback_media()
        .map(|m| (m.uri.as_str(), m.total_duration()))
        .collect();
    let (Some(lo), Some(hi)) = (
        all.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        all.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) else {
        return Outcome::na("no media playlists");
    };
    let spread = hi.1 - lo.1;
    let line = format!(
        "{} lasts {:.3} s, {} {:.3} s ({:.1} ms apart)",
        hi.0,
        hi.1,
        lo.0,
        lo.1,
        spread * 1000.0
    );
    let failures = if spread > frame + EPSILON {
        vec![line.clone()]
    } else {
        vec![]
    };
    Outcome::of(line, failures)
}

fn r8_22(l: &Ladder) -> Outcome {
    let frame = l.frame_duration();
    let all: Vec<&Media> = l.playback_media().collect();
    let Some(reference) = all.first() else {
        return Outcome::na("no media playlists");
    };
    let boundaries = |m: &Media| -> Vec<f64> {
        m.segments
            .iter()
            .scan(0.0, |t, s| {
                *t += s.duration;
                Some(*t)
            })
            .collect()
    };
    let r = boundaries(reference);
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for m in &all[1..] {
        let b = boundaries(m);
        // Every boundary but the end of the content, which 8.3 compares.
        let inner = |x: &[f64]| x.len().saturating_sub(1);
        if inner(&b) != inner(&r) {
            failures.push(format!(
                "{}: {} segments, {} has {}",
                m.uri,
                b.len(),
                reference.uri,
                r.len()
            ));
            continue;
        }
        let off = r
            .iter()
            .zip(&b)
            .take(inner(&r))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        worst = worst.max(off);
        if off > frame + EPSILON {
            failures.push(format!(
                "{}: a boundary {:.1} ms from {}'s",
                m.uri,
                off * 1000.0,
                reference.uri
            ));
        }
    }
    Outcome::of(
        format!(
            "{} playlists, boundaries at most {:.1} ms apart",
            all.len(),
            worst * 1000.0
        ),
        failures,
    )
}

fn r8_6(l: &Ladder) -> Outcome {
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
fn codec_list(codecs: &str) -> Vec<String> {
    codecs
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Whether a CODECS entry names `measured`: the same format and, for AVC, the same
/// profile/constraints/level (the sample entry prefix avc1/avc3 is 1.10's business).
fn names(entry: &str, measured: &str) -> bool {
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

fn r9_1(l: &Ladder) -> Outcome {
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

fn r9_2(l: &Ladder) -> Outcome {
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
    Outcome::of(seen.join("; "), failures)
}

fn r9_11(l: &Ladder) -> Outcome {
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

fn r9_15(l: &Ladder) -> Outcome {
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
    Outcome::of(seen.join("; "), failures)
}

fn r6_1(l: &Ladder) -> Outcome {
    let n = l.master.iframe_variants.len();
    let failures = if n == 0 {
        vec!["master: no EXT-X-I-FRAME-STREAM-INF".to_string()]
    } else {
        vec![]
    };
    Outcome::of(format!("{n} EXT-X-I-FRAME-STREAM-INF"), failures)
}

fn r6_8(l: &Ladder) -> Outcome {
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

fn iframe_attribute(l: &Ladder, name: &str, has: fn(&super::model::IFrameVariant) -> bool) -> Outcome {
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

fn r9_3(l: &Ladder) -> Outcome {
    iframe_attribute(l, "CODECS", |v| v.codecs.is_some())
}

fn r9_4(l: &Ladder) -> Outcome {
    iframe_attribute(l, "RESOLUTION", |v| v.resolution.is_some())
}

fn r1_10(l: &Ladder) -> Outcome {
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

fn r2_3(l: &Ladder) -> Outcome {
    let tracks: Vec<(&str, &super::model::AudioTrack)> = l
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

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;

    /// Two video variants (muxed AAC), three 6 s segments and a 2 s tail, I-frame playlists:
    /// a ladder that keeps every rule.
    fn good() -> Ladder {
        let video = |w: u32, h: u32, i: usize| VideoTrack {
            codec: "avc1.64001e".into(),
            sample_entry: None,
            width: w,
            height: h,
            frame_duration: 0.04,
            start: 1.4 + 6.0 * i as f64,
            end: 1.4 + (6.0 * i as f64 + if i == 3 { 2.0 } else { 6.0 }),
            keyframes: (0..3)
                .map(|k| 1.4 + 6.0 * i as f64 + 2.0 * k as f64)
                .filter(|t| *t < 1.4 + 20.0)
                .collect(),
            starts_with_idr: true,
            decodes_alone: true,
        };
        let audio = |i: usize| AudioTrack {
            codec: "mp4a.40.2".into(),
            is_aac: true,
            channels: 2,
            sample_rate: 48_000,
            start: 1.4 + 6.0 * i as f64,
            end: 1.4 + 6.0 * (i + 1) as f64,
        };
        let media = |name: &str, w, h, bytes: u64| Media {
            uri: format!("{name}.m3u8"),
            target_duration: 6,
            playlist_type: Some("VOD".into()),
            end_list: true,
            i_frames_only: false,
            segments: (0..4)
                .map(|i| Segment {
                    uri: format!("{name}_{i:03}.ts"),
                    duration: if i == 3 { 2.0 } else { 6.0 },
                    bytes: if i == 3 { bytes / 3 } else { bytes },
                    media: Some(SegmentMedia {
                        video: Some(video(w, h, i)),
                        audio: Some(audio(i)),
                    }),
                })
                .collect(),
        };
        let iframes = |name: &str| Media {
            uri: format!("{name}_iframes.m3u8"),
            target_duration: 2,
            playlist_type: Some("VOD".into()),
            end_list: true,
            i_frames_only: true,
            segments: vec![],
        };
        let variant = |name: &str, bytes: u64, w, h| Variant {
            uri: format!("{name}.m3u8"),
            bandwidth: bytes * 8 / 6,
            average_bandwidth: Some(bytes * 8 / 6),
            codecs: Some("avc1.64001e,mp4a.40.2".into()),
            resolution: Some((w, h)),
            frame_rate: Some(25.0),
            audio_group: None,
        };
        let iframe_variant = |name: &str, w, h| IFrameVariant {
            uri: format!("{name}_iframes.m3u8"),
            bandwidth: 100_000,
            codecs: Some("avc1.64001e".into()),
            resolution: Some((w, h)),
        };
        Ladder {
            master: Master {
                independent_segments: true,
                variants: vec![
                    variant("360p", 600_000, 640, 360),
                    variant("240p", 300_000, 426, 240),
                ],
                iframe_variants: vec![iframe_variant("360p", 640, 360), iframe_variant("240p", 426, 240)],
                audio: vec![],
            },
            media: vec![
                media("360p", 640, 360, 600_000),
                media("240p", 426, 240, 300_000),
                iframes("360p"),
                iframes("240p"),
            ],
            unreadable: vec![],
        }
    }

    fn failed(l: &Ladder) -> Vec<&'static str> {
        evaluate(l)
            .into_iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn the_good_ladder_keeps_every_rule() {
        let l = good();
        for f in evaluate(&l) {
            assert_eq!(f.verdict, Verdict::Pass, "{} {}: {:?}", f.rule, f.measured, f.failures);
        }
    }

    /// Each mutation breaks exactly the rule it names.
    #[test]
    fn each_rule_fails_on_its_own_mutation() {
        type Mutation = fn(&mut Ladder);
        let cases: &[(&str, Mutation)] = &[
            ("files", |l| l.unreadable.push(("360p_001.ts".into(), "gone".into()))),
            ("1.26", |l| l.master.variants[0].average_bandwidth = Some(1_200_000)),
            ("1.27", |l| l.master.variants[0].bandwidth = 2_000_000),
            ("1.30", |l| {
                // One 6 s segment at 3× the others, declared honestly.
                l.media[0].segments[1].bytes = 3_000_000;
                let m = l.media[0].clone();
                l.master.variants[0].bandwidth = m.peak_bit_rate().ceil() as u64;
                l.master.variants[0].average_bandwidth = Some(m.average_bit_rate().ceil() as u64);
            }),
            ("9.13", |l| l.master.variants[0].bandwidth = 760_000),
            ("9.14", |l| l.master.variants[1].average_bandwidth = None),
            ("1.13", |l| {
                for s in &mut l.media[1].segments {
                    if let Some(v) = s.media.as_mut().and_then(|m| m.video.as_mut()) {
                        v.keyframes.truncate(1);
                    }
                }
            }),
            ("7.4", |l| {
                l.media[0].segments[2].media.as_mut().unwrap().video.as_mut().unwrap().starts_with_idr = false
            }),
            ("7.5", |l| {
                for m in &mut l.media {
                    m.target_duration = 7;
                }
            }),
            ("7.6", |l| {
                for m in &mut l.media[..2] {
                    m.segments[0].duration = 5.0;
                    m.segments[1].duration = 7.0;
                    let v = m.segments[1].media.as_mut().unwrap().video.as_mut().unwrap();
                    v.start -= 1.0;
                    v.keyframes = vec![v.start, v.start + 2.0, v.start + 4.0, v.start + 6.0];
                    m.segments[0].media.as_mut().unwrap().video.as_mut().unwrap().end -= 1.0;
                    m.target_duration = 7;
                }
                for m in &mut l.media {
                    m.target_duration = 7;
                }
            }),
            ("7.7", |l| {
                for m in &mut l.media {
                    m.target_duration = 5;
                }
            }),
            ("8.1", |l| {
                for m in &mut l.media[..2] {
                    m.segments[0].duration = 6.1;
                    m.segments[1].duration = 5.9;
                }
            }),
            ("8.2", |l| l.media[1].target_duration = 7),
            ("8.3", |l| {
                l.media[1].segments.pop();
            }),
            ("8.22", |l| {
                l.media[1].segments[0].duration = 5.9;
                l.media[1].segments[1].duration = 6.1;
            }),
            ("8.6", |l| l.media[2].playlist_type = None),
            ("9.1", |l| l.master.variants[1].codecs = Some("avc1.64001f,mp4a.40.2".into())),
            ("9.2", |l| l.master.variants[0].resolution = None),
            ("9.11", |l| l.master.independent_segments = false),
            ("9.15", |l| l.master.variants[1].frame_rate = None),
            ("6.1", |l| l.master.iframe_variants.clear()),
            ("6.8", |l| l.media[3].i_frames_only = false),
            ("9.3", |l| l.master.iframe_variants[0].codecs = None),
            ("9.4", |l| l.master.iframe_variants[1].resolution = None),
            ("1.10", |l| l.master.variants[0].codecs = Some("avc3.64001e,mp4a.40.2".into())),
            ("2.3", |l| {
                for m in &mut l.media {
                    for s in &mut m.segments {
                        if let Some(a) = s.media.as_mut().and_then(|m| m.audio.as_mut()) {
                            a.channels = 1;
                        }
                    }
                }
            }),
        ];
        let covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
        for id in rule_ids() {
            assert!(covered.contains(&id), "rule {id} has no failing case");
        }
        for (rule, mutate) in cases {
            let mut l = good();
            mutate(&mut l);
            let failed = failed(&l);
            assert!(failed.contains(rule), "{rule}: failed {failed:?}");
        }
    }

    #[test]
    fn peak_bit_rate_takes_runs_of_half_to_one_and_a_half_target_durations() {
        let seg = |duration: f64, bytes: u64| Segment {
            duration,
            bytes,
            ..Default::default()
        };
        let m = Media {
            target_duration: 6,
            // The 1 s tail at 2 Mb/s is too short (< 3 s) to count alone; with its 6 s
            // neighbour (7 s, 1.43 Mb/s) it makes the peak, above either 6 s segment.
            segments: vec![seg(6.0, 750_000), seg(6.0, 1_000_000), seg(1.0, 250_000)],
            ..Default::default()
        };
        assert_eq!(m.peak_bit_rate().round(), (1_250_000.0f64 * 8.0 / 7.0).round());
        assert_eq!(m.average_bit_rate().round(), (2_000_000.0f64 * 8.0 / 13.0).round());
    }
}
