//! Which SASL mechanisms a connection is offered: the configured `auth_mechanisms`, in
//! their order, with EXTERNAL only on TLS connections whose client presented a verified
//! certificate (as RabbitMQ's `should_offer`: no certificate, no EXTERNAL, whatever the
//! configuration says).

/// A SASL mechanism HareMQ implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    AmqPlain,
    /// The user named by the client's TLS certificate; no password.
    External,
}

impl Mechanism {
    /// Every mechanism HareMQ knows (a name outside these is "unknown", one of these
    /// that is not offered "invalid", as RabbitMQ tells them apart).
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::AmqPlain, Mechanism::External];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// The mechanism called `name` (exact, as in connection.start-ok).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Checks the `auth_mechanisms` setting: known names, at least one.
pub fn validate(configured: &[String]) -> Result<(), String> {
    if configured.is_empty() {
        return Err("auth_mechanisms is empty: no client could log in".into());
    }
    for name in configured {
        if Mechanism::from_name(name).is_none() {
            return Err(format!("auth_mechanisms: unknown mechanism {name:?} (known: PLAIN, AMQPLAIN, EXTERNAL)"));
        }
    }
    Ok(())
}

/// The mechanisms offered to a connection, in the configured order (duplicates once).
pub fn offered(configured: &[String], verified_client_cert: bool) -> Vec<Mechanism> {
    let mut out = Vec::with_capacity(3);
    for m in configured.iter().filter_map(|n| Mechanism::from_name(n)) {
        if (m != Mechanism::External || verified_client_cert) && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The `mechanisms` field of connection.start: names separated by spaces.
pub fn start_list(offered: &[Mechanism]) -> String {
    offered.iter().map(|m| m.name()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_and_external_only_with_a_certificate() {
        let c = names(&["EXTERNAL", "AMQPLAIN", "PLAIN", "AMQPLAIN"]);
        assert_eq!(start_list(&offered(&c, true)), "EXTERNAL AMQPLAIN PLAIN");
        assert_eq!(start_list(&offered(&c, false)), "AMQPLAIN PLAIN");
        assert_eq!(start_list(&offered(&names(&["EXTERNAL"]), false)), "");
    }

    #[test]
    fn validation() {
        assert!(validate(&names(&["PLAIN", "EXTERNAL"])).is_ok());
        assert!(validate(&names(&["PLAIN", "CRAM-MD5"])).is_err());
        assert!(validate(&names(&["plain"])).is_err());
        assert!(validate(&[]).is_err());
    }
}
