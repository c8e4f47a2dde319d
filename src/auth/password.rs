//! Password hashes in RabbitMQ's format, so a user table moves between HareMQ and
//! RabbitMQ (definitions files) unchanged.
//!
//! A hash is `base64(salt ++ H(salt ++ utf8(password)))` with a 4-byte random salt,
//! where `H` is named by the hashing algorithm: RabbitMQ's
//! `rabbit_password_hashing_sha256` (its default since 3.6, and ours),
//! `rabbit_password_hashing_sha512` or `rabbit_password_hashing_md5` (older nodes).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Salt length in bytes (RabbitMQ's `rabbit_password:generate_salt/0`).
const SALT_LEN: usize = 4;

/// How a password hash was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HashingAlgorithm {
    #[default]
    Sha256,
    Sha512,
    Md5,
}

impl HashingAlgorithm {
    /// RabbitMQ's module name for the algorithm, as in definitions files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "rabbit_password_hashing_sha256",
            Self::Sha512 => "rabbit_password_hashing_sha512",
            Self::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// The algorithm RabbitMQ names `name`; `None` for one HareMQ does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(Self::Sha256),
            "rabbit_password_hashing_sha512" => Some(Self::Sha512),
            "rabbit_password_hashing_md5" => Some(Self::Md5),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(salt: &[u8], password: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(salt);
            d.update(password);
            d.finalize().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(salt, password),
            Self::Sha512 => run::<Sha512>(salt, password),
            Self::Md5 => run::<Md5>(salt, password),
        }
    }
}

/// A salted password hash: the salt followed by the digest.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub algorithm: HashingAlgorithm,
    salted: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hash itself.
        write!(f, "PasswordHash({})", self.algorithm.name())
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str, algorithm: HashingAlgorithm) -> Self {
        Self::with_salt(password, algorithm, random_salt())
    }

    fn with_salt(password: &str, algorithm: HashingAlgorithm, salt: [u8; SALT_LEN]) -> Self {
        let mut salted = salt.to_vec();
        salted.extend_from_slice(&algorithm.digest(&salt, password.as_bytes()));
        Self { algorithm, salted }
    }

    /// Reads a hash in RabbitMQ's base64 form; `None` if it is not base64 or too short
    /// to hold a salt and a digest of the algorithm.
    pub fn from_base64(text: &str, algorithm: HashingAlgorithm) -> Option<Self> {
        let salted = BASE64.decode(text.trim()).ok()?;
        let digest_len = algorithm.digest(&[], &[]).len();
        (salted.len() == SALT_LEN + digest_len).then_some(Self { algorithm, salted })
    }

    /// The hash in RabbitMQ's base64 form.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.salted)
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let (salt, digest) = self.salted.split_at(SALT_LEN.min(self.salted.len()));
        let computed = self.algorithm.digest(salt, password.as_bytes());
        computed.len() == digest.len() && computed.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Four bytes from the kernel's random source (getrandom(2)); should that fail, from
/// the standard library's per-process random hash keys.
fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    // SAFETY: the pointer and length describe `salt`, which outlives the call.
    let n = unsafe { libc::getrandom(salt.as_mut_ptr().cast(), SALT_LEN, 0) };
    if n != SALT_LEN as isize {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        salt.copy_from_slice(&h.finish().to_le_bytes()[..SALT_LEN]);
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_algorithm() {
        for algorithm in [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512, HashingAlgorithm::Md5] {
            let h = PasswordHash::new("s3cret", algorithm);
            assert!(h.verify("s3cret"));
            assert!(!h.verify("s3cret "));
            assert!(!h.verify(""));
            let back = PasswordHash::from_base64(&h.to_base64(), algorithm).expect("decodes");
            assert_eq!(back, h);
            assert_eq!(HashingAlgorithm::from_name(algorithm.name()), Some(algorithm));
        }
    }

    /// Hashes made by RabbitMQ 3.10.8 (`rabbitmqctl add_user hp p`, then
    /// `export_definitions`; guest/guest from the same node's definitions).
    #[test]
    fn rabbitmq_hashes_verify() {
        for (hash, password) in [
            ("RxjhpWjYORFCfCWmG4vJOKSfq/5zh5BFB2y4IgTuSpZcH2Ue", "p"),
            ("v0LrZjZOAK+R9J3ZjA3oIHCV718UxR+GYacJBL9Z90Hi8Gsa", "guest"),
        ] {
            let algorithm = HashingAlgorithm::from_name("rabbit_password_hashing_sha256").unwrap();
            let h = PasswordHash::from_base64(hash, algorithm).expect("RabbitMQ's hash decodes");
            assert!(h.verify(password), "{hash} is the hash of {password:?}");
            assert!(!h.verify("wrong"));
            assert_eq!(h.to_base64(), hash);
        }
    }

    #[test]
    fn salts_differ() {
        let a = PasswordHash::new("p", HashingAlgorithm::Sha256);
        let b = PasswordHash::new("p", HashingAlgorithm::Sha256);
        assert_ne!(a.to_base64(), b.to_base64(), "a fresh salt per hash");
    }

    #[test]
    fn format_is_salt_then_digest_of_salt_and_password() {
        let h = PasswordHash::with_salt("p", HashingAlgorithm::Sha256, [1, 2, 3, 4]);
        let bytes = BASE64.decode(h.to_base64()).unwrap();
        assert_eq!(&bytes[..4], &[1, 2, 3, 4]);
        let mut d = Sha256::new();
        d.update([1u8, 2, 3, 4]);
        d.update(b"p");
        assert_eq!(&bytes[4..], d.finalize().as_slice());
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(PasswordHash::from_base64("not base64!", HashingAlgorithm::Sha256).is_none());
        assert!(PasswordHash::from_base64("AAAA", HashingAlgorithm::Sha256).is_none());
        // A sha256-sized hash is not a sha512 one.
        let h = PasswordHash::new("p", HashingAlgorithm::Sha256).to_base64();
        assert!(PasswordHash::from_base64(&h, HashingAlgorithm::Sha512).is_none());
    }
}
