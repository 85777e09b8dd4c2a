//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the webhook secret, checked in
//! constant time before anything reads the body.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether `header` (`sha256=<hex>`) signs `body` with `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(signature) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|hex_sig| hex::decode(hex_sig.trim()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).is_ok()
}

/// The header value that signs `body` (for the sandbox and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|e| unreachable!("HMAC takes keys of any length: {e}"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector (GITHUB.md, "Webhooks").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector() {
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
        assert!(verify(SECRET, BODY, Some(SIGNATURE)));
    }

    #[test]
    fn bad_missing_and_truncated_signatures_fail() {
        assert!(!verify(SECRET, BODY, None));
        assert!(!verify(SECRET, b"Hello, World?", Some(SIGNATURE)));
        assert!(!verify(b"another secret", BODY, Some(SIGNATURE)));
        assert!(!verify(
            SECRET,
            BODY,
            Some(&SIGNATURE[..SIGNATURE.len() - 2])
        ));
        assert!(!verify(
            SECRET,
            BODY,
            Some(SIGNATURE.trim_start_matches("sha256="))
        ));
        assert!(!verify(SECRET, BODY, Some("sha256=zz")));
        assert!(!verify(
            SECRET,
            BODY,
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d")
        ));
    }
}
