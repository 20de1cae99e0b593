//! The secure-cookie-key and what is derived from it, in one place for every binary: the node
//! and the gateway check credentials with it, the gateway and `launcherctl` mint user tokens.
//!
//! * User tokens (docs/api.md "Authentication") are `<user>|<expiry unix seconds>|<signature>`,
//!   the signature being lowercase hex HMAC-SHA256 over `<user>|<expiry>` keyed with the key.
//! * The internal credential of node-to-node and gateway-to-node calls is
//!   `Launcher-Internal <hex HMAC-SHA256 of "launcher-internal">` under the same key.
//!
//! Checking a user token (its shape, limits and expiry policy) is the gateway's business.

#![forbid(unsafe_code)]

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Scheme of the internal credential.
pub const INTERNAL_SCHEME: &str = "Launcher-Internal ";

/// Reads the secure-cookie-key: it must exist, not be readable by every user, and hold at
/// least 32 bytes once trailing whitespace (a final newline) is trimmed.
pub fn load_key(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the secure-cookie-key file {}: {e}; create it with 32+ random bytes, mode 0600",
            path.display()
        )
    })?;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(format!(
            "the secure-cookie-key file {} is readable by every user (mode {:o}); run chmod 0600 on it",
            path.display(),
            mode & 0o777
        ));
    }
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    if end < 32 {
        return Err(format!(
            "the secure-cookie-key file {} holds {end} bytes; it needs at least 32",
            path.display()
        ));
    }
    Ok(bytes[..end].to_vec())
}

/// Lowercase hex HMAC-SHA256 of `message` under `key`.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A user token for `user` that expires at `expiry_unix`. The gateway refuses tokens whose user
/// is empty, over 256 bytes or holds `|` or control characters; callers check that first.
pub fn mint_token(key: &[u8], user: &str, expiry_unix: u64) -> String {
    let signed = format!("{user}|{expiry_unix}");
    let signature = hmac_hex(key, signed.as_bytes());
    format!("{signed}|{signature}")
}

/// The internal credential: the value of the `authorization` metadata on internal calls.
pub fn internal_credential(key: &[u8]) -> String {
    format!("{INTERNAL_SCHEME}{}", hmac_hex(key, b"launcher-internal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_the_documented_signature() {
        // HMAC-SHA256("kkk…k" (40 bytes), "alice|2000000000"), computed independently.
        assert_eq!(
            mint_token(&[b'k'; 40], "alice", 2_000_000_000),
            "alice|2000000000|b9b366ac7223530b214a2f892d2bddec98e903185aaa4798d09cd9bb3f80afba"
        );
    }

    #[test]
    fn the_internal_credential_is_the_keyed_hash_of_a_fixed_string() {
        let c = internal_credential(&[b'k'; 40]);
        assert_eq!(
            c,
            format!(
                "Launcher-Internal {}",
                hmac_hex(&[b'k'; 40], b"launcher-internal")
            )
        );
        assert_ne!(c, internal_credential(&[b'j'; 40]));
    }

    #[test]
    fn the_key_file_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "short\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key(&p).unwrap_err().contains("at least 32"));
        // Trailing whitespace is not key.
        std::fs::write(&p, format!("{} \n\n\t", "x".repeat(40))).unwrap();
        assert_eq!(load_key(&p).unwrap(), "x".repeat(40).into_bytes());
        // Nor does it count towards the 32 bytes.
        std::fs::write(&p, format!("{}\n\n\n\n", "x".repeat(31))).unwrap();
        assert!(load_key(&p).unwrap_err().contains("holds 31 bytes"));
        std::fs::write(&p, "y".repeat(32)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&p).unwrap_err();
        assert!(err.contains("chmod 0600") && err.contains("mode 644"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load_key(&p).is_ok());
        let err = load_key(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains("create it with 32+ random bytes"),
            "{err}"
        );
    }
}
