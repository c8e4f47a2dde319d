//! Routes per second for topic exchanges of growing size and a large direct exchange.
//!
//! Inputs are generated with a fixed-seed LCG so runs are comparable without a `rand`
//! dependency. Each iteration routes one key (cycling through a precomputed set) into a
//! reused output vector, which is what the broker does per publish.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haremq_routing::{Destination, ExchangeKind, FieldTable, RoutingTable};

/// Knuth's MMIX LCG; the high bits are the usable ones.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// Vocabulary size for words: small enough that patterns share prefixes (as real ones
/// do), large enough that a key matches only a fraction of them.
const VOCAB: u32 = 40;

fn word(rng: &mut Lcg) -> String {
    format!("w{}", rng.below(VOCAB))
}

/// A binding pattern of 1..=5 words, ~12% `*` and ~6% `#`.
fn pattern(rng: &mut Lcg) -> String {
    let n = 1 + rng.below(5);
    (0..n)
        .map(|_| match rng.below(100) {
            0..=11 => "*".to_owned(),
            12..=17 => "#".to_owned(),
            _ => word(rng),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A routing key of 3..=5 literal words.
fn key(rng: &mut Lcg) -> String {
    let n = 3 + rng.below(3);
    (0..n).map(|_| word(rng)).collect::<Vec<_>>().join(".")
}

fn topic_table(bindings: usize) -> RoutingTable<u32> {
    let mut rng = Lcg(42);
    let mut t = RoutingTable::new();
    t.add_exchange("t", ExchangeKind::Topic);
    let args = FieldTable::default();
    for i in 0..bindings {
        let p = pattern(&mut rng);
        // Queues are shared between bindings so dedup is exercised.
        let q = (i % (bindings / 4).max(1)) as u32;
        t.bind("t", Destination::Queue(q), &p, &args).expect("exchange exists");
    }
    t
}

fn bench_topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic");
    group.throughput(Throughput::Elements(1));
    let mut rng = Lcg(7);
    let keys: Vec<String> = (0..1024).map(|_| key(&mut rng)).collect();
    for n in [10usize, 1_000, 100_000] {
        let t = topic_table(n);
        let mut out = Vec::with_capacity(1024);
        let mut total = 0usize;
        for k in &keys {
            out.clear();
            t.route("t", k, None, &mut out);
            total += out.len();
        }
        eprintln!("topic/{n}: average {:.1} queues per route", total as f64 / keys.len() as f64);
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &t, |b, t| {
            b.iter(|| {
                out.clear();
                i = (i + 1) % keys.len();
                t.route("t", black_box(&keys[i]), None, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn bench_direct(c: &mut Criterion) {
    let n = 100_000;
    let mut t = RoutingTable::new();
    t.add_exchange("d", ExchangeKind::Direct);
    let args = FieldTable::default();
    let keys: Vec<String> = (0..n).map(|i| format!("orders.region-{}.{i}", i % 17)).collect();
    for (i, k) in keys.iter().enumerate() {
        t.bind("d", Destination::Queue(i as u32), k, &args).expect("exchange exists");
    }
    let mut rng = Lcg(3);
    let probe: Vec<&str> = (0..1024).map(|_| keys[rng.below(n as u32) as usize].as_str()).collect();
    let mut group = c.benchmark_group("direct");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(16);
    let mut i = 0usize;
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % probe.len();
            t.route("d", black_box(probe[i]), None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

/// Issue 5's target case: a topic route among 100k bindings in ≤ 1 µs, with bindings as
/// applications write them. Keys look like `region.service.entity.action`; 95% of the
/// patterns are literal 3–4 word keys, 4% replace one word with `*`, 1% end in `#`
/// after two words. Three quarters of the probes are keys somebody bound (so a route
/// matches a handful of queues: the literal binding(s) plus the odd wildcard), the rest
/// match nothing literal.
fn realistic_word(rng: &mut Lcg, pos: usize) -> String {
    match pos {
        0 => format!("r{}", rng.below(20)),
        1 => format!("svc{}", rng.below(200)),
        2 => format!("ent{}", rng.below(50)),
        _ => format!("act{}", rng.below(10)),
    }
}

fn realistic_key(rng: &mut Lcg) -> String {
    let n = 3 + rng.below(2) as usize;
    (0..n).map(|p| realistic_word(rng, p)).collect::<Vec<_>>().join(".")
}

fn bench_topic_realistic(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut rng = Lcg(11);
    let mut t = RoutingTable::new();
    t.add_exchange("t", ExchangeKind::Topic);
    let args = FieldTable::default();
    let mut literal = Vec::new();
    for i in 0..N {
        let key = realistic_key(&mut rng);
        let pattern = match rng.below(100) {
            0..=94 => {
                literal.push(key.clone());
                key
            }
            95..=98 => {
                let mut words: Vec<&str> = key.split('.').collect();
                let at = rng.below(words.len() as u32) as usize;
                words[at] = "*";
                words.join(".")
            }
            _ => {
                let words: Vec<&str> = key.split('.').take(2).collect();
                format!("{}.#", words.join("."))
            }
        };
        // 20k queues, each with about five bindings.
        t.bind("t", Destination::Queue((i % 20_000) as u32), &pattern, &args).expect("exchange exists");
    }
    let probes: Vec<String> = (0..4096)
        .map(|_| {
            if rng.below(4) < 3 {
                literal[rng.below(literal.len() as u32) as usize].clone()
            } else {
                realistic_key(&mut rng)
            }
        })
        .collect();
    let mut out = Vec::with_capacity(64);
    let (mut total, mut max) = (0usize, 0usize);
    for k in &probes {
        out.clear();
        t.route("t", k, None, &mut out);
        total += out.len();
        max = max.max(out.len());
    }
    eprintln!("topic_realistic/{N}: average {:.2} queues per route, at most {max}", total as f64 / probes.len() as f64);
    let mut group = c.benchmark_group("topic_realistic");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function(BenchmarkId::from_parameter(N), |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % probes.len();
            t.route("t", black_box(&probes[i]), None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

/// A consistent-hash exchange with 100 queues of weights 1–3 (a ring of ~32k points).
fn bench_consistent_hash(c: &mut Criterion) {
    let mut t = RoutingTable::new();
    t.add_exchange("h", ExchangeKind::ConsistentHash);
    let args = FieldTable::default();
    for q in 0..100u32 {
        t.bind("h", Destination::Queue(q), &(1 + q % 3).to_string(), &args).expect("exchange exists");
    }
    let keys: Vec<String> = (0..1024).map(|i| format!("customer-{i}")).collect();
    let mut group = c.benchmark_group("consistent_hash");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4);
    let mut i = 0usize;
    group.bench_function(BenchmarkId::from_parameter(100), |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % keys.len();
            t.route("h", black_box(&keys[i]), None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_topic, bench_topic_realistic, bench_consistent_hash, bench_direct);
criterion_main!(benches);
