//! The pipeline's own cost per frame, without libx264: what our code adds around the encoder,
//! so a regression there shows up apart from x264's (much larger, and noisier) time.
//!
//! - `fanout`: one decoded 1080p frame handed as `Arc<frame::Video>` to N rendition threads
//!   over bounded channels (`SourceFrame`, as `media::decode` sends it);
//! - `scale`: swscale bicubic 1080p → each ladder size into a fresh frame (as
//!   `media::rendition` does per frame), and the same-size case, which only references;
//! - `mux`: pre-encoded H.264 (480p, with B-frames) and AAC packets through the `Segmenter`,
//!   interleaved by time and cut into segment files, as one rendition thread does.
//!
//! Run with `cargo bench --bench pipeline_overhead` (`-- --quick` for a fast look). `fanout`
//! and `scale` time one frame; `mux` times a 300-frame (12 s) run, and its throughput line is
//! in frames per second.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::bounded;
use ffmpeg::{codec, encoder, format, frame, picture, ChannelLayout, Packet, Rational};
use ffmpeg_next as ffmpeg;

use video_worker::media::audio::AudioStreamSpec;
use video_worker::media::hls::Segmenter;
use video_worker::media::pipeline::FRAME_QUEUE;
use video_worker::media::rendition::{self, SourceFrame};
use video_worker::media::{self, ffi};

const FPS: i32 = 25;
/// The default ladder's sizes for a 1080p source.
const LADDER: [(&str, u32, u32); 3] = [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)];

/// A 4:2:0 picture with a moving diagonal pattern (content barely matters to these costs, but
/// it should not be a constant that some path could shortcut).
fn picture(width: u32, height: u32, n: u32) -> frame::Video {
    let mut f = frame::Video::new(format::Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let (w, h) = match plane {
            0 => (width as usize, height as usize),
            _ => (width as usize / 2, height as usize / 2),
        };
        let stride = f.stride(plane);
        let data = f.data_mut(plane);
        for y in 0..h {
            for x in 0..w {
                data[y * stride + x] = ((x + 2 * y + 3 * n as usize + 40 * plane) % 251) as u8;
            }
        }
    }
    f
}

fn fanout(c: &mut Criterion) {
    let frames: Vec<Arc<frame::Video>> = (0..FRAME_QUEUE as u32)
        .map(|n| Arc::new(picture(1920, 1080, n)))
        .collect();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(1));
    for renditions in [1usize, 3] {
        group.bench_function(BenchmarkId::new("1080p_arc_frames", renditions), |b| {
            b.iter_custom(|iters| {
                let (txs, rxs): (Vec<_>, Vec<_>) = (0..renditions)
                    .map(|_| bounded::<SourceFrame>(FRAME_QUEUE))
                    .unzip();
                std::thread::scope(|s| {
                    for rx in rxs {
                        s.spawn(move || {
                            // A rendition reads the frame (here: one byte) and drops its Arc.
                            for f in rx {
                                black_box(f.frame.data(0)[0]);
                            }
                        });
                    }
                    let start = Instant::now();
                    for i in 0..iters {
                        let frame = &frames[i as usize % frames.len()];
                        for tx in &txs {
                            let msg = SourceFrame {
                                frame: Arc::clone(frame),
                                index: i,
                                force_idr: i % 50 == 0,
                            };
                            tx.send(msg).expect("receiver alive");
                        }
                    }
                    drop(txs);
                    // Scope end joins the receivers: the time includes draining the queues.
                    start
                })
                .elapsed()
            })
        });
    }
    group.finish();
}

fn scale(c: &mut Criterion) {
    media::init().expect("FFmpeg init");
    let src = picture(1920, 1080, 0);
    let mut group = c.benchmark_group("scale");
    group.throughput(Throughput::Elements(1));
    for (name, w, h) in LADDER {
        // The pipeline's own scaling step (scaler built on first use, then reused).
        let mut scaler = None;
        group.bench_function(BenchmarkId::new("bicubic_from_1080p", name), |b| {
            b.iter(|| black_box(rendition::scale(&mut scaler, &src, w, h).expect("scale")))
        });
    }
    group.bench_function("same_size_reference", |b| {
        b.iter(|| black_box(ffi::frame_ref(&src).expect("frame ref")))
    });
    group.finish();
}

/// What the mux benchmark feeds the segmenter: an opened encoder (the segmenter takes its
/// parameters from it), the video packets it made, and AAC packets for the same duration.
struct Encoded {
    encoder: encoder::Video,
    video: Vec<Packet>,
    audio_spec: AudioStreamSpec,
    audio: Vec<Arc<Packet>>,
    frames: u64,
}

/// Encodes `frames` frames of 480p with libx264 (veryfast: quick, but with B-frames like the
/// real presets) and the same seconds of a stereo tone with AAC. Setup only: not timed.
fn encode(frames: u64, gop: u64) -> Encoded {
    media::init().expect("FFmpeg init");
    let (w, h) = (854, 480);
    let x264 = encoder::find_by_name("libx264").expect("libx264");
    let mut enc = codec::Context::new_with_codec(x264)
        .encoder()
        .video()
        .expect("video encoder");
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(format::Pixel::YUV420P);
    enc.set_time_base(Rational::new(1, FPS));
    enc.set_frame_rate(Some(Rational::new(FPS, 1)));
    enc.set_bit_rate(1_400_000);
    enc.set_gop(gop as u32);
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("preset", "veryfast");
    opts.set("forced-idr", "1");
    opts.set(
        "x264-params",
        &format!("keyint={gop}:min-keyint={gop}:scenecut=0"),
    );
    let mut encoder = enc.open_as_with(x264, opts).expect("open libx264");
    let mut video = Vec::new();
    let drain = |e: &mut encoder::Video, out: &mut Vec<Packet>| loop {
        let mut p = Packet::empty();
        if e.receive_packet(&mut p).is_err() {
            break;
        }
        out.push(p);
    };
    for n in 0..frames {
        let mut f = picture(w, h, n as u32);
        f.set_pts(Some(n as i64));
        f.set_kind(if n % gop == 0 {
            picture::Type::I
        } else {
            picture::Type::None
        });
        encoder.send_frame(&f).expect("encode");
        drain(&mut encoder, &mut video);
    }
    encoder.send_eof().expect("flush");
    drain(&mut encoder, &mut video);

    let aac = encoder::find(codec::Id::AAC).expect("aac");
    let mut a = codec::Context::new_with_codec(aac)
        .encoder()
        .audio()
        .expect("audio encoder");
    a.set_rate(48_000);
    a.set_channel_layout(ChannelLayout::STEREO);
    a.set_format(format::Sample::F32(format::sample::Type::Planar));
    a.set_bit_rate(128_000);
    a.set_time_base(Rational::new(1, 48_000));
    let mut aenc = a.open_as(aac).expect("open aac");
    let frame_size = aenc.frame_size() as usize;
    let total = frames as usize * 48_000 / FPS as usize;
    let mut audio = Vec::new();
    let drain_audio = |e: &mut encoder::Audio, out: &mut Vec<Arc<Packet>>| loop {
        let mut p = Packet::empty();
        if e.receive_packet(&mut p).is_err() {
            break;
        }
        out.push(Arc::new(p));
    };
    let mut done = 0;
    while done < total {
        let mut f = frame::Audio::new(
            format::Sample::F32(format::sample::Type::Planar),
            frame_size,
            ChannelLayout::STEREO,
        );
        f.set_rate(48_000);
        for ch in 0..2 {
            for (i, s) in f.plane_mut::<f32>(ch).iter_mut().enumerate() {
                *s = ((done + i) as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.3;
            }
        }
        f.set_pts(Some(done as i64));
        aenc.send_frame(&f).expect("aac encode");
        drain_audio(&mut aenc, &mut audio);
        done += frame_size;
    }
    aenc.send_eof().expect("aac flush");
    drain_audio(&mut aenc, &mut audio);
    Encoded {
        encoder,
        video,
        audio_spec: AudioStreamSpec {
            parameters: codec::Parameters::from(&*aenc),
            time_base: Rational::new(1, 48_000),
        },
        audio,
        frames,
    }
}

fn mux(c: &mut Criterion) {
    // 12 s at 25 fps: two 6 s segments on a 2 s keyframe grid, as the defaults cut them.
    let (frames, gop, seg) = (300, 50, 150);
    let e = encode(frames, gop);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("mux");
    group.throughput(Throughput::Elements(e.frames));
    group.bench_function("segmenter_480p_h264_aac", |b| {
        b.iter_batched(
            || e.video.clone(),
            |video| {
                let mut seg = Segmenter::new(
                    dir.path(),
                    "480p",
                    Some(&e.encoder),
                    Some(&e.audio_spec),
                    seg,
                    Rational::new(FPS, 1),
                    video_worker::media::hls::SegmentFormat::Ts,
                )
                .expect("segmenter");
                // Arrival order as in a rendition thread: audio packets from the decode thread
                // roughly in step with the encoder's video packets.
                let mut audio = e.audio.iter().peekable();
                for p in video {
                    let t = p.dts().unwrap_or(0) as f64 / f64::from(FPS);
                    while let Some(a) =
                        audio.next_if(|a| a.pts().unwrap_or(0) as f64 / 48_000.0 <= t)
                    {
                        seg.push_audio((**a).clone()).expect("audio");
                    }
                    seg.push_video(p).expect("video");
                }
                for a in audio {
                    seg.push_audio((**a).clone()).expect("audio");
                }
                seg.end_audio().expect("end audio");
                black_box(seg.finish().expect("finish"))
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    // Small samples: the numbers are per frame and stable; the machine is shared and small.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = fanout, scale, mux
}
criterion_main!(benches);
