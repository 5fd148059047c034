//! HLS output: the segmenter that cuts MPEG-TS files at grid IDRs, and the playlists.

pub mod playlist;
pub mod segmenter;

pub use segmenter::{Segment, Segmenter};
