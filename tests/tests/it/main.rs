//! Integration tests of the launcher cluster. One binary; modules by area.

mod api;
mod chaos;
mod cluster;
mod ctl;
mod deploy;
mod gateway;
mod layers;
mod plugins;
mod security;
