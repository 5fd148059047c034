//! Bit rates as HLS defines them (RFC 8216 §4.3.4.2): what BANDWIDTH and AVERAGE-BANDWIDTH
//! say about a media playlist, from the sizes of the files as written (container overhead
//! included) and their EXTINF durations.

/// One segment as the rate rules see it: seconds presented and bytes transferred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sized {
    pub duration: f64,
    pub bytes: u64,
}

fn rate(bytes: u64, seconds: f64) -> u64 {
    if seconds <= 0.0 {
        return 0;
    }
    (bytes as f64 * 8.0 / seconds).ceil() as u64
}

/// The peak segment bit rate: the largest bit rate of any contiguous run of segments whose
/// total duration is between 0.5 and 1.5 times the target duration (a run's rate is its bytes
/// over its duration). A playlist too short for any such run (all of it under half a target
/// duration) is one run: its own average.
pub fn peak(segments: &[Sized], target_duration: f64) -> u64 {
    let (low, high) = (0.5 * target_duration, 1.5 * target_duration);
    let mut best: Option<u64> = None;
    for i in 0..segments.len() {
        let (mut seconds, mut bytes) = (0.0, 0u64);
        for s in &segments[i..] {
            seconds += s.duration;
            bytes += s.bytes;
            // A millisecond of slack: EXTINF durations are printed to the millisecond.
            if seconds > high + 1e-3 {
                break;
            }
            if seconds >= low - 1e-3 {
                best = best.max(Some(rate(bytes, seconds)));
            }
        }
    }
    best.unwrap_or_else(|| average(segments))
}

/// The average segment bit rate: all bytes over the whole duration.
pub fn average(segments: &[Sized]) -> u64 {
    let seconds: f64 = segments.iter().map(|s| s.duration).sum();
    rate(segments.iter().map(|s| s.bytes).sum(), seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(f64, u64)]) -> Vec<Sized> {
        items
            .iter()
            .map(|&(duration, bytes)| Sized { duration, bytes })
            .collect()
    }

    #[test]
    fn peak_of_full_segments_is_the_largest_single_segment_rate() {
        // Target 6: a run of two 6 s segments (12 s) is over 9 s, so runs are single segments.
        let s = list(&[(6.0, 600_000), (6.0, 900_000), (6.0, 300_000)]);
        assert_eq!(peak(&s, 6.0), 1_200_000);
        assert_eq!(average(&s), 800_000);
    }

    #[test]
    fn a_short_last_segment_alone_does_not_set_the_peak() {
        // 1 s of 200 kB is 1.6 Mb/s, but 1 s is under half the 6 s target: it only counts
        // with its neighbour (6 s + 1 s = 7 s ≤ 9 s): (300 + 200) kB over 7 s.
        let s = list(&[(6.0, 300_000), (1.0, 200_000)]);
        assert_eq!(peak(&s, 6.0), (500_000.0f64 * 8.0 / 7.0).ceil() as u64);
        assert_eq!(peak(&s, 6.0), 571_429);
    }

    #[test]
    fn runs_of_short_segments_are_measured_together() {
        // Target 4: runs between 2 and 6 s. 1 s segments: runs of 2 to 6 segments count; the
        // burst of two big ones (2 s, 400 kB) is the peak at 1.6 Mb/s, not 3.2 Mb/s alone.
        let s = list(&[
            (1.0, 50_000),
            (1.0, 200_000),
            (1.0, 200_000),
            (1.0, 50_000),
            (1.0, 50_000),
        ]);
        assert_eq!(peak(&s, 4.0), 1_600_000);
    }

    #[test]
    fn runs_longer_than_one_and_a_half_targets_do_not_count() {
        // Target 2: runs between 1 and 3 s. 2 s + 2 s = 4 s is too long; each alone counts.
        let s = list(&[(2.0, 100_000), (2.0, 400_000)]);
        assert_eq!(peak(&s, 2.0), 1_600_000);
    }

    #[test]
    fn a_playlist_shorter_than_half_a_target_is_one_run() {
        let s = list(&[(0.4, 10_000)]);
        assert_eq!(peak(&s, 1.0), 200_000);
        assert_eq!(peak(&[], 6.0), 0);
        assert_eq!(average(&[]), 0);
    }
}
