//! A source that is still arriving: the worker downloads an object source into scratch while
//! the job already decodes it (`--source-read overlap`). Both sides share two files:
//!
//! ```text
//!  worker (storage::run)                         job process (media)
//!  source  ◄── sequential GET, plus a ranged      Reader: a chunk not yet written is waited
//!             GET of the tail first (an MP4's      for; seeks cost nothing; libavformat reads
//!             index may be at the end), plus       it through a custom AVIO (StreamIo)
//!             ranged GETs of what the job waits
//!             for far ahead of the sequential one
//!  source.arrival: [state][arrived: one byte per chunk][wanted: one byte per chunk]
//!             state and arrived: written by the worker, read by the job; state: arriving,
//!             verified (whole and its digest checked), failed. wanted: written by the job
//!             (a chunk it waits for), read by the worker
//! ```
//!
//! The data file has its full size from the start (a sparse file), so only the map says what
//! is real. A chunk is marked only after its bytes are in the file (the page cache is shared
//! by both processes), and the state turns to verified only after the store's digest matched:
//! the job waits for that before it publishes anything ([`wait_verified`]). A worker that stops
//! the download for any reason (an error, a cancel, a dropped future) marks the map failed,
//! and every wait in the job ends with an error at once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};

/// Bytes per chunk of the map: the unit a read waits for.
pub const CHUNK_BYTES: u64 = 1 << 20;
/// How often a waiting read looks at the map again.
const POLL: Duration = Duration::from_millis(5);
/// A chunk that does not arrive in this long ends the read (the worker's store client has
/// timed out long before; this only bounds a wait on a worker that vanished silently).
const MAX_WAIT: Duration = Duration::from_secs(600);

// State 0 (the map's initial zero byte): still arriving.
const STATE_VERIFIED: u8 = 1;
const STATE_FAILED: u8 = 2;

/// What the job is told about an arriving source (part of its request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arriving {
    /// The map file (`<source>.arrival`).
    pub map: PathBuf,
    /// The source's full size, bytes.
    pub size: u64,
    pub chunk_bytes: u64,
}

impl Arriving {
    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_bytes.max(1))
    }

    /// The map file of the source at `source`.
    pub fn map_path(source: &Path) -> PathBuf {
        let mut name = source.as_os_str().to_owned();
        name.push(".arrival");
        PathBuf::from(name)
    }
}

fn read_byte(map: &File, at: u64) -> io::Result<u8> {
    let mut b = [0u8];
    map.read_exact_at(&mut b, at)?;
    Ok(b[0])
}

fn failed() -> io::Error {
    io::Error::other("the download of the source failed (the worker reports why)")
}

/// The job's side: the source file read as it arrives.
pub(crate) struct Reader {
    file: File,
    map: File,
    arriving: Arriving,
    pos: u64,
    /// Chunks seen present (a chunk never goes away).
    present: Vec<bool>,
}

impl Reader {
    /// `file`: the source, opened (confined) by the caller.
    pub fn new(file: File, arriving: &Arriving) -> io::Result<Reader> {
        // Written too: the job marks the chunks it waits for.
        let map = File::options().read(true).write(true).open(&arriving.map)?;
        Ok(Reader {
            file,
            map,
            arriving: arriving.clone(),
            pos: 0,
            present: vec![false; arriving.chunks() as usize],
        })
    }

    /// Waits until chunk `i` is in the file.
    fn wait_for(&mut self, i: u64) -> io::Result<()> {
        if self.present[i as usize] {
            return Ok(());
        }
        let started = Instant::now();
        let mut asked = false;
        loop {
            if read_byte(&self.map, 1 + i)? == 1 {
                self.present[i as usize] = true;
                return Ok(());
            }
            match read_byte(&self.map, 0)? {
                STATE_FAILED => return Err(failed()),
                // Verified means every chunk is marked: the byte above was read just before.
                STATE_VERIFIED if read_byte(&self.map, 1 + i)? == 1 => {
                    self.present[i as usize] = true;
                    return Ok(());
                }
                _ => {}
            }
            if started.elapsed() > MAX_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the source stopped arriving",
                ));
            }
            if !asked {
                // The worker fetches it by a ranged GET if the download is far from it.
                self.map
                    .write_all_at(&[1], 1 + self.arriving.chunks() + i)?;
                asked = true;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.arriving.size;
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let chunk = self.arriving.chunk_bytes.max(1);
        let i = self.pos / chunk;
        self.wait_for(i)?;
        // Up to the end of this chunk: the next one may not be there yet.
        let end = ((i + 1) * chunk).min(size);
        let n = (buf.len() as u64).min(end - self.pos) as usize;
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            // The map said present, yet the file is shorter: not ours to paper over.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the arriving source is shorter than announced",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Reader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.arriving.size as i128;
        let target = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
            SeekFrom::End(d) => size + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = u64::try_from(target).unwrap_or(u64::MAX);
        Ok(self.pos)
    }
}

/// Blocks until the whole source is in and verified; an error if its download failed or
/// `cancel` was set. The job calls it before publishing anything.
pub(crate) fn wait_verified(arriving: &Arriving, cancel: &AtomicBool) -> Result<()> {
    let map = File::open(&arriving.map)
        .map_err(|e| JobError::internal(format!("arrival map {}: {e}", arriving.map.display())))?;
    let started = Instant::now();
    loop {
        let state =
            read_byte(&map, 0).map_err(|e| JobError::internal(format!("arrival map: {e}")))?;
        match state {
            STATE_VERIFIED => return Ok(()),
            STATE_FAILED => return Err(JobError::invalid_media(
                "the download of the source failed before it was whole (the worker reports why)",
            )),
            _ => {}
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("cancelled while the source arrived"));
        }
        if started.elapsed() > MAX_WAIT {
            return Err(JobError::invalid_media("the source stopped arriving"));
        }
        std::thread::sleep(POLL);
    }
}

/// The worker's side: marks what it has written. Every method takes `&self` (positioned
/// writes), so the sequential download and the tail's ranged read share one writer.
#[derive(Debug)]
pub struct MapWriter {
    map: File,
    arriving: Arriving,
    /// Bytes of the source written from its start without a gap (the sequential download).
    contiguous: AtomicU64,
    /// Set once the state byte is final.
    ended: AtomicBool,
}

impl MapWriter {
    /// Creates the source file at `source` with its full size (sparse) and an empty map
    /// beside it; returns the writer and what the job is told.
    pub fn create(source: &Path, size: u64) -> io::Result<MapWriter> {
        let data = File::create(source)?;
        data.set_len(size)?;
        let arriving = Arriving {
            map: Arriving::map_path(source),
            size,
            chunk_bytes: CHUNK_BYTES,
        };
        let map = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&arriving.map)?;
        map.set_len(1 + 2 * arriving.chunks())?;
        Ok(MapWriter {
            map,
            arriving,
            contiguous: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        })
    }

    pub fn arriving(&self) -> &Arriving {
        &self.arriving
    }

    /// Marks the chunks wholly inside `start..end` (bytes written and in the page cache);
    /// the last chunk counts as whole when `end` is the source's end.
    pub fn mark(&self, start: u64, end: u64) -> io::Result<()> {
        let chunk = self.arriving.chunk_bytes.max(1);
        let first = start.div_ceil(chunk);
        let last = if end >= self.arriving.size {
            self.arriving.chunks()
        } else {
            end / chunk
        };
        if first >= last {
            return Ok(());
        }
        let ones = vec![1u8; (last - first) as usize];
        self.map.write_all_at(&ones, 1 + first)
    }

    /// The sequential download has written `upto` bytes from the start: marks the chunks that
    /// became whole since the last call.
    pub fn advance(&self, upto: u64) -> io::Result<()> {
        let before = self.contiguous.swap(upto, Ordering::Relaxed);
        let chunk = self.arriving.chunk_bytes.max(1);
        let from = (before / chunk) * chunk;
        self.mark(from, upto)
    }

    /// The first run of chunks the job waits for that the sequential download will not reach
    /// soon (`ahead` chunks or more past what it has written), as a byte range of at most
    /// `most` chunks, ending before the next chunk already there: what to fetch by a ranged
    /// GET. Only chunks before `below` (the chunks from there on come by another request).
    /// None when there is no such chunk.
    pub fn wanted_ahead(
        &self,
        ahead: u64,
        most: u64,
        below: u64,
    ) -> io::Result<Option<Range<u64>>> {
        let n = self.arriving.chunks().min(below);
        let all = self.arriving.chunks() as usize;
        let mut flags = vec![0u8; 2 * all];
        self.map.read_exact_at(&mut flags, 1)?;
        let (arrived, wanted) = flags.split_at(all);
        let chunk = self.arriving.chunk_bytes.max(1);
        let frontier = self.contiguous.load(Ordering::Relaxed) / chunk;
        let from = frontier.saturating_add(ahead);
        let Some(first) = (from..n).find(|&i| wanted[i as usize] == 1 && arrived[i as usize] == 0)
        else {
            return Ok(None);
        };
        let last = (first..n.min(first.saturating_add(most.max(1))))
            .take_while(|&i| arrived[i as usize] == 0)
            .last()
            .unwrap_or(first);
        Ok(Some(
            first * chunk..((last + 1) * chunk).min(self.arriving.size),
        ))
    }

    /// The whole source is in and its digest matched.
    pub fn verified(&self) -> io::Result<()> {
        self.mark(0, self.arriving.size)?;
        self.end(STATE_VERIFIED)
    }

    /// The download stopped without the whole source: every wait in the job ends.
    pub fn failed(&self) {
        let _ = self.end(STATE_FAILED);
    }

    fn end(&self, state: u8) -> io::Result<()> {
        if self.ended.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.map.write_all_at(&[state], 0)
    }
}

impl Drop for MapWriter {
    /// A writer dropped before its end (an error, a cancel, a panic) fails the map, so that
    /// no job waits for bytes that will never come.
    fn drop(&mut self) {
        self.failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn source(dir: &Path, bytes: &[u8]) -> (Arc<MapWriter>, Reader, PathBuf) {
        let path = dir.join("source");
        let writer = Arc::new(MapWriter::create(&path, bytes.len() as u64).unwrap());
        let reader = Reader::new(File::open(&path).unwrap(), writer.arriving()).unwrap();
        (writer, reader, path)
    }

    #[test]
    fn a_read_waits_for_its_chunk_and_returns_the_bytes_written_there() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let (writer, mut reader, path) = source(dir.path(), &data);
        let w = Arc::clone(&writer);
        let d = data.clone();
        let feeder = std::thread::spawn(move || {
            let file = File::options().write(true).open(&path).unwrap();
            // The tail first (as the ranged GET does), then the rest from the start.
            let tail = 3 * CHUNK_BYTES;
            file.write_all_at(&d[tail as usize..], tail).unwrap();
            w.mark(tail, d.len() as u64).unwrap();
            for (i, piece) in d.chunks(300_000).enumerate() {
                std::thread::sleep(Duration::from_millis(2));
                let at = i as u64 * 300_000;
                file.write_all_at(piece, at).unwrap();
                w.advance(at + piece.len() as u64).unwrap();
            }
            w.verified().unwrap();
        });
        // The index at the end is read first, as a demuxer of an MP4 with its moov last does.
        reader.seek(SeekFrom::End(-17)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &data[data.len() - 17..]);
        reader.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert!(all == data, "the bytes read differ from the bytes written");
        feeder.join().unwrap();
        wait_verified(writer.arriving(), &AtomicBool::new(false)).unwrap();
    }

    #[test]
    fn a_chunk_the_job_waits_for_far_ahead_of_the_download_is_asked_for_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(20 * CHUNK_BYTES)).map(|i| (i % 241) as u8).collect();
        let (writer, mut reader, path) = source(dir.path(), &data);
        writer.advance(CHUNK_BYTES).unwrap();
        assert_eq!(
            writer.wanted_ahead(4, 3, u64::MAX).unwrap(),
            None,
            "nothing waited for yet"
        );
        // A demuxer jumps to chunk 12 (an index after the media data) and waits there.
        let waiting = std::thread::spawn(move || {
            reader.seek(SeekFrom::Start(12 * CHUNK_BYTES + 5)).unwrap();
            let mut buf = vec![0u8; 8];
            reader.read_exact(&mut buf).unwrap();
            (reader, buf)
        });
        let asked = (0..400)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(5));
                writer.wanted_ahead(4, 3, u64::MAX).unwrap()
            })
            .expect("the wait was never asked for");
        // At most 3 chunks from the one waited for, and none already there.
        assert_eq!(asked, 12 * CHUNK_BYTES..15 * CHUNK_BYTES);
        // Not from chunk 13 on when another request brings those (the tail's GET).
        assert_eq!(
            writer.wanted_ahead(4, 3, 13).unwrap(),
            Some(12 * CHUNK_BYTES..13 * CHUNK_BYTES)
        );
        assert_eq!(writer.wanted_ahead(4, 3, 12).unwrap(), None);
        writer.mark(13 * CHUNK_BYTES, 14 * CHUNK_BYTES).unwrap();
        assert_eq!(
            writer.wanted_ahead(4, 3, u64::MAX).unwrap(),
            Some(12 * CHUNK_BYTES..13 * CHUNK_BYTES)
        );
        // Within `ahead` chunks of the download, the download itself will bring it.
        writer.advance(9 * CHUNK_BYTES).unwrap();
        assert_eq!(writer.wanted_ahead(4, 3, u64::MAX).unwrap(), None);
        let file = File::options().write(true).open(&path).unwrap();
        let r = asked.start as usize..asked.end as usize;
        file.write_all_at(&data[r], asked.start).unwrap();
        writer.mark(asked.start, asked.end).unwrap();
        let (_reader, buf) = waiting.join().unwrap();
        let at = (12 * CHUNK_BYTES + 5) as usize;
        assert_eq!(buf, &data[at..at + 8]);
        assert_eq!(writer.wanted_ahead(0, 3, u64::MAX).unwrap(), None, "served");
    }

    #[test]
    fn a_download_that_stops_ends_every_wait_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; (2 * CHUNK_BYTES) as usize];
        let (writer, mut reader, _) = source(dir.path(), &data);
        let arriving = writer.arriving().clone();
        writer.advance(CHUNK_BYTES).unwrap();
        let mut buf = vec![0u8; CHUNK_BYTES as usize];
        assert_eq!(reader.read(&mut buf).unwrap(), CHUNK_BYTES as usize);
        let waiting = std::thread::spawn(move || {
            let mut rest = vec![0u8; 10];
            reader.read(&mut rest).map_err(|e| e.to_string())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(writer);
        let err = waiting.join().unwrap().unwrap_err();
        assert!(err.contains("download of the source failed"), "{err}");
        let err = wait_verified(&arriving, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::InvalidMedia);
    }
}
