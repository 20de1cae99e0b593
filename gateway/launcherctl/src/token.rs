//! Bearer tokens of docs/api.md, minted with `launcher-credentials` (the code the gateway uses):
//! `<user>|<expiry>|<signature>`, the signature being lowercase hex HMAC-SHA256 over
//! `<user>|<expiry>` keyed with the secure-cookie-key file's bytes (trailing whitespace trimmed).

/// The key of the secure-cookie-key file, refused as the gateway refuses it.
pub use launcher_credentials::load_key;
/// A token for `user` that expires at `expiry_unix`.
pub use launcher_credentials::mint_token as mint;

/// Refuses a lifetime the gateway would refuse the token for: longer than its
/// max-token-lifetime-seconds (`max_lifetime`, from `--max-lifetime`). A token that no request
/// can use is an error now, not a 401 later.
pub fn check_lifetime(ttl: u64, max_lifetime: u64) -> Result<(), String> {
    if ttl == 0 {
        return Err("--ttl must be more than 0: the token would have expired when minted".into());
    }
    if ttl > max_lifetime {
        return Err(format!(
            "--ttl {} is longer than the longest token lifetime the gateway accepts, {} \
             (--max-lifetime, which must match the gateway's max-token-lifetime-seconds, default \
             86400): the gateway would refuse this token. To mint a longer token, raise \
             max-token-lifetime-seconds in the gateway's launcher.conf and pass --max-lifetime \
             with the same value",
            show_duration(ttl),
            show_duration(max_lifetime)
        ));
    }
    Ok(())
}

/// `100d`, `24h`, `90m` or `4000s`: the largest whole unit, hours up to two days.
fn show_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s > 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_within_the_gateways_maximum() {
        assert_eq!(check_lifetime(1, 86_400), Ok(()));
        assert_eq!(check_lifetime(86_400, 86_400), Ok(()));
        assert!(check_lifetime(0, 86_400).unwrap_err().contains("more than 0"));
        let e = check_lifetime(100 * 86_400, 86_400).unwrap_err();
        assert!(e.starts_with("--ttl 100d is longer than"), "{e}");
        for needle in ["24h", "max-token-lifetime-seconds", "--max-lifetime"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(check_lifetime(86_401, 86_400)
            .unwrap_err()
            .contains("--ttl 86401s"));
        assert_eq!(check_lifetime(100 * 86_400, 100 * 86_400), Ok(()));
    }
}
