//! The one error type a job can end with: its kind decides what the caller does
//! (exit status, Ack/Nak/Term), its message is for the person reading the event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, in the words of the message contract (`kind` in `video.failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong: unknown quality, URL-like source, path outside the roots…
    InvalidRequest,
    /// The source file does not exist (or is not a regular file).
    SourceNotFound,
    /// The source exists but is not media we can read: empty, garbage, truncated, undecodable.
    InvalidMedia,
    /// The source has no video stream (audio-only, cover art only).
    NoVideoStream,
    /// The source's codec has no decoder in this FFmpeg build.
    UnsupportedCodec,
    /// Width, height or duration over the configured limits.
    LimitExceeded,
    /// Writing the output failed (disk full, permissions): worth retrying elsewhere or later.
    OutputIo,
    /// The job was stopped from outside (shutdown).
    Cancelled,
    /// A bug or an unexpected library failure (including a panic in a media thread).
    Internal,
    /// The job's process died: killed by a signal (the message names it: SIGSEGV, SIGABRT,
    /// SIGKILL…), ran out of its memory limit, or exited without a result. Often the input's
    /// fault, but a retry on another worker tells a bad file from a bad moment.
    Crashed,
    /// The job's process made no progress for the configured time and was killed.
    Stalled,
    /// The source was replaced or rewritten while the job read it: a retry reads the new file.
    SourceChanged,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::SourceNotFound => "source_not_found",
            ErrorKind::InvalidMedia => "invalid_media",
            ErrorKind::NoVideoStream => "no_video_stream",
            ErrorKind::UnsupportedCodec => "unsupported_codec",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::OutputIo => "output_io",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::Crashed => "crashed",
            ErrorKind::Stalled => "stalled",
            ErrorKind::SourceChanged => "source_changed",
        }
    }

    /// A permanent error fails the same way on every attempt: retrying it only delays the
    /// failed event. Output I/O, cancellation, internal errors, crashes, stalls and a source
    /// changed mid-job may pass on another try (a crash repeated on every delivery ends in the
    /// dead letters, kind `crashed`).
    pub fn is_permanent(self) -> bool {
        !matches!(
            self,
            ErrorKind::OutputIo
                | ErrorKind::Cancelled
                | ErrorKind::Internal
                | ErrorKind::Crashed
                | ErrorKind::Stalled
                | ErrorKind::SourceChanged
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's failure: a kind that decides, and a message that explains. Deserialize: it crosses
/// the pipe from the job process to the worker (`isolation`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{kind}: {message}")]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
}

impl JobError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        JobError {
            kind,
            message: message.into(),
        }
    }
}

/// Shorthand constructors, so call sites read as the failure they report.
macro_rules! kind_ctor {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl JobError {
            $(pub fn $name(message: impl Into<String>) -> Self {
                JobError::new(ErrorKind::$kind, message)
            })*
        }
    };
}

kind_ctor! {
    invalid_request => InvalidRequest,
    source_not_found => SourceNotFound,
    invalid_media => InvalidMedia,
    no_video_stream => NoVideoStream,
    unsupported_codec => UnsupportedCodec,
    limit_exceeded => LimitExceeded,
    output_io => OutputIo,
    cancelled => Cancelled,
    internal => Internal,
    crashed => Crashed,
    stalled => Stalled,
    source_changed => SourceChanged,
}

pub type Result<T, E = JobError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_and_stalls_are_retried_and_keep_their_wire_names() {
        for (kind, name) in [
            (ErrorKind::Crashed, "crashed"),
            (ErrorKind::Stalled, "stalled"),
        ] {
            assert!(!kind.is_permanent(), "{name}");
            assert_eq!(kind.as_str(), name);
            let e = JobError::new(kind, "killed by SIGSEGV");
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"kind":"{name}","message":"killed by SIGSEGV"}}"#)
            );
            assert_eq!(serde_json::from_str::<JobError>(&text).unwrap(), e);
        }
    }
}
