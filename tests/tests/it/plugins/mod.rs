//! Jobs run for real: the plugin host, our Local plugin, a third-party style plugin.

mod host;
mod local;
mod slurm;
mod verify;
