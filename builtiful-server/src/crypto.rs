//! Encryption at rest for secrets the server must keep readable (users' GitHub tokens):
//! ChaCha20-Poly1305 under a key derived from the server secret.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The length of the random nonce stored in front of each ciphertext.
const NONCE_LEN: usize = 12;

/// Seals and opens values with a key derived from the server secret.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

/// A sealed value that does not open: another secret, or damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed value could not be opened (was the server secret changed?)")]
pub struct OpenError;

impl Sealer {
    /// A sealer for `secret`, for values of one `purpose` (keys differ per purpose).
    pub fn new(secret: &Secret, purpose: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"builtiful/seal/v1/");
        hasher.update(purpose.as_bytes());
        hasher.update([0]);
        hasher.update(secret.bytes());
        let key = hasher.finalize();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// Encrypts `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_else(|e| unreachable!("ChaCha20-Poly1305 encrypts any length we use: {e}"));
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        sealed
    }

    /// Decrypts what [`Sealer::seal`] made.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_with_the_same_secret_and_purpose() {
        let secret = Secret::from_bytes(vec![7; 32]);
        let sealer = Sealer::new(&secret, "github-token");
        let sealed = sealer.seal(b"ghu_secret");
        assert!(!sealed.windows(10).any(|w| w == b"ghu_secret"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"ghu_secret");
        assert_ne!(sealer.seal(b"ghu_secret"), sealed, "fresh nonce each time");
        let other = Sealer::new(&Secret::from_bytes(vec![8; 32]), "github-token");
        assert_eq!(other.open(&sealed), Err(OpenError));
        assert_eq!(Sealer::new(&secret, "other").open(&sealed), Err(OpenError));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&tampered), Err(OpenError));
        assert_eq!(sealer.open(b"short"), Err(OpenError));
    }
}
