//! The value grammar of `launcher.conf`, for key tables. An empty value means "unset" for
//! optional keys and lists.

use std::path::PathBuf;

/// Stores a parsed value: the end of every key table's setter.
pub fn set<T>(slot: &mut T, value: T) -> Result<(), String> {
    *slot = value;
    Ok(())
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, any case.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected a boolean (1/0, true/false, yes/no), got '{v}'")),
    }
}

/// A whole number from 0 to `max` (a leading `+` allowed).
pub fn parse_uint(v: &str, max: u64) -> Result<u64, String> {
    if v.is_empty() {
        return Err("value is empty; expected a whole number".to_string());
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match digits.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{v} is out of range (0 to {max})")),
        };
    }
    let negative = v
        .strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if negative {
        Err(format!("must not be negative, got '{v}'"))
    } else {
        Err(format!("expected a whole number, got '{v}'"))
    }
}

/// [`parse_uint`] up to `u64::MAX`.
pub fn parse_u64(v: &str) -> Result<u64, String> {
    parse_uint(v, u64::MAX)
}

/// [`parse_uint`] up to `usize::MAX`.
pub fn parse_usize(v: &str) -> Result<usize, String> {
    parse_uint(v, usize::MAX as u64).map(|n| n as usize)
}

/// A port, 0 to 65535.
pub fn parse_port(v: &str) -> Result<u16, String> {
    parse_uint(v, u16::MAX.into()).map(|n| n as u16)
}

/// `None` for an empty value, else `parse(v)`.
pub fn opt<T>(v: &str, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

/// `None` for an empty value.
pub fn opt_string(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// `None` for an empty value.
pub fn opt_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// A path that must not be empty.
pub fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("value is empty; expected a path".to_string())
    } else {
        Ok(PathBuf::from(v))
    }
}

/// A comma-separated list; items trimmed, empty items dropped.
pub fn parse_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A flag as a dump shows it.
pub fn show_bool(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// An optional value as a dump shows it (empty when unset).
pub fn show_opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

/// An optional path as a dump shows it (empty when unset).
pub fn show_opt_path(v: &Option<PathBuf>) -> String {
    v.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

/// Checks a `host:port` (IPv6 in brackets, no scheme); the port may be 0 only when
/// `allow_port_0` (a listen address, not one to dial).
pub fn check_host_port(v: &str, allow_port_0: bool) -> Result<(), String> {
    if v.contains("://") {
        return Err(format!("expected host:port without a scheme, got '{v}'"));
    }
    if v.chars().any(char::is_whitespace) {
        return Err(format!(
            "expected host:port, got '{v}' (lists are comma separated)"
        ));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("expected host:port, got '{v}'"));
    };
    if host.is_empty() {
        return Err(format!("missing host in '{v}'"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "IPv6 addresses need brackets, as in [::1]:5560; got '{v}'"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) if !allow_port_0 => Err(format!("port 0 cannot be dialled, got '{v}'")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("bad port in '{v}' (expected 1 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_say_what_is_wrong() {
        assert_eq!(parse_uint("+7", 10), Ok(7));
        assert_eq!(
            parse_uint("", 10).unwrap_err(),
            "value is empty; expected a whole number"
        );
        assert_eq!(parse_uint("11", 10).unwrap_err(), "11 is out of range (0 to 10)");
        assert_eq!(
            parse_uint("-3", 10).unwrap_err(),
            "must not be negative, got '-3'"
        );
        assert_eq!(
            parse_uint("3s", 10).unwrap_err(),
            "expected a whole number, got '3s'"
        );
        assert_eq!(
            parse_port("65536").unwrap_err(),
            "65536 is out of range (0 to 65535)"
        );
    }

    #[test]
    fn booleans_lists_and_paths() {
        assert_eq!(parse_bool("YES"), Ok(true));
        assert_eq!(
            parse_bool("off").unwrap_err(),
            "expected a boolean (1/0, true/false, yes/no), got 'off'"
        );
        assert_eq!(parse_list(" a, ,b ,"), vec!["a", "b"]);
        assert_eq!(opt_path(""), None);
        assert!(path("").is_err());
        assert_eq!(opt("", parse_u64), Ok(None));
        assert_eq!(show_opt(&Some(3)), "3");
    }

    #[test]
    fn host_ports_are_dialable() {
        assert!(check_host_port("node1:5560", false).is_ok());
        assert!(check_host_port("[::1]:5560", false).is_ok());
        assert!(check_host_port("0.0.0.0:0", true).is_ok());
        for (bad, why) in [
            ("http://a:1", "without a scheme"),
            ("a:1 b:2", "comma separated"),
            ("a", "expected host:port"),
            (":1", "missing host"),
            ("::1:5560", "brackets"),
            ("a:0", "cannot be dialled"),
            ("a:x", "bad port"),
        ] {
            let e = check_host_port(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
