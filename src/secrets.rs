//! Bearer secrets: generation, hashing for storage, and a wrapper that keeps
//! them out of `Debug` and logs.
//!
//! API keys, SCIM tokens and invitation tokens carry 256 bits from the OS
//! random generator, so a single SHA-256 is a sufficient one-way hash for
//! storage (a slow password hash would add nothing against guessing a
//! 256-bit value). Only the hash is stored; the secret is shown once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it must leave the process (shown once, or sent to a peer).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Generates a new bearer secret `<prefix>_<43 base64url chars>`; the prefix
/// lets secret scanners and humans recognise what leaked.
pub fn generate_token(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    Secret(format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a bearer secret: lowercase hex SHA-256.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compares two hashes in constant time.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hidden() {
        let a = generate_token("roster_ak");
        let b = generate_token("roster_ak");
        assert_ne!(a, b);
        assert!(a.expose().starts_with("roster_ak_"));
        assert_eq!(a.expose().len(), "roster_ak_".len() + 43);
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn hashes_are_stable_and_compared() {
        let h = hash_token("abc");
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(hashes_match(&h, &hash_token("abc")));
        assert!(!hashes_match(&h, &hash_token("abd")));
    }
}
