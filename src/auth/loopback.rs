//! Which peer addresses count as loopback for `loopback_users` (as RabbitMQ's
//! `rabbit_net:is_loopback/1`): 127.0.0.0/8, ::1, and IPv4-mapped IPv6 addresses of
//! 127.0.0.0/8 (`::ffff:127.x.y.z`, what a dual-stack listener reports for an IPv4
//! loopback client).

use std::net::IpAddr;

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for yes in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "::ffff:127.1.2.3"] {
            assert!(is_loopback(yes.parse().unwrap()), "{yes}");
        }
        for no in ["10.0.0.1", "192.168.1.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1", "::2", "128.0.0.1"] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }
}
