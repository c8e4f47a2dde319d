//! The user name SASL EXTERNAL reads from a verified client certificate, as RabbitMQ's
//! `ssl_cert_login_from` does: the subject's common name (several joined with `,`),
//! the whole subject as an RFC 4514 string (`CN=alice,O=Example,C=DE`: last RDN
//! first, as RabbitMQ prints it), or the n-th subject alternative name of one kind.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::x509::X509Name;

use super::LoginFrom;
use crate::config::{CertLoginFrom, SanType};

/// The login name in `cert`, or why there is none.
pub fn login_name(cert: &CertificateDer<'_>, how: LoginFrom) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| format!("unparsable certificate: {e}"))?;
    let name = match how.from {
        CertLoginFrom::CommonName => {
            let cns = cert
                .subject()
                .iter_common_name()
                .map(|a| a.as_str().map_err(|_| "a common name that is not a string".to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            cns.join(",")
        }
        CertLoginFrom::DistinguishedName => rfc4514(cert.subject())?,
        CertLoginFrom::SubjectAlternativeName => {
            let san = cert
                .subject_alternative_name()
                .map_err(|e| format!("invalid subject alternative names: {e}"))?
                .ok_or("no subject alternative name")?;
            san.value
                .general_names
                .iter()
                .filter_map(|name| match (how.san_type, name) {
                    (SanType::Dns, GeneralName::DNSName(s))
                    | (SanType::Email, GeneralName::RFC822Name(s))
                    | (SanType::Uri, GeneralName::URI(s)) => Some(s.to_string()),
                    (SanType::Ip, GeneralName::IPAddress(b)) => ip(b).map(|ip| ip.to_string()),
                    _ => None,
                })
                .nth(how.san_index)
                .ok_or(format!("no {:?} subject alternative name at index {}", how.san_type, how.san_index))?
        }
    };
    if name.is_empty() {
        return Err(format!("no {:?} in the certificate", how.from));
    }
    Ok(name)
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// The subject as RFC 4514 prints it: RDNs last first, joined by `,`; attributes of
/// one RDN joined by `+`; special characters escaped with `\`.
fn rfc4514(name: &X509Name<'_>) -> Result<String, String> {
    let registry = oid_registry();
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            let value = attr.as_str().map_err(|_| "a subject attribute that is not a string".to_string())?;
            escape_into(&mut out, value);
        }
    }
    Ok(out)
}

fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType as RcSan};

    fn cert(dn: &[(DnType, &str)], sans: Vec<RcSan>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    fn how(from: CertLoginFrom, san_type: SanType, san_index: usize) -> LoginFrom {
        LoginFrom { from, san_type, san_index }
    }

    #[test]
    fn common_name_distinguished_name_and_sans() {
        let c = cert(
            &[(DnType::CountryName, "DE"), (DnType::OrganizationName, "Hare, Inc"), (DnType::CommonName, "alice")],
            vec![
                RcSan::DnsName("a.example".try_into().unwrap()),
                RcSan::Rfc822Name("alice@example.com".try_into().unwrap()),
                RcSan::DnsName("b.example".try_into().unwrap()),
                RcSan::IpAddress("10.1.2.3".parse().unwrap()),
            ],
        );
        let cn = how(CertLoginFrom::CommonName, SanType::Dns, 0);
        assert_eq!(login_name(&c, cn), Ok("alice".into()));
        let dn = how(CertLoginFrom::DistinguishedName, SanType::Dns, 0);
        assert_eq!(login_name(&c, dn), Ok("CN=alice,O=Hare\\, Inc,C=DE".into()));
        let san = |t, i| login_name(&c, how(CertLoginFrom::SubjectAlternativeName, t, i));
        assert_eq!(san(SanType::Dns, 0), Ok("a.example".into()));
        assert_eq!(san(SanType::Dns, 1), Ok("b.example".into()));
        assert_eq!(san(SanType::Email, 0), Ok("alice@example.com".into()));
        assert_eq!(san(SanType::Ip, 0), Ok("10.1.2.3".into()));
        assert!(san(SanType::Dns, 2).is_err());
        assert!(san(SanType::Uri, 0).is_err());
    }

    #[test]
    fn no_name_is_an_error() {
        let c = cert(&[(DnType::OrganizationName, "Hare")], vec![]);
        assert!(login_name(&c, how(CertLoginFrom::CommonName, SanType::Dns, 0)).is_err());
        assert!(login_name(&c, how(CertLoginFrom::SubjectAlternativeName, SanType::Dns, 0)).is_err());
        assert!(
            login_name(&CertificateDer::from(vec![1, 2, 3]), how(CertLoginFrom::CommonName, SanType::Dns, 0)).is_err()
        );
    }
}
