//! Qualities and the rules that turn a requested ladder into the renditions of one source:
//! no upscaling, the quality number applies to the shorter side of the displayed picture
//! (so portrait and rotated phone videos keep their orientation), even output sizes.

use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// A named rung of the ladder, e.g. `720p` at 2800 kb/s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quality {
    /// The name used in file names and in requests (`720p`).
    pub name: String,
    /// Length in pixels of the shorter side of the output picture.
    pub short_side: u32,
    /// Target video bitrate in bit/s (capped VBR around it).
    pub bitrate: u64,
}

/// Known qualities: the platform's original ladder (1080p…360p) plus small rungs for small
/// sources and fast tests.
const KNOWN: &[(&str, u32, u64)] = &[
    ("1080p", 1080, 5_000_000),
    ("720p", 720, 2_800_000),
    ("480p", 480, 1_400_000),
    ("360p", 360, 800_000),
    ("240p", 240, 400_000),
    ("144p", 144, 200_000),
];

pub const DEFAULT_QUALITIES: &[&str] = &["1080p", "720p", "480p"];

impl Quality {
    pub fn named(name: &str) -> Result<Quality, JobError> {
        let name = name.trim();
        KNOWN
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|&(n, short_side, bitrate)| Quality {
                name: n.to_string(),
                short_side,
                bitrate,
            })
            .ok_or_else(|| {
                let known: Vec<&str> = KNOWN.iter().map(|(n, _, _)| *n).collect();
                JobError::invalid_request(format!(
                    "unknown quality {name:?} (known: {})",
                    known.join(", ")
                ))
            })
    }

    /// Parses a list of names, refusing unknown names, duplicates and an empty list.
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<Vec<Quality>, JobError> {
        let mut out: Vec<Quality> = Vec::new();
        for name in names {
            let q = Quality::named(name.as_ref())?;
            if !out.contains(&q) {
                out.push(q);
            }
        }
        if out.is_empty() {
            return Err(JobError::invalid_request("no quality requested"));
        }
        Ok(out)
    }
}

/// One output of the ladder for one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenditionPlan {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate: u64,
}

impl RenditionPlan {
    /// An interlaced source keeps its field rate (1080i50 → 50p) in the renditions whose
    /// shorter side is at most `field_rate_up_to` (720 by default: 720p50 is a broadcast
    /// format and Apple's ladder has 60 fps rungs up to 1080p, but 1080p at 50 fps costs about
    /// 1.5× the bits of 25 fps for the largest rung); larger renditions get one frame per
    /// source frame (1080i50 → 1080p25).
    pub fn keeps_field_rate(&self, field_rate_up_to: u32) -> bool {
        self.width.min(self.height) <= field_rate_up_to
    }
}

/// Renditions of an interlaced source keep its field rate up to this shorter side.
pub const DEFAULT_FIELD_RATE_UP_TO: u32 = 720;

/// A requested quality that was not produced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub quality: String,
    pub reason: String,
}

/// The ladder decided for one source: what is encoded, what is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ladder {
    /// Highest first, as they appear in the master playlist.
    pub renditions: Vec<RenditionPlan>,
    pub skipped: Vec<Skipped>,
}

/// Rounds to the nearest even number, at least 2 (4:2:0 needs even sizes). Public for the
/// bench, whose command lines must size frames as the ladder does.
pub fn even(x: f64) -> u32 {
    let v = ((x / 2.0).round() * 2.0) as u32;
    v.max(2)
}

/// Size of a rendition whose shorter side is `short` for a picture displayed at `dw`×`dh`.
fn fit(dw: f64, dh: f64, short: u32) -> (u32, u32) {
    if dw >= dh {
        (even(short as f64 * dw / dh), even(short as f64))
    } else {
        (even(short as f64), even(short as f64 * dh / dw))
    }
}

impl Ladder {
    /// Plans the renditions for a source displayed at `display_w`×`display_h` (after rotation
    /// and sample aspect ratio).
    pub fn plan(requested: &[Quality], display_w: f64, display_h: f64) -> Ladder {
        let source_short = display_w.min(display_h);
        let mut renditions = Vec::new();
        let mut skipped = Vec::new();
        for q in requested {
            if q.short_side as f64 > source_short + 0.5 {
                skipped.push(Skipped {
                    quality: q.name.clone(),
                    reason: format!(
                        "source is {}x{} (shorter side {} px): {} would upscale",
                        display_w.round(),
                        display_h.round(),
                        source_short.round(),
                        q.name
                    ),
                });
                continue;
            }
            let (width, height) = fit(display_w, display_h, q.short_side);
            renditions.push(RenditionPlan {
                name: q.name.clone(),
                width,
                height,
                bitrate: q.bitrate,
            });
        }
        let smallest = requested.iter().min_by_key(|q| q.short_side);
        if let (true, Some(smallest)) = (renditions.is_empty(), smallest) {
            // Every rung is taller than the source: one rendition at the source's own size, with
            // the smallest requested rung's bitrate scaled down by pixel count.
            let (width, height) = fit(display_w, display_h, even(source_short));
            let short = width.min(height);
            let ratio = (short as f64 / smallest.short_side as f64).powi(2);
            renditions.push(RenditionPlan {
                name: format!("{short}p"),
                width,
                height,
                bitrate: ((smallest.bitrate as f64 * ratio) as u64).max(100_000),
            });
        }
        renditions.sort_by_key(|r| std::cmp::Reverse(r.width * r.height));
        Ladder {
            renditions,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &Ladder) -> Vec<(String, u32, u32)> {
        l.renditions
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height))
            .collect()
    }

    #[test]
    fn landscape_1080p_source_gets_the_default_ladder() {
        let q = Quality::parse_list(DEFAULT_QUALITIES).unwrap();
        let l = Ladder::plan(&q, 1920.0, 1080.0);
        assert_eq!(
            names(&l),
            vec![
                ("1080p".into(), 1920, 1080),
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480)
            ]
        );
        assert!(l.skipped.is_empty());
    }

    #[test]
    fn portrait_source_applies_quality_to_the_width() {
        let q = Quality::parse_list(&["720p", "480p"]).unwrap();
        let l = Ladder::plan(&q, 1080.0, 1920.0);
        assert_eq!(
            names(&l),
            vec![("720p".into(), 720, 1280), ("480p".into(), 480, 854)]
        );
    }

    #[test]
    fn taller_qualities_are_skipped_and_reported() {
        let q = Quality::parse_list(&["1080p", "720p", "360p"]).unwrap();
        let l = Ladder::plan(&q, 1280.0, 720.0);
        assert_eq!(
            names(&l),
            vec![("720p".into(), 1280, 720), ("360p".into(), 640, 360)]
        );
        assert_eq!(l.skipped.len(), 1);
        assert_eq!(l.skipped[0].quality, "1080p");
    }

    #[test]
    fn all_taller_gives_one_rendition_at_source_size_with_even_dims() {
        let q = Quality::parse_list(&["720p", "480p"]).unwrap();
        let l = Ladder::plan(&q, 321.0, 179.0);
        assert_eq!(l.renditions.len(), 1);
        let r = &l.renditions[0];
        assert_eq!((r.width % 2, r.height % 2), (0, 0));
        assert_eq!(r.height, 180);
        assert_eq!(r.name, "180p");
        assert_eq!(l.skipped.len(), 2);
    }

    #[test]
    fn unknown_and_empty_quality_lists_are_refused() {
        assert_eq!(
            Quality::parse_list(&["999p"]).unwrap_err().kind,
            crate::error::ErrorKind::InvalidRequest
        );
        let empty: [&str; 0] = [];
        assert!(Quality::parse_list(&empty).is_err());
    }

    #[test]
    fn odd_sizes_round_to_even() {
        let q = Quality::parse_list(&["240p"]).unwrap();
        let l = Ladder::plan(&q, 641.0, 361.0);
        let r = &l.renditions[0];
        assert_eq!((r.width, r.height), (426, 240));
    }
}
