//! Credentials the simulated GitHub hands out: GitHub-shaped random tokens, kept only as
//! their SHA-256, and the HMAC signature of webhook bodies.

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The SHA-256 of a credential. Credentials are looked up by this hash, so no comparison
/// ever runs on the secret itself.
pub type Hash = [u8; 32];

/// SHA-256 of `secret`.
pub fn hash(secret: &str) -> Hash {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// `prefix` followed by `len` random letters and digits, the shape of GitHub's tokens
/// (`ghu_` + 36 characters, `ghr_` + 76, `ghs_` + 36).
pub fn token(prefix: &str, len: usize) -> String {
    let body: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// `len` random lowercase hex digits (OAuth codes are 20 of them on GitHub).
pub fn hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::rng().fill(bytes.as_mut_slice());
    let mut text = hex::encode(bytes);
    text.truncate(len);
    text
}

/// The `X-Hub-Signature-256` value of `body`: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature_256(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_github() {
        // GitHub's documented test vector.
        assert_eq!(
            signature_256(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn tokens_have_githubs_shape() {
        let a = token("ghu_", 36);
        assert_eq!(a.len(), 40);
        assert!(a[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, token("ghu_", 36));
        let code = hex(20);
        assert_eq!(code.len(), 20);
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
