//! `route` must not allocate on the common path (beyond growing `out`).
//!
//! A counting global allocator records allocations made by the current thread while a
//! flag is set; `out` is pre-reserved so growing it does not count either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use haremq_routing::{AMQPValue, Destination, ExchangeKind, FieldTable, RoutingTable};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

#[test]
fn route_does_not_allocate() {
    let none = FieldTable::default();
    let mut t = RoutingTable::<u32>::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("f", ExchangeKind::Fanout);
    t.add_exchange("t", ExchangeKind::Topic);
    t.add_exchange("h", ExchangeKind::Headers);
    for i in 0..10 {
        t.bind("d", Destination::Queue(i), "k", &none).unwrap();
        t.bind("f", Destination::Queue(i), "", &none).unwrap();
        t.bind("t", Destination::Queue(i), &format!("a.*.#.{i}"), &none).unwrap();
        t.bind("t", Destination::Queue(i), "#.#", &none).unwrap();
    }
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("any".into()));
    args.insert("k".into(), AMQPValue::LongInt(1));
    t.bind("h", Destination::Queue(99), "", &args).unwrap();
    // Exchange-to-exchange chain with a cycle.
    t.bind("d", Destination::Exchange("f".into()), "k", &none).unwrap();
    t.bind("f", Destination::Exchange("t".into()), "", &none).unwrap();
    t.bind("t", Destination::Exchange("d".into()), "#", &none).unwrap();
    t.bind("f", Destination::Exchange("h".into()), "", &none).unwrap();
    let mut headers = FieldTable::default();
    headers.insert("k".into(), AMQPValue::ShortShortUInt(1));

    // The counter does see allocations.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8]))) > 0);

    let mut out = Vec::with_capacity(64);
    for (ex, key) in [("d", "k"), ("f", ""), ("t", "a.b.c.3"), ("t", ""), ("h", "")] {
        out.clear();
        let n = allocations(|| t.route(ex, key, Some(&headers), &mut out));
        assert_eq!(n, 0, "route({ex:?}, {key:?}) allocated");
        assert!(!out.is_empty());
    }
    out.clear();
    t.route("d", "k", Some(&headers), &mut out);
    out.sort();
    assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99]);
}

#[test]
fn route_message_does_not_allocate() {
    use haremq_routing::{HashOn, RouteRequest};
    let none = FieldTable::default();
    let mut t = RoutingTable::<u32>::new();
    t.add_exchange("c", ExchangeKind::ConsistentHash);
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("ae", ExchangeKind::Fanout);
    for i in 0..10 {
        t.bind("c", Destination::Queue(i), "2", &none).unwrap();
        t.bind("d", Destination::Queue(i), &format!("k{i}"), &none).unwrap();
    }
    t.bind("ae", Destination::Queue(50), "", &none).unwrap();
    t.set_alternate("d", Some("ae"));
    let mut headers = FieldTable::default();
    headers.insert("h".into(), AMQPValue::LongLongInt(-77));
    let extra = ["k3", "k4", "k5"];
    let mut out = Vec::with_capacity(64);
    let cases = [
        ("c", RouteRequest { routing_key: "abc", ..Default::default() }),
        ("d", RouteRequest { routing_key: "k1", extra_keys: &extra, ..Default::default() }),
        ("d", RouteRequest { routing_key: "nope", ..Default::default() }),
    ];
    for (ex, msg) in &cases {
        out.clear();
        let n = allocations(|| {
            t.route_message(ex, msg, &mut out);
        });
        assert_eq!(n, 0, "route_message({ex:?}) allocated");
        assert!(!out.is_empty());
    }
    t.set_hash_on("c", HashOn::Header("h".into()));
    out.clear();
    let msg = RouteRequest { routing_key: "", headers: Some(&headers), ..Default::default() };
    assert_eq!(
        allocations(|| {
            t.route_message("c", &msg, &mut out);
        }),
        0
    );
    assert_eq!(out.len(), 1);
}
