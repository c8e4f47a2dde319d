//! Behaviour of `RoutingTable` through its public API.

use std::sync::Arc;

use haremq_routing::{AMQPValue, BindError, Destination, ExchangeKind, FieldTable, RoutingTable};

type Table = RoutingTable<&'static str>;

fn q(name: &'static str) -> Destination<&'static str> {
    Destination::Queue(name)
}

fn x(name: &str) -> Destination<&'static str> {
    Destination::Exchange(name.into())
}

fn none() -> FieldTable {
    FieldTable::default()
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

fn route(t: &Table, ex: &str, key: &str, headers: Option<&FieldTable>) -> Vec<&'static str> {
    let mut out = Vec::new();
    t.route(ex, key, headers, &mut out);
    let mut sorted = out.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), out.len(), "duplicate queue in {out:?}");
    sorted
}

fn sorted_names(mut v: Vec<Arc<str>>) -> Vec<String> {
    v.sort();
    v.into_iter().map(|s| s.to_string()).collect()
}

#[test]
fn exchanges() {
    let mut t = Table::new();
    assert!(t.add_exchange("d", ExchangeKind::Direct));
    assert!(!t.add_exchange("d", ExchangeKind::Fanout));
    assert_eq!(t.exchange_kind("d"), Some(ExchangeKind::Direct));
    assert_eq!(t.exchange_kind("nope"), None);
    assert_eq!(t.remove_exchange("nope"), None);
    assert_eq!(t.remove_exchange("d"), Some(vec![]));
    assert_eq!(t.exchange_kind("d"), None);
    assert!(route(&t, "d", "k", None).is_empty());
}

#[test]
fn direct() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    assert_eq!(t.bind("d", q("a"), "k1", &none()), Ok(true));
    assert_eq!(t.bind("d", q("a"), "k1", &none()), Ok(false));
    assert_eq!(t.bind("d", q("b"), "k1", &none()), Ok(true));
    assert_eq!(t.bind("d", q("c"), "k2", &none()), Ok(true));
    assert_eq!(t.bind("d", q("e"), "", &none()), Ok(true));
    assert_eq!(route(&t, "d", "k1", None), ["a", "b"]);
    assert_eq!(route(&t, "d", "k2", None), ["c"]);
    assert_eq!(route(&t, "d", "", None), ["e"]);
    assert!(route(&t, "d", "k3", None).is_empty());
    assert!(route(&t, "unknown", "k1", None).is_empty());
}

#[test]
fn default_exchange_name_works_as_direct() {
    let mut t = Table::new();
    t.add_exchange("", ExchangeKind::Direct);
    t.bind("", q("q1"), "q1", &none()).unwrap();
    assert_eq!(route(&t, "", "q1", None), ["q1"]);
    assert!(route(&t, "", "q2", None).is_empty());
}

#[test]
fn fanout_ignores_key_but_key_is_identity() {
    let mut t = Table::new();
    t.add_exchange("f", ExchangeKind::Fanout);
    assert_eq!(t.bind("f", q("a"), "k1", &none()), Ok(true));
    assert_eq!(t.bind("f", q("a"), "k2", &none()), Ok(true));
    assert_eq!(t.bind("f", q("a"), "k2", &none()), Ok(false));
    assert_eq!(t.bind("f", q("b"), "", &none()), Ok(true));
    assert_eq!(route(&t, "f", "whatever", None), ["a", "b"]);
    assert!(t.unbind("f", &q("a"), "k1", &none()));
    assert_eq!(route(&t, "f", "", None), ["a", "b"]);
    assert!(t.unbind("f", &q("a"), "k2", &none()));
    assert_eq!(route(&t, "f", "", None), ["b"]);
    assert!(!t.unbind("f", &q("a"), "k2", &none()));
}

#[test]
fn arguments_are_part_of_identity() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    let a1 = table(&[("x-a", s("1"))]);
    let a2 = table(&[("x-a", s("2"))]);
    assert_eq!(t.bind("d", q("a"), "k", &a1), Ok(true));
    assert_eq!(t.bind("d", q("a"), "k", &a2), Ok(true));
    assert_eq!(t.bind("d", q("a"), "k", &a1), Ok(false));
    assert_eq!(t.bindings().len(), 2);
    assert_eq!(route(&t, "d", "k", None), ["a"]);
    assert!(t.has_binding("d", &q("a"), "k", &a1));
    assert!(!t.has_binding("d", &q("a"), "k", &none()));
    assert!(!t.has_binding("d", &q("a"), "other", &a1));
    assert!(!t.has_binding("d", &q("b"), "k", &a1));
    assert!(!t.has_binding("missing", &q("a"), "k", &a1));
    assert!(!t.unbind("d", &q("a"), "k", &none()));
    assert!(t.unbind("d", &q("a"), "k", &a1));
    assert!(!t.has_binding("d", &q("a"), "k", &a1));
    // Still bound through a2.
    assert_eq!(route(&t, "d", "k", None), ["a"]);
    assert!(t.unbind("d", &q("a"), "k", &a2));
    assert!(route(&t, "d", "k", None).is_empty());
    assert!(!t.has_bindings_from("d"));
}

#[test]
fn topic() {
    let mut t = Table::new();
    t.add_exchange("t", ExchangeKind::Topic);
    t.bind("t", q("all"), "#", &none()).unwrap();
    t.bind("t", q("stock"), "stock.*", &none()).unwrap();
    t.bind("t", q("usd"), "*.usd.#", &none()).unwrap();
    t.bind("t", q("empty"), "", &none()).unwrap();
    // A queue reachable through two patterns gets one copy.
    t.bind("t", q("stock"), "stock.#", &none()).unwrap();
    assert_eq!(route(&t, "t", "stock.usd", None), ["all", "stock", "usd"]);
    assert_eq!(route(&t, "t", "fx.usd.eur.x", None), ["all", "usd"]);
    assert_eq!(route(&t, "t", "stock", None), ["all", "stock"]);
    assert_eq!(route(&t, "t", "", None), ["all", "empty"]);
    assert!(t.unbind("t", &q("stock"), "stock.#", &none()));
    assert_eq!(route(&t, "t", "stock", None), ["all"]);
    assert_eq!(route(&t, "t", "stock.x", None), ["all", "stock"]);
}

#[test]
fn headers() {
    let mut t = Table::new();
    t.add_exchange("h", ExchangeKind::Headers);
    let all = table(&[("format", s("pdf")), ("type", s("report"))]);
    let any = table(&[("x-match", s("any")), ("format", s("pdf")), ("type", s("report"))]);
    let empty_all = none();
    t.bind("h", q("all"), "", &all).unwrap();
    t.bind("h", q("any"), "", &any).unwrap();
    t.bind("h", q("everything"), "", &empty_all).unwrap();
    let pdf_report = table(&[("format", s("pdf")), ("type", s("report"))]);
    let pdf_log = table(&[("format", s("pdf")), ("type", s("log"))]);
    assert_eq!(route(&t, "h", "ignored", Some(&pdf_report)), ["all", "any", "everything"]);
    assert_eq!(route(&t, "h", "", Some(&pdf_log)), ["any", "everything"]);
    assert_eq!(route(&t, "h", "", None), ["everything"]);
    // Same queue bound with two matching argument tables: one copy.
    t.bind("h", q("any"), "", &all).unwrap();
    assert_eq!(route(&t, "h", "", Some(&pdf_report)), ["all", "any", "everything"]);
    assert!(t.unbind("h", &q("any"), "", &any));
    assert_eq!(route(&t, "h", "", Some(&pdf_log)), ["everything"]);
    assert_eq!(route(&t, "h", "", Some(&pdf_report)), ["all", "any", "everything"]);
}

#[test]
fn headers_entries_differing_only_in_ignored_args() {
    let mut t = Table::new();
    t.add_exchange("h", ExchangeKind::Headers);
    let a1 = table(&[("k", s("v")), ("x-note", s("1"))]);
    let a2 = table(&[("k", s("v")), ("x-note", s("2"))]);
    let h = table(&[("k", s("v"))]);
    t.bind("h", q("a"), "", &a1).unwrap();
    t.bind("h", q("a"), "", &a2).unwrap();
    assert_eq!(route(&t, "h", "", Some(&h)), ["a"]);
    assert!(t.unbind("h", &q("a"), "", &a1));
    assert_eq!(route(&t, "h", "", Some(&h)), ["a"]);
    assert!(t.unbind("h", &q("a"), "", &a2));
    assert!(route(&t, "h", "", Some(&h)).is_empty());
}

#[test]
fn bind_errors() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("h", ExchangeKind::Headers);
    assert_eq!(t.bind("nope", q("a"), "k", &none()), Err(BindError::NoSuchExchange("nope".into())));
    assert_eq!(t.bind("d", x("missing"), "k", &none()), Err(BindError::NoSuchExchange("missing".into())));
    // The source is reported first when both are missing.
    assert_eq!(t.bind("nope", x("missing"), "k", &none()), Err(BindError::NoSuchExchange("nope".into())));
    let bad = table(&[("x-match", s("most"))]);
    assert!(matches!(t.bind("h", q("a"), "", &bad), Err(BindError::InvalidArgument(_))));
    let bad_type = table(&[("x-match", AMQPValue::Boolean(true))]);
    assert!(matches!(t.bind("h", q("a"), "", &bad_type), Err(BindError::InvalidArgument(_))));
    // x-match is only validated for headers exchanges.
    assert_eq!(t.bind("d", q("a"), "", &bad), Ok(true));
    // Nothing was recorded by the failed binds.
    assert_eq!(t.bindings().len(), 1);
    assert!(!t.has_bindings_from("h"));
}

#[test]
fn exchange_to_exchange_and_cycles() {
    let mut t = Table::new();
    for name in ["a", "b", "c"] {
        t.add_exchange(name, ExchangeKind::Fanout);
    }
    t.add_exchange("topic", ExchangeKind::Topic);
    // a -> b -> c -> a (cycle), plus a -> c directly (second path to c).
    t.bind("a", x("b"), "", &none()).unwrap();
    t.bind("b", x("c"), "", &none()).unwrap();
    t.bind("c", x("a"), "", &none()).unwrap();
    t.bind("a", x("c"), "", &none()).unwrap();
    t.bind("c", x("topic"), "", &none()).unwrap();
    t.bind("a", q("qa"), "", &none()).unwrap();
    t.bind("b", q("qb"), "", &none()).unwrap();
    t.bind("c", q("qc"), "", &none()).unwrap();
    // qa reachable from a and (via the cycle) again; one copy.
    t.bind("c", q("qa"), "", &none()).unwrap();
    t.bind("topic", q("qt"), "x.*", &none()).unwrap();
    t.bind("topic", q("qa"), "#", &none()).unwrap();
    assert_eq!(route(&t, "a", "x.y", None), ["qa", "qb", "qc", "qt"]);
    assert_eq!(route(&t, "b", "nomatch", None), ["qa", "qb", "qc"]);
    assert_eq!(route(&t, "topic", "x.y", None), ["qa", "qt"]);
    // Self-binding is harmless.
    t.bind("b", x("b"), "", &none()).unwrap();
    assert_eq!(route(&t, "b", "", None), ["qa", "qb", "qc"]);

    assert!(t.has_bindings_to("c"));
    assert!(t.has_bindings_from("c"));
    let lost = t.remove_exchange("c").unwrap();
    assert_eq!(sorted_names(lost), ["a", "b"]);
    assert!(!t.has_bindings_to("topic"));
    assert!(!t.has_bindings_to("a"));
    assert_eq!(route(&t, "a", "x.y", None), ["qa", "qb"]);
    // No stale bindings mention c.
    assert!(t.bindings().iter().all(|b| &*b.source != "c" && b.destination != x("c")));
    // Removing b: its self-binding is not reported; a lost its binding to b.
    let lost = t.remove_exchange("b").unwrap();
    assert_eq!(sorted_names(lost), ["a"]);
    assert!(!t.has_bindings_to("b"));
    assert_eq!(route(&t, "a", "", None), ["qa"]);
}

#[test]
fn long_exchange_chain_spills_inline_state() {
    let mut t = Table::new();
    let names: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    for n in &names {
        t.add_exchange(n, ExchangeKind::Fanout);
    }
    for w in names.windows(2) {
        t.bind(&w[0], x(&w[1]), "", &none()).unwrap();
        // Also fan out from each to all later ones, for many pending entries.
        t.bind(&w[0], x(&names[names.len() - 1]), "", &none()).unwrap();
    }
    let last = names.len() - 1;
    t.bind(&names[last], x(&names[0]), "", &none()).unwrap();
    t.bind(&names[last], q("end"), "", &none()).unwrap();
    t.bind(&names[7], q("seven"), "", &none()).unwrap();
    assert_eq!(route(&t, "e0", "", None), ["end", "seven"]);
    assert_eq!(route(&t, "e20", "", None), ["end", "seven"]);
}

#[test]
fn large_fanout_dedups() {
    let names: Vec<&'static str> = (0..200).map(|i| &*Box::leak(format!("q{i}").into_boxed_str())).collect();
    let mut t = Table::new();
    t.add_exchange("f1", ExchangeKind::Fanout);
    t.add_exchange("f2", ExchangeKind::Fanout);
    t.add_exchange("t", ExchangeKind::Topic);
    t.bind("f1", x("f2"), "", &none()).unwrap();
    t.bind("f1", x("t"), "", &none()).unwrap();
    for n in &names {
        t.bind("f1", q(n), "", &none()).unwrap();
        t.bind("f2", q(n), "", &none()).unwrap();
        t.bind("t", q(n), "#", &none()).unwrap();
        t.bind("t", q(n), "a.*", &none()).unwrap();
    }
    let mut out = vec!["pre-existing"];
    t.route("f1", "a.b", None, &mut out);
    assert_eq!(out.len(), 201);
    assert_eq!(out[0], "pre-existing");
    assert_eq!(route(&t, "f1", "a.b", None).len(), 200);
    assert_eq!(route(&t, "t", "a.b", None).len(), 200);
}

#[test]
fn out_is_appended_not_cleared() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.bind("d", q("a"), "k", &none()).unwrap();
    // A queue already in `out` before the call still gets appended: dedup is per call.
    let mut out = vec!["a"];
    t.route("d", "k", None, &mut out);
    assert_eq!(out, ["a", "a"]);
}

#[test]
fn remove_queue() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("f", ExchangeKind::Fanout);
    t.add_exchange("t", ExchangeKind::Topic);
    t.add_exchange("h", ExchangeKind::Headers);
    t.add_exchange("unrelated", ExchangeKind::Direct);
    for k in ["k1", "k2"] {
        t.bind("d", q("a"), k, &none()).unwrap();
        t.bind("f", q("a"), k, &none()).unwrap();
        t.bind("t", q("a"), k, &none()).unwrap();
        t.bind("h", q("a"), k, &none()).unwrap();
    }
    t.bind("d", q("b"), "k1", &none()).unwrap();
    t.bind("t", q("b"), "#", &none()).unwrap();
    t.bind("unrelated", q("b"), "k1", &none()).unwrap();
    let lost = t.remove_queue(&"a");
    assert_eq!(sorted_names(lost), ["d", "f", "h", "t"]);
    assert!(t.remove_queue(&"a").is_empty());
    assert_eq!(route(&t, "d", "k1", None), ["b"]);
    assert!(route(&t, "f", "", None).is_empty());
    assert_eq!(route(&t, "t", "k2", None), ["b"]);
    assert!(route(&t, "h", "", None).is_empty());
    assert!(!t.has_bindings_from("f"));
    assert!(!t.has_bindings_from("h"));
    assert!(t.has_bindings_from("d"));
    assert_eq!(t.bindings().len(), 3);
    assert!(t.bindings().iter().all(|b| b.destination == q("b")));
    // Rebinding after removal works.
    assert_eq!(t.bind("f", q("a"), "k1", &none()), Ok(true));
    assert_eq!(route(&t, "f", "", None), ["a"]);
}

#[test]
fn remove_exchange_cleans_reverse_index() {
    let mut t = Table::new();
    t.add_exchange("src", ExchangeKind::Direct);
    t.add_exchange("mid", ExchangeKind::Fanout);
    t.bind("src", x("mid"), "k", &none()).unwrap();
    t.bind("mid", q("a"), "", &none()).unwrap();
    assert!(t.has_bindings_to("mid"));
    assert_eq!(route(&t, "src", "k", None), ["a"]);
    // Removing the source drops its outgoing bindings from the reverse index.
    assert_eq!(t.remove_exchange("src"), Some(vec![]));
    assert!(!t.has_bindings_to("mid"));
    // Queue a is still bound from mid; removing mid leaves no trace of a.
    assert_eq!(t.remove_exchange("mid"), Some(vec![]));
    assert!(t.remove_queue(&"a").is_empty());
    assert!(t.bindings().is_empty());
    // Recreating names starts fresh.
    t.add_exchange("mid", ExchangeKind::Fanout);
    assert!(route(&t, "mid", "", None).is_empty());
    assert!(!t.has_bindings_from("mid"));
}

#[test]
fn bindings_listing() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("t", ExchangeKind::Topic);
    let args = table(&[("x-k", AMQPValue::LongInt(1))]);
    t.bind("d", q("a"), "k", &none()).unwrap();
    t.bind("d", q("a"), "k", &args).unwrap();
    t.bind("t", x("d"), "#", &none()).unwrap();
    let mut listed: Vec<(String, String, String, bool)> = t
        .bindings()
        .into_iter()
        .map(|b| {
            let dest = match &b.destination {
                Destination::Queue(q) => format!("q:{q}"),
                Destination::Exchange(e) => format!("x:{e}"),
            };
            (b.source.to_string(), dest, b.routing_key.to_string(), b.arguments == args)
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("d".into(), "q:a".into(), "k".into(), false),
            ("d".into(), "q:a".into(), "k".into(), true),
            ("t".into(), "x:d".into(), "#".into(), false),
        ]
    );
    // The routing key is passed unchanged to the destination exchange.
    assert_eq!(route(&t, "t", "k", None), ["a"]);
    assert!(route(&t, "t", "a.b", None).is_empty());
}

#[test]
fn routing_table_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RoutingTable<u64>>();
}

// ---- alternate exchanges, extra routing keys (CC/BCC), consistent hash --------------

fn route_msg(t: &Table, ex: &str, msg: &haremq_routing::RouteRequest<'_>) -> Vec<&'static str> {
    let mut out = Vec::new();
    t.route_message(ex, msg, &mut out);
    let mut sorted = out.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), out.len(), "duplicate queue in {out:?}");
    sorted
}

#[test]
fn alternate_exchange_takes_what_routes_nowhere() {
    let mut t = Table::new();
    t.add_exchange("main", ExchangeKind::Direct);
    t.add_exchange("ae", ExchangeKind::Fanout);
    t.bind("main", q("hit"), "k", &none()).unwrap();
    t.bind("ae", q("unrouted"), "", &none()).unwrap();
    assert!(t.set_alternate("main", Some("ae")));
    assert_eq!(route(&t, "main", "k", None), ["hit"]);
    assert_eq!(route(&t, "main", "other", None), ["unrouted"]);
    // An alternate that does not exist (yet) is ignored.
    assert!(t.set_alternate("main", Some("missing")));
    assert!(route(&t, "main", "other", None).is_empty());
    t.add_exchange("missing", ExchangeKind::Fanout);
    t.bind("missing", q("late"), "", &none()).unwrap();
    assert_eq!(route(&t, "main", "other", None), ["late"]);
    assert!(t.set_alternate("main", None));
    assert!(route(&t, "main", "other", None).is_empty());
}

#[test]
fn alternate_exchanges_chain_and_cycles_end() {
    let mut t = Table::new();
    for n in ["a", "b", "c"] {
        t.add_exchange(n, ExchangeKind::Direct);
    }
    t.set_alternate("a", Some("b"));
    t.set_alternate("b", Some("c"));
    t.set_alternate("c", Some("a"));
    assert!(route(&t, "a", "k", None).is_empty());
    t.bind("c", q("qc"), "k", &none()).unwrap();
    assert_eq!(route(&t, "a", "k", None), ["qc"]);
    t.bind("b", q("qb"), "k", &none()).unwrap();
    assert_eq!(route(&t, "a", "k", None), ["qb"]);
    // An exchange reached by an e2e binding that matches nothing uses its alternate too.
    t.add_exchange("src", ExchangeKind::Fanout);
    t.bind("src", x("a"), "", &none()).unwrap();
    assert_eq!(route(&t, "src", "zzz", None), [] as [&str; 0]);
    assert_eq!(route(&t, "src", "k", None), ["qb"]);
    // A match to an exchange counts as a match: no alternate.
    t.add_exchange("empty", ExchangeKind::Fanout);
    t.set_alternate("src", Some("c"));
    t.bind("src", x("empty"), "", &none()).unwrap();
    assert_eq!(route(&t, "src", "k", None), ["qb"]);
}

#[test]
fn extra_keys_route_like_more_publishes() {
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("t", ExchangeKind::Topic);
    t.bind("d", q("q1"), "k1", &none()).unwrap();
    t.bind("d", q("q2"), "k2", &none()).unwrap();
    t.bind("d", q("q3"), "k3", &none()).unwrap();
    t.bind("d", q("q1"), "k4", &none()).unwrap();
    t.bind("t", q("q1"), "a.*", &none()).unwrap();
    t.bind("t", q("q2"), "b.#", &none()).unwrap();
    let keys = ["k2", "k4", "nothing"];
    let msg = haremq_routing::RouteRequest { routing_key: "k1", extra_keys: &keys, ..Default::default() };
    assert_eq!(route_msg(&t, "d", &msg), ["q1", "q2"]);
    let keys = ["b.c.d"];
    let msg = haremq_routing::RouteRequest { routing_key: "a.x", extra_keys: &keys, ..Default::default() };
    assert_eq!(route_msg(&t, "t", &msg), ["q1", "q2"]);
    let msg = haremq_routing::RouteRequest { routing_key: "zzz", extra_keys: &keys, ..Default::default() };
    assert_eq!(route_msg(&t, "t", &msg), ["q2"]);
}

#[test]
fn consistent_hash_routes_each_key_to_one_stable_queue() {
    let mut t = Table::new();
    t.add_exchange("h", ExchangeKind::ConsistentHash);
    for (name, w) in [("q1", "1"), ("q2", "1"), ("q3", "2")] {
        t.bind("h", q(name), w, &none()).unwrap();
    }
    let mut counts = std::collections::HashMap::new();
    for i in 0..4000 {
        let key = format!("user-{i}");
        let r = route(&t, "h", &key, None);
        assert_eq!(r.len(), 1, "{key} routed to {r:?}");
        assert_eq!(route(&t, "h", &key, None), r, "routing of {key} is stable");
        *counts.entry(r[0]).or_insert(0) += 1;
    }
    assert!(counts["q3"] > counts["q1"] && counts["q3"] > counts["q2"], "{counts:?}");
    for bad in ["0", "-2", "x", ""] {
        assert!(
            matches!(t.bind("h", q("q4"), bad, &none()), Err(BindError::InvalidArgument(_))),
            "weight {bad:?} accepted"
        );
    }
    // Unbinding removes the queue's points.
    t.unbind("h", &q("q3"), "2", &none());
    for i in 0..500 {
        let r = route(&t, "h", &format!("user-{i}"), None);
        assert!(r == ["q1"] || r == ["q2"], "{r:?}");
    }
    t.remove_queue(&"q1");
    assert_eq!(route(&t, "h", "anything", None), ["q2"]);
}

#[test]
fn consistent_hash_on_header_or_property() {
    use haremq_routing::{HashOn, HashProperty, RouteRequest};
    let mut t = Table::new();
    t.add_exchange("h", ExchangeKind::ConsistentHash);
    for name in ["q1", "q2", "q3", "q4"] {
        t.bind("h", q(name), "1", &none()).unwrap();
    }
    t.set_hash_on("h", HashOn::Header("shard".into()));
    // With the header hashed, the routing key does not matter.
    for i in 0..50 {
        let h = table(&[("shard", s(&format!("s{i}")))]);
        let first = route(&t, "h", "a", Some(&h));
        assert_eq!(first.len(), 1);
        for k in ["b", "c", "d"] {
            assert_eq!(route(&t, "h", k, Some(&h)), first);
        }
    }
    t.set_hash_on("h", HashOn::Property(HashProperty::MessageId));
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        let id = format!("m{i}");
        let a = route_msg(&t, "h", &RouteRequest { routing_key: "x", message_id: Some(&id), ..Default::default() });
        let b = route_msg(&t, "h", &RouteRequest { routing_key: "y", message_id: Some(&id), ..Default::default() });
        assert_eq!(a, b);
        seen.insert(a[0]);
    }
    assert_eq!(seen.len(), 4, "message ids spread over all queues");
}

/// `route_message` says when its outcome depends on nothing but exchange, key and
/// table (the broker caches those): not with extra keys, and not once a headers
/// exchange is on the way, even behind an exchange-to-exchange binding.
#[test]
fn route_message_reports_key_only_outcomes() {
    use haremq_routing::RouteRequest;
    let mut t = Table::new();
    t.add_exchange("d", ExchangeKind::Direct);
    t.add_exchange("t", ExchangeKind::Topic);
    t.add_exchange("h", ExchangeKind::Headers);
    t.bind("d", q("q1"), "k", &none()).expect("bind");
    t.bind("d", x("t"), "k", &none()).expect("bind");
    t.bind("t", q("q2"), "#", &none()).expect("bind");
    let mut out = Vec::new();
    let plain = RouteRequest { routing_key: "k", ..RouteRequest::default() };
    assert!(t.route_message("d", &plain, &mut out));
    out.sort();
    assert_eq!(out, vec!["q1", "q2"]);
    out.clear();
    let cc = RouteRequest { routing_key: "k", extra_keys: &["other"], ..RouteRequest::default() };
    assert!(!t.route_message("d", &cc, &mut out));
    t.bind("t", x("h"), "#", &none()).expect("bind");
    out.clear();
    assert!(!t.route_message("d", &plain, &mut out));
    // A key that never reaches the headers exchange stays cacheable.
    out.clear();
    let miss = RouteRequest { routing_key: "nothing", ..RouteRequest::default() };
    assert!(t.route_message("d", &miss, &mut out));
    assert!(out.is_empty());
}
