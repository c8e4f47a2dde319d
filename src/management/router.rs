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
    pub body: &'a Bytes,
    /// The `X-Reason` header (why a connection is closed).
    pub reason: Option<&'a str>,
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
const GET_DELETE: &[&str] = &["GET", "DELETE"];

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
    Route { pattern: &["exchanges", "*", "*"], methods: GET, handler: api::exchanges::one },
    Route { pattern: &["queues"], methods: GET, handler: api::queues::list },
    Route { pattern: &["queues", "*"], methods: GET, handler: api::queues::list },
    Route { pattern: &["queues", "*", "*"], methods: GET, handler: api::queues::one },
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
    Route { pattern: &["definitions"], methods: &["GET", "POST"], handler: api::definitions::definitions },
    Route { pattern: &["health", "checks", "alarms"], methods: GET, handler: api::health::alarms },
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
    let call = Call { login, method, params, body: &req.body, reason: req.reason.as_deref() };
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
    fn routes_match_with_parameters() {
        let segs: Vec<String> = ["permissions", "/", "bob"].iter().map(|s| s.to_string()).collect();
        let (route, params) = find(&segs).unwrap();
        assert_eq!(route.pattern, &["permissions", "*", "*"]);
        assert_eq!(params, ["/", "bob"]);
        assert!(find(&["nope".to_string()]).is_none());
    }
}
