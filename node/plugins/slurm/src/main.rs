//! `launcher-slurm-plugin`: the Slurm plugin, configured by `--name=value` options and
//! `$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`.
#![forbid(unsafe_code)]

use launcher_slurm_plugin::config;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("launcher-slurm-plugin: {msg}");
    std::process::exit(1);
}

fn main() {
    let options = config::parse_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(e));
    let cfg = config::load(options, &config::config_dir_from_env()).unwrap_or_else(|e| fail(e));
    launcher_plugin_api::logging::init(&cfg.options).unwrap_or_else(|e| fail(e));
    tracing::debug!(config = ?cfg, "effective configuration");
    let rt = launcher_plugin_api::serve::runtime(&cfg.options)
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    rt.block_on(launcher_slurm_plugin::run(
        cfg,
        tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin()),
        tokio::io::stdout(),
        launcher_slurm_plugin::termination(),
    ));
    tracing::info!("Slurm plugin stopped");
    // A blocked read of stdin would hold up dropping the runtime; jobs live on in Slurm.
    std::process::exit(0);
}
