//! Who is calling (docs/api.md "Authentication", "Isolation") and the credential the gateway
//! presents to nodes (ARCHITECTURE.md).
//!
//! User tokens are `<user>|<expiry unix seconds>|<signature>`, the signature being lowercase hex
//! HMAC-SHA256 over `<user>|<expiry>` keyed with the bytes of the secure-cookie-key. They arrive
//! as `Authorization: Bearer <token>` or in the [`TOKEN_COOKIE`] cookie (browsers' EventSource
//! cannot send headers). The internal credential must match the node's `InternalAuth` byte for
//! byte; it is rebuilt here because the gateway depends only on `launcher-proto`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Metadata key of the cluster id on internal gRPC calls.
pub const CLUSTER_ID_HEADER: &str = "launcher-cluster-id";
/// Metadata key of the internal credential on internal gRPC calls.
pub const INTERNAL_AUTH_HEADER: &str = "authorization";
/// Cookie carrying the user token for the web page.
pub const TOKEN_COOKIE: &str = "launcher-token";
/// Longest accepted user name, in bytes.
pub const MAX_USER_BYTES: usize = 256;
/// Longest accepted token: a maximal user, a 20-digit expiry, 64 hex digits and two `|`.
const MAX_TOKEN_BYTES: usize = MAX_USER_BYTES + 20 + 64 + 2;
/// How long a group-database answer is trusted.
const ADMIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Cache entries kept before the cache is emptied.
const ADMIN_CACHE_MAX: usize = 10_000;

/// Reads the secure-cookie-key (`launcher_credentials::load_key`, the node's rules).
pub use launcher_credentials::load_key;

use launcher_credentials::hmac_hex;

/// The value of the `authorization` metadata on calls to nodes: `Launcher-Internal <hex HMAC>`.
pub fn internal_credential(key: &[u8]) -> String {
    launcher_credentials::internal_credential(key)
}

/// Why a request's user token was refused; every variant is a 401 and its message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization: Bearer` header nor the token cookie was sent.
    #[error(
        "no token: send 'Authorization: Bearer <user>|<expiry>|<signature>' or the {TOKEN_COOKIE} cookie"
    )]
    Missing,
    /// The token is not `<user>|<expiry>|<signature>`; the detail says which part is wrong.
    #[error("malformed token: {0}; expected <user>|<expiry unix seconds>|<64 lowercase hex digits>")]
    Malformed(String),
    /// The signature does not match the user and expiry under this cluster's key.
    #[error(
        "the token's signature does not match: it was altered or made with another secure-cookie-key; get a new token"
    )]
    BadSignature,
    /// The expiry has passed.
    #[error("the token expired at {}; get a new one", unix_to_rfc3339(*.expiry))]
    Expired {
        /// The token's expiry, Unix seconds.
        expiry: u64,
    },
    /// The expiry lies further ahead than `max-token-lifetime-seconds` allows.
    #[error(
        "the token expires at {}, more than max-token-lifetime-seconds ({max_lifetime_seconds}) from now; get one with a shorter lifetime",
        unix_to_rfc3339(*.expiry)
    )]
    TooLongLived {
        /// The token's expiry, Unix seconds.
        expiry: u64,
        /// The longest lifetime this gateway accepts.
        max_lifetime_seconds: u64,
    },
}

/// `2026-01-02T03:04:05Z`, or the bare number when it is beyond the calendar `time` handles.
fn unix_to_rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

/// Why `user` cannot be the user of a token, if it cannot.
fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".to_string());
    }
    if user.len() > MAX_USER_BYTES {
        return Err(format!("the user name is longer than {MAX_USER_BYTES} bytes"));
    }
    if user.contains('|') || user.chars().any(char::is_control) {
        return Err("the user name contains '|' or a control character".to_string());
    }
    Ok(())
}

/// Makes a token for `user` valid until `expiry_unix`. A user name [`verify_token`] refuses
/// (empty, over 256 bytes, with `|` or control characters) gives a token it refuses.
pub fn mint_token(key: &[u8], user: &str, expiry_unix: u64) -> String {
    launcher_credentials::mint_token(key, user, expiry_unix)
}

/// Checks a token at time `now_unix` and returns its user. The shape is checked first, then the
/// signature (in constant time), then the expiry, so nothing is said about the time of a forgery.
pub fn verify_token(
    key: &[u8],
    token: &str,
    now_unix: u64,
    max_lifetime_seconds: u64,
) -> Result<String, AuthError> {
    let malformed = |what: &str| AuthError::Malformed(what.to_string());
    if token.is_empty() {
        return Err(malformed("the token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    // Split from the right: neither the signature nor the expiry may contain '|'.
    let (signed, signature) = token
        .rsplit_once('|')
        .ok_or_else(|| malformed("it has no '|' separators"))?;
    let (user, expiry) = signed
        .rsplit_once('|')
        .ok_or_else(|| malformed("it has two parts, not three"))?;
    check_user(user).map_err(AuthError::Malformed)?;
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the expiry is not a whole number of Unix seconds"));
    }
    let expiry: u64 = expiry
        .parse()
        .map_err(|_| malformed("the expiry is out of range"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed("the signature is not 64 lowercase hex digits"));
    }
    let expected = hmac_hex(key, signed.as_bytes());
    if !bool::from(signature.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(AuthError::BadSignature);
    }
    if expiry <= now_unix {
        return Err(AuthError::Expired { expiry });
    }
    if expiry - now_unix > max_lifetime_seconds {
        return Err(AuthError::TooLongLived {
            expiry,
            max_lifetime_seconds,
        });
    }
    Ok(user.to_string())
}

/// The token of an `Authorization` header value with the `Bearer` scheme (any case); `None` for
/// another scheme or an empty token.
pub fn bearer(header_value: &str) -> Option<&str> {
    let value = header_value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The [`TOKEN_COOKIE`] value in a `Cookie` header (`a=b; launcher-token=…`), surrounding double
/// quotes removed; the first one wins, an empty one counts as absent.
pub fn token_from_cookies(cookie_header: &str) -> Option<String> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim() == TOKEN_COOKIE)
        .map(|(_, value)| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
                .to_string()
        })
        .filter(|v| !v.is_empty())
}

/// Who is a launcher admin: the `admin-users` list, or members of `admin-group`.
///
/// [`Admins::is_admin`] may consult the group database (NSS: files, LDAP, sssd), which can block;
/// call it from `spawn_blocking`, or use [`Admins::is_admin_async`], which does. Answers are
/// cached per user for 60 s, so a group change takes up to a minute to be seen.
pub struct Admins {
    users: Vec<String>,
    group: Option<String>,
    cache: Mutex<HashMap<String, (Instant, bool)>>,
}

impl std::fmt::Debug for Admins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admins")
            .field("users", &self.users)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Admins {
    /// Admins from `admin-users` and `admin-group` (an empty group name means none).
    pub fn new(users: Vec<String>, group: Option<String>) -> Self {
        Admins {
            users,
            group: group.filter(|g| !g.is_empty()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `user` is an admin. May block on the group database: see the type's docs.
    pub fn is_admin(&self, user: &str) -> bool {
        self.is_admin_at(user, Instant::now())
    }

    /// [`Admins::is_admin`] off the async runtime; answers from the list and the cache directly.
    pub async fn is_admin_async(self: &Arc<Self>, user: &str) -> bool {
        let now = Instant::now();
        if let Some(answer) = self.quick_answer(user, now) {
            return answer;
        }
        let this = Arc::clone(self);
        let user = user.to_string();
        match tokio::task::spawn_blocking(move || this.is_admin_at(&user, now)).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "admin group lookup failed; treating the user as not an admin");
                false
            }
        }
    }

    /// The answer when it needs no group lookup: listed, no group configured, or cached.
    fn quick_answer(&self, user: &str, now: Instant) -> Option<bool> {
        if self.users.iter().any(|u| u == user) {
            return Some(true);
        }
        if self.group.is_none() {
            return Some(false);
        }
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(user) {
            Some((at, answer)) if now.saturating_duration_since(*at) < ADMIN_CACHE_TTL => Some(*answer),
            _ => None,
        }
    }

    fn is_admin_at(&self, user: &str, now: Instant) -> bool {
        if let Some(answer) = self.quick_answer(user, now) {
            return answer;
        }
        let Some(group) = &self.group else {
            return false;
        };
        // Lookup errors (NSS down) are not cached: fail closed now, ask again next time.
        let Some(answer) = in_group(user, group) else {
            return false;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= ADMIN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(user.to_string(), (now, answer));
        answer
    }
}

/// Whether `user` is in `group` per the group database: listed as a member, or the group is the
/// user's primary group. `None` when the database could not be read.
fn in_group(user: &str, group: &str) -> Option<bool> {
    use nix::unistd::{Group, User};
    let group_entry = match Group::from_name(group) {
        Ok(Some(g)) => g,
        Ok(None) => {
            tracing::warn!(
                admin_group = group,
                "admin-group does not exist in the group database; fix admin-group in launcher.conf"
            );
            return Some(false);
        }
        Err(e) => {
            tracing::warn!(admin_group = group, error = %e, "cannot read the group database");
            return None;
        }
    };
    if group_entry.mem.iter().any(|m| m == user) {
        return Some(true);
    }
    match User::from_name(user) {
        Ok(Some(u)) => Some(u.gid == group_entry.gid),
        Ok(None) => Some(false),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the user database");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[b'k'; 32];
    const NOW: u64 = 1_700_000_000;
    const DAY: u64 = 86_400;

    #[test]
    fn internal_credential_matches_the_node() {
        // HMAC-SHA256(key = [7; 32], "launcher-internal"), computed independently.
        assert_eq!(
            internal_credential(&[7u8; 32]),
            "Launcher-Internal c15f81f70c52b98d6f174f9465be96e99619179065cedf22268bc16b4c9d68f4"
        );
        assert_eq!(CLUSTER_ID_HEADER, "launcher-cluster-id");
    }

    #[test]
    fn token_format_is_documented_one() {
        // HMAC-SHA256(key = "k" * 32, "alice|1700000000"), computed independently.
        assert_eq!(
            mint_token(KEY, "alice", NOW),
            "alice|1700000000|660efcdd6c75fdff73f03219c595e3e36fde6f582ec8fdf5384b1c199fcc9560"
        );
    }

    #[test]
    fn round_trip() {
        let t = mint_token(KEY, "alice", NOW + 60);
        assert_eq!(verify_token(KEY, &t, NOW, DAY).unwrap(), "alice");
        let odd = "Dr. Ünïcode@example.com";
        let t = mint_token(KEY, odd, NOW + DAY);
        assert_eq!(verify_token(KEY, &t, NOW, DAY).unwrap(), odd);
        let long = "u".repeat(MAX_USER_BYTES);
        let t = mint_token(KEY, &long, u64::MAX);
        assert_eq!(verify_token(KEY, &t, u64::MAX - 1, DAY).unwrap(), long);
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        let t = mint_token(&[b'x'; 32], "alice", NOW + 60);
        assert_eq!(verify_token(KEY, &t, NOW, DAY), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampering_is_bad_signature() {
        let t = mint_token(KEY, "alice", NOW + 60);
        let sig = t.rsplit('|').next().unwrap().to_string();
        let forged_user = format!("mallory|{}|{sig}", NOW + 60);
        assert_eq!(
            verify_token(KEY, &forged_user, NOW, DAY),
            Err(AuthError::BadSignature)
        );
        let forged_expiry = format!("alice|{}|{sig}", NOW + 61);
        assert_eq!(
            verify_token(KEY, &forged_expiry, NOW, DAY),
            Err(AuthError::BadSignature)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.last_mut().unwrap();
        *last = if *last == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            verify_token(KEY, &flipped, NOW, DAY),
            Err(AuthError::BadSignature)
        );
        // Leading zeros change the signed text, so the signature no longer matches.
        let padded = format!("alice|0{}|{sig}", NOW + 60);
        assert_eq!(verify_token(KEY, &padded, NOW, DAY), Err(AuthError::BadSignature));
    }

    #[test]
    fn uppercase_signature_is_refused() {
        let t = mint_token(KEY, "alice", NOW + 60);
        let (signed, sig) = t.rsplit_once('|').unwrap();
        let upper = format!("{signed}|{}", sig.to_ascii_uppercase());
        let err = verify_token(KEY, &upper, NOW, DAY).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{err}");
        assert!(err.to_string().contains("lowercase hex"), "{err}");
    }

    #[test]
    fn expiry_rules() {
        let t = mint_token(KEY, "alice", NOW);
        let err = verify_token(KEY, &t, NOW, DAY).unwrap_err();
        assert_eq!(err, AuthError::Expired { expiry: NOW });
        assert_eq!(
            err.to_string(),
            "the token expired at 2023-11-14T22:13:20Z; get a new one"
        );
        assert!(verify_token(KEY, &t, NOW - 1, DAY).is_ok());

        let t = mint_token(KEY, "alice", NOW + DAY + 1);
        let err = verify_token(KEY, &t, NOW, DAY).unwrap_err();
        assert!(matches!(err, AuthError::TooLongLived { .. }), "{err}");
        assert!(
            err.to_string().contains("max-token-lifetime-seconds (86400)"),
            "{err}"
        );
        assert!(verify_token(KEY, &mint_token(KEY, "alice", NOW + DAY), NOW, DAY).is_ok());

        let far = AuthError::Expired { expiry: u64::MAX };
        assert!(far.to_string().contains("18446744073709551615 (Unix seconds)"));
    }

    #[test]
    fn malformed_shapes() {
        let sig = "0".repeat(64);
        let cases = [
            String::new(),
            "alice".to_string(),
            format!("alice|{sig}"),
            format!("alice|soon|{sig}"),
            format!("alice|-5|{sig}"),
            format!("alice||{sig}"),
            format!("|{NOW}|{sig}"),
            format!("al|ice|{NOW}|{sig}"),
            format!("al\nice|{NOW}|{sig}"),
            format!("{}|{NOW}|{sig}", "u".repeat(MAX_USER_BYTES + 1)),
            format!("alice|{NOW}|"),
            format!("alice|{NOW}|{}", &sig[..63]),
            format!("alice|{NOW}|{}", "g".repeat(64)),
            format!("alice|99999999999999999999999|{sig}"),
            format!("alice|{NOW}|{sig} "),
        ];
        for token in &cases {
            let err = verify_token(KEY, token, NOW, DAY).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{token:?}: {err}");
            // Never echo what was presented.
            assert!(!err.to_string().contains(&sig), "{err}");
        }
    }

    #[test]
    fn messages_never_echo_the_signature() {
        let t = mint_token(&[b'x'; 32], "alice", NOW + 60);
        let sig = t.rsplit('|').next().unwrap();
        for err in [
            verify_token(KEY, &t, NOW, DAY).unwrap_err(),
            AuthError::Missing,
            verify_token(&[b'x'; 32], &t, NOW + 120, DAY).unwrap_err(),
        ] {
            assert!(!err.to_string().contains(sig), "{err}");
        }
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc|1|x"), Some("abc|1|x"));
        assert_eq!(bearer("bearer   abc"), Some("abc"));
        assert_eq!(bearer("BEARER\tabc "), Some("abc"));
        assert_eq!(bearer("Bearer a b"), Some("a b"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer   "), None);
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(
            token_from_cookies("a=b; launcher-token=alice|1|ff; c=d").as_deref(),
            Some("alice|1|ff")
        );
        assert_eq!(token_from_cookies("launcher-token=x").as_deref(), Some("x"));
        assert_eq!(
            token_from_cookies("launcher-token=\"x|1\"").as_deref(),
            Some("x|1")
        );
        assert_eq!(token_from_cookies("launcher-token=a=b").as_deref(), Some("a=b"));
        assert_eq!(
            token_from_cookies("launcher-token=first;launcher-token=second").as_deref(),
            Some("first")
        );
        assert_eq!(token_from_cookies("a=b; xlauncher-token=y"), None);
        assert_eq!(token_from_cookies("launcher-token="), None);
        assert_eq!(token_from_cookies("launcher-token"), None);
        assert_eq!(token_from_cookies(""), None);
        assert_eq!(token_from_cookies("launcher-node=3"), None);
    }

    #[test]
    fn admin_users_list() {
        let admins = Admins::new(vec!["alice".into(), "bob".into()], None);
        assert!(admins.is_admin("alice"));
        assert!(admins.is_admin("bob"));
        assert!(!admins.is_admin("carol"));
        assert!(!admins.is_admin(""));
        let admins = Admins::new(Vec::new(), Some(String::new()));
        assert!(!admins.is_admin("root"));
    }

    #[test]
    fn admin_group_from_group_database() {
        // root's primary group is root (gid 0) on every Unix this runs on.
        let admins = Admins::new(Vec::new(), Some("root".into()));
        assert!(admins.is_admin("root"));
        assert!(!admins.is_admin("nobody"));
        assert!(!admins.is_admin("no-such-user-here"));
        assert!(!admins.is_admin("nul\0byte"));
        // Answers are cached; a missing group makes nobody an admin.
        assert!(admins.cache.lock().unwrap().contains_key("root"));
        let none = Admins::new(vec!["alice".into()], Some("no-such-group-here".into()));
        assert!(!none.is_admin("root"));
        assert!(none.is_admin("alice"));
    }

    /// A group `launcher-gw-test` with the member `launcher-gw-test`, whose primary group is
    /// `users`: made (once, kept) with the system's tools, which needs root.
    fn supplementary_member() -> (String, String) {
        const NAME: &str = "launcher-gw-test";
        assert!(
            nix::unistd::geteuid().is_root(),
            "no group in /etc/group has a supplementary member and only root can add one: \
             run this test as root, as CI does"
        );
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert!(
                out.status.success(),
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run("groupadd", &["-f", NAME]);
        if nix::unistd::User::from_name(NAME).ok().flatten().is_none() {
            run(
                "useradd",
                &[
                    "--no-create-home",
                    "--no-user-group",
                    "--gid",
                    "users",
                    "--groups",
                    NAME,
                    NAME,
                ],
            );
        } else {
            run("usermod", &["--append", "--groups", NAME, NAME]);
        }
        (NAME.to_string(), NAME.to_string())
    }

    #[test]
    fn admin_group_supplementary_members() {
        // Find a group that lists a member whose primary group is another one, if any.
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let found = groups.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, gid, members) = (fields.first()?, fields.get(2)?, fields.get(3)?);
            let member = members.split(',').find(|m| !m.is_empty())?;
            let user = nix::unistd::User::from_name(member).ok()??;
            (user.gid.to_string() != *gid).then(|| (name.to_string(), member.to_string()))
        });
        // Without one the lookup would go untested while the test passed: make one instead.
        let (group, member) = found.unwrap_or_else(supplementary_member);
        let admins = Admins::new(Vec::new(), Some(group.clone()));
        assert!(admins.is_admin(&member), "{member} in {group}");
    }

    #[test]
    fn admin_cache_expires_and_is_bounded() {
        let admins = Admins::new(Vec::new(), Some("root".into()));
        let t0 = Instant::now();
        // A stale "no" for root is served within the TTL and replaced after it.
        admins.cache.lock().unwrap().insert("root".into(), (t0, false));
        assert!(!admins.is_admin_at("root", t0 + Duration::from_secs(59)));
        assert!(admins.is_admin_at("root", t0 + ADMIN_CACHE_TTL));
        {
            let mut cache = admins.cache.lock().unwrap();
            cache.clear();
            for i in 0..ADMIN_CACHE_MAX {
                cache.insert(format!("u{i}"), (t0, false));
            }
        }
        assert!(admins.is_admin("root"));
        assert_eq!(admins.cache.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn admin_async() {
        let admins = Arc::new(Admins::new(vec!["alice".into()], Some("root".into())));
        assert!(admins.is_admin_async("alice").await);
        assert!(admins.is_admin_async("root").await);
        assert!(admins.is_admin_async("root").await);
        assert!(!admins.is_admin_async("nobody").await);
    }
}
