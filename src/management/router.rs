//! Path matching: `/api/...` split into percent-decoded segments (`%2F` is the vhost
//! `/`), matched against the route table; then RabbitMQ's order of checks: unknown
//! path 404, wrong method 405, authentication 401, and the handler.

use hyper::body::Bytes;
use hyper::Method;

use super::api;
use super::auth::Login;
use super::{Context, Reply, Request};

/// What a handler gets: the user, the method, the path's variable segments in order,
/// and the body.
pub struct Call<'a> {
    pub login: Login,
    pub method: &'a Method,
    pub params: Vec<&'a str>,
    /// The query string's parameters (see [`Call::query`]).
    pub query: &'a [(String, String)],
    pub body: &'a Bytes,
    /// The `X-Reason` header (why a connection is closed).
    pub reason: Option<&'a str>,
}

impl Call<'_> {
    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A query flag as RabbitMQ reads `if-empty=true`: set when its value is `true`.
    pub fn query_flag(&self, key: &str) -> bool {
        self.query(key) == Some("true")
    }
}

pub type Handler = fn(&Context, &Call) -> Result<Reply, Reply>;

/// One route: its pattern (`*` matches one segment, which becomes a parameter), the
/// methods it answers and its handler (which dispatches on the method).
struct Route {
    pattern: &'static [&'static str],
    methods: &'static [&'static str],
    handler: Handler,
}

const GET: &[&str] = &["GET"];
const GET_PUT_DELETE: &[&str] = &["GET", "PUT", "DELETE"];
const GET_POST: &[&str] = &["GET", "POST"];
const GET_DELETE: &[&str] = &["GET", "DELETE"];
const PUT_DELETE: &[&str] = &["PUT", "DELETE"];
const POST: &[&str] = &["POST"];
const DELETE: &[&str] = &["DELETE"];

static ROUTES: &[Route] = &[
    Route { pattern: &["overview"], methods: GET, handler: api::overview::overview },
    Route { pattern: &["whoami"], methods: GET, handler: api::overview::whoami },
    Route { pattern: &["vhosts"], methods: GET, handler: api::vhosts::list },
    Route { pattern: &["vhosts", "*"], methods: GET_PUT_DELETE, handler: api::vhosts::one },
    Route { pattern: &["vhosts", "*", "permissions"], methods: GET, handler: api::permissions::of_vhost },
    Route { pattern: &["vhosts", "*", "topic-permissions"], methods: GET, handler: api::topic_permissions::of_vhost },
    Route { pattern: &["users"], methods: GET, handler: api::users::list },
    Route { pattern: &["users", "*"], methods: GET_PUT_DELETE, handler: api::users::one },
    Route { pattern: &["users", "*", "permissions"], methods: GET, handler: api::permissions::of_user },
    Route { pattern: &["users", "*", "topic-permissions"], methods: GET, handler: api::topic_permissions::of_user },
    Route { pattern: &["permissions"], methods: GET, handler: api::permissions::list },
    Route { pattern: &["permissions", "*", "*"], methods: GET_PUT_DELETE, handler: api::permissions::one },
    Route { pattern: &["topic-permissions"], methods: GET, handler: api::topic_permissions::list },
    Route { pattern: &["topic-permissions", "*", "*"], methods: GET_PUT_DELETE, handler: api::topic_permissions::one },
    Route { pattern: &["exchanges"], methods: GET, handler: api::exchanges::list },
    Route { pattern: &["exchanges", "*"], methods: GET, handler: api::exchanges::list },
    Route { pattern: &["exchanges", "*", "*"], methods: GET_PUT_DELETE, handler: api::exchange_actions::one },
    Route { pattern: &["exchanges", "*", "*", "publish"], methods: POST, handler: api::exchange_actions::publish },
    Route {
        pattern: &["exchanges", "*", "*", "bindings", "source"],
        methods: GET,
        handler: api::exchange_actions::bindings_source,
    },
    Route {
        pattern: &["exchanges", "*", "*", "bindings", "destination"],
        methods: GET,
        handler: api::exchange_actions::bindings_destination,
    },
    Route { pattern: &["queues"], methods: GET, handler: api::queues::list },
    Route { pattern: &["queues", "*"], methods: GET, handler: api::queues::list },
    Route { pattern: &["queues", "*", "*"], methods: GET_PUT_DELETE, handler: api::queue_actions::one },
    Route { pattern: &["queues", "*", "*", "contents"], methods: DELETE, handler: api::queue_actions::contents },
    Route { pattern: &["queues", "*", "*", "get"], methods: POST, handler: api::queue_actions::get },
    Route { pattern: &["queues", "*", "*", "bindings"], methods: GET, handler: api::queue_actions::bindings },
    Route { pattern: &["connections"], methods: GET, handler: api::connections::list },
    Route { pattern: &["connections", "*"], methods: GET_DELETE, handler: api::connections::one },
    Route { pattern: &["connections", "*", "channels"], methods: GET, handler: api::channels::of_connection },
    Route { pattern: &["vhosts", "*", "connections"], methods: GET, handler: api::connections::list },
    Route { pattern: &["channels"], methods: GET, handler: api::channels::list },
    Route { pattern: &["channels", "*"], methods: GET, handler: api::channels::one },
    Route { pattern: &["vhosts", "*", "channels"], methods: GET, handler: api::channels::list },
    Route { pattern: &["consumers"], methods: GET, handler: api::consumers::list },
    Route { pattern: &["consumers", "*"], methods: GET, handler: api::consumers::list },
    Route { pattern: &["bindings"], methods: GET, handler: api::bindings::list },
    Route { pattern: &["bindings", "*"], methods: GET, handler: api::bindings::list },
    Route {
        pattern: &["bindings", "*", "e", "*", "q", "*"],
        methods: GET_POST,
        handler: api::binding_actions::list_to_queue,
    },
    Route {
        pattern: &["bindings", "*", "e", "*", "e", "*"],
        methods: GET_POST,
        handler: api::binding_actions::list_to_exchange,
    },
    Route {
        pattern: &["bindings", "*", "e", "*", "q", "*", "*"],
        methods: GET_DELETE,
        handler: api::binding_actions::one_to_queue,
    },
    Route {
        pattern: &["bindings", "*", "e", "*", "e", "*", "*"],
        methods: GET_DELETE,
        handler: api::binding_actions::one_to_exchange,
    },
    Route { pattern: &["vhost-limits"], methods: GET, handler: api::limits::vhost_list },
    Route { pattern: &["vhost-limits", "*"], methods: GET, handler: api::limits::vhost_one },
    Route { pattern: &["vhost-limits", "*", "*"], methods: PUT_DELETE, handler: api::limits::vhost_set },
    Route { pattern: &["user-limits"], methods: GET, handler: api::limits::user_list },
    Route { pattern: &["user-limits", "*"], methods: GET, handler: api::limits::user_one },
    Route { pattern: &["user-limits", "*", "*"], methods: PUT_DELETE, handler: api::limits::user_set },
    Route { pattern: &["nodes"], methods: GET, handler: api::nodes::list },
    Route { pattern: &["nodes", "*"], methods: GET, handler: api::nodes::one },
    Route { pattern: &["extensions"], methods: GET, handler: api::nodes::extensions },
    Route { pattern: &["cluster"], methods: GET, handler: api::cluster::status },
    Route { pattern: &["cluster", "nodes"], methods: POST, handler: api::cluster::add },
    Route { pattern: &["cluster", "nodes", "*"], methods: DELETE, handler: api::cluster::remove },
    Route { pattern: &["parameters"], methods: GET, handler: api::parameters::list },
    Route { pattern: &["parameters", "*"], methods: GET, handler: api::parameters::list },
    Route { pattern: &["parameters", "*", "*"], methods: GET, handler: api::parameters::list },
    Route { pattern: &["parameters", "*", "*", "*"], methods: GET_PUT_DELETE, handler: api::parameters::one },
    Route { pattern: &["global-parameters"], methods: GET, handler: api::parameters::global_list },
    Route { pattern: &["global-parameters", "*"], methods: GET_PUT_DELETE, handler: api::parameters::global_one },
    Route { pattern: &["policies"], methods: GET, handler: api::policies::list_policies },
    Route { pattern: &["policies", "*"], methods: GET, handler: api::policies::list_policies },
    Route { pattern: &["policies", "*", "*"], methods: GET_PUT_DELETE, handler: api::policies::policy },
    Route { pattern: &["operator-policies"], methods: GET, handler: api::policies::list_operator_policies },
    Route { pattern: &["operator-policies", "*"], methods: GET, handler: api::policies::list_operator_policies },
    Route {
        pattern: &["operator-policies", "*", "*"],
        methods: GET_PUT_DELETE,
        handler: api::policies::operator_policy,
    },
    Route { pattern: &["definitions"], methods: &["GET", "POST"], handler: api::definitions::definitions },
    Route { pattern: &["definitions", "*"], methods: &["GET", "POST"], handler: api::definitions::definitions },
    Route { pattern: &["health", "checks", "alarms"], methods: GET, handler: api::health::alarms },
    Route { pattern: &["health", "checks", "local-alarms"], methods: GET, handler: api::health_checks::local_alarms },
    Route {
        pattern: &["health", "checks", "port-listener", "*"],
        methods: GET,
        handler: api::health_checks::port_listener,
    },
    Route {
        pattern: &["health", "checks", "protocol-listener", "*"],
        methods: GET,
        handler: api::health_checks::protocol_listener,
    },
    Route { pattern: &["health", "checks", "virtual-hosts"], methods: GET, handler: api::health_checks::virtual_hosts },
    Route {
        pattern: &["health", "checks", "node-is-quorum-critical"],
        methods: GET,
        handler: api::health_checks::quorum_critical,
    },
    Route {
        pattern: &["health", "checks", "node-is-mirror-sync-critical"],
        methods: GET,
        handler: api::health_checks::single_node,
    },
    Route { pattern: &["aliveness-test", "*"], methods: GET, handler: api::health::aliveness },
];

/// Answers one request.
pub fn handle(ctx: &Context, req: &Request) -> Reply {
    let Some((route, params)) = find(&req.segments) else {
        return Reply::not_found();
    };
    let method = if req.method == Method::HEAD { &Method::GET } else { &req.method };
    if !route.methods.contains(&method.as_str()) {
        return Reply::method_not_allowed(route.methods);
    }
    let login = match Login::authenticate(ctx, req) {
        Ok(login) => login,
        Err(reply) => return reply,
    };
    let call = Call { login, method, params, query: &req.query, body: &req.body, reason: req.reason.as_deref() };
    (route.handler)(ctx, &call).unwrap_or_else(|e| e)
}

fn find(segments: &[String]) -> Option<(&'static Route, Vec<&str>)> {
    ROUTES.iter().find_map(|r| {
        if r.pattern.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, s) in r.pattern.iter().zip(segments) {
            if *p == "*" {
                params.push(s.as_str());
            } else if p != s {
                return None;
            }
        }
        Some((r, params))
    })
}

/// The segments of a path under `/api/` (a trailing `/` ignored), percent-decoded;
/// `None` for a path outside the API or a segment that is not UTF-8 once decoded.
pub fn split_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/api/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split('/').map(percent_decode).collect()
}

/// The `key=value` pairs of a query string, percent-decoded with `+` as a space (as
/// HTML forms and RabbitMQ's web UI encode them). Undecodable pairs are dropped.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(&k.replace('+', " "))?, percent_decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for path
/// segments put in a `Location` header.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_and_decoded() {
        assert_eq!(split_path("/api/vhosts/%2F"), Some(vec!["vhosts".into(), "/".into()]));
        assert_eq!(split_path("/api/queues/%2f/a%20b/"), Some(vec!["queues".into(), "/".into(), "a b".into()]));
        assert_eq!(split_path("/api/"), Some(vec![]));
        assert_eq!(split_path("/other"), None);
        assert_eq!(split_path("/api/x%2"), None);
        assert_eq!(split_path("/api/x%zz"), None);
        assert_eq!(split_path("/api/%ff"), None);
        assert_eq!(split_path("/api/%C3%A9"), Some(vec!["é".into()]));
    }

    #[test]
    fn queries_are_parsed() {
        let q = parse_query("page=1&name=a+b%2Fc&flag&&x=");
        assert_eq!(
            q,
            [("page", "1"), ("name", "a b/c"), ("flag", ""), ("x", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec()
        );
        assert_eq!(percent_encode("a+b%2F c~"), "a%2Bb%252F%20c~");
    }

    #[test]
    fn routes_match_with_parameters() {
        let segs: Vec<String> = ["permissions", "/", "bob"].iter().map(|s| s.to_string()).collect();
        let (route, params) = find(&segs).unwrap();
        assert_eq!(route.pattern, &["permissions", "*", "*"]);
        assert_eq!(params, ["/", "bob"]);
        assert!(find(&["nope".to_string()]).is_none());
    }
}
