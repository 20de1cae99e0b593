//! `launcher-gateway token`, the real binary: it mints only tokens the gateway would accept. A
//! lifetime of 0 or less, or one longer than max-token-lifetime-seconds (the config's when
//! `--config` is given, else the default 86400), is refused with a message and a non-zero exit.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use launcher_gateway::auth::{load_key, verify_token};

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-gateway"))
        .args(args)
        // The config of the machine running the tests must play no part.
        .env_remove("RSTUDIO_CONFIG_DIR")
        .output()
        .expect("launcher-gateway runs")
}

fn write_key(path: &Path) {
    std::fs::write(path, "k".repeat(40)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// Asserts a refusal: non-zero exit, nothing on stdout, and `needles` on stderr.
#[track_caller]
fn refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a token was minted: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

#[test]
fn lifetimes_of_zero_or_less_or_over_the_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secure-cookie-key");
    write_key(&key);
    let key = key.to_str().unwrap();
    let mint = |ttl: &str| gateway(&["token", "--user", "alice", "--key-file", key, "--ttl", ttl]);

    for ttl in ["0", "0h", "-1", "-2d"] {
        refused(&mint(ttl), &["must be more than 0"]);
    }
    refused(
        &mint("100d"),
        &[
            "8640000 s",
            "max-token-lifetime-seconds (86400 s, the default",
            "--config",
        ],
    );
    refused(&mint("86401"), &["86401 s"]);

    // The maximum itself is a lifetime the gateway accepts.
    let out = mint("24h");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let k = load_key(Path::new(key)).unwrap();
    assert_eq!(
        verify_token(&k, token.trim(), now(), 86_400).as_deref(),
        Ok("alice")
    );
}

#[test]
fn the_maximum_comes_from_the_config_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secure-cookie-key");
    write_key(&key);
    let conf = dir.path().join("launcher.conf");
    let write_conf = |max: u64| {
        std::fs::write(
            &conf,
            format!(
                "[server]\nnodes=127.0.0.1:1\nsecure-cookie-key-file={}\nmax-token-lifetime-seconds={max}\n",
                key.display()
            ),
        )
        .unwrap()
    };
    let conf_arg = conf.to_str().unwrap();
    let mint = |ttl: &str| gateway(&["--config", conf_arg, "token", "--user", "alice", "--ttl", ttl]);

    // Raised to 100 days: a 100-day token is minted, and the gateway with that setting takes it.
    write_conf(100 * 86_400);
    let out = mint("100d");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let k = load_key(&key).unwrap();
    assert_eq!(
        verify_token(&k, token.trim(), now(), 100 * 86_400).as_deref(),
        Ok("alice")
    );
    refused(&mint("101d"), &["8726400 s", "8640000 s, from", conf_arg]);

    // Lowered to 10 minutes: the default 1h is too long now, also with --key-file given.
    write_conf(600);
    refused(
        &gateway(&["--config", conf_arg, "token", "--user", "alice"]),
        &["3600 s", "600 s, from"],
    );
    refused(
        &gateway(&[
            "--config",
            conf_arg,
            "token",
            "--user",
            "alice",
            "--key-file",
            key.to_str().unwrap(),
        ]),
        &["3600 s", "600 s, from"],
    );
    assert!(mint("10m").status.success());
}
