//! launcher-gateway: the Launcher HTTP API (DESIGN §2) in front of the nodes' gRPC service.
//!
//! * [`config`]: the `[server]` section of `launcher.conf`.
//! * [`auth`]: the secure-cookie-key, user tokens, admins, and the internal credential.
//! * [`routing`]: the node set, health, rendezvous pinning, remembered indexes.
//! * [`api`]: the routes; [`error`]: the one mapping from failures to HTTP answers.
//! * [`openapi`]: the OpenAPI 3 document of the API.
//! * [`server`]: listeners and middleware.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod listeners;
pub mod openapi;
pub mod routing;
pub mod server;

pub use server::{start, GatewayHandle};
