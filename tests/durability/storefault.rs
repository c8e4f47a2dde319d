//! Store faults with real processes: a data directory on a tiny tmpfs that fills up,
//! and store files damaged between runs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::{Channel, Connection};

use super::{connect, declare, drain_raw, persistent, Broker, WAIT};

/// A tmpfs of a few MiB mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one, or says why it cannot (not root, no mount(8), a container without
    /// the capability) and returns None: the test is then skipped.
    fn mount(name: &str, mib: u32) -> Option<Tmpfs> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "haremq-tmpfs-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("mount point");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(&p).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(p)),
            Ok(o) => {
                eprintln!("SKIPPED: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                let _ = std::fs::remove_dir(&p);
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                let _ = std::fs::remove_dir(&p);
                None
            }
        }
    }

    /// Takes `mib` MiB of the filesystem with a file that [`Tmpfs::free`] deletes.
    fn fill(&self, mib: usize) {
        std::fs::write(self.0.join("filler"), vec![0x5a; mib << 20]).expect("write filler");
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A body of `size` bytes that starts with the number `i`.
fn numbered(i: u32, size: usize) -> Vec<u8> {
    let mut body = i.to_be_bytes().to_vec();
    body.resize(size, b'x');
    body
}

fn number(body: &[u8]) -> u32 {
    u32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// What a publisher was told.
#[derive(Default)]
struct Told {
    acked: BTreeSet<u32>,
    nacked: BTreeSet<u32>,
}

/// Publishes `from..to` as persistent `size`-byte messages with confirms, 8 in
/// flight, until `stop_after_nacks` nacks arrived, the broker blocks the connection,
/// or `to`. Returns what it was told and the next number.
async fn publish_until_refused(
    conn: &Connection,
    ch: &Channel,
    queue: &str,
    range: (u32, u32),
    size: usize,
    stop_after_nacks: usize,
) -> (Told, u32) {
    publish_with_window(conn, ch, queue, range, size, stop_after_nacks, 8).await
}

/// [`publish_until_refused`] with `in_flight` unconfirmed publishes.
async fn publish_with_window(
    conn: &Connection,
    ch: &Channel,
    queue: &str,
    (from, to): (u32, u32),
    size: usize,
    stop_after_nacks: usize,
    in_flight: usize,
) -> (Told, u32) {
    let mut told = Told::default();
    let mut window = std::collections::VecDeque::new();
    let mut next = from;
    let settle = |told: &mut Told, n: u32, c: Result<Result<lapin::Confirmation, lapin::Error>, _>| match c {
        Ok(Ok(conf)) if conf.is_ack() => {
            told.acked.insert(n);
        }
        Ok(Ok(_)) => {
            told.nacked.insert(n);
        }
        _ => {}
    };
    while next < to && told.nacked.len() < stop_after_nacks && !conn.status().blocked() {
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &numbered(next, size),
                persistent(),
            ),
        )
        .await;
        match sent {
            Ok(Ok(c)) => window.push_back((next, c)),
            _ => break,
        }
        next += 1;
        if window.len() >= in_flight {
            let (n, c) = window.pop_front().expect("non-empty");
            let c = tokio::time::timeout(WAIT, c).await;
            settle(&mut told, n, c);
        }
    }
    // A blocked connection's last publishes may wait in the client until it is
    // unblocked: those count as neither.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Some((n, c)) = window.pop_front() {
        let c = tokio::time::timeout_at(deadline, c).await;
        settle(&mut told, n, c);
    }
    (told, next)
}

/// Waits until the broker unblocks the connection.
async fn wait_unblocked(conn: &Connection) -> bool {
    let deadline = Instant::now() + WAIT;
    while conn.status().blocked() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The numbers stored in `queue`, after a restart.
async fn stored_numbers(b: &Broker, queue: &str) -> Vec<u32> {
    let (_conn, ch) = connect(b).await;
    drain_raw(&ch, queue).await.iter().map(|(body, _)| number(body)).collect()
}

/// Checks that every acked number is in `stored`, once; returns how many were lost.
fn lost(acked: &BTreeSet<u32>, stored: &[u32]) -> Vec<u32> {
    let have: BTreeSet<u32> = stored.iter().copied().collect();
    assert_eq!(have.len(), stored.len(), "no message is stored twice");
    acked.difference(&have).copied().collect()
}

/// The reproduction: with the data directory on a small tmpfs and the disk
/// alarm off, persistent publishes fill the disk. Nothing acked may be lost (before,
/// confirms riding in a batch after a failed one were acked); the store recovers
/// once space is freed, without a restart (before, every later commit failed); and
/// after a restart every acked message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_loses_an_acked_message_and_recovers_when_space_is_freed() {
    let Some(fs) = Tmpfs::mount("full", 8) else { return };
    fs.fill(3);
    let dir = fs.0.join("data");
    let b = Broker::start_with(&dir, Some("disk_free_limit = 0\n"));
    let mut acked = BTreeSet::new();
    let (after, unblocked) = {
        let (conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "full", true).await;
        let (told, next) = publish_until_refused(&conn, &ch, "full", (0, 600), 32 * 1024, 40).await;
        eprintln!("filling: {} acked, {} nacked, {} sent", told.acked.len(), told.nacked.len(), next);
        assert!(!told.nacked.is_empty() || conn.status().blocked(), "the disk filled up");
        acked.extend(&told.acked);
        fs.free();
        let unblocked = wait_unblocked(&conn).await;
        let (after, _) = publish_until_refused(&conn, &ch, "full", (1000, 1010), 32 * 1024, 1).await;
        eprintln!("after freeing: {} acked, {} nacked", after.acked.len(), after.nacked.len());
        acked.extend(&after.acked);
        (after, unblocked)
    };
    assert_eq!(b.terminate(), Some(0));
    let b = Broker::start(&dir);
    let stored = stored_numbers(&b, "full").await;
    let missing = lost(&acked, &stored);
    eprintln!("after restart: {} stored, {} acked, {} acked but lost", stored.len(), acked.len(), missing.len());
    assert!(missing.is_empty(), "{} acked messages lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert!(unblocked, "publishers are unblocked once space is freed");
    assert_eq!(after.acked.len(), 10, "publishes after freeing space are acked: {} nacked", after.nacked.len());
    drop(b);
}

/// kill -9 while the disk is full and the store is failing, then space is freed and
/// the broker restarted: every acked message is there (the failed commits' ops were
/// never acked, and what was acked was committed before the failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_disk_is_full_loses_no_acked_message() {
    let Some(fs) = Tmpfs::mount("full-kill9", 8) else { return };
    fs.fill(3);
    let dir = fs.0.join("data");
    let b = Broker::start_with(&dir, Some("disk_free_limit = 0\n"));
    let told = {
        let (conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "full", true).await;
        let (told, next) = publish_until_refused(&conn, &ch, "full", (0, 600), 32 * 1024, 40).await;
        eprintln!("filling: {} acked, {} nacked, {} sent", told.acked.len(), told.nacked.len(), next);
        assert!(!told.nacked.is_empty() || conn.status().blocked(), "the disk filled up");
        told
    };
    b.kill9();
    fs.free();
    let b = Broker::start(&dir);
    let stored = stored_numbers(&b, "full").await;
    let missing = lost(&told.acked, &stored);
    eprintln!(
        "after kill -9 and restart: {} stored, {} acked, {} acked but lost",
        stored.len(),
        told.acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "{} acked messages lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
}

/// Runs the broker with `args`, captures its log lines, and returns it once it
/// listens; None (with the log) if it exits first.
fn start_logged(dir: &std::path::Path, args: &[&str]) -> Result<(Broker, Vec<String>), Vec<String>> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_haremq"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn haremq");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[broker] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let addr = line.split("listening on ").nth(1).map(|a| a.trim().parse().expect("address"));
                lines.push(line);
                if let Some(addr) = addr {
                    return Ok((Broker { child, addr }, lines));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return Err(lines);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the broker neither listened nor exited: {lines:?}");
            }
        }
    }
}

/// Starts the broker on `dir` expecting it to refuse; returns its log.
fn refused(dir: &std::path::Path, case: &str) -> String {
    match start_logged(dir, &[]) {
        Ok((b, _)) => {
            drop(b);
            panic!("{case}: the broker started on a damaged store");
        }
        Err(lines) => {
            let log = lines.join("\n");
            assert!(log.contains("haremq.redb"), "{case}: the error names the store file: {log}");
            assert!(!log.contains("panicked"), "{case}: no panic: {log}");
            log
        }
    }
}

/// Publishes `from..to` persistent 200-byte messages to `queue` with confirms.
async fn publish_range(b: &Broker, queue: &str, from: u32, to: u32) {
    let (_conn, ch) = connect(b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    declare(&ch, queue, true).await;
    for i in from..to {
        let c = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &numbered(i, 200), persistent())
            .await
            .expect("publish");
        assert!(c.await.expect("confirm").is_ack());
    }
}

/// A clean SIGTERM closes the store, so the next start needs no repair (before, the
/// database was never closed and every start repaired it, which is what let a damaged
/// newest commit be rolled back silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_leaves_a_store_that_opens_without_repair() {
    let dir = super::DataDir::new("clean-close");
    let b = Broker::start(&dir.0);
    publish_range(&b, "kept", 0, 5).await;
    assert_eq!(b.terminate(), Some(0));
    let (b, log) = start_logged(&dir.0, &[]).expect("starts");
    let log = log.join("\n");
    assert!(log.contains("shut down cleanly (5 messages, 5 queue entries"), "the clean shutdown is recognised: {log}");
    assert!(log.contains("no repair needed"), "{log}");
    assert!(!log.contains("not shut down cleanly"), "{log}");
    assert_eq!(stored_numbers(&b, "kept").await, (0..5).collect::<Vec<_>>());
    b.kill9();
    // After a crash the start repairs, and says so: a repair, or, when the kill hit a
    // commit in progress (the acks of the gets above), a roll-back of that commit.
    let (b, log) = start_logged(&dir.0, &[]).expect("starts after kill -9");
    let log = log.join("\n");
    assert!(
        log.contains("not shut down cleanly") || log.contains("the last shutdown was not clean"),
        "the crash is reported: {log}"
    );
    drop(b);
}

/// A store that is not what the last clean shutdown left is refused, loudly, and left
/// as it is: emptied, replaced by an older copy (fewer messages), needing repair, or
/// with a damaged page. Before, each of these started (empty, with fewer messages, or
/// silently rolled back) and garbage-collected what it could not match.
/// `--accept-store-repair` starts on the older copy anyway, with an error naming the
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_loudly_and_left_as_it_was() {
    let dir = super::DataDir::new("damaged");
    let file = dir.0.join("haremq.redb");
    let record = dir.0.join("clean-shutdown.json");
    let b = Broker::start(&dir.0);
    publish_range(&b, "q", 0, 10).await;
    assert_eq!(b.terminate(), Some(0));
    let older = (std::fs::read(&file).expect("store"), std::fs::read(&record).ok());
    let b = Broker::start(&dir.0);
    publish_range(&b, "q", 10, 20).await;
    assert_eq!(b.terminate(), Some(0));
    let good = (std::fs::read(&file).expect("store"), std::fs::read(&record).ok());
    let restore = |(store, record_bytes): &(Vec<u8>, Option<Vec<u8>>)| {
        std::fs::write(&file, store).expect("restore store");
        match record_bytes {
            Some(r) => std::fs::write(&record, r).expect("restore record"),
            None => {
                let _ = std::fs::remove_file(&record);
            }
        }
    };

    // Truncated to nothing.
    std::fs::write(&file, b"").expect("truncate");
    let log = refused(&dir.0, "empty file");
    assert!(log.contains("empty (0 bytes)"), "{log}");
    assert_eq!(std::fs::metadata(&file).expect("file").len(), 0, "left as it was");

    // Replaced by the copy from the first shutdown: 10 messages where 20 were.
    restore(&good);
    std::fs::write(&file, &older.0).expect("older copy");
    let log = refused(&dir.0, "older copy");
    assert!(
        log.contains("10 messages, 10 queue entries") && log.contains("20 messages, 20 queue entries"),
        "the counts: {log}"
    );
    assert!(std::fs::read(&file).expect("store") == older.0, "left as it was");

    // A page of the newest commit damaged: the last message's body overwritten
    // wherever it is in the file.
    restore(&good);
    let mut bytes = good.0.clone();
    let last = numbered(19, 200);
    let needle = &last[..32];
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i..i + needle.len()].fill(0xa5);
            hits += 1;
        }
        i += 1;
    }
    assert!(hits > 0, "the message is in the file");
    std::fs::write(&file, &bytes).expect("damage");
    refused(&dir.0, "damaged page");

    // Needs repair (a crash) although a clean shutdown is recorded.
    restore(&good);
    let b = Broker::start(&dir.0);
    b.kill9();
    std::fs::write(&record, good.1.as_ref().expect("a clean-shutdown record")).expect("record");
    let before = std::fs::read(&file).expect("store");
    let log = refused(&dir.0, "needs repair");
    assert!(log.contains("needs repair although it was shut down cleanly"), "{log}");
    assert!(std::fs::read(&file).expect("store") == before, "left as it was");

    // Accepted: starts on the older copy, says what it lost, keeps what it holds.
    restore(&good);
    std::fs::write(&file, &older.0).expect("older copy");
    let (b, log) = start_logged(&dir.0, &["--accept-store-repair"]).expect("starts when accepted");
    let log = log.join("\n");
    assert!(log.contains("ERROR") && log.contains("fewer than"), "{log}");
    assert_eq!(stored_numbers(&b, "q").await, (0..10).collect::<Vec<_>>());
    drop(b);
}

/// tx.commit whose store commit fails (the transaction's message does not fit on the
/// disk) closes the channel with 406 PRECONDITION_FAILED "partial tx completion", as
/// RabbitMQ does when a transaction's publish is nacked; before, tx.commit-ok was
/// sent. Once space is freed, transactions commit again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_commit_whose_store_commit_fails_closes_the_channel_with_406() {
    let Some(fs) = Tmpfs::mount("tx", 24) else { return };
    fs.fill(20);
    let dir = fs.0.join("data");
    let b = Broker::start_with(&dir, Some("disk_free_limit = 0\n"));
    let (conn, ch) = connect(&b).await;
    declare(&ch, "txq", true).await;
    ch.tx_select().await.expect("tx.select");
    ch.basic_publish("".into(), "txq".into(), BasicPublishOptions::default(), &numbered(1, 6 << 20), persistent())
        .await
        .expect("publish");
    let err =
        tokio::time::timeout(WAIT, ch.tx_commit()).await.expect("an answer in time").expect_err("the commit fails");
    let code = match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.to_string())),
        _ => None,
    };
    let (id, text) = code.unwrap_or_else(|| panic!("a channel error, got {err:?}"));
    assert_eq!(id, 406, "{text}");
    assert!(text.contains("partial tx completion"), "{text}");
    fs.free();
    let ch = conn.create_channel().await.expect("another channel");
    ch.tx_select().await.expect("tx.select");
    ch.basic_publish("".into(), "txq".into(), BasicPublishOptions::default(), &numbered(2, 100), persistent())
        .await
        .expect("publish");
    tokio::time::timeout(WAIT, ch.tx_commit())
        .await
        .expect("tx.commit answered once space is freed")
        .expect("tx.commit after freeing space");
    drop(conn);
    drop(b);
}

/// The disk alarm keeps up with a fast publisher: with 3 MB to keep free on a 6 MiB
/// filesystem, publishers are blocked before the store runs out of space, so no
/// publish is nacked (before, free space was read once a second, and a publisher
/// filled the disk in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_alarm_blocks_a_fast_publisher_before_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount("alarm", 6) else { return };
    let dir = fs.0.join("data");
    let b = Broker::start_with(&dir, Some("disk_free_limit = 3000000\n"));
    let (conn, ch) = connect(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    declare(&ch, "fast", true).await;
    let started = Instant::now();
    let (told, next) = publish_with_window(&conn, &ch, "fast", (0, 200), 256 * 1024, 1, 64).await;
    eprintln!("{} acked, {} nacked, {next} sent in {:?}", told.acked.len(), told.nacked.len(), started.elapsed());
    assert!(told.nacked.is_empty(), "{} publishes nacked: the disk filled up before the alarm", told.nacked.len());
    assert!(conn.status().blocked(), "the alarm blocked the publisher");
    drop(conn);
    assert_eq!(b.terminate(), Some(0));
}
