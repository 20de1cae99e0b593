//! What can go wrong with a request: the shared plugin error type of the Plugin API crate.

pub use launcher_plugin_api::error::RequestError;
