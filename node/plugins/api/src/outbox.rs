//! A plugin's outgoing messages (shared by our plugins): the bounded queue request handlers put
//! responses on, and the one writer that numbers them and puts them on stdout.

use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use crate::envelope::{self, ResponseType};
use crate::error::RequestError;
use crate::framing::{self, FrameError, MAX_MESSAGE_BYTES};
use crate::messages;

/// A message waiting to be written to stdout.
#[derive(Debug)]
pub enum Outgoing {
    /// A response; the writer adds `messageType`, `requestId` and the next `responseId`.
    Message {
        message_type: i32,
        request_id: u64,
        payload: serde_json::Value,
    },
    /// An Error response.
    Error { request_id: u64, error: RequestError },
    /// Write everything queued before this, then stop.
    Finish,
}

/// The queue of outgoing messages (bounded: a launcher that stops reading slows the plugin down
/// instead of growing its memory).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
}

impl Outbox {
    /// A queue of `capacity` messages and its receiving end for the writer.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Outbox { tx }, rx)
    }

    /// Queues a response. Silently dropped when the writer has stopped (stdout is gone).
    pub async fn send<T: Serialize>(&self, t: ResponseType, request_id: u64, payload: &T) {
        let payload = serde_json::to_value(payload).expect("payloads serialise");
        let _ = self
            .tx
            .send(Outgoing::Message {
                message_type: t.number(),
                request_id,
                payload,
            })
            .await;
    }

    /// Queues an Error response.
    pub async fn error(&self, request_id: u64, error: RequestError) {
        let _ = self.tx.send(Outgoing::Error { request_id, error }).await;
    }

    /// Asks the writer to stop once everything queued so far is written.
    pub async fn finish(&self) {
        let _ = self.tx.send(Outgoing::Finish).await;
    }
}

/// Writes queued messages in order, numbering responses from 1, until told to finish (or the
/// queue closes): `Ok`; or until writing fails (the launcher is gone): that error.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Outgoing>,
    mut w: W,
) -> Result<(), FrameError> {
    let mut next: u64 = 1;
    while let Some(m) = rx.recv().await {
        let (request_id, bytes) = match m {
            Outgoing::Message {
                message_type,
                request_id,
                payload,
            } => (
                request_id,
                messages::encode(message_type, request_id, Some(next), &payload),
            ),
            Outgoing::Error { request_id, error } => (
                request_id,
                envelope::error_message(request_id, next, error.code(), &error.to_string()),
            ),
            Outgoing::Finish => break,
        };
        let bytes = if bytes.len() > MAX_MESSAGE_BYTES {
            let msg = format!(
                "the response of {} bytes is above the {MAX_MESSAGE_BYTES}-byte message limit; ask for fewer jobs or fields",
                bytes.len()
            );
            envelope::error_message(request_id, next, envelope::PluginErrorCode::Unknown, &msg)
        } else {
            bytes
        };
        framing::write_message(&mut w, &bytes).await?;
        next += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_numbers_responses_from_one_and_stops_on_finish() {
        let (tx, rx) = mpsc::channel(8);
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let w = tokio::spawn(write_loop(rx, a));
        tx.send(Outgoing::Message {
            message_type: 0,
            request_id: 0,
            payload: serde_json::json!({}),
        })
        .await
        .unwrap();
        tx.send(Outgoing::Error {
            request_id: 5,
            error: RequestError::JobNotFound("j".into()),
        })
        .await
        .unwrap();
        tx.send(Outgoing::Finish).await.unwrap();
        w.await.unwrap().unwrap();
        let m1: serde_json::Value =
            serde_json::from_slice(&framing::read_message(&mut b).await.unwrap().unwrap()).unwrap();
        let m2: serde_json::Value =
            serde_json::from_slice(&framing::read_message(&mut b).await.unwrap().unwrap()).unwrap();
        assert_eq!(
            (m1["messageType"].as_i64(), m1["responseId"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(
            (m2["messageType"].as_i64(), m2["responseId"].as_u64()),
            (Some(-1), Some(2))
        );
        assert_eq!(
            (m2["requestId"].as_u64(), m2["errorCode"].as_i64()),
            (Some(5), Some(3))
        );
        assert!(framing::read_message(&mut b).await.unwrap().is_none());
    }
}
