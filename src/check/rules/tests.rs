//! The rules on hand-made models: a good ladder keeps them all; one mutation per rule breaks it.

use super::*;
use crate::check::model::*;

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
            iframe_variants: vec![
                iframe_variant("360p", 640, 360),
                iframe_variant("240p", 426, 240),
            ],
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
        assert_eq!(
            f.verdict,
            Verdict::Pass,
            "{} {}: {:?}",
            f.rule,
            f.measured,
            f.failures
        );
    }
}

/// Each mutation breaks the rule it names (every rule can fail).
#[test]
fn each_rule_fails_on_its_own_mutation() {
    type Mutation = fn(&mut Ladder);
    let cases: &[(&str, Mutation)] = &[
        ("files", |l| {
            l.unreadable.push(("360p_001.ts".into(), "gone".into()))
        }),
        ("1.26", |l| {
            l.master.variants[0].average_bandwidth = Some(1_200_000)
        }),
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
            l.media[0].segments[2]
                .media
                .as_mut()
                .unwrap()
                .video
                .as_mut()
                .unwrap()
                .starts_with_idr = false
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
                let v = m.segments[1]
                    .media
                    .as_mut()
                    .unwrap()
                    .video
                    .as_mut()
                    .unwrap();
                v.start -= 1.0;
                v.keyframes = vec![v.start, v.start + 2.0, v.start + 4.0, v.start + 6.0];
                m.segments[0]
                    .media
                    .as_mut()
                    .unwrap()
                    .video
                    .as_mut()
                    .unwrap()
                    .end -= 1.0;
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
        ("9.1", |l| {
            l.master.variants[1].codecs = Some("avc1.64001f,mp4a.40.2".into())
        }),
        ("9.2", |l| l.master.variants[0].resolution = None),
        ("9.11", |l| l.master.independent_segments = false),
        ("9.15", |l| l.master.variants[1].frame_rate = None),
        ("6.1", |l| l.master.iframe_variants.clear()),
        ("6.8", |l| l.media[3].i_frames_only = false),
        ("9.3", |l| l.master.iframe_variants[0].codecs = None),
        ("9.4", |l| l.master.iframe_variants[1].resolution = None),
        ("1.10", |l| {
            l.master.variants[0].codecs = Some("avc3.64001e,mp4a.40.2".into())
        }),
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
    assert_eq!(
        m.peak_bit_rate().round(),
        (1_250_000.0f64 * 8.0 / 7.0).round()
    );
    assert_eq!(
        m.average_bit_rate().round(),
        (2_000_000.0f64 * 8.0 / 13.0).round()
    );
}
