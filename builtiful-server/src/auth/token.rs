//! Random, prefixed bearer tokens, stored only as their SHA-256.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::store::TokenHash;

/// The prefix of session tokens.
pub const SESSION_PREFIX: &str = "bfs_";
/// The prefix of provisioner tokens.
pub const PROVISIONER_PREFIX: &str = "bfp_";

/// A freshly made token. `Debug` redacts it; `expose` hands it out once, to its owner.
pub struct Token(String);

impl Token {
    /// 256 random bits, URL-safe base64, after `prefix`.
    pub fn generate(prefix: &str) -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token itself, to give to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps.
    pub fn hash(&self) -> TokenHash {
        hash_token(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The SHA-256 of a token. Lookups go by this hash, so comparing secrets never happens in
/// code whose timing depends on how much of a guess was right.
pub fn hash_token(token: &str) -> TokenHash {
    let digest = Sha256::digest(token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&digest);
    TokenHash(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = Token::generate(SESSION_PREFIX);
        let b = Token::generate(SESSION_PREFIX);
        assert!(a.expose().starts_with("bfs_"));
        assert_eq!(a.expose().len(), 4 + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), hash_token(a.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
        // SHA-256 of "abc", the FIPS 180-2 example.
        assert_eq!(
            hex::encode(hash_token("abc").0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
