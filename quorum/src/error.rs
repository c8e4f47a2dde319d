//! Decoding errors. The machine's `apply` itself cannot fail.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input is longer than the decoder accepts.
    TooLarge { len: usize, max: usize },
    /// Not a valid encoding (truncated, corrupt, or trailing bytes).
    Malformed(String),
    /// A snapshot of a format this version does not read.
    UnknownVersion(u8),
    /// A snapshot that decodes but whose state is inconsistent.
    Inconsistent(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { len, max } => write!(f, "encoded input of {len} bytes exceeds {max}"),
            Error::Malformed(e) => write!(f, "malformed encoding: {e}"),
            Error::UnknownVersion(v) => write!(f, "unknown snapshot version {v}"),
            Error::Inconsistent(what) => write!(f, "inconsistent snapshot: {what}"),
        }
    }
}

impl std::error::Error for Error {}
