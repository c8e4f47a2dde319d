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
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
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
        t.bind("t", Destination::Queue(q), &p, &args)
            .expect("exchange exists");
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
        eprintln!(
            "topic/{n}: average {:.1} queues per route",
            total as f64 / keys.len() as f64
        );
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
        t.bind("d", Destination::Queue(i as u32), k, &args)
            .expect("exchange exists");
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

criterion_group!(benches, bench_topic, bench_direct);
criterion_main!(benches);
