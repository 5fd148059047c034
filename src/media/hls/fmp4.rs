//! Reading back what the mp4 muxer wrote into a fragmented MP4 (CMAF) segment: where a
//! keyframe's fragment ends its first sample, for the I-frame playlist's byte range (the
//! `moof`, the `mdat` header and the keyframe's own bytes, as Apple's spec wants them).

/// The box at `at` in `data`: (type, header length, total length).
fn box_at(data: &[u8], at: usize) -> Option<([u8; 4], usize, usize)> {
    let head = data.get(at..at + 8)?;
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = [head[4], head[5], head[6], head[7]];
    match size {
        1 => {
            let large = data.get(at + 8..at + 16)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(large);
            Some((kind, 16, usize::try_from(u64::from_be_bytes(b)).ok()?))
        }
        0 => Some((kind, 8, data.len() - at)),
        n if n >= 8 => Some((kind, 8, n)),
        _ => None,
    }
}

/// The children of the box whose payload is `data[start..end]`.
fn children(data: &[u8], start: usize, end: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let Some((kind, header, len)) = box_at(data, at) else {
            break;
        };
        if len < header || at + len > end {
            break;
        }
        out.push((kind, at + header, at + len));
        at += len;
    }
    out
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Given a fragment (`moof` at the start of `fragment`) with `default-base-is-moof`, the
/// length from the `moof`'s first byte to the end of the first sample of track `track_id`:
/// the byte range that carries that sample with everything needed to find it.
pub fn first_sample_end(fragment: &[u8], track_id: u32) -> Option<u64> {
    let (kind, header, moof_len) = box_at(fragment, 0)?;
    if &kind != b"moof" {
        return None;
    }
    for (kind, start, end) in children(fragment, header, moof_len) {
        if &kind != b"traf" {
            continue;
        }
        let boxes = children(fragment, start, end);
        let (_, tfhd, _) = boxes.iter().find(|b| &b.0 == b"tfhd")?;
        let tfhd_flags = be32(fragment, *tfhd)? & 0x00ff_ffff;
        if be32(fragment, tfhd + 4)? != track_id {
            continue;
        }
        // tfhd: track_ID, then the optional fields its flags announce, in this order.
        let mut at = tfhd + 8;
        if tfhd_flags & 0x01 != 0 {
            at += 8; // base_data_offset
        }
        if tfhd_flags & 0x02 != 0 {
            at += 4; // sample_description_index
        }
        if tfhd_flags & 0x08 != 0 {
            at += 4; // default_sample_duration
        }
        let default_size = (tfhd_flags & 0x10 != 0)
            .then(|| be32(fragment, at))
            .flatten();
        let (_, trun, _) = boxes.iter().find(|b| &b.0 == b"trun")?;
        let flags = be32(fragment, *trun)? & 0x00ff_ffff;
        if be32(fragment, trun + 4)? == 0 || flags & 0x01 == 0 {
            return None;
        }
        let data_offset = be32(fragment, trun + 8)? as i32;
        let mut at = trun + 12;
        if flags & 0x04 != 0 {
            at += 4; // first_sample_flags
        }
        if flags & 0x100 != 0 {
            at += 4; // sample_duration
        }
        let size = if flags & 0x200 != 0 {
            be32(fragment, at)?
        } else {
            default_size?
        };
        return u64::try_from(i64::from(data_offset) + i64::from(size)).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    fn full(version_flags: u32, rest: &[u32]) -> Vec<u8> {
        let mut b = version_flags.to_be_bytes().to_vec();
        for v in rest {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// moof { mfhd, traf(track 2: audio), traf(track 1: video, two samples) } mdat.
    fn fragment(video_trun: Vec<u8>, video_tfhd: Vec<u8>) -> Vec<u8> {
        let mfhd = boxed(b"mfhd", &full(0, &[1]));
        let audio = boxed(
            b"traf",
            &[
                boxed(b"tfhd", &full(0x02_0000, &[2])),
                boxed(b"trun", &full(0x201, &[1, 0, 300])),
            ]
            .concat(),
        );
        let video = boxed(
            b"traf",
            &[boxed(b"tfhd", &video_tfhd), boxed(b"trun", &video_trun)].concat(),
        );
        let moof = boxed(b"moof", &[mfhd, audio, video].concat());
        [moof, boxed(b"mdat", &[0u8; 64])].concat()
    }

    #[test]
    fn first_sample_ends_at_its_data_offset_plus_its_size() {
        // trun flags: data-offset, first-sample-flags, per-sample duration and size.
        let trun = full(0x305, &[2, 200, 0x0200_0000, 512, 5000, 512, 1000]);
        let f = fragment(trun, full(0x02_0000, &[1]));
        assert_eq!(first_sample_end(&f, 1), Some(5200));
        assert_eq!(first_sample_end(&f, 2), Some(300));
        assert_eq!(first_sample_end(&f, 3), None);
    }

    #[test]
    fn a_default_sample_size_comes_from_the_track_fragment_header() {
        // tfhd flags: default-base-is-moof + default duration + default size.
        let tfhd = full(0x02_0018, &[1, 512, 4000]);
        let trun = full(0x001, &[3, 150]);
        assert_eq!(first_sample_end(&fragment(trun, tfhd), 1), Some(4150));
    }

    #[test]
    fn anything_but_a_moof_is_refused() {
        assert_eq!(first_sample_end(&boxed(b"mdat", &[0; 16]), 1), None);
        assert_eq!(first_sample_end(&[0, 0, 0], 1), None);
    }
}
