//! Pipelined writes that enter the log in the order they were submitted.
//!
//! [`Group::write`](crate::Group::write) carries one request at a time to the leader; a
//! caller that wants several entries in flight at once (a quorum queue's proposer) needs
//! them to reach the log in the order it issued them, or a publisher's messages would be
//! reordered. One *driver* task per group takes every submitted command in order and hands
//! it to the leader without waiting for earlier ones to commit:
//!
//! - on the leader itself it calls openraft's `client_write_ff` from that one task, which
//!   queues the write to Raft's core in call order;
//! - on a follower it writes the command, tagged with a sequence number, to one
//!   *pipelined* connection to the leader, whose reader submits them to Raft strictly in
//!   arrival order (from one task, see [`serve`]); answers come back in any order,
//!   matched by sequence number.
//!
//! Failures keep the order: a command that the leader refused *before appending it*
//! (not leader, no such group) is retried — after every command in flight has been
//! answered, and only if no later command was (or may have been) appended; otherwise it
//! fails with `NoQuorum` (it is not in the log, the later ones are; a retry would reorder).
//! A command whose fate is unknown (timeout, connection lost) fails with `Timeout` and is
//! never retried, as a retry could append it twice. When the leader moves, the driver
//! first lets everything in flight to the old one be answered, so that a refusal there
//! can still be retried ahead of the commands that follow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::ClientWriteError;
use serde::{Deserialize, Serialize};
use smol::net::TcpStream;
use tokio::sync::oneshot;

use crate::network::auth::{handshake, Role};
use crate::network::client::Dialer;
use crate::network::frame::{read_frame, write_frame, FrameError};
use crate::network::message::RpcRequest;
use crate::node::Shared;
use crate::types::{Raft, Request};
use crate::{GroupId, NodeId, WriteError};

/// One submitted command and where its answer goes.
pub(crate) struct Job {
    pub command: Vec<u8>,
    pub reply: oneshot::Sender<Result<Vec<u8>, WriteError>>,
    /// Until when it may wait for a leader (nothing proposed yet).
    pub deadline: Instant,
}

/// A command on a pipelined connection (follower → leader).
#[derive(Serialize)]
struct PipeRequestRef<'a> {
    seq: u64,
    command: &'a [u8],
}

/// The same, as the leader reads it (the same postcard encoding).
#[derive(Deserialize)]
struct PipeRequest {
    seq: u64,
    command: Vec<u8>,
}

/// The leader's answer to one pipelined command.
#[derive(Serialize, Deserialize)]
struct PipeResponse {
    seq: u64,
    outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
enum Outcome {
    /// Committed and applied: the state machine's response.
    Applied(Vec<u8>),
    /// Refused before it was appended (not the leader, group not open): not in the log.
    NotAppended,
    /// May or may not be in the log (timed out, Raft stopped, connection lost).
    Unknown(String),
}

/// Starts the group's driver; it ends once every sender is dropped and what it holds
/// is answered.
pub(crate) fn start(
    raft: Raft,
    group: GroupId,
    me: NodeId,
    dialer: Dialer,
    timeout: Duration,
) -> smol::channel::Sender<Job> {
    let (tx, jobs) = smol::channel::unbounded();
    let (done_tx, done_rx) = smol::channel::unbounded();
    let driver = Driver {
        raft,
        group,
        me,
        dialer,
        timeout,
        jobs,
        done_tx,
        done_rx,
        in_flight: BTreeMap::new(),
        retry: VecDeque::new(),
        refused: Vec::new(),
        barrier: false,
        back_off: false,
        landed_max: 0,
        next_seq: 1,
        conn: None,
        closed: false,
    };
    smol::spawn(driver.run()).detach();
    tx
}

struct InFlight {
    job: Job,
    expires: Instant,
}

/// A pipelined connection to the leader of one group.
struct Conn {
    target: NodeId,
    addr: SocketAddr,
    stream: TcpStream,
    /// Sequence numbers sent and not yet answered; `None` once the connection is dead
    /// (its reader answered all of them `Unknown`).
    pending: Arc<Mutex<Option<BTreeSet<u64>>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the reader task too.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

struct Driver {
    raft: Raft,
    group: GroupId,
    me: NodeId,
    dialer: Dialer,
    timeout: Duration,
    jobs: smol::channel::Receiver<Job>,
    done_tx: smol::channel::Sender<(u64, Outcome)>,
    done_rx: smol::channel::Receiver<(u64, Outcome)>,
    in_flight: BTreeMap<u64, InFlight>,
    /// Commands to send before any new one (refused ones being retried, or held back while
    /// the leader changes).
    retry: VecDeque<Job>,
    /// Commands refused before being appended, while others are still in flight.
    refused: Vec<(u64, Job)>,
    /// Send nothing until everything in flight is answered (the leader changed).
    barrier: bool,
    /// Wait a little before the next send (a refusal: the leader is moving).
    back_off: bool,
    /// The highest sequence number that is or may be in the log.
    landed_max: u64,
    next_seq: u64,
    conn: Option<Conn>,
    closed: bool,
}

enum Event {
    Job(Job),
    Done(u64, Outcome),
    Expired,
    Closed,
}

impl Driver {
    async fn run(mut self) {
        loop {
            if self.closed && self.in_flight.is_empty() {
                for job in self.retry.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Fatal("the group is closed".into())));
                }
                return;
            }
            let holding = self.barrier || !self.refused.is_empty();
            let retry = if holding { None } else { self.retry.pop_front() };
            let event = if let Some(job) = retry {
                Event::Job(job)
            } else {
                let expiry = self.in_flight.values().map(|f| f.expires).min();
                let (jobs, done_rx, closed) = (&self.jobs, &self.done_rx, self.closed);
                let done = async {
                    match done_rx.recv().await {
                        Ok((seq, outcome)) => Event::Done(seq, outcome),
                        Err(_) => std::future::pending().await,
                    }
                };
                let next = async {
                    if holding || closed {
                        return std::future::pending().await;
                    }
                    match jobs.recv().await {
                        Ok(job) => Event::Job(job),
                        Err(_) => Event::Closed,
                    }
                };
                let timer = async {
                    match expiry {
                        Some(at) => {
                            smol::Timer::at(at).await;
                            Event::Expired
                        }
                        None => std::future::pending().await,
                    }
                };
                // Answers first: they release callers and decide retries.
                smol::future::or(done, smol::future::or(next, timer)).await
            };
            match event {
                Event::Job(job) => self.send(job).await,
                Event::Done(seq, outcome) => self.answered(seq, outcome),
                Event::Expired => self.expire(),
                Event::Closed => self.closed = true,
            }
        }
    }

    /// Sends one command to the leader (waiting for one to be known, up to its deadline).
    async fn send(&mut self, job: Job) {
        if std::mem::take(&mut self.back_off) {
            self.pause().await;
        }
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let Some(leader) = leader else {
                if Instant::now() >= job.deadline {
                    let _ = job.reply.send(Err(WriteError::NoQuorum));
                    return;
                }
                self.pause().await;
                continue;
            };
            if leader == self.me {
                if self.conn.is_some() {
                    if !self.in_flight.is_empty() {
                        return self.hold(job);
                    }
                    self.conn = None;
                }
                return self.send_local(job).await;
            }
            match self.connection(leader, &job).await {
                Ok(true) => return self.send_remote(job).await,
                Ok(false) => return self.hold(job),
                Err(()) => {
                    if Instant::now() >= job.deadline {
                        let _ = job.reply.send(Err(WriteError::NoQuorum));
                        return;
                    }
                    self.pause().await;
                }
            }
        }
    }

    /// Keeps `job` first in line until everything in flight is answered (at once if
    /// nothing is).
    fn hold(&mut self, job: Job) {
        self.retry.push_front(job);
        self.barrier = !self.in_flight.is_empty();
    }

    async fn send_local(&mut self, job: Job) {
        let seq = self.next_seq();
        let submitted = self.raft.client_write_ff(Request(job.command.clone())).await;
        self.in_flight.insert(seq, InFlight { job, expires: Instant::now() + self.timeout });
        match submitted {
            Ok(rx) => {
                let done = self.done_tx.clone();
                smol::spawn(async move {
                    let _ = done.send((seq, local_outcome(rx.await))).await;
                })
                .detach();
            }
            Err(e) => self.answered(seq, Outcome::Unknown(e.to_string())),
        }
    }

    /// Ensures a live connection to `leader`: `Ok(false)` if one must wait (commands in
    /// flight on another path), `Err` if it can't be reached now.
    async fn connection(&mut self, leader: NodeId, job: &Job) -> Result<bool, ()> {
        let addr = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&leader).and_then(|n| n.addr.parse::<SocketAddr>().ok())
        };
        let Some(addr) = addr.map(|a| self.dialer.route(leader, a)) else { return Err(()) };
        let alive = |c: &Conn| c.pending.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        match &self.conn {
            Some(c) if c.target == leader && c.addr == addr && alive(c) => return Ok(true),
            _ => {}
        }
        // Commands in flight elsewhere (the local Raft, the old leader) are answered first.
        if !self.in_flight.is_empty() {
            return Ok(false);
        }
        self.conn = None;
        let within = job.deadline.saturating_duration_since(Instant::now()).min(self.timeout);
        let dial = dial(&self.dialer, addr, self.group, self.done_tx.clone());
        let conn = smol::future::or(dial, async {
            smol::Timer::after(within).await;
            Err("connect timed out".to_string())
        })
        .await;
        match conn {
            Ok((stream, pending)) => {
                self.conn = Some(Conn { target: leader, addr, stream, pending });
                Ok(true)
            }
            Err(e) => {
                log::debug!("raft: group {}: no pipelined connection to node {leader}: {e}", self.group.0);
                Err(())
            }
        }
    }

    async fn send_remote(&mut self, job: Job) {
        let seq = self.next_seq();
        let Some(conn) = self.conn.as_mut() else { return self.hold(job) };
        {
            let mut pending = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.as_mut() {
                Some(p) => p.insert(seq),
                None => {
                    drop(pending);
                    self.conn = None;
                    return self.hold(job);
                }
            };
        }
        let written = write_frame(&mut conn.stream, &PipeRequestRef { seq, command: &job.command }).await;
        // A margin over the leader's own timeout, so its answer normally comes first.
        let expires = Instant::now() + self.timeout + Duration::from_secs(1);
        self.in_flight.insert(seq, InFlight { job, expires });
        match written {
            Ok(()) => {}
            Err(FrameError::TooLarge(_)) => {
                if let Some(p) = conn.pending.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    p.remove(&seq);
                }
                if let Some(f) = self.in_flight.remove(&seq) {
                    let msg = "the command exceeds the 64 MiB frame limit".to_string();
                    let _ = f.job.reply.send(Err(WriteError::Fatal(msg)));
                }
            }
            // Maybe part of it went out: the connection is closed, and its reader answers
            // everything pending on it `Unknown`.
            Err(e) => {
                log::debug!("raft: group {}: pipelined connection lost: {e}", self.group.0);
                self.conn = None;
            }
        }
    }

    fn answered(&mut self, seq: u64, outcome: Outcome) {
        let Some(f) = self.in_flight.remove(&seq) else { return };
        match outcome {
            Outcome::Applied(r) => {
                self.landed_max = self.landed_max.max(seq);
                let _ = f.job.reply.send(Ok(r));
            }
            Outcome::Unknown(e) => {
                log::debug!("raft: group {}: a pipelined write's outcome is unknown: {e}", self.group.0);
                self.landed_max = self.landed_max.max(seq);
                let _ = f.job.reply.send(Err(WriteError::Timeout));
            }
            Outcome::NotAppended => self.refused.push((seq, f.job)),
        }
        self.settle_if_idle();
    }

    /// In-flight commands not answered in time: their fate is unknown.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self.in_flight.iter().filter(|(_, f)| f.expires <= now).map(|(s, _)| *s).collect();
        for seq in late {
            self.answered(seq, Outcome::Unknown("no answer in time".into()));
        }
    }

    /// Once nothing is in flight: refused commands go back first in line, unless a later
    /// command is (or may be) in the log already, which a retry would overtake.
    fn settle_if_idle(&mut self) {
        if !self.in_flight.is_empty() {
            return;
        }
        self.barrier = false;
        if self.refused.is_empty() {
            return;
        }
        let mut refused = std::mem::take(&mut self.refused);
        refused.sort_by_key(|(seq, _)| *seq);
        for (seq, job) in refused.into_iter().rev() {
            if seq < self.landed_max {
                let _ = job.reply.send(Err(WriteError::NoQuorum));
            } else {
                self.retry.push_front(job);
            }
        }
        self.back_off = true;
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Until the group's metrics change (a leader elected), at most 50 ms.
    async fn pause(&self) {
        let mut metrics = self.raft.metrics();
        metrics.borrow_and_update();
        smol::future::or(
            async {
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
            async {
                smol::Timer::after(Duration::from_millis(50)).await;
            },
        )
        .await;
    }
}

fn local_outcome<E>(
    r: Result<
        Result<openraft::raft::ClientWriteResponse<crate::TypeConfig>, ClientWriteError<u64, openraft::BasicNode>>,
        E,
    >,
) -> Outcome {
    match r {
        Ok(Ok(resp)) => Outcome::Applied(resp.data.0),
        // Refused (this node is not the leader), or appended and then removed by a new
        // leader's log: openraft answers both this way, and the entry is not in the log.
        Ok(Err(ClientWriteError::ForwardToLeader(_))) => Outcome::NotAppended,
        Ok(Err(e)) => Outcome::Unknown(e.to_string()),
        Err(_) => Outcome::Unknown("raft stopped".into()),
    }
}

/// Opens a pipelined connection: the handshake, `OpenPipeline`, and a reader task that
/// forwards the leader's answers to the driver.
async fn dial(
    dialer: &Dialer,
    addr: SocketAddr,
    group: GroupId,
    done: smol::channel::Sender<(u64, Outcome)>,
) -> Result<(TcpStream, Arc<Mutex<Option<BTreeSet<u64>>>>), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    handshake(&mut stream, &dialer.secret, dialer.node_id, Role::Dialer).await.map_err(|e| e.to_string())?;
    write_frame(&mut stream, &RpcRequest::OpenPipeline(group)).await.map_err(|e| e.to_string())?;
    let pending: Arc<Mutex<Option<BTreeSet<u64>>>> = Arc::new(Mutex::new(Some(BTreeSet::new())));
    let (mut reader, reader_pending) = (stream.clone(), pending.clone());
    smol::spawn(async move {
        loop {
            match read_frame::<PipeResponse>(&mut reader).await {
                Ok(resp) => {
                    let known = reader_pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                        .is_some_and(|p| p.remove(&resp.seq));
                    if known {
                        let _ = done.send((resp.seq, resp.outcome)).await;
                    }
                }
                Err(e) => {
                    let lost = reader_pending.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    let _ = reader.shutdown(std::net::Shutdown::Both);
                    for seq in lost {
                        let _ = done.send((seq, Outcome::Unknown(format!("connection lost: {e}")))).await;
                    }
                    return;
                }
            }
        }
    })
    .detach();
    Ok((stream, pending))
}

/// The leader's side of a pipelined connection: commands are submitted to Raft in the
/// order they arrive, from this one task (each `client_write_ff` queues to Raft's core
/// before the next is read); answers are written as they come, in any order.
pub(crate) async fn serve(mut stream: TcpStream, shared: Arc<Shared>, peer: NodeId, group: GroupId) {
    let (tx, rx) = smol::channel::unbounded::<PipeResponse>();
    let mut writer = stream.clone();
    smol::spawn(async move {
        while let Ok(resp) = rx.recv().await {
            if let Err(e) = write_frame(&mut writer, &resp).await {
                log::debug!("raft: pipelined connection from node {peer} closed: {e}");
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    })
    .detach();
    let timeout = shared.write_timeout();
    loop {
        let req: PipeRequest = match read_frame(&mut stream).await {
            Ok(req) => req,
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                log::warn!("raft: closing pipelined connection from node {peer}: {e}");
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        };
        shared.dialer.contacts.heard_from(peer);
        let seq = req.seq;
        let Some(raft) = shared.raft_of(group) else {
            let _ = tx.send(PipeResponse { seq, outcome: Outcome::NotAppended }).await;
            continue;
        };
        match raft.client_write_ff(Request(req.command)).await {
            Ok(answer) => {
                let tx = tx.clone();
                smol::spawn(async move {
                    let outcome = smol::future::or(async { local_outcome(answer.await) }, async {
                        smol::Timer::after(timeout).await;
                        Outcome::Unknown("not committed in time".into())
                    })
                    .await;
                    let _ = tx.send(PipeResponse { seq, outcome }).await;
                })
                .detach();
            }
            Err(e) => {
                let _ = tx.send(PipeResponse { seq, outcome: Outcome::Unknown(e.to_string()) }).await;
            }
        }
    }
}
