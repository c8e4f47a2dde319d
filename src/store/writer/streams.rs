//! The writer's part of a batch that goes to stream logs rather than to the [`Store`]:
//! appends are written to each stream's log and every touched log is fsync'd before the
//! batch's store commit, so one group commit covers both and a confirm is sent only
//! once the message is on disk in its stream. Appends carry their offsets, so a batch
//! retried after a failure rewrites exactly what was lost (the logs are first cut back
//! to what was last synced).

use std::sync::Arc;

use super::super::{codec, StoreError, StoreOp, StreamTarget};

/// The streams a batch touched, and a buffer the records are encoded into.
#[derive(Default)]
pub(super) struct StreamWrites {
    touched: Vec<Arc<dyn StreamTarget>>,
    scratch: Vec<u8>,
}

fn same(a: &Arc<dyn StreamTarget>, b: &Arc<dyn StreamTarget>) -> bool {
    Arc::ptr_eq(a, b)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(format!("stream log: {e}"))
}

impl StreamWrites {
    /// Writes the batch's stream appends and deletions, then syncs every log it
    /// appended to. On an error nothing of the batch may be taken as durable: call
    /// [`Self::failed`].
    pub(super) fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.touched.clear();
        for op in ops {
            match op {
                StoreOp::StreamAppend { stream, offset, message } => {
                    let fields = message.fields();
                    self.scratch.clear();
                    codec::encode_message(fields, &mut self.scratch);
                    stream.log().append(*offset, fields.published_ms as i64, &self.scratch).map_err(io)?;
                    if !self.touched.iter().any(|t| same(t, stream)) {
                        self.touched.push(stream.clone());
                    }
                }
                StoreOp::DeleteStream(stream) => {
                    self.touched.retain(|t| !same(t, stream));
                    // A directory left behind is swept at the next start.
                    if let Err(e) = stream.log().destroy() {
                        log::warn!("could not remove a deleted stream's log: {e}");
                    }
                }
                _ => {}
            }
        }
        let now = crate::util::now_ms() as i64;
        for t in &self.touched {
            t.log().sync(now).map_err(io)?;
        }
        Ok(())
    }

    /// The batch failed: every touched log goes back to what it last synced, so the
    /// retry appends the same offsets again.
    pub(super) fn failed(&mut self) {
        for t in self.touched.drain(..) {
            if let Err(e) = t.log().reset_to_synced() {
                log::error!("stream log could not be cut back after a failed write: {e}");
            }
        }
    }

    /// The batch is committed: each touched stream learns how far its log is durable.
    pub(super) fn committed(&mut self) {
        for t in self.touched.drain(..) {
            t.committed(t.log().committed());
        }
    }
}
