//! The Launcher Plugin API (DESIGN §5): how a launcher and a plugin talk over the plugin's
//! stdin/stdout. Shared by our plugin host and our plugins; depends on nothing of ours.
//!
//! * [`framing`]: 4-byte big-endian length, then that many bytes of UTF-8 JSON, at most
//!   [`framing::MAX_MESSAGE_BYTES`]; an oversize header is refused before its body is read.
//! * [`envelope`]: the fields every message carries (`messageType`, `requestId`,
//!   `responseId`), the type numbers, and the Error message.
//! * [`messages`]: the payload of every request and response, and the job object plugins see.
//! * For plugins: [`error`] (the request error type and its codes), [`options`] (the standard
//!   plugin options and the config-file format), [`logging`] (where a plugin's logs go), [`output`] (job output as text chunks),
//!   [`outbox`] (the queue and writer of responses), [`serve`] (the request loop: framing,
//!   dispatch in arrival order, heartbeats, draining at shutdown), [`request`] (decoding requests),
//!   [`status`] (job statuses), [`signal`] (shutdown signals), [`streams`] (resource streams).
#![forbid(unsafe_code)]

pub mod envelope;
pub mod error;
pub mod framing;
pub mod logging;
pub mod messages;
pub mod options;
pub mod outbox;
pub mod output;
pub mod request;
pub mod serve;
pub mod signal;
pub mod status;
pub mod streams;
pub mod userfs;
