//! Length-prefixed framing: a 4-byte big-endian length, then the JSON bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest message either side accepts (5 MiB).
pub const MAX_MESSAGE_BYTES: usize = 5 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length header announces more than the cap; the body is not read.
    #[error("message of {len} bytes refused: the limit is {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a message ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one message. `Ok(None)` when the stream ended cleanly between messages.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    read_message_limited(r, MAX_MESSAGE_BYTES).await
}

/// Reads one message of at most `max` bytes (a plugin's `max-message-size`), like
/// [`read_message`]. After [`FrameError::TooLarge`] the announced body is still in the stream:
/// [`discard`] it to read on.
pub async fn read_message_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(FrameError::Truncated {
                    got,
                    want: header.len(),
                })
            }
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        // Refuse at once: waiting for (or buffering) the announced bytes is what a bad peer wants.
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]).await? {
            0 => return Err(FrameError::Truncated { got, want: len }),
            n => got += n,
        }
    }
    Ok(Some(body))
}

/// Reads and drops exactly `len` bytes (the body of a refused oversize message) through a small
/// buffer, so the stream is at the next header again without the body ever being held.
pub async fn discard<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<(), FrameError> {
    let mut buf = [0u8; 8192];
    let mut got = 0;
    while got < len {
        let want = (len - got).min(buf.len());
        match r.read(&mut buf[..want]).await? {
            0 => return Err(FrameError::Truncated { got, want: len }),
            n => got += n,
        }
    }
    Ok(())
}

/// Writes one message and flushes it.
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_message(&mut a, br#"{"messageType":0,"requestId":1}"#)
            .await
            .unwrap();
        write_message(&mut a, b"{}").await.unwrap();
        drop(a);
        assert_eq!(
            read_message(&mut b).await.unwrap().unwrap(),
            br#"{"messageType":0,"requestId":1}"#
        );
        assert_eq!(read_message(&mut b).await.unwrap().unwrap(), b"{}");
        assert!(read_message(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversize_header_is_refused_without_waiting_for_the_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Only the header is sent and the writer stays open: a reader that waited for the
        // body would hang here.
        a.write_all(&((MAX_MESSAGE_BYTES as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), read_message(&mut b)).await;
        match r.expect("refused at once, not waiting") {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES))
            }
            other => panic!("{other:?}"),
        }
        drop(a);
    }

    #[tokio::test]
    async fn exactly_the_cap_is_accepted_and_one_more_is_not_written() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let body = vec![b' '; MAX_MESSAGE_BYTES];
        let writer = tokio::spawn(async move {
            write_message(&mut a, &body).await.unwrap();
            let too_big = vec![b' '; MAX_MESSAGE_BYTES + 1];
            assert!(matches!(
                write_message(&mut a, &too_big).await,
                Err(FrameError::TooLarge { .. })
            ));
        });
        assert_eq!(
            read_message(&mut b).await.unwrap().unwrap().len(),
            MAX_MESSAGE_BYTES
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_body_can_be_discarded_and_reading_goes_on() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            a.write_all(&100_000u32.to_be_bytes()).await.unwrap();
            a.write_all(&vec![b'x'; 100_000]).await.unwrap();
            write_message(&mut a, b"{}").await.unwrap();
        });
        match read_message_limited(&mut b, 1000).await {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (100_000, 1000));
                discard(&mut b, len).await.unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_message(&mut b).await.unwrap().unwrap(), b"{}");
        writer.await.unwrap();
        assert!(read_message(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(matches!(
            read_message(&mut b).await,
            Err(FrameError::Truncated { got: 3, want: 10 })
        ));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_message(&mut b).await,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
    }
}
