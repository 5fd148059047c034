//! The one place for FFmpeg `unsafe`: the few things ffmpeg-next's safe wrapper lacks.
//! Every block says why it is sound. Nothing here owns memory beyond the call.

use std::ffi::CString;
use std::path::Path;
use std::ptr;

use ffmpeg::ffi as sys;
use ffmpeg::{format, frame};
use ffmpeg_next as ffmpeg;

/// Flushes what the muxer buffers (mpegts keeps partial PES packets) into the current file,
/// closes that file and continues the same muxer into `next`: one muxer for the whole job, its
/// output swapped at each cut, as FFmpeg's `libavformat/hlsenc.c` does. Timestamps and
/// continuity counters stay continuous across segments; PAT/PMT are sent again at the start
/// of the new file so that each segment decodes on its own.
pub fn swap_output(octx: &mut format::context::Output, next: &Path) -> Result<(), ffmpeg::Error> {
    let path =
        CString::new(next.to_string_lossy().as_bytes()).map_err(|_| ffmpeg::Error::InvalidData)?;
    let flag = CString::new("mpegts_flags").map_err(|_| ffmpeg::Error::Bug)?;
    let value = CString::new("resend_headers").map_err(|_| ffmpeg::Error::Bug)?;
    // SAFETY: `octx` owns a valid, opened output AVFormatContext whose header was written and
    // whose `pb` was opened by libavformat (not a custom AVIO: the muxer is file based).
    // `av_write_frame(ctx, NULL)` is the documented flush call for AVFMT_ALLOW_FLUSH muxers;
    // `avio_closep` closes and nulls `pb`; `avio_open` sets a fresh `pb` or leaves it null on
    // failure, in which case we return the error and the caller abandons the job (the
    // destructor handles a null `pb`). `priv_data` of the mpegts muxer has an AVClass, so
    // `av_opt_set` on it is valid; the strings outlive the call.
    unsafe {
        let ctx = octx.as_mut_ptr();
        let r = sys::av_write_frame(ctx, ptr::null_mut());
        if r < 0 {
            return Err(ffmpeg::Error::from(r));
        }
        sys::avio_flush((*ctx).pb);
        let r = sys::avio_closep(&mut (*ctx).pb);
        if r < 0 {
            return Err(ffmpeg::Error::from(r));
        }
        let r = sys::avio_open(&mut (*ctx).pb, path.as_ptr(), sys::AVIO_FLAG_WRITE);
        if r < 0 {
            return Err(ffmpeg::Error::from(r));
        }
        if !(*ctx).priv_data.is_null() {
            sys::av_opt_set((*ctx).priv_data, flag.as_ptr(), value.as_ptr(), 0);
        }
    }
    Ok(())
}

/// Closes the output file after the trailer, reporting the error that `Drop` would swallow
/// (a full disk shows up here, at the last write).
pub fn close_output(octx: &mut format::context::Output) -> Result<(), ffmpeg::Error> {
    // SAFETY: valid output context; `avio_closep` nulls `pb` so the destructor does not close
    // it twice. A context whose `pb` is already null is left alone.
    unsafe {
        let ctx = octx.as_mut_ptr();
        if (*ctx).pb.is_null() {
            return Ok(());
        }
        let err = (*(*ctx).pb).error;
        let r = sys::avio_closep(&mut (*ctx).pb);
        if err < 0 {
            return Err(ffmpeg::Error::from(err));
        }
        if r < 0 {
            return Err(ffmpeg::Error::from(r));
        }
    }
    Ok(())
}

/// Ends a filter graph's input at `pts` (in the source's time base), so that filters that
/// fill time, like `fps`, know where the last frame ends instead of cutting it off.
pub fn close_source(ctx: &mut ffmpeg::filter::Context, pts: i64) -> Result<(), ffmpeg::Error> {
    // SAFETY: `ctx` is a valid buffer source context owned by a configured graph that we
    // borrow mutably; `av_buffersrc_close` only marks it at EOF.
    let r = unsafe { sys::av_buffersrc_close(ctx.as_mut_ptr(), pts, 0) };
    if r < 0 {
        return Err(ffmpeg::Error::from(r));
    }
    Ok(())
}

/// The frame rate the ffmpeg CLI would give a stream's output (`av_guess_frame_rate`: the base
/// rate `r_frame_rate`, or the average one when the base rate is a timebase-like artefact).
pub fn guess_frame_rate(input: &format::context::Input, stream_index: usize) -> ffmpeg::Rational {
    // SAFETY: `input` is a valid opened input context; `stream_index` is checked against
    // `nb_streams` before indexing; the third argument may be NULL per the API. The function
    // takes non-const pointers but only reads the context and the stream.
    unsafe {
        let ctx = input.as_ptr() as *mut sys::AVFormatContext;
        if stream_index >= (*ctx).nb_streams as usize {
            return ffmpeg::Rational::new(0, 1);
        }
        let st = *(*ctx).streams.add(stream_index);
        ffmpeg::Rational::from(sys::av_guess_frame_rate(ctx, st, ptr::null_mut()))
    }
}

/// A new frame that references the same picture buffers (no pixel copy), with its own
/// properties (pts, picture type) that the caller may change.
pub fn frame_ref(src: &frame::Video) -> Result<frame::Video, ffmpeg::Error> {
    let mut dst = frame::Video::empty();
    // SAFETY: both frames are valid AVFrames; `dst` is freshly allocated and empty, which is
    // what `av_frame_ref` requires. The buffers are refcounted, so `src` stays untouched.
    let r = unsafe { sys::av_frame_ref(dst.as_mut_ptr(), src.as_ptr()) };
    if r < 0 {
        return Err(ffmpeg::Error::from(r));
    }
    Ok(dst)
}

/// True when nobody else references the frame's buffers (the encoder has let go of them),
/// so the frame can be written again instead of allocating a new one.
pub fn is_writable(frame: &mut frame::Video) -> bool {
    // SAFETY: a valid AVFrame we own; `av_frame_is_writable` only reads buffer refcounts.
    unsafe { sys::av_frame_is_writable(frame.as_mut_ptr()) > 0 }
}

/// What the encoder really runs with after `avcodec_open2` (which ignores unknown options
/// silently): read back so the pipeline can check and report it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EffectiveRate {
    pub bit_rate: i64,
    pub max_rate: i64,
    pub buffer_size: i64,
    pub threads: i32,
}

pub fn effective_rate(ctx: &ffmpeg::codec::Context) -> EffectiveRate {
    // SAFETY: reads plain integer fields of a valid, opened AVCodecContext that we borrow.
    unsafe {
        let c = ctx.as_ptr();
        EffectiveRate {
            bit_rate: (*c).bit_rate,
            max_rate: (*c).rc_max_rate,
            buffer_size: (*c).rc_buffer_size as i64,
            threads: (*c).thread_count,
        }
    }
}

/// Sets the decoder's thread count (the wrapper exposes it only through `threading::Config`,
/// which also forces a thread type).
pub fn set_thread_count(ctx: &mut ffmpeg::codec::Context, threads: usize) {
    // SAFETY: writes a plain integer field of an AVCodecContext that is not opened yet.
    unsafe {
        (*ctx.as_mut_ptr()).thread_count = threads as i32;
    }
}

/// What a stream's codec parameters hold that ffmpeg-next does not expose, for `check`: the
/// codec tag (an fMP4 sample entry's four-character code), the profile, and the extradata
/// (avcC/hvcC, an AudioSpecificConfig, or Annex B parameter sets).
pub struct CodecDetails {
    pub tag: u32,
    pub profile: i32,
    pub extradata: Vec<u8>,
}

pub fn codec_details(params: &ffmpeg::codec::Parameters) -> CodecDetails {
    // SAFETY: `params` wraps a valid AVCodecParameters that we borrow; the fields read are plain
    // integers, and `extradata` (when not NULL) points to `extradata_size` readable bytes owned
    // by the parameters, copied out before the borrow ends.
    unsafe {
        let p = params.as_ptr();
        let extradata = if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
        };
        CodecDetails {
            tag: (*p).codec_tag,
            profile: (*p).profile,
            extradata,
        }
    }
}

/// The version string of the FFmpeg libraries loaded at run time (e.g. `5.1.9-0+deb12u1`).
pub fn runtime_version() -> String {
    // SAFETY: `av_version_info` returns a pointer to a static NUL-terminated string.
    unsafe {
        let p = sys::av_version_info();
        if p.is_null() {
            return String::from("unknown");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Where the next byte written to the output's current file goes (`avio_tell`), or `None`
/// when no file is open.
pub fn output_position(octx: &mut format::context::Output) -> Option<u64> {
    // SAFETY: `octx` is a valid output context we borrow mutably; its `pb` is either null
    // (checked) or the AVIOContext libavformat opened. `avio_seek(pb, 0, SEEK_CUR)` is what
    // the `avio_tell` macro expands to: it returns the position without moving or flushing.
    unsafe {
        let ctx = octx.as_mut_ptr();
        let pb = (*ctx).pb;
        if pb.is_null() {
            return None;
        }
        let pos = sys::avio_seek(pb, 0, libc::SEEK_CUR);
        u64::try_from(pos).ok()
    }
}

/// The field order a stream's parameters give (copied into the codec context): how the
/// container or the parser describes interlacing, before any frame is decoded.
pub fn field_order(ctx: &ffmpeg::codec::Context) -> ffmpeg::FieldOrder {
    // SAFETY: reads a plain enum field of a valid AVCodecContext that we borrow; the value was
    // copied from AVCodecParameters by libavcodec, so it is one of AVFieldOrder's values.
    unsafe { ffmpeg::FieldOrder::from((*ctx.as_ptr()).field_order) }
}

/// Makes the muxer write what it holds into the current file (`av_write_frame(ctx, NULL)`):
/// the open fragment of an fMP4 muxer, the partial PES packets of an mpegts one.
pub fn flush_output(octx: &mut format::context::Output) -> Result<(), ffmpeg::Error> {
    // SAFETY: `octx` is a valid output context whose header was written; a NULL packet is
    // the documented flush request for muxers with AVFMT_ALLOW_FLUSH (mp4 and mpegts have it).
    let r = unsafe { sys::av_write_frame(octx.as_mut_ptr(), ptr::null_mut()) };
    if r < 0 {
        return Err(ffmpeg::Error::from(r));
    }
    Ok(())
}

/// The codec setup an encoder opened with a global header exports (for H.264: SPS and PPS,
/// Annex B from libx264).
pub fn extradata(ctx: &ffmpeg::codec::Context) -> Vec<u8> {
    // SAFETY: reads `extradata`/`extradata_size` of a valid, opened AVCodecContext that we
    // borrow; libavcodec owns the buffer, which lives as long as the context; a null pointer
    // or a non-positive size means there is none.
    unsafe {
        let c = ctx.as_ptr();
        let (data, size) = ((*c).extradata, (*c).extradata_size);
        if data.is_null() || size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(data, size as usize).to_vec()
    }
}

/// The demuxer named `name` (e.g. `mpegts`), to open a file as that format instead of
/// guessing from its first bytes: a short audio-only TS segment (a second of silent AAC) is
/// too small for libavformat's probe to recognise, while a player knows it from the playlist.
pub fn input_format(name: &str) -> Option<format::Input> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the call; the returned pointer is to
    // a static demuxer description owned by libavformat (or null).
    let ptr = unsafe { sys::av_find_input_format(name.as_ptr()) };
    // SAFETY: a non-null pointer from av_find_input_format stays valid for the process.
    (!ptr.is_null()).then(|| unsafe { format::Input::wrap(ptr as *mut _) })
}

/// A resource read through libavformat's own protocols (AVIO), e.g. a playlist over http(s)
/// for `video-worker check`: what ffmpeg-next has no reader for. `options` should carry
/// `protocol_whitelist` (and a `rw_timeout`); libavformat checks every protocol it opens,
/// redirects included, against the list.
pub struct UrlReader {
    /// Opened by `avio_open2`, closed on drop; never null while the value lives.
    pb: *mut sys::AVIOContext,
}

impl UrlReader {
    pub fn open(url: &str, options: ffmpeg::Dictionary) -> Result<UrlReader, ffmpeg::Error> {
        let url = CString::new(url).map_err(|_| ffmpeg::Error::InvalidData)?;
        let mut pb: *mut sys::AVIOContext = ptr::null_mut();
        // SAFETY: `url` is NUL-terminated and outlives the call; `pb` is a valid out pointer;
        // no interrupt callback (null is allowed). `disown` hands the dictionary to the call,
        // which may replace it with the options it did not use; `own` takes that one back so
        // that it is freed on drop.
        let r = unsafe {
            let mut dict = options.disown();
            let r = sys::avio_open2(
                &mut pb,
                url.as_ptr(),
                sys::AVIO_FLAG_READ,
                ptr::null(),
                &mut dict,
            );
            drop(ffmpeg::Dictionary::own(dict));
            r
        };
        if r < 0 || pb.is_null() {
            return Err(ffmpeg::Error::from(r.min(-1)));
        }
        Ok(UrlReader { pb })
    }

    /// The resource's size when the protocol knows it (http: Content-Length).
    pub fn size(&mut self) -> Option<u64> {
        // SAFETY: `pb` is the open context this value owns.
        let size = unsafe { sys::avio_size(self.pb) };
        u64::try_from(size).ok()
    }
}

impl std::io::Read for UrlReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pb` is the open context this value owns; `buf` is valid for writes of
        // `len` bytes.
        let r = unsafe { sys::avio_read(self.pb, buf.as_mut_ptr(), len) };
        match r {
            n if n >= 0 => Ok(n as usize),
            sys::AVERROR_EOF => Ok(0),
            e => Err(std::io::Error::other(ffmpeg::Error::from(e))),
        }
    }
}

impl Drop for UrlReader {
    fn drop(&mut self) {
        // SAFETY: `pb` was opened by `avio_open2` and is closed once, here; `avio_closep`
        // nulls it.
        unsafe {
            sys::avio_closep(&mut self.pb);
        }
    }
}

/// Opens `bytes` (a whole segment held in memory, e.g. read over http) as a media input: as
/// `format` when given (the demuxer a playlist names, not the probe's guess), with `options`
/// (`format_whitelist`). ffmpeg-next's `input_from_stream` cannot force a demuxer.
pub fn input_from_bytes(
    bytes: Vec<u8>,
    format: Option<format::Input>,
    options: ffmpeg::Dictionary,
) -> Result<format::context::Input, ffmpeg::Error> {
    let mut io = format::context::StreamIo::from_read_seek(std::io::Cursor::new(bytes))?;
    // SAFETY: `ps` is checked non-null after allocation. Its `pb` is the custom AVIOContext
    // `io` owns, flagged AVFMT_FLAG_CUSTOM_IO so that libavformat never frees it; on every
    // path `io` outlives `ps`: on failure `avformat_open_input` frees `ps` itself (and we
    // close it after a failed stream-info read) before `io` drops, and on success
    // `wrap_with_custom_io` moves `io` into the returned context, which closes the input
    // before freeing the AVIOContext. `fmt` is null or a static demuxer description. The
    // options dictionary goes to the call and whatever it leaves is taken back and freed.
    unsafe {
        let mut ps = sys::avformat_alloc_context();
        if ps.is_null() {
            return Err(ffmpeg::Error::Other {
                errno: libc::ENOMEM,
            });
        }
        (*ps).pb = io.as_mut_ptr();
        (*ps).flags |= sys::AVFMT_FLAG_CUSTOM_IO;
        let fmt = format.as_ref().map_or(ptr::null(), |f| f.as_ptr());
        let mut opts = options.disown();
        let r = sys::avformat_open_input(&mut ps, ptr::null(), fmt, &mut opts);
        drop(ffmpeg::Dictionary::own(opts));
        if r < 0 {
            return Err(ffmpeg::Error::from(r));
        }
        let r = sys::avformat_find_stream_info(ps, ptr::null_mut());
        if r < 0 {
            sys::avformat_close_input(&mut ps);
            return Err(ffmpeg::Error::from(r));
        }
        Ok(format::context::Input::wrap_with_custom_io(ps, io))
    }
}
