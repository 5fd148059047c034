//! `--measure-quality`: each rendition's PSNR against what its encoder was given (the source,
//! decoded once and scaled for the rendition), over the whole rendition ("global" PSNR: all
//! squared errors over all samples, as x264's own summary prints it).
//!
//! FFmpeg 5.1's libx264 wrapper does not pass x264's per-frame errors on (`AV_CODEC_FLAG_PSNR`
//! fills nothing; later versions report them as packet side data), so the rendition thread
//! decodes its own packets again and compares each picture with the input frame it came from.
//! Its cost is that decode and the comparison, and the inputs it holds until their pictures
//! come back out of the encoder (x264's lookahead: some 50 frames at `medium`).

use std::collections::VecDeque;

use ffmpeg::{codec, decoder, encoder, frame, Packet};
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};
use crate::media::ffi;

/// PSNR (dB) of a rendition against its input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Psnr {
    pub y: f64,
    pub u: f64,
    pub v: f64,
    /// All three planes' errors over all their samples (4:2:0: Y weighs 4, U and V 1 each).
    pub average: f64,
    pub frames: u64,
}

/// Sums of squared errors per plane, over the frames compared.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorSums {
    sse: [u128; 3],
    /// Samples compared per plane.
    samples: [u128; 3],
    frames: u64,
}

impl ErrorSums {
    pub fn add(&mut self, sse: [u64; 3], samples: [u64; 3]) {
        for plane in 0..3 {
            self.sse[plane] += u128::from(sse[plane]);
            self.samples[plane] += u128::from(samples[plane]);
        }
        self.frames += 1;
    }

    /// The PSNR of the 8-bit pictures compared, if any.
    pub fn psnr(&self) -> Option<Psnr> {
        if self.frames == 0 {
            return None;
        }
        let db = |sse: u128, n: u128| {
            if sse == 0 {
                // Identical: x264 prints 100 dB in that case; so do we.
                100.0
            } else {
                10.0 * (255.0 * 255.0 * n as f64 / sse as f64).log10()
            }
        };
        Some(Psnr {
            y: db(self.sse[0], self.samples[0]),
            u: db(self.sse[1], self.samples[1]),
            v: db(self.sse[2], self.samples[2]),
            average: db(self.sse.iter().sum(), self.samples.iter().sum()),
            frames: self.frames,
        })
    }
}

/// Squared errors of the three planes of two 8-bit planar pictures of the same size, and the
/// samples compared.
fn squared_errors(a: &frame::Video, b: &frame::Video) -> ([u64; 3], [u64; 3]) {
    let mut sse = [0u64; 3];
    let mut samples = [0u64; 3];
    for plane in 0..3.min(a.planes()).min(b.planes()) {
        let w = a.plane_width(plane).min(b.plane_width(plane)) as usize;
        let h = a.plane_height(plane).min(b.plane_height(plane)) as usize;
        let (da, db) = (a.data(plane), b.data(plane));
        let (sa, sb) = (a.stride(plane), b.stride(plane));
        for row in 0..h {
            let ra = &da[row * sa..row * sa + w];
            let rb = &db[row * sb..row * sb + w];
            sse[plane] += ra
                .iter()
                .zip(rb)
                .map(|(&x, &y)| {
                    let d = i32::from(x) - i32::from(y);
                    (d * d) as u64
                })
                .sum::<u64>();
        }
        samples[plane] = (w * h) as u64;
    }
    (sse, samples)
}

fn err(what: &str) -> impl Fn(ffmpeg::Error) -> JobError + '_ {
    move |e| JobError::internal(format!("quality measure: {what}: {e}"))
}

/// Decodes a rendition's packets and compares each picture with the encoder's input.
pub(crate) struct QualityMeter {
    decoder: decoder::Video,
    /// The encoder's inputs (references, no copy) not yet seen back, in presentation order.
    inputs: VecDeque<frame::Video>,
    sums: ErrorSums,
}

impl QualityMeter {
    /// A decoder for what `encoder` makes (its parameters carry the global header, if any).
    pub fn new(encoder: &encoder::Video) -> Result<QualityMeter> {
        let params = codec::Parameters::from(&**encoder);
        let decoder = codec::Context::from_parameters(params)
            .map_err(err("decoder parameters"))?
            .decoder()
            .video()
            .map_err(err("H.264 decoder"))?;
        Ok(QualityMeter {
            decoder,
            inputs: VecDeque::new(),
            sums: ErrorSums::default(),
        })
    }

    /// Keeps a reference to a frame about to be encoded.
    pub fn remember(&mut self, input: &frame::Video) -> Result<()> {
        self.inputs
            .push_back(ffi::frame_ref(input).map_err(err("frame reference"))?);
        Ok(())
    }

    /// Decodes one encoded packet and compares what comes out.
    pub fn measure(&mut self, packet: &Packet) -> Result<()> {
        self.decoder
            .send_packet(packet)
            .map_err(err("decoding the rendition"))?;
        self.compare_decoded()
    }

    fn compare_decoded(&mut self) -> Result<()> {
        let mut picture = frame::Video::empty();
        while self.decoder.receive_frame(&mut picture).is_ok() {
            let pts = picture.pts().or(picture.timestamp());
            // Inputs before this picture never came back (cannot happen with x264: it drops
            // nothing); they are not counted.
            while self
                .inputs
                .front()
                .is_some_and(|f| f.pts().zip(pts).is_some_and(|(a, b)| a < b))
            {
                self.inputs.pop_front();
            }
            if let Some(input) = self.inputs.pop_front() {
                let (sse, samples) = squared_errors(&input, &picture);
                self.sums.add(sse, samples);
            }
        }
        Ok(())
    }

    /// After the encoder's last packet: the pictures the decoder still holds, then the PSNR.
    pub fn finish(mut self) -> Result<Option<Psnr>> {
        let _ = self.decoder.send_eof();
        self.compare_decoded()?;
        Ok(self.sums.psnr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: u32, h: u32, luma: u8, chroma: u8) -> frame::Video {
        let mut f = frame::Video::new(ffmpeg::format::Pixel::YUV420P, w, h);
        f.data_mut(0).fill(luma);
        f.data_mut(1).fill(chroma);
        f.data_mut(2).fill(chroma);
        f
    }

    #[test]
    fn psnr_comes_from_the_squared_errors_over_all_samples() {
        crate::media::init().unwrap();
        let mut sums = ErrorSums::default();
        assert!(sums.psnr().is_none());
        // Luma off by 1 everywhere (MSE 1), chroma identical; two 16x16 frames.
        for _ in 0..2 {
            let (sse, samples) =
                squared_errors(&picture(16, 16, 100, 128), &picture(16, 16, 101, 128));
            assert_eq!(sse, [256, 0, 0]);
            assert_eq!(samples, [256, 64, 64]);
            sums.add(sse, samples);
        }
        let p = sums.psnr().expect("measured");
        let mse1 = 10.0 * (255.0f64 * 255.0).log10();
        assert!((p.y - mse1).abs() < 1e-9, "{p:?}");
        assert_eq!((p.u, p.v), (100.0, 100.0));
        // 512 squared error over 2 × 384 samples.
        let average = 10.0 * (255.0f64 * 255.0 * 768.0 / 512.0).log10();
        assert!((p.average - average).abs() < 1e-9, "{p:?}");
        assert_eq!(p.frames, 2);
    }
}
