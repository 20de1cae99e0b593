//! The HTTP API through a real gateway in front of real node processes.

mod api;
mod auth;
mod listeners;
mod openapi;
mod routing;
mod ui;
