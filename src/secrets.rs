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

// --- Secrets Roster must read back, sealed at rest.

/// What a sealed value starts with: `roster-sealed:v1:<key id>:<base64 of nonce and ciphertext>`.
const SEALED: &str = "roster-sealed:v1:";

/// Keys that seal the secrets Roster must be able to read back (an
/// organization's own OpenID client secret) with XChaCha20-Poly1305. The
/// first key seals; every key opens what it sealed, so a new key goes
/// first and the old ones stay until `roster secrets rotate` has resealed
/// everything. Each sealed value is bound to what it belongs to (the
/// associated data): moved to another row, it does not open.
#[derive(Clone, Default)]
pub struct SealingKeys {
    /// `(id, key)`, the sealing key first.
    keys: Vec<(String, chacha20poly1305::Key)>,
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKeys").field("ids", &self.ids()).finish()
    }
}

/// Why a sealed value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("it is sealed with key {0}, which is not configured (secrets_key_file)")]
    UnknownKey(String),
    #[error("it is sealed but no secrets_key_file is configured")]
    NoKeys,
    #[error("it does not open with its key: altered, or moved from another record")]
    Corrupt,
}

impl SealingKeys {
    /// Reads a key file: one key per line, 32 bytes in base64 (`head -c 32
    /// /dev/urandom | base64`), the sealing key first; `#` comments and
    /// blank lines are skipped.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| format!("{} line {i}: a key is 32 bytes in base64", path.display()))?;
            let id: String = Sha256::digest(&bytes)[..8].iter().map(|b| format!("{b:02x}")).collect();
            keys.push((id, *chacha20poly1305::Key::from_slice(&bytes)));
        }
        if keys.is_empty() {
            return Err(format!("{} holds no key", path.display()));
        }
        Ok(Self { keys })
    }

    /// The keys' ids, the sealing key's first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// `plaintext` sealed with the first key for `context`; unchanged when
    /// no key is configured.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
        let Some((id, key)) = self.keys.first() else { return plaintext.to_string() };
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(key);
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce does not fail.
        let sealed =
            cipher.encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() }).unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{SEALED}{id}:{}", base64::engine::general_purpose::STANDARD.encode(blob))
    }

    /// The secret `stored` holds: opened when sealed, as it is when not.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, SealError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let Some((id, blob)) = stored.strip_prefix(SEALED).and_then(|rest| rest.split_once(':')) else {
            return Ok(stored.to_string());
        };
        if self.keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        let key = self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key);
        let key = key.ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let blob = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| SealError::Corrupt)?;
        if blob.len() < 24 {
            return Err(SealError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(key);
        let opened = cipher
            .decrypt(chacha20poly1305::XNonce::from_slice(nonce), Payload { msg: sealed, aad: context.as_bytes() })
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(opened).map_err(|_| SealError::Corrupt)
    }

    /// Whether `stored` is sealed with the sealing key (nothing to reseal).
    pub fn is_current(&self, stored: &str) -> bool {
        match (self.keys.first(), stored.strip_prefix(SEALED).and_then(|r| r.split_once(':'))) {
            (Some((current, _)), Some((id, _))) => id == current,
            _ => false,
        }
    }

    /// The id of the key `stored` is sealed with; `None` when in clear.
    pub fn sealed_with(stored: &str) -> Option<&str> {
        stored.strip_prefix(SEALED).and_then(|r| r.split_once(':')).map(|(id, _)| id)
    }
}

#[cfg(test)]
mod sealing_tests {
    use super::*;

    fn key_file(lines: &[String]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, lines.join("\n")).unwrap();
        (dir, path)
    }

    fn new_key() -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn sealed_secrets_open_with_their_key_and_context_only() {
        let (old, new) = (new_key(), new_key());
        let (_d, path) = key_file(std::slice::from_ref(&old));
        let first = SealingKeys::from_file(&path).unwrap();
        let sealed = first.seal("s3cret", "org-a");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("s3cret"), "{sealed}");
        assert_ne!(sealed, first.seal("s3cret", "org-a"), "a fresh nonce each time");
        assert_eq!(first.open(&sealed, "org-a").unwrap(), "s3cret");
        assert_eq!(first.open(&sealed, "org-b"), Err(SealError::Corrupt));
        assert_eq!(first.open("in clear", "org-a").unwrap(), "in clear");
        assert!(first.is_current(&sealed));

        // Rotation: the new key seals, the old one still opens.
        let (_d2, path) = key_file(&["# rotated".into(), new.clone(), String::new(), old]);
        let both = SealingKeys::from_file(&path).unwrap();
        assert_eq!(both.open(&sealed, "org-a").unwrap(), "s3cret");
        assert!(!both.is_current(&sealed));
        assert!(both.is_current(&both.seal("s3cret", "org-a")));
        let (_d3, path) = key_file(&[new]);
        let only_new = SealingKeys::from_file(&path).unwrap();
        let id = SealingKeys::sealed_with(&sealed).unwrap().to_string();
        assert_eq!(only_new.open(&sealed, "org-a"), Err(SealError::UnknownKey(id)));
        assert_eq!(SealingKeys::default().open(&sealed, "org-a"), Err(SealError::NoKeys));
        assert_eq!(SealingKeys::default().seal("plain", "org-a"), "plain");
    }

    #[test]
    fn key_files_hold_32_byte_keys() {
        for bad in
            [vec![], vec!["# only a comment".to_string()], vec!["c2hvcnQ=".to_string()], vec!["not base64!".into()]]
        {
            let (_d, path) = key_file(&bad);
            assert!(SealingKeys::from_file(&path).is_err(), "{bad:?}");
        }
    }
}
