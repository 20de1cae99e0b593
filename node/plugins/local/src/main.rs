//! `launcher-local-plugin`: the Local plugin. `launcher-local-plugin supervise <job-dir>` is the
//! per-job supervisor the plugin starts; anything else is the plugin itself, configured by
//! `--name=value` options and `$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`.
#![forbid(unsafe_code)]

use launcher_local_plugin::config;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("launcher-local-plugin: {msg}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("supervise") {
        let Some(dir) = args.get(2) else {
            eprintln!("usage: launcher-local-plugin supervise <job-dir>");
            std::process::exit(2);
        };
        std::process::exit(launcher_local_plugin::supervisor::run(std::path::Path::new(dir)));
    }
    let options = config::parse_args(args.into_iter().skip(1)).unwrap_or_else(|e| fail(e));
    let cfg = config::load(options, &config::config_dir_from_env()).unwrap_or_else(|e| fail(e));
    launcher_plugin_api::logging::init(&cfg.options).unwrap_or_else(|e| fail(e));
    tracing::debug!(config = ?cfg, "effective configuration");
    let startup = launcher_local_plugin::start_up(&cfg).unwrap_or_else(|e| {
        tracing::error!("{e:#}");
        fail(format!("{e:#}"))
    });
    let rt = launcher_plugin_api::serve::runtime(&cfg.options)
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    rt.block_on(launcher_local_plugin::run(
        cfg,
        startup,
        // Buffered: a header and its body, or many small requests, come in one read.
        tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin()),
        tokio::io::stdout(),
        launcher_local_plugin::termination(),
    ));
    tracing::info!("Local plugin stopped");
    // Not dropping the runtime: a blocked read of stdin would hold it up; jobs run on regardless.
    std::process::exit(0);
}
