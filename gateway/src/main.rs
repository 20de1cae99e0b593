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
        /// Lifetime: seconds, or a number with s, m, h or d (default 1h).
        #[arg(long, default_value = "1h")]
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
    Ok(n * mult)
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
        let key_file = match key_file {
            Some(f) => f.clone(),
            None => {
                let cfg = launcher_gateway::config::load(&config_path(&args), |k| std::env::var(k).ok())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                cfg.secure_cookie_key_file
            }
        };
        let key = launcher_gateway::auth::load_key(&key_file).map_err(anyhow::Error::msg)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        println!(
            "{}",
            launcher_gateway::auth::mint_token(&key, user, now + parse_ttl(ttl)?)
        );
        return Ok(());
    }
    let config = launcher_gateway::config::load(&config_path(&args), |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    if let Some(Cmd::Health { timeout }) = &args.command {
        return health(&config, *timeout);
    }
    let default = if config.enable_debug_logging {
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
        handle.wait().await
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
    use super::parse_ttl;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("x").is_err());
    }
}
