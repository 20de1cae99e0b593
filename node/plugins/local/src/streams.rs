//! The multiplexed streams' bookkeeping, from the plugin API crate: status streams
//! ([`StatusStreams`]) and resource streams ([`ResourceStreams`]), kept as the Slurm plugin
//! keeps them.

pub use launcher_plugin_api::streams::{ResourceStreams, StatusStreams, Target};
