//! launcher-gateway: the Launcher HTTP API (docs/api.md) in front of the nodes' gRPC service.
//!
//! * [`config`]: the `[server]` section of `launcher.conf`.
//! * [`auth`]: the secure-cookie-key, user tokens, admins, and the internal credential.
//! * [`routing`]: the node set, health, rendezvous pinning, remembered indexes.
//! * [`context`]: what every route shares (state, caller, the call to a node with failover,
//!   the answer's headers); [`api`]: the routes; [`error`]: the one mapping from failures to
//!   HTTP answers.
//! * [`metrics`]: the figures of `GET /metrics`, in the Prometheus text format.
//! * [`openapi`]: the OpenAPI 3 document of the API.
//! * [`server`]: listeners and middleware.
//! * [`ui`]: the web status page and its cookie login.
//! * [`health`]: the `health` probe of a local gateway, for container health checks.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod listeners;
pub mod metrics;
pub mod openapi;
pub mod routing;
pub mod server;
pub mod ui;

pub use server::{start, GatewayHandle};
