//! The rules of Apple's "HLS Authoring Specification for Apple Devices" that `check` covers,
//! each a pure function of the measured [`Ladder`]. Numbers and texts are the spec's (rule
//! texts shortened); "one frame" tolerances follow 8.1's own unit.

use serde::Serialize;

mod bitrate;
mod tags;
mod timing;

use bitrate::*;
use tags::*;
use timing::*;

use super::model::Ladder;

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
pub(super) struct Outcome {
    verdict: Verdict,
    measured: String,
    failures: Vec<String>,
}

impl Outcome {
    pub(super) fn na(why: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::NotApplicable,
            measured: why.into(),
            failures: Vec::new(),
        }
    }

    pub(super) fn of(measured: impl Into<String>, failures: Vec<String>) -> Outcome {
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
pub(super) const EPSILON: f64 = 0.0015;

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
#[cfg(test)]
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

pub(super) fn kbps(bits: f64) -> String {
    format!("{:.0} kb/s", bits / 1000.0)
}

/// Relative difference of `measured` from `declared`, in percent of `declared`.
pub(super) fn off_percent(declared: f64, measured: f64) -> f64 {
    if declared <= 0.0 {
        return f64::INFINITY;
    }
    (measured - declared).abs() / declared * 100.0
}

#[cfg(test)]
mod tests;
