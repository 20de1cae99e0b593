//! `launcher-gateway`: serve the Launcher HTTP API, or mint a token for scripts and tests.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(version, about = "The Launcher HTTP API in front of a launcher-node cluster")]
struct Args {
    /// launcher.conf (default: $RSTUDIO_CONFIG_DIR/launcher.conf, else /etc/rstudio/launcher.conf).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a bearer token for USER, signed with the secure-cookie-key.
    Token {
        /// The user the token authenticates.
        #[arg(long)]
        user: String,
        /// Lifetime: seconds, or a number with s, m, h or d (default 1h); more than 0, at most
        /// max-token-lifetime-seconds (from --config when given, else its default 86400).
        #[arg(long, default_value = "1h", allow_hyphen_values = true)]
        ttl: String,
        /// The key file (default: secure-cookie-key-file from the config).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Exit 0 when the local gateway answers `GET /status` with 200, else 1 (container health checks).
    Health {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    if s.starts_with('-') {
        anyhow::bail!("--ttl '{s}': a token lifetime must be more than 0");
    }
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl '{s}': use seconds or a number with s, m, h or d"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => anyhow::bail!("--ttl '{s}': unknown unit '{other}' (use s, m, h or d)"),
    };
    match n.checked_mul(mult) {
        Some(0) => anyhow::bail!(
            "--ttl '{s}': a token lifetime must be more than 0 (the token would have expired when minted)"
        ),
        Some(secs) => Ok(secs),
        None => anyhow::bail!("--ttl '{s}' is out of range"),
    }
}

/// Refuses a lifetime the gateway refuses tokens for: longer than its
/// max-token-lifetime-seconds (`max`, `from` saying where that value comes from).
fn check_ttl(ttl: u64, max: u64, from: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        ttl <= max,
        "--ttl of {ttl} s is longer than max-token-lifetime-seconds ({max} s, {from}): the gateway \
         would refuse the token. To mint a longer token, raise max-token-lifetime-seconds in the \
         gateway's launcher.conf and pass that file with --config"
    );
    Ok(())
}

fn config_path(args: &Args) -> PathBuf {
    args.config
        .clone()
        .unwrap_or_else(|| launcher_gateway::config::config_dir().join("launcher.conf"))
}

fn main() {
    let args = Args::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("launcher-gateway: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Cmd::Token { user, ttl, key_file }) = &args.command {
        let ttl = parse_ttl(ttl)?;
        // The file is read when it must name the key, or when it is given: it then also sets the
        // longest lifetime this cluster's gateways accept.
        let loaded = if key_file.is_none() || args.config.is_some() {
            let path = config_path(&args);
            let cfg = launcher_gateway::config::load(&path, |k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some((path, cfg))
        } else {
            None
        };
        let (max, from) = match &loaded {
            Some((path, cfg)) => (
                cfg.server.max_token_lifetime_seconds,
                format!("from {}", path.display()),
            ),
            None => (
                launcher_gateway::config::GatewayConfig::new(PathBuf::new())
                    .server
                    .max_token_lifetime_seconds,
                "the default; pass --config with the gateway's launcher.conf to use its value".to_string(),
            ),
        };
        check_ttl(ttl, max, &from)?;
        let key_file = key_file
            .clone()
            .or(loaded.map(|(_, cfg)| cfg.server.secure_cookie_key_file))
            .context("give --key-file, or --config naming secure-cookie-key-file")?;
        let key = launcher_gateway::auth::load_key(&key_file).map_err(anyhow::Error::msg)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let expiry = now
            .checked_add(ttl)
            .context("--ttl reaches past the end of time")?;
        println!("{}", launcher_gateway::auth::mint_token(&key, user, expiry));
        return Ok(());
    }
    let config = launcher_gateway::config::load(&config_path(&args), |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    if let Some(Cmd::Health { timeout }) = &args.command {
        return health(&config, *timeout);
    }
    let default = if config.server.enable_debug_logging {
        "debug"
    } else {
        "info"
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // LAUNCHER_LOG_FORMAT=json: one JSON object per line (with the request's span fields).
    if std::env::var("LAUNCHER_LOG_FORMAT").is_ok_and(|v| v == "json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        // Root is given up once every listener is bound and every key file read, before the
        // first request is served.
        let handle =
            launcher_gateway::server::start_with(config.clone(), launcher_gateway::server::drop_privileges)
                .await?;
        let stopper = handle.stopper();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: no new requests; in-flight ones finish");
            stopper.send_replace(true);
        });
        Ok(handle.wait().await?)
    })
}

fn health(config: &launcher_gateway::config::GatewayConfig, timeout: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let limit = std::time::Duration::from_secs(timeout.max(1));
    let code = rt.block_on(launcher_gateway::health::probe(config, limit))?;
    anyhow::ensure!(code == 200, "GET /status answered HTTP {code}");
    println!("gateway healthy: GET /status answered HTTP {code}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_ttl, parse_ttl};

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("x").is_err());
    }

    #[test]
    fn ttls_of_zero_or_less_or_out_of_range_are_refused() {
        for bad in ["0", "0s", "0d", "-1", "-5h"] {
            let e = parse_ttl(bad).unwrap_err().to_string();
            assert!(e.contains("must be more than 0"), "{bad}: {e}");
        }
        assert!(parse_ttl("18446744073709551615d")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn ttls_over_the_maximum_lifetime_are_refused() {
        assert!(check_ttl(86_400, 86_400, "the default").is_ok());
        let e = check_ttl(8_640_000, 86_400, "from /etc/rstudio/launcher.conf")
            .unwrap_err()
            .to_string();
        for needle in [
            "8640000 s",
            "86400 s, from /etc/rstudio/launcher.conf",
            "raise max-token-lifetime-seconds",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
