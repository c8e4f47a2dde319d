//! Batches a quorum queue's commands into log entries: while an entry is in flight,
//! new commands wait and leave together in the next one, so under load one Raft
//! append (and one fsync on each replica) carries hundreds of publishes and acks.
//!
//! Up to [`MAX_IN_FLIGHT`] entries may be in flight at once (measured best at one: see
//! there). The log keeps them in the order they are proposed here
//! ([`ReplicaLog::propose`] fixes the order at the call, and the cluster layer's
//! pipeline submits in that order), so a publisher's messages are never reordered; the
//! entries are therefore cut and proposed under the proposer's lock, one order for both.

use std::sync::{Arc, Mutex};

use haremq_quorum::{encode_command, Command, Reply};

use super::codec;
use super::ReplicaLog;

/// What the proposer of a command is told: the state machine's reply once the entry
/// is committed and applied, or why it was not.
pub type Done = Box<dyn FnOnce(Result<Reply, String>) + Send>;

/// Entries in flight at once. One: the next batch waits for the previous entry's commit
/// and leaves with everything that arrived meanwhile. More, smaller entries measured no
/// faster. With stock openraft 0.9 (one leader append and fsync at a time), C1 gave 31.2k
/// and 31.6k msg/s at 1 and 2, 1 with less CPU per message and a lower p99, and 4 and 8
/// were slower. With the vendored openraft, whose leader does not wait for its own fsync
/// (docs/openraft-patch.md), the prototype gave 38.5k at 1, 34.1k at 2, 35.9k at 4 and
/// 28.2k at 8 (BENCHMARKS.md).
const MAX_IN_FLIGHT: usize = 1;
/// An entry carries at most this many bytes of commands (one is always taken).
const MAX_ENTRY_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct Proposer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: Vec<(Vec<u8>, Done)>,
    waiting_bytes: usize,
    in_flight: usize,
    log: Option<Arc<dyn ReplicaLog>>,
}

impl Proposer {
    /// The queue's log is open: what waited for it goes.
    pub fn attach(self: &Arc<Self>, log: Arc<dyn ReplicaLog>) {
        self.lock().log = Some(log);
        self.send_next();
    }

    /// Proposes `command`; `done` runs once it is applied (or failed).
    pub fn submit(self: &Arc<Self>, command: &Command, done: Done) {
        let bytes = encode_command(command);
        {
            let mut st = self.lock();
            st.waiting_bytes += bytes.len();
            st.waiting.push((bytes, done));
        }
        self.send_next();
    }

    /// Commands waiting for an entry.
    pub fn backlog(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_next(self: &Arc<Self>) {
        // Cut and proposed under one lock: two threads cutting entries must not propose
        // them in the other order. `propose` only queues (it never runs `done` inline).
        let mut st = self.lock();
        let Some(log) = st.log.clone() else { return };
        while st.in_flight < MAX_IN_FLIGHT && !st.waiting.is_empty() {
            let mut bytes = 0;
            let take = st
                .waiting
                .iter()
                .position(|(b, _)| {
                    bytes += b.len() + 4;
                    bytes > MAX_ENTRY_BYTES
                })
                .unwrap_or(st.waiting.len())
                .max(1);
            let batch: Vec<(Vec<u8>, Done)> = st.waiting.drain(..take).collect();
            st.waiting_bytes -= batch.iter().map(|(b, _)| b.len()).sum::<usize>();
            st.in_flight += 1;
            let (commands, dones): (Vec<Vec<u8>>, Vec<Done>) = batch.into_iter().unzip();
            let me = self.clone();
            log.propose(
                codec::join(&commands),
                Box::new(move |result| {
                    match result {
                        Ok(answer) => {
                            let replies = codec::split(&answer).unwrap_or_default();
                            let mut replies = replies.into_iter();
                            for done in dones {
                                let reply = replies.next().and_then(codec::decode_reply);
                                done(reply.ok_or_else(|| "the queue's log gave no reply".to_string()));
                            }
                        }
                        Err(e) => {
                            for done in dones {
                                done(Err(e.clone()));
                            }
                        }
                    }
                    me.lock().in_flight -= 1;
                    me.send_next();
                }),
            );
        }
    }
}
