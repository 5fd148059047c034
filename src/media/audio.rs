//! Audio, encoded once per job: decode → stereo 48 kHz float planar → aligned with the video's
//! time zero → 1024-sample frames → AAC-LC. The same packets go to every rendition.
//!
//! Two libavfilter graphs, FFmpeg's own answer to downmixing and resampling:
//! - the *converter* (`aresample` + `aformat`) takes whatever the decoder gives (any channel
//!   count, any rate) and is rebuilt when the decoded frames change layout, rate or format
//!   mid-stream, as the ffmpeg CLI does (the buffer source refuses such a frame);
//! - the *chunker* takes only stereo 48 kHz and lives for the whole job, cutting frames to the
//!   encoder's 1024 samples across converter rebuilds (AC-3 decodes to 1536).
//!
//! Audio never runs ahead of the video: silence that aligns a late start is made one frame at a
//! time, only as far as the video has come, and converted audio waits (bounded) for the video.
//! So the audio ends with the video, and a file whose audio starts an hour late costs what its
//! video costs. Audio that ends before the video is padded with silence to the video's end.

use std::collections::VecDeque;

use ffmpeg::{codec, decoder, encoder, filter, format, frame, ChannelLayout, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};
use crate::media::graph::{self, AudioParams};

pub const SAMPLE_RATE: i32 = 48_000;

/// Converted audio allowed to wait for the video (samples at 48 kHz: 60 s, 23 MB of stereo
/// float). Audio further ahead than this is longer than the video or interleaved far from it;
/// the rest of it is dropped with a warning.
const MAX_AHEAD: i64 = 60 * SAMPLE_RATE as i64;

/// What a muxer needs to carry the encoded audio.
pub struct AudioStreamSpec {
    pub parameters: codec::Parameters,
    pub time_base: Rational,
}

/// Where encoded packets go, as soon as they are made (a rendition channel, in the pipeline).
pub type PacketSink<'a> = dyn FnMut(Packet) -> Result<()> + 'a;

fn media_err(what: &str) -> impl Fn(ffmpeg::Error) -> JobError + '_ {
    move |e| JobError::invalid_media(format!("{what}: {e}"))
}

pub struct AudioChain {
    /// Index of the source's audio stream in the demuxer.
    pub stream_index: usize,
    decoder: decoder::Audio,
    /// Source stream time base, to place the first audio frame against the video.
    stream_tb: Rational,
    /// The job's time zero (start of the video) in seconds.
    t0: f64,
    /// Audio timestamps past this (seconds from t0) are over the job's duration limit.
    max_duration: f64,
    /// Built on the first decoded frame, rebuilt when the decoded parameters change.
    converter: Option<(filter::Graph, AudioParams)>,
    /// Source samples fed to the current converter: its clock (the source's own timestamps
    /// place the start once; gaps later on are not reproduced).
    fed: i64,
    /// Stereo 48 kHz in, encoder-sized frames out.
    chunker: filter::Graph,
    /// Samples fed to the chunker: its clock.
    chunked: i64,
    encoder: encoder::Audio,
    /// Output samples sent to the encoder: its pts.
    encoded: i64,
    /// The start offset is known (set on the first decoded frame).
    aligned: bool,
    /// Silence still to put before the first real sample (audio starting after the video).
    silence: i64,
    /// Converted audio waiting for the video, and its length in samples.
    held: VecDeque<frame::Audio>,
    held_samples: i64,
    /// The encoder may take frames that start before this sample: how far the video goes.
    horizon: i64,
    /// Further input is ignored (it ran too far ahead of the video).
    closed: bool,
    warnings: Vec<String>,
}

impl AudioChain {
    /// `t0`: the video's start (seconds, source clock), the audio's zero too.
    pub fn new(
        stream: &ffmpeg::Stream,
        t0: f64,
        max_duration: f64,
        bitrate: u64,
    ) -> Result<AudioChain> {
        let ctx = codec::Context::from_parameters(stream.parameters())
            .map_err(media_err("audio stream parameters"))?;
        let decoder = ctx.decoder().audio().map_err(media_err("audio decoder"))?;

        let aac = encoder::find(codec::Id::AAC)
            .ok_or_else(|| JobError::invalid_media("this FFmpeg build has no AAC encoder"))?;
        let mut enc = codec::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(media_err("AAC encoder"))?;
        enc.set_rate(SAMPLE_RATE);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, SAMPLE_RATE));
        let encoder = enc
            .open_as(aac)
            .map_err(media_err("opening the AAC encoder"))?;

        let stereo = AudioParams {
            rate: SAMPLE_RATE as u32,
            format: format::Sample::F32(format::sample::Type::Planar),
            layout: ChannelLayout::STEREO,
        };
        let mut chunker = graph::simple("abuffer", &stereo.abuffer_args(), "anull")
            .map_err(media_err("audio frame graph"))?;
        if let Some(mut out) = chunker.get("out") {
            out.sink().set_frame_size(encoder.frame_size());
        }
        Ok(AudioChain {
            stream_index: stream.index(),
            decoder,
            stream_tb: stream.time_base(),
            t0,
            max_duration,
            converter: None,
            fed: 0,
            chunker,
            chunked: 0,
            encoder,
            encoded: 0,
            aligned: false,
            silence: 0,
            held: VecDeque::new(),
            held_samples: 0,
            // Nothing before the video has been decoded: headers may lie about its length.
            horizon: 0,
            closed: false,
            warnings: Vec::new(),
        })
    }

    pub fn spec(&self) -> AudioStreamSpec {
        AudioStreamSpec {
            parameters: codec::Parameters::from(&*self.encoder),
            time_base: Rational::new(1, SAMPLE_RATE),
        }
    }

    /// Warnings about audio left out (for the job's outcome), taken once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Decodes one source packet and sends the AAC packets that the video allows so far.
    pub fn push(&mut self, packet: &Packet, out: &mut PacketSink) -> Result<()> {
        // A corrupt audio packet is skipped: the video is what the job cannot do without.
        if self.closed || self.decoder.send_packet(packet).is_err() {
            return Ok(());
        }
        self.receive_decoded()?;
        self.pump(out)
    }

    /// The video now reaches `seconds` from t0: encode the audio up to there.
    pub fn advance(&mut self, seconds: f64, out: &mut PacketSink) -> Result<()> {
        let h = (seconds * f64::from(SAMPLE_RATE)).round() as i64;
        if h > self.horizon {
            self.horizon = h;
            self.pump(out)?;
        }
        Ok(())
    }

    fn receive_decoded(&mut self) -> Result<()> {
        loop {
            let mut decoded = frame::Audio::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                return Ok(());
            }
            if decoded.samples() == 0 || self.closed {
                continue;
            }
            self.convert(decoded)?;
        }
    }

    /// Puts one decoded frame through the converter (rebuilt if its parameters changed) and
    /// holds what comes out until the video gets there.
    fn convert(&mut self, mut decoded: frame::Audio) -> Result<()> {
        let params = AudioParams::of(&decoded);
        if self.converter.as_ref().map(|(_, p)| *p) != Some(params) {
            self.end_converter()?;
            let trim = self.align(&decoded, params.rate)?;
            let spec = format!(
                "{trim}aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"
            );
            let g = graph::simple("abuffer", &params.abuffer_args(), &spec)
                .map_err(media_err("audio filter graph"))?;
            self.converter = Some((g, params));
            self.fed = 0;
        }
        if decoded.channel_layout() != params.layout {
            decoded.set_channel_layout(params.layout);
        }
        if let Some(ts) = decoded.timestamp() {
            let t = ts as f64 * f64::from(self.stream_tb) - self.t0;
            if t > self.max_duration {
                return Err(JobError::limit_exceeded(format!(
                    "audio runs past the limit of {:.0} s (a frame at {t:.1} s)",
                    self.max_duration
                )));
            }
        }
        decoded.set_pts(Some(self.fed));
        self.fed += decoded.samples() as i64;
        if let Some(mut src) = self.converter.as_mut().and_then(|(g, _)| g.get("in")) {
            src.source()
                .add(&decoded)
                .map_err(media_err("audio filter input"))?;
        }
        self.hold_converted()
    }

    /// On the first decoded frame: where the audio starts against the video. Later audio is
    /// silence-padded (lazily, see `pump`); earlier audio is cut by the returned filter.
    fn align(&mut self, first: &frame::Audio, rate: u32) -> Result<String> {
        if self.aligned {
            return Ok(String::new());
        }
        self.aligned = true;
        let first_sec = first
            .timestamp()
            .map(|ts| ts as f64 * f64::from(self.stream_tb))
            .unwrap_or(self.t0);
        let offset = first_sec - self.t0;
        if offset > self.max_duration {
            return Err(JobError::limit_exceeded(format!(
                "audio starts at {offset:.1} s, past the limit of {:.0} s",
                self.max_duration
            )));
        }
        if offset > 0.0 {
            self.silence = (offset * f64::from(SAMPLE_RATE)).round() as i64;
            Ok(String::new())
        } else {
            let skip = (-offset * f64::from(rate)).round() as i64;
            Ok(if skip > 0 {
                format!("atrim=start_sample={skip},asetpts=N/SR/TB,")
            } else {
                String::new()
            })
        }
    }

    /// Ends the current converter (its buffered samples join the held audio).
    fn end_converter(&mut self) -> Result<()> {
        if let Some(mut src) = self.converter.as_mut().and_then(|(g, _)| g.get("in")) {
            let _ = src.source().flush();
        }
        self.hold_converted()?;
        self.converter = None;
        Ok(())
    }

    fn hold_converted(&mut self) -> Result<()> {
        let Some(mut sink) = self.converter.as_mut().and_then(|(g, _)| g.get("out")) else {
            return Ok(());
        };
        loop {
            let mut f = frame::Audio::empty();
            if sink.sink().frame(&mut f).is_err() {
                break;
            }
            if self.closed {
                continue;
            }
            self.held_samples += f.samples() as i64;
            self.held.push_back(f);
            if self.held_samples > MAX_AHEAD {
                self.closed = true;
                self.warnings.push(format!(
                    "audio after {:.1} s is left out: it runs more than {} s ahead of the video \
                     (longer than the video, or interleaved far from it)",
                    (self.encoded + self.silence + self.held_samples) as f64
                        / f64::from(SAMPLE_RATE),
                    MAX_AHEAD / i64::from(SAMPLE_RATE)
                ));
            }
        }
        Ok(())
    }

    /// Encodes and sends audio up to the horizon: silence first, then held audio, through the
    /// chunker; one frame at a time, so nothing piles up.
    fn pump(&mut self, out: &mut PacketSink) -> Result<()> {
        while self.encoded < self.horizon {
            if self.encode_chunk(out)? {
                continue;
            }
            let next = if self.silence > 0 {
                let n = self
                    .silence
                    .min(i64::from(self.encoder.frame_size().max(1)));
                self.silence -= n;
                silence(n as usize)
            } else if let Some(f) = self.held.pop_front() {
                self.held_samples -= f.samples() as i64;
                f
            } else {
                break;
            };
            self.chunk(next)?;
        }
        Ok(())
    }

    fn chunk(&mut self, mut f: frame::Audio) -> Result<()> {
        f.set_pts(Some(self.chunked));
        self.chunked += f.samples() as i64;
        if let Some(mut src) = self.chunker.get("in") {
            src.source()
                .add(&f)
                .map_err(media_err("audio frame graph input"))?;
        }
        Ok(())
    }

    /// Takes one encoder-sized frame from the chunker and encodes it; false if none is ready.
    fn encode_chunk(&mut self, out: &mut PacketSink) -> Result<bool> {
        let mut f = frame::Audio::empty();
        let got = match self.chunker.get("out") {
            Some(mut sink) => sink.sink().frame(&mut f).is_ok(),
            None => false,
        };
        if !got {
            return Ok(false);
        }
        f.set_pts(Some(self.encoded));
        self.encoded += f.samples() as i64;
        self.encoder
            .send_frame(&f)
            .map_err(media_err("AAC encoder"))?;
        self.send_encoded(out)?;
        Ok(true)
    }

    fn send_encoded(&mut self, out: &mut PacketSink) -> Result<()> {
        loop {
            let mut p = Packet::empty();
            if self.encoder.receive_packet(&mut p).is_err() {
                return Ok(());
            }
            out(p)?;
        }
    }

    /// At the end of the source: flushes decoder and converter, encodes the audio up to the
    /// video's end (`seconds` from t0, no further) and flushes the encoder.
    pub fn finish(&mut self, seconds: f64, out: &mut PacketSink) -> Result<()> {
        let _ = self.decoder.send_eof();
        self.receive_decoded()?;
        self.end_converter()?;
        self.horizon = (seconds * f64::from(SAMPLE_RATE)).round() as i64;
        self.pump(out)?;
        if self.held.is_empty() && self.chunked < self.horizon {
            // The audio ends before the video (sources often differ by a few frames): silence
            // up to the video's end, so that both last as long (Apple's rule 8.3 for a
            // separate audio rendition; players end both together in a muxed one).
            self.silence = self.horizon - self.chunked;
            self.pump(out)?;
        }
        if self.encoded < self.horizon {
            // The last, shorter frame.
            if let Some(mut src) = self.chunker.get("in") {
                let _ = src.source().flush();
            }
            while self.encoded < self.horizon && self.encode_chunk(out)? {}
        }
        let _ = self.encoder.send_eof();
        self.send_encoded(out)
    }
}

/// `samples` of stereo 48 kHz float planar silence.
fn silence(samples: usize) -> frame::Audio {
    let mut f = frame::Audio::new(
        format::Sample::F32(format::sample::Type::Planar),
        samples,
        ChannelLayout::STEREO,
    );
    f.set_rate(SAMPLE_RATE as u32);
    for plane in 0..f.planes() {
        f.data_mut(plane).fill(0);
    }
    f
}
