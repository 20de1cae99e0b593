//! Integration tests of the launcher cluster. One binary; modules by area.

mod api;
mod cluster;
mod gateway;
mod plugins;
