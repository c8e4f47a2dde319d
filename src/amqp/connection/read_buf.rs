//! The connection's read buffer: starts small, grows while reads fill it (up to a
//! frame or 256 KiB).

use std::sync::Arc;

use smol::io::{AsyncRead, AsyncReadExt};

use super::view::ConnectionView;

/// A read buffer holding unparsed bytes in `buf[start..end]`.
pub(super) struct ReadBuf {
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Where the bytes read are counted.
    view: Arc<ConnectionView>,
}

impl ReadBuf {
    /// Starts small (idle connections are cheap) and grows while reads fill it.
    pub(super) fn new(view: Arc<ConnectionView>) -> Self {
        Self { buf: vec![0; 4096], start: 0, end: 0, view }
    }

    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes, making room for a frame of up to `max_frame` bytes.
    pub(super) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        max_frame: usize,
    ) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (self.end == self.buf.len() || self.buf.len() - self.start < max_frame) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Full: a frame needs more room, or the client sends faster than one
            // buffer per read. Grow up to a whole frame or 256 KiB, whichever is larger.
            let cap = max_frame.max(256 * 1024);
            let grow = (self.buf.len() * 2).min(cap).max(self.buf.len() + 1);
            self.buf.resize(grow, 0);
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.view.recv_oct.bump(n as u64);
        Ok(n)
    }
}
