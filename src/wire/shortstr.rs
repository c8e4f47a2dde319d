//! Short strings (at most 255 bytes) built from text the broker did not check itself.
//!
//! `amq-protocol`'s `ShortString::from` panics on more than 255 bytes, and text that
//! reaches a short-string field can come from a long string (a queue argument, a header
//! value) or from the disk. Every `ShortString` the broker builds from such text goes
//! through [`short`], which cuts at a character boundary instead; the places that could
//! let longer text in refuse it earlier (e.g. `x-dead-letter-routing-key` at declare),
//! so the cut is a last line of defence, never a way to store a longer name.

use amq_protocol::types::ShortString;

/// The longest short string, in bytes.
pub const MAX_LEN: usize = 255;

/// `s` cut to at most [`MAX_LEN`] bytes at a character boundary.
pub fn fit(s: &str) -> &str {
    if s.len() <= MAX_LEN {
        return s;
    }
    let mut end = MAX_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A `ShortString` of `s`, cut by [`fit`] if it is longer than 255 bytes (never panics).
pub fn short(s: &str) -> ShortString {
    let cut = fit(s);
    if cut.len() < s.len() {
        log::warn!("a short string of {} bytes was cut to {} bytes", s.len(), cut.len());
    }
    ShortString::try_new(cut).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(fit("abc"), "abc");
        let long = "é".repeat(200); // 400 bytes
        assert_eq!(fit(&long).len(), 254);
        assert_eq!(short(&long).as_str(), "é".repeat(127));
        assert_eq!(short(&"k".repeat(300)).as_str().len(), 255);
    }
}
