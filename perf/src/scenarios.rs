//! The non-throughput scenarios: idle connections, many queues, bind churn, queue deletion.

use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use amq_protocol::uri::AMQPUri;
use smol::future;
use smol::LocalExecutor;
use smol::Timer;

use crate::client::{close_error, for_each_frame, Conn, Res};
use crate::proto::{self, PublishTemplate, FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use crate::stats::{new_hist, now_ns, rss_kib};
use crate::topology::{self, QueueSpec};
use crate::Opts;

fn rss_line(label: &str, pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let rss = rss_kib(pid);
    match rss {
        Some(kib) => println!("{label}: broker RSS: {kib} KiB ({:.1} MiB)", kib as f64 / 1024.0),
        None => println!("{label}: broker RSS: unavailable (no /proc/{pid}/status)"),
    }
    rss
}

fn per_unit(label: &str, unit: &str, before: Option<u64>, after: Option<u64>, n: usize) {
    if let (Some(b), Some(a)) = (before, after) {
        if n > 0 {
            let delta = a as f64 - b as f64;
            println!("{label}: broker RSS delta: {delta:.0} KiB, {:.1} KiB per {unit}", delta / n as f64);
        }
    }
}

/// Opens `--connections` idle connections (each with one channel), holds them `--time`
/// seconds, reports how many opened and the broker's RSS.
pub fn connections(opts: &Opts, uri: AMQPUri) -> Res<()> {
    let n = opts.connections;
    let hold = Duration::from_secs_f64(opts.time.unwrap_or(5.0));
    let before = rss_line("connections: before", opts.broker_pid);
    let ex = LocalExecutor::new();
    let started = Instant::now();
    let (conns, failures, first_error) = smol::block_on(ex.run(async {
        let mut conns = Vec::with_capacity(n);
        let mut failures = 0usize;
        let mut first_error: Option<String> = None;
        let mut i = 0;
        while i < n {
            let wave = (n - i).min(64);
            let tasks: Vec<_> = (0..wave)
                .map(|_| {
                    let uri = uri.clone();
                    ex.spawn(async move {
                        let mut c = Conn::open(&uri).await?;
                        c.open_channel(1).await?;
                        Ok::<Conn, String>(c)
                    })
                })
                .collect();
            for t in tasks {
                match t.await {
                    Ok(c) => conns.push(c),
                    Err(e) => {
                        failures += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            i += wave;
        }
        (conns, failures, first_error)
    }));
    let open_time = started.elapsed().as_secs_f64();
    println!(
        "connections: opened {} of {n} in {open_time:.3} s ({:.0} conn/s), failed {failures}",
        conns.len(),
        conns.len() as f64 / open_time.max(1e-9)
    );
    if let Some(e) = &first_error {
        println!("connections: first error: {e}");
        if e.contains("Too many open files") {
            println!("connections: hint: raise the file descriptor limit (ulimit -n)");
        }
    }
    // Let the broker settle, then measure; hold for the rest of --time.
    let settle = Duration::from_secs(1).min(hold);
    std::thread::sleep(settle);
    let after = rss_line("connections: after open", opts.broker_pid);
    per_unit("connections", "connection", before, after, conns.len());
    std::thread::sleep(hold.saturating_sub(settle));
    let held = rss_line("connections: after hold", opts.broker_pid);
    per_unit("connections: after hold", "connection", before, held, conns.len());
    let opened = conns.len();
    let closing = Instant::now();
    smol::block_on(ex.run(async {
        let tasks: Vec<_> = conns.into_iter().map(|c| ex.spawn(c.close())).collect();
        for t in tasks {
            t.await;
        }
    }));
    println!("connections: closed {opened} in {:.3} s", closing.elapsed().as_secs_f64());
    match first_error {
        Some(e) if opened < n => Err(format!("{failures} of {n} connections failed: {e}")),
        _ => Ok(()),
    }
}

/// Sends methods in batches of `batch`, each followed by reading its replies.
async fn pipelined(conn: &mut Conn, methods: Vec<AMQPClass>, expect: fn(&AMQPClass) -> bool, what: &str) -> Res<()> {
    for chunk in methods.chunks(500) {
        for m in chunk {
            conn.send(1, m.clone());
        }
        conn.flush().await?;
        for _ in chunk {
            let (_, reply) = conn.recv_method().await?;
            if !expect(&reply) {
                return Err(format!("expected {what}, got {reply:?}"));
            }
        }
    }
    Ok(())
}

/// Declares `--queues` queues, each with one consumer, sends `--pmessages` (default 3)
/// messages through each and reports timings and broker RSS.
pub fn queues(opts: &Opts, uri: AMQPUri) -> Res<()> {
    let n = opts.queues.unwrap_or(100);
    let per_queue = opts.pmessages.unwrap_or(3);
    let names: Vec<String> = (0..n).map(|i| format!("{}{i}", opts.queue_prefix)).collect();
    let args = match &opts.queue_args {
        Some(spec) => topology::parse_args(spec)?,
        None => FieldTable::default(),
    };
    let spec = QueueSpec { durable: opts.durable, auto_delete: true, exclusive: false, args: &args };
    let before = rss_line("queues: before", opts.broker_pid);
    let size = opts.size.max(8);
    smol::block_on(async {
        let mut conn = Conn::open(&uri).await?;
        conn.open_channel(1).await?;
        let t0 = Instant::now();
        let declares = names.iter().map(|q| topology::declare_queue_method(q, &spec)).collect();
        pipelined(
            &mut conn,
            declares,
            |r| matches!(r, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
            "queue.declare-ok",
        )
        .await?;
        let declare_s = t0.elapsed().as_secs_f64();
        println!("queues: declared {n} queues in {declare_s:.3} s ({:.0} queues/s)", n as f64 / declare_s.max(1e-9));
        let t1 = Instant::now();
        let consumes = names
            .iter()
            .enumerate()
            .map(|(i, q)| {
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: q.as_str().into(),
                    consumer_tag: format!("perf-qc-{i}").into(),
                    no_local: false,
                    no_ack: true,
                    exclusive: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            })
            .collect();
        pipelined(
            &mut conn,
            consumes,
            |r| matches!(r, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
            "basic.consume-ok",
        )
        .await?;
        let consume_s = t1.elapsed().as_secs_f64();
        println!(
            "queues: started {n} consumers in {consume_s:.3} s ({:.0} consumers/s)",
            n as f64 / consume_s.max(1e-9)
        );
        // Let the broker settle (and a GC'd runtime collect) before measuring.
        Timer::after(Duration::from_secs(1)).await;
        let after = rss_line("queues: after declare+consume", opts.broker_pid);
        per_unit("queues", "queue", before, after, n);

        // Publish per_queue messages to every queue, then receive them all.
        let t2 = Instant::now();
        let expected = n as u64 * per_queue;
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut hist = new_hist();
        let mut received = 0u64;
        let mut first_body = false;
        let mut body_left = 0u64;
        for _ in 0..per_queue {
            for q in &names {
                let t = PublishTemplate::new(1, "", q, size, opts.persistent, conn.frame_max);
                t.append(&mut buf, now_ns());
                if buf.len() >= 128 * 1024 {
                    crate::client::write_all(&mut conn.stream, &buf).await.map_err(|e| format!("write error: {e}"))?;
                    buf.clear();
                }
            }
        }
        crate::client::write_all(&mut conn.stream, &buf).await.map_err(|e| format!("write error: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while received < expected {
            let filled = future::or(async { Some(conn.reader.fill().await) }, async {
                Timer::at(deadline).await;
                None
            })
            .await;
            match filled {
                None => return Err(format!("queues: received only {received} of {expected} messages within 30 s")),
                Some(r) => {
                    r?;
                }
            }
            let now = now_ns();
            for_each_frame(&mut conn.reader, |f| {
                match f.kind {
                    FRAME_METHOD => match proto::method_ids(f.payload) {
                        Some((60, 60)) => {}
                        Some((10, 50)) | Some((20, 40)) => {
                            let class = proto::parse_method(f.payload)?;
                            return Err(close_error(&class).unwrap_or_default());
                        }
                        _ => {}
                    },
                    FRAME_HEADER => {
                        body_left = proto::header_body_size(f.payload).unwrap_or(0);
                        first_body = true;
                    }
                    FRAME_BODY => {
                        if first_body && f.payload.len() >= 8 {
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&f.payload[..8]);
                            hist.saturating_record(now.saturating_sub(u64::from_be_bytes(ts)) / 1000);
                        }
                        first_body = false;
                        body_left = body_left.saturating_sub(f.payload.len() as u64);
                        if body_left == 0 {
                            received += 1;
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        let flow_s = t2.elapsed().as_secs_f64();
        println!(
            "queues: {expected} messages ({per_queue} per queue) published and received in {flow_s:.3} s ({:.0} msg/s), latency ms: p50 {:.3}, p99 {:.3}, max {:.3}",
            expected as f64 / flow_s.max(1e-9),
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        );
        Timer::after(Duration::from_secs(1)).await;
        let after_msgs = rss_line("queues: after messages", opts.broker_pid);
        per_unit("queues: after messages", "queue", before, after_msgs, n);
        let t3 = Instant::now();
        conn.close().await;
        println!("queues: closed (auto-delete queues go with their consumers) in {:.3} s", t3.elapsed().as_secs_f64());
        Ok(())
    })
}

/// Binds and unbinds a queue to an exchange in a loop (one RPC at a time) for `--time`
/// seconds and reports operations per second.
pub fn bind_churn(opts: &Opts, uri: AMQPUri) -> Res<()> {
    let time = Duration::from_secs_f64(opts.time.unwrap_or(5.0));
    let exchange = if opts.exchange.is_empty() { "perf-churn".to_string() } else { opts.exchange.clone() };
    let queue = format!("{}churn", opts.queue_prefix);
    let args = FieldTable::default();
    let spec = QueueSpec { durable: false, auto_delete: false, exclusive: true, args: &args };
    smol::block_on(async {
        let mut conn = Conn::open(&uri).await?;
        conn.open_channel(1).await?;
        topology::declare_exchange(&mut conn, &exchange, opts.exchange_type.as_str(), false).await?;
        topology::declare_queue(&mut conn, &queue, &spec).await?;
        let keys: Vec<String> = (0..100).map(|i| format!("churn-{i}")).collect();
        let start = Instant::now();
        let mut ops = 0u64;
        let mut last_ops = 0u64;
        let mut tick = 1u64;
        let mut i = 0usize;
        while start.elapsed() < time {
            let key = &keys[i % keys.len()];
            topology::bind_queue(&mut conn, &queue, &exchange, key).await?;
            topology::unbind_queue(&mut conn, &queue, &exchange, key).await?;
            ops += 2;
            i += 1;
            let el = start.elapsed();
            if el >= Duration::from_secs(tick) {
                println!("time: {:.3} s, bind+unbind: {} ops/s", el.as_secs_f64(), ops - last_ops);
                last_ops = ops;
                tick += 1;
            }
        }
        let dur = start.elapsed().as_secs_f64();
        println!(
            "summary: bind-churn: {ops} ops ({} binds, {} unbinds) in {dur:.3} s, {:.0} ops/s",
            ops / 2,
            ops / 2,
            ops as f64 / dur
        );
        if opts.json {
            println!("{{\"ops\":{ops},\"ops_per_s\":{:.1},\"duration_s\":{dur:.3}}}", ops as f64 / dur);
        }
        if !exchange.starts_with("amq.") {
            topology::delete_exchange(&mut conn, &exchange).await?;
        }
        conn.close().await;
        Ok(())
    })
}

/// Deletes the run's queues (`--queue NAME,...`, or `<prefix><i>` as a throughput run
/// names them) and exits: cleanup between runs, e.g. of a stream's segment files.
/// Bounded by `--time` (default 120 s).
pub fn delete_queues(opts: &Opts, uri: AMQPUri) -> Res<()> {
    let limit = Duration::from_secs_f64(opts.time.unwrap_or(120.0));
    let names = crate::plan(opts).queues;
    let work = async {
        let mut conn = Conn::open(&uri).await?;
        conn.open_channel(1).await?;
        for q in &names {
            let n = topology::delete_queue(&mut conn, q).await?;
            println!("delete-queues: deleted {q} ({n} messages)");
        }
        conn.close().await;
        Ok(())
    };
    smol::block_on(future::or(work, async {
        Timer::after(limit).await;
        Err(format!("delete-queues: not done within {:.0} s", limit.as_secs_f64()))
    }))
}
