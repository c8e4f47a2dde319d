//! HTTP basic authentication against the broker's user table, and RabbitMQ's
//! management tags: `administrator` may do everything, `monitoring` may read
//! everything, `management` (and `policymaker`) may read and act within the vhosts it
//! has permissions in. A user with none of these tags cannot use the API (401).

use base64::Engine;
use serde_json::json;

use super::{Context, Reply, Request};
use crate::admin::Admin;

/// What a logged-in user may do through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `management` or `policymaker`: its own vhosts only.
    Management,
    /// `monitoring`: reads everything.
    Monitoring,
    /// `administrator`: everything.
    Administrator,
}

/// The user a request was authenticated as.
pub struct Login {
    pub name: String,
    pub tags: Vec<String>,
    pub role: Role,
}

const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

impl Login {
    /// The request's user, or RabbitMQ's 401: without credentials an empty body and
    /// the `www-authenticate` challenge; with wrong ones the challenge and
    /// `Login failed`; a user without a management tag `Not management user`.
    pub fn authenticate(ctx: &Context, req: &Request) -> Result<Login, Reply> {
        let challenge = |mut r: Reply| {
            r.headers.push(("www-authenticate", REALM.to_string()));
            r
        };
        let Some((user, password)) = req.authorization.as_deref().and_then(basic_credentials) else {
            return Err(challenge(Reply::empty(401)));
        };
        // Refused as slowly as an AMQP login (one failure a second per address).
        let login_failed = || {
            let mut r = challenge(Reply::error(401, "not_authorized", "Login failed"));
            r.not_before = Some(ctx.broker.users.throttle.failed(req.peer.ip(), std::time::Instant::now()));
            r
        };
        let admin = Admin::new(ctx.broker.clone());
        let Some(info) = admin.check_password(&user, &password) else {
            return Err(login_failed());
        };
        if ctx.broker.users.loopback_only(&user) && !crate::auth::loopback::is_loopback(req.peer.ip()) {
            log::warn!("management login of '{user}' from {} refused: loopback_users", req.peer);
            return Err(login_failed());
        }
        let has = |t: &str| info.tags.iter().any(|x| x == t);
        let role = if has("administrator") {
            Role::Administrator
        } else if has("monitoring") {
            Role::Monitoring
        } else if has("management") || has("policymaker") {
            Role::Management
        } else {
            return Err(Reply::error(401, "not_authorised", "Not management user"));
        };
        Ok(Login { name: info.name, tags: info.tags, role })
    }

    /// 401 `Not administrator user` unless an administrator.
    pub fn require_administrator(&self) -> Result<(), Reply> {
        if self.role == Role::Administrator {
            Ok(())
        } else {
            Err(Reply::error(401, "not_authorised", "Not administrator user"))
        }
    }

    /// Whether the user may see everything (administrator, monitoring).
    pub fn reads_all(&self) -> bool {
        self.role >= Role::Monitoring
    }

    /// Whether the user may see a vhost: readers of everything may, a `management`
    /// user where it has permissions.
    pub fn sees_vhost(&self, admin: &Admin, vhost: &str) -> bool {
        self.reads_all() || admin.permissions().iter().any(|p| p.user == self.name && p.vhost == vhost)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({"name": self.name, "tags": self.tags})
    }
}

/// The user and password of an `Authorization: Basic ...` header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        assert_eq!(basic_credentials("Basic Z3Vlc3Q6Z3Vlc3Q="), Some(("guest".into(), "guest".into())));
        assert_eq!(basic_credentials("basic YTpiOmM="), Some(("a".into(), "b:c".into())));
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic"), None);
    }
}
