//! Jobs run for real: the plugin host, our Local plugin, a third-party style plugin, our Slurm
//! plugin on a real Slurm; and the Plugin API conformance of our plugins.

mod conformance;
mod host;
mod local;
mod slurm;
mod verify;
