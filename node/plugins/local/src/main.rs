//! `launcher-local-plugin`: the Local plugin. `launcher-local-plugin supervise <job-dir>` is the
//! per-job supervisor the plugin starts; anything else is the plugin itself.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("supervise") {
        let Some(dir) = args.get(2) else {
            eprintln!("usage: launcher-local-plugin supervise <job-dir>");
            std::process::exit(2);
        };
        std::process::exit(launcher_local_plugin::supervisor::run(std::path::Path::new(dir)));
    }
    eprintln!("launcher-local-plugin: the plugin is being written");
    std::process::exit(1);
}
