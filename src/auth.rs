//! Authentication and authorisation: the user table, the SASL mechanisms (PLAIN,
//! AMQPLAIN, and EXTERNAL for TLS client certificates; [`mechanisms`] says which are
//! offered), permissions and the checks made with them.
//!
//! This is the seam for other auth backends (LDAP, HTTP, OAuth 2 later): the connection
//! calls [`UserTable::authenticate`] (and [`UserTable::user`] for mechanisms that
//! authenticate without a password), then checks its rights through
//! [`access::SessionAccess`]. Users live in [`users`] (password hashes in RabbitMQ's
//! format, [`password`]), permissions in [`grants`] ([`permissions`] says how they
//! match).

use std::net::IpAddr;
use std::sync::Arc;

use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::AMQPValue;

use crate::config::Config;

pub mod access;
pub mod grants;
pub mod loopback;
pub mod mechanisms;
pub mod password;
pub mod permissions;
pub mod throttle;
pub mod users;

pub use users::UserInfo;

pub struct UserTable {
    pub users: users::Users,
    pub grants: Arc<grants::Grants>,
    loopback_only: Vec<String>,
    /// The delay on failed logins, per source address.
    pub throttle: throttle::LoginThrottle,
}

/// Why a login failed (logged, never sent to the client in detail).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    UnknownMechanism(String),
    Malformed,
    BadCredentials(String),
    LoopbackOnly(String),
}

impl UserTable {
    /// An empty table (the broker fills it from the store, or seeds it from the
    /// configuration on a first start).
    pub fn new(config: &Config) -> Self {
        Self {
            users: Default::default(),
            grants: Default::default(),
            loopback_only: config.loopback_users.clone(),
            throttle: Default::default(),
        }
    }

    /// The configuration's users with full permissions on `/`, in memory only.
    pub fn from_config(config: &Config) -> Self {
        let table = Self::new(config);
        for u in &config.users {
            table.seed(&u.name, &u.password, "/");
        }
        table
    }

    /// Adds a configured user: the password hashed, tag `administrator`, full
    /// permissions on `vhost` (as RabbitMQ's default user). Returns it.
    pub fn seed(&self, name: &str, password: &str, vhost: &str) -> Arc<users::User> {
        let user = Arc::new(users::User {
            name: name.to_string(),
            password: Some(password::PasswordHash::new(password, Default::default())),
            tags: vec!["administrator".to_string()],
            limits: Default::default(),
        });
        self.users.change(|t| t.insert(name.to_string(), user.clone()));
        self.grants.change(|t| {
            t.permissions.insert((name.to_string(), vhost.to_string()), Arc::new(permissions::Permission::all()))
        });
        user
    }

    /// A user by name, for mechanisms that authenticate without a password
    /// (EXTERNAL: the certificate names the user).
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.users.get(name).map(|u| u.info())
    }

    /// Whether `user` may only log in from loopback addresses (`loopback_users`).
    pub fn loopback_only(&self, user: &str) -> bool {
        self.loopback_only.iter().any(|u| u == user)
    }

    /// Checks a SASL response; returns the user name.
    pub fn authenticate(&self, mechanism: &str, response: &[u8], peer: IpAddr) -> Result<String, AuthError> {
        let (user, password) = match mechanism {
            "PLAIN" => parse_plain(response)?,
            "AMQPLAIN" => parse_amqplain(response)?,
            other => return Err(AuthError::UnknownMechanism(other.to_string())),
        };
        // Passwordless users never match.
        if self.users.verify(&user, &password).is_none() {
            return Err(AuthError::BadCredentials(user));
        }
        if self.loopback_only(&user) && !loopback::is_loopback(peer) {
            return Err(AuthError::LoopbackOnly(user));
        }
        Ok(user)
    }

    /// SASL EXTERNAL: `user` was read from a verified TLS client certificate, so no
    /// password is checked; the user must exist (and `loopback_users` still applies, as
    /// in RabbitMQ, for every mechanism).
    pub fn authenticate_external(&self, user: &str, peer: IpAddr) -> Result<String, AuthError> {
        if self.users.get(user).is_none() {
            return Err(AuthError::BadCredentials(user.to_string()));
        }
        if self.loopback_only(user) && !loopback::is_loopback(peer) {
            return Err(AuthError::LoopbackOnly(user.to_string()));
        }
        Ok(user.to_string())
    }
}

/// PLAIN: `[authzid] NUL authcid NUL password`.
fn parse_plain(response: &[u8]) -> Result<(String, String), AuthError> {
    let mut parts = response.split(|&b| b == 0);
    let (_authz, user, pass) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(u), Some(p), None) => (a, u, p),
        _ => return Err(AuthError::Malformed),
    };
    let user = String::from_utf8(user.to_vec()).map_err(|_| AuthError::Malformed)?;
    let pass = String::from_utf8(pass.to_vec()).map_err(|_| AuthError::Malformed)?;
    Ok((user, pass))
}

/// AMQPLAIN: a field table (without its length prefix) with LOGIN and PASSWORD.
fn parse_amqplain(response: &[u8]) -> Result<(String, String), AuthError> {
    let len = u32::try_from(response.len()).map_err(|_| AuthError::Malformed)?;
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(response);
    // Bounded: the table's nesting is checked before amq-protocol recurses into it.
    crate::wire::nesting::check_table(&framed).map_err(|_| AuthError::Malformed)?;
    let (_, table) = parse_field_table(framed.as_slice()).map_err(|_| AuthError::Malformed)?;
    let get = |key: &str| -> Result<String, AuthError> {
        match table.inner().get(key) {
            Some(AMQPValue::LongString(s)) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_string()),
            _ => Err(AuthError::Malformed),
        }
    };
    Ok((get("LOGIN")?, get("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> UserTable {
        UserTable::from_config(&Config::default())
    }

    #[test]
    fn plain_guest_from_loopback() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(table().authenticate("PLAIN", b"\0guest\0guest", ip), Ok("guest".into()));
    }

    #[test]
    fn guest_refused_from_remote() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(table().authenticate("PLAIN", b"\0guest\0guest", ip), Err(AuthError::LoopbackOnly("guest".into())));
    }

    #[test]
    fn wrong_password_and_malformed() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(table().authenticate("PLAIN", b"\0guest\0nope", ip), Err(AuthError::BadCredentials(_))));
        assert_eq!(table().authenticate("PLAIN", b"guest", ip), Err(AuthError::Malformed));
        assert!(matches!(table().authenticate("CRAM", b"", ip), Err(AuthError::UnknownMechanism(_))));
    }

    #[test]
    fn guest_from_ipv4_mapped_loopback() {
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(table().authenticate("PLAIN", b"\0guest\0guest", ip), Ok("guest".into()));
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(table().authenticate("PLAIN", b"\0guest\0guest", ip), Err(AuthError::LoopbackOnly("guest".into())));
    }

    #[test]
    fn passwordless_users_cannot_log_in_with_a_password() {
        let t = table();
        t.users.change(|m| {
            m.insert(
                "cert".into(),
                Arc::new(users::User { name: "cert".into(), password: None, tags: vec![], limits: Default::default() }),
            )
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(t.authenticate("PLAIN", b"\0cert\0", ip), Err(AuthError::BadCredentials(_))));
        assert!(matches!(t.authenticate("PLAIN", b"\0cert\0x", ip), Err(AuthError::BadCredentials(_))));
        assert_eq!(t.user("cert").map(|u| u.password_hash), Some(None));
        assert!(t.user("nobody").is_none());
    }

    #[test]
    fn amqplain() {
        // LOGIN S "guest", PASSWORD S "guest"
        let mut r = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            r.push(k.len() as u8);
            r.extend_from_slice(k.as_bytes());
            r.push(b'S');
            r.extend_from_slice(&(v.len() as u32).to_be_bytes());
            r.extend_from_slice(v.as_bytes());
        }
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(table().authenticate("AMQPLAIN", &r, ip), Ok("guest".into()));
    }

    #[test]
    fn external_needs_an_existing_user() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(table().authenticate_external("guest", local), Ok("guest".into()));
        assert_eq!(table().authenticate_external("mallory", local), Err(AuthError::BadCredentials("mallory".into())));
        assert_eq!(table().authenticate_external("guest", remote), Err(AuthError::LoopbackOnly("guest".into())));
    }
}
