//! `launcherctl`: the command-line client of the Launcher HTTP API (docs/api.md). It talks only
//! to a gateway, over HTTP(S) or its unix socket.
//!
//! * [`cli`]: the command line; [`config`]: the config file `login` writes.
//! * [`client`]: the HTTP client and the mapping of answers to [`error::CtlError`].
//! * [`jobs`], [`admin`]: the commands; [`output`]: tables and JSON; [`sse`]: event streams.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod client;
mod config;
mod error;
mod jobs;
mod output;
mod sse;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use reqwest::Method;

use crate::cli::{Cli, Command, SnapshotCmd};
use crate::client::Api;
use crate::config::FileConfig;
use crate::error::{CmdResult, CtlError};
use crate::jobs::print_out;

/// Lifetime of a token minted for one command with `--key-file`.
const COMMAND_TOKEN_TTL: u64 = 3600;

fn main() {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => match rt.block_on(run(cli)) {
            Ok(code) => code,
            Err((e, hint)) => {
                eprintln!("launcherctl: error: {e}");
                if let Some(h) = hint {
                    eprintln!("hint: {h}");
                }
                e.exit_code()
            }
        },
        Err(e) => {
            eprintln!("launcherctl: error: cannot start the runtime: {e}");
            error::EXIT_API
        }
    };
    std::process::exit(code);
}

/// The environment variable `name`, unless unset or empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Seconds since the epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `user` signed with the key in `key_file`, valid for `ttl` seconds.
fn mint(key_file: &std::path::Path, user: &str, ttl: u64) -> Result<String, CtlError> {
    let key = token::load_key(key_file).map_err(CtlError::Usage)?;
    if user.is_empty() || user.contains('|') || user.chars().any(char::is_control) {
        return Err(CtlError::Usage(format!(
            "'{user}' cannot be the user of a token (empty, or holds '|' or control characters)"
        )));
    }
    Ok(token::mint(&key, user, now_unix().saturating_add(ttl)))
}

/// Where the token of a command comes from, in order: `--token`, `--key-file` with `--user`,
/// `$LAUNCHER_TOKEN`, then (unless `stored` is `None`) the config file.
fn resolve_token(
    cli: &Cli,
    user: Option<&str>,
    ttl: u64,
    stored: Option<&FileConfig>,
) -> Result<Option<String>, CtlError> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.trim().to_string()));
    }
    match (&cli.key_file, user) {
        (Some(kf), Some(u)) => return Ok(Some(mint(kf, u, ttl)?)),
        (Some(_), None) => {
            return Err(CtlError::Usage(
                "--key-file needs --user NAME (before the command) to say whom the token is for".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(CtlError::Usage(
                "--user (before the command) names the user of a token minted with --key-file; give --key-file too"
                    .into(),
            ))
        }
        (None, None) => {}
    }
    if let Some(t) = env("LAUNCHER_TOKEN") {
        return Ok(Some(t.trim().to_string()));
    }
    Ok(stored.and_then(|c| c.token.clone()))
}

/// `<user>|<expiry>|<signature>` → (user, expiry), when it has that shape.
fn token_parts(token: &str) -> Option<(&str, u64)> {
    let (rest, _sig) = token.rsplit_once('|')?;
    let (user, expiry) = rest.rsplit_once('|')?;
    Some((user, expiry.parse().ok()?))
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix} (Unix seconds)"))
}

/// Runs the command; on failure also returns a hint for the user, if there is one.
async fn run(cli: Cli) -> Result<i32, (CtlError, Option<String>)> {
    let no_hint = |e: CtlError| (e, None);
    let config_path: Option<PathBuf> = cli.config.clone().or_else(|| config::default_path(env));
    let stored = match &config_path {
        Some(p) => config::load(p).map_err(no_hint)?,
        None => FileConfig::default(),
    };
    // Commands that need no gateway.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "launcherctl", &mut buf);
            return print_out(&String::from_utf8_lossy(&buf)).map_err(no_hint);
        }
        Command::Token {
            user,
            ttl,
            max_lifetime,
        } => {
            token::check_lifetime(*ttl, *max_lifetime).map_err(|e| no_hint(CtlError::Usage(e)))?;
            let Some(kf) = &cli.key_file else {
                return Err(no_hint(CtlError::Usage(
                    "token needs --key-file FILE (the secure-cookie-key of the cluster)".into(),
                )));
            };
            let token = mint(kf, user, *ttl).map_err(no_hint)?;
            return print_out(&format!("{token}\n")).map_err(no_hint);
        }
        Command::Logout => return logout(config_path.as_deref(), stored).map_err(no_hint),
        _ => {}
    }

    let url = cli
        .url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| stored.url.clone())
        .unwrap_or_else(|| client::DEFAULT_URL.to_string());
    let target = client::parse_target(&url).map_err(no_hint)?;
    let ca_file = cli.ca_file.clone().or_else(|| stored.ca_file.clone());
    let token = match &cli.command {
        Command::Login {
            user,
            ttl,
            max_lifetime,
        } => {
            // Only a token minted here has a lifetime to check; a given one is checked by the
            // gateway.
            if cli.token.is_none() && cli.key_file.is_some() {
                token::check_lifetime(*ttl, *max_lifetime).map_err(|e| no_hint(CtlError::Usage(e)))?;
            }
            resolve_token(&cli, user.as_deref().or(cli.user.as_deref()), *ttl, None).map_err(no_hint)?
        }
        Command::Status { .. } => None, // unauthenticated; a stale stored token must not matter
        _ => resolve_token(&cli, cli.user.as_deref(), COMMAND_TOKEN_TTL, Some(&stored)).map_err(no_hint)?,
    };
    let api = Api::new(
        target,
        token,
        ca_file.as_deref(),
        Duration::from_secs(cli.request_timeout),
    )
    .map_err(no_hint)?;

    let result: CmdResult = match cli.command {
        Command::Status { output } => admin::status(&api, output).await,
        Command::Clusters { output } => admin::clusters(&api, output).await,
        Command::Jobs(cmd) => jobs::run(&api, cmd).await,
        Command::Members(cmd) => admin::members(&api, cmd).await,
        Command::Snapshot(SnapshotCmd::Save { file }) => admin::snapshot_save(&api, &file).await,
        Command::Login { .. } => login(&api, &url, ca_file, config_path.as_deref(), stored).await,
        Command::Completions { .. } | Command::Token { .. } | Command::Logout => {
            unreachable!("handled above")
        }
    };
    result.map_err(|e| {
        let hint = match &e {
            CtlError::Api { status: 401, .. } if !api.has_token() => Some(
                "no token was sent: use --token, $LAUNCHER_TOKEN, --key-file with --user, or `launcherctl login`"
                    .to_string(),
            ),
            CtlError::Connect { .. } => {
                Some("is the gateway running there? Set --url or $LAUNCHER_URL (see `launcherctl --help`)".into())
            }
            _ => None,
        };
        (e, hint)
    })
}

/// `login`: checks the token with `GET /jobs`, then stores it with the URL.
async fn login(
    api: &Api,
    url: &str,
    ca_file: Option<PathBuf>,
    path: Option<&std::path::Path>,
    stored: FileConfig,
) -> CmdResult {
    let Some(path) = path else {
        return Err(CtlError::Usage(
            "nowhere to store the token: set HOME or XDG_CONFIG_HOME, or give --config FILE".into(),
        ));
    };
    let Some(token) = api.token().map(str::to_string) else {
        return Err(CtlError::Usage(
            "login needs a token: --token, $LAUNCHER_TOKEN, or --key-file with --user".into(),
        ));
    };
    api.send(api.request(Method::GET, &["jobs"]).query(&[("limit", "1")]))
        .await?;
    let cfg = FileConfig {
        url: Some(url.to_string()),
        token: Some(token.clone()),
        ca_file: ca_file.or(stored.ca_file),
    };
    config::save(path, &cfg)?;
    let who = match token_parts(&token) {
        Some((user, expiry)) => format!(" as {user} (the token expires at {})", rfc3339(expiry)),
        None => String::new(),
    };
    print_out(&format!(
        "logged in to {}{who}; saved to {}\n",
        api.display_url(),
        path.display()
    ))
}

/// `logout`: removes the stored token, keeping the rest of the config.
fn logout(path: Option<&std::path::Path>, mut stored: FileConfig) -> CmdResult {
    let Some(path) = path else {
        return print_out("no config file; nothing to forget\n");
    };
    if stored.token.take().is_none() {
        return print_out(&format!("no token stored in {}\n", path.display()));
    }
    config::save(path, &stored)?;
    print_out(&format!("removed the token from {}\n", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes() {
        assert_eq!(token_parts("alice|1700000000|ff"), Some(("alice", 1_700_000_000)));
        assert_eq!(token_parts("alice|x|ff"), None);
        assert_eq!(token_parts("nonsense"), None);
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn minted_tokens_verify() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k".repeat(40)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = mint(&key, "alice", 60).unwrap();
        let (user, expiry) = t.split_once('|').expect("user|expiry|signature");
        assert_eq!(user, "alice");
        let expiry: u64 = expiry.split('|').next().unwrap().parse().unwrap();
        assert_eq!(t, token::mint(&[b'k'; 40], "alice", expiry));
        assert!(matches!(mint(&key, "a|b", 60), Err(CtlError::Usage(_))));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = mint(&key, "alice", 60).unwrap_err();
        assert!(err.to_string().contains("chmod 0600"), "{err}");
    }
}
