//! Audio, encoded once per job: decode → (align with the video's time zero) → stereo 48 kHz
//! float planar → 1024-sample frames → AAC-LC. The same packets go to every rendition.
//!
//! Conversion runs through a libavfilter graph (`aresample` + `aformat`, and the sink cut to
//! the encoder's frame size): FFmpeg's own, tested answer to downmixing, resampling and the
//! AAC encoder's fixed 1024-sample frames (AC-3 decodes to 1536).

use ffmpeg::{codec, decoder, encoder, filter, format, frame, ChannelLayout, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};

pub const SAMPLE_RATE: i32 = 48_000;

/// What a muxer needs to carry the encoded audio.
pub struct AudioStreamSpec {
    pub parameters: codec::Parameters,
    pub time_base: Rational,
}

pub struct AudioChain {
    /// Index of the source's audio stream in the demuxer.
    pub stream_index: usize,
    decoder: decoder::Audio,
    /// Source stream time base, to place the first audio frame against the video.
    stream_tb: Rational,
    /// The job's time zero (start of the video) in seconds.
    t0: f64,
    /// Built on the first decoded frame: its real format beats what the container claims.
    graph: Option<filter::Graph>,
    encoder: encoder::Audio,
    /// Input samples fed so far: the graph's clock (the source's own timestamps are used once,
    /// to align the start; gaps later on are not reproduced).
    fed: i64,
    /// Output samples sent to the encoder: its pts.
    encoded: i64,
}

fn layout_of(frame: &frame::Audio) -> ChannelLayout {
    let layout = frame.channel_layout();
    if layout.is_empty() || layout.bits() == 0 {
        // Some decoders report only a channel count; an empty layout makes the graph fail.
        ChannelLayout::default(i32::from(frame.channels()))
    } else {
        layout
    }
}

impl AudioChain {
    pub fn new(stream: &ffmpeg::Stream, t0: f64, bitrate: u64) -> Result<AudioChain> {
        let ctx = codec::Context::from_parameters(stream.parameters())
            .map_err(|e| JobError::invalid_media(format!("audio stream parameters: {e}")))?;
        let decoder = ctx
            .decoder()
            .audio()
            .map_err(|e| JobError::invalid_media(format!("audio decoder: {e}")))?;

        let aac = encoder::find(codec::Id::AAC)
            .ok_or_else(|| JobError::internal("this FFmpeg build has no AAC encoder"))?;
        let mut enc = codec::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(|e| JobError::internal(format!("AAC encoder: {e}")))?;
        enc.set_rate(SAMPLE_RATE);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, SAMPLE_RATE));
        let encoder = enc
            .open_as(aac)
            .map_err(|e| JobError::internal(format!("opening the AAC encoder: {e}")))?;

        Ok(AudioChain {
            stream_index: stream.index(),
            decoder,
            stream_tb: stream.time_base(),
            t0,
            graph: None,
            encoder,
            fed: 0,
            encoded: 0,
        })
    }

    pub fn spec(&self) -> AudioStreamSpec {
        AudioStreamSpec {
            parameters: codec::Parameters::from(&*self.encoder),
            time_base: Rational::new(1, SAMPLE_RATE),
        }
    }

    fn build_graph(&mut self, first: &frame::Audio) -> Result<filter::Graph> {
        let rate = first.rate() as i32;
        let layout = layout_of(first);
        let fmt = first.format().name();
        let mut graph = filter::Graph::new();
        let args = format!(
            "time_base=1/{rate}:sample_rate={rate}:sample_fmt={fmt}:channel_layout=0x{:x}",
            layout.bits()
        );
        let err = |e: ffmpeg::Error| JobError::internal(format!("audio filter graph: {e}"));
        let abuffer = filter::find("abuffer").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
        let sink = filter::find("abuffersink").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
        graph.add(&abuffer, "in", &args).map_err(err)?;
        graph.add(&sink, "out", "").map_err(err)?;

        // Align the audio with the video's first frame: pad with silence when the audio starts
        // later, drop what comes before when it starts earlier.
        let first_sec = first
            .timestamp()
            .map(|ts| ts as f64 * f64::from(self.stream_tb))
            .unwrap_or(self.t0);
        let offset = ((first_sec - self.t0) * rate as f64).round() as i64;
        let align = if offset > 0 {
            format!("adelay=delays={offset}S:all=1,")
        } else if offset < 0 {
            format!("atrim=start_sample={},asetpts=N/SR/TB,", -offset)
        } else {
            String::new()
        };
        let spec = format!(
            "{align}aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(err)?;
        graph.validate().map_err(err)?;
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(self.encoder.frame_size());
        }
        Ok(graph)
    }

    /// Decodes one source packet and appends the AAC packets it completes to `out`.
    pub fn push(&mut self, packet: &Packet, out: &mut Vec<Packet>) -> Result<()> {
        // A corrupt audio packet is skipped: the video is what the job cannot do without.
        if self.decoder.send_packet(packet).is_err() {
            return Ok(());
        }
        self.receive_decoded(out)
    }

    fn receive_decoded(&mut self, out: &mut Vec<Packet>) -> Result<()> {
        loop {
            let mut decoded = frame::Audio::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                return Ok(());
            }
            if decoded.samples() == 0 {
                continue;
            }
            if self.graph.is_none() {
                self.graph = Some(self.build_graph(&decoded)?);
            }
            if decoded.channel_layout().is_empty() || decoded.channel_layout().bits() == 0 {
                let layout = layout_of(&decoded);
                decoded.set_channel_layout(layout);
            }
            decoded.set_pts(Some(self.fed));
            self.fed += decoded.samples() as i64;
            if let Some(graph) = self.graph.as_mut() {
                if let Some(mut src) = graph.get("in") {
                    src.source()
                        .add(&decoded)
                        .map_err(|e| JobError::internal(format!("audio filter input: {e}")))?;
                }
            }
            self.drain_graph(out)?;
        }
    }

    fn drain_graph(&mut self, out: &mut Vec<Packet>) -> Result<()> {
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        let Some(mut sink) = graph.get("out") else {
            return Ok(());
        };
        loop {
            let mut f = frame::Audio::empty();
            if sink.sink().frame(&mut f).is_err() {
                break;
            }
            f.set_pts(Some(self.encoded));
            self.encoded += f.samples() as i64;
            self.encoder
                .send_frame(&f)
                .map_err(|e| JobError::internal(format!("AAC encoder: {e}")))?;
            Self::receive_encoded(&mut self.encoder, out);
        }
        Ok(())
    }

    fn receive_encoded(encoder: &mut encoder::Audio, out: &mut Vec<Packet>) {
        loop {
            let mut p = Packet::empty();
            if encoder.receive_packet(&mut p).is_err() {
                break;
            }
            out.push(p);
        }
    }

    /// Flushes decoder, graph and encoder at the end of the source (in that order).
    pub fn finish(&mut self, out: &mut Vec<Packet>) -> Result<()> {
        let _ = self.decoder.send_eof();
        self.receive_decoded(out)?;
        if let Some(graph) = self.graph.as_mut() {
            if let Some(mut src) = graph.get("in") {
                let _ = src.source().flush();
            }
        }
        self.drain_graph(out)?;
        let _ = self.encoder.send_eof();
        Self::receive_encoded(&mut self.encoder, out);
        Ok(())
    }

    /// Samples produced, for the report.
    pub fn samples_encoded(&self) -> i64 {
        self.encoded
    }
}
