//! HLS output: the segmenter that cuts MPEG-TS or fragmented MP4 files at grid IDRs (and
//! records where each keyframe lies), the bit rate rules, and the playlists.

pub mod bitrate;
pub(crate) mod fmp4;
pub mod playlist;
pub mod segmenter;

pub use segmenter::{IFrame, Segment, SegmentFormat, Segmented, Segmenter};
