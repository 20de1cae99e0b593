//! Property tests of the frame decoder on hostile input: whatever a plugin (or a launcher) writes,
//! reading it never panics and never allocates more than the configured maximum message size,
//! and every frame written is read back as it was.
//!
//! The memory bound is checked with a counting allocator: a peer that announces 4 GiB must be
//! refused before anything near that is reserved, which no assertion on the result alone shows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use launcher_plugin_api::framing::{
    discard, read_message, read_message_limited, write_message, FrameError, MAX_MESSAGE_BYTES,
};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Counts, per thread, the largest single allocation and the bytes allocated while enabled.
/// Per thread because the test harness runs cases of other tests on other threads at once.
struct Counting;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = ENABLED.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is passed straight to the system allocator; the counters are plain
// thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the runtime and the future's own state may take besides a message body.
const SLACK: usize = 64 * 1024;

/// Runs `f` to completion on a current-thread runtime (so every allocation it makes is on this
/// thread) and returns its result with the largest single allocation and the total allocated.
fn measured<T>(f: impl std::future::Future<Output = T>) -> (T, usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    ENABLED.with(|on| on.set(true));
    let out = rt.block_on(f);
    ENABLED.with(|on| on.set(false));
    (out, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

/// A reader that hands out its bytes at most `chunk` at a time, as a pipe may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.max(1).min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Reads frames until the stream ends or a frame is refused; checks each against `max`.
async fn read_all(data: &[u8], chunk: usize, max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut r = Chunked { data, chunk };
    let mut out = Vec::new();
    loop {
        match read_message_limited(&mut r, max).await {
            Ok(Some(body)) => {
                assert!(
                    body.len() <= max,
                    "a {}-byte body passed a {max}-byte limit",
                    body.len()
                );
                out.push(body);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_streams_never_panic_nor_allocate_past_the_limit(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..64,
        max in 0usize..2048,
    ) {
        let (result, largest, _) = measured(read_all(&data, chunk, max));
        prop_assert!(largest <= max + SLACK, "largest allocation {largest} with a limit of {max}");
        match result {
            Ok(_) => {}
            Err(FrameError::TooLarge { len, max: m }) => prop_assert!(len > max && m == max),
            Err(FrameError::Truncated { got, want }) => prop_assert!(got < want),
            Err(FrameError::Io(e)) => prop_assert!(false, "no I/O error from a byte slice: {e}"),
        }
    }

    #[test]
    fn oversize_headers_are_refused_before_allocating(
        len in (MAX_MESSAGE_BYTES as u32 + 1)..=u32::MAX,
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut data = len.to_be_bytes().to_vec();
        data.extend_from_slice(&rest);
        let (result, largest, total) = measured(async {
            let mut r = data.as_slice();
            read_message(&mut r).await
        });
        match result {
            Err(FrameError::TooLarge { len: l, max }) => {
                prop_assert_eq!((l, max), (len as usize, MAX_MESSAGE_BYTES))
            }
            other => prop_assert!(false, "a {len}-byte header was not refused: {other:?}"),
        }
        // Nothing of the announced body is reserved, not even the 5 MiB the limit would allow.
        prop_assert!(largest <= SLACK && total <= SLACK, "largest {largest}, total {total}");
    }

    #[test]
    fn headers_over_a_configured_limit_are_refused_and_the_body_can_be_skipped(
        max in 0usize..1024,
        extra in 1usize..4096,
        body_byte in any::<u8>(),
        next in proptest::collection::vec(any::<u8>(), 0..256),
        chunk in 1usize..512,
    ) {
        let len = max + extra;
        let mut data = frame(&vec![body_byte; len]);
        data.extend_from_slice(&frame(&next));
        let (result, largest, _) = measured(async {
            let mut r = Chunked { data: &data, chunk };
            let refused = read_message_limited(&mut r, max).await;
            let Err(FrameError::TooLarge { len: l, .. }) = refused else {
                return Err(format!("not refused: {refused:?}"));
            };
            discard(&mut r, l).await.map_err(|e| e.to_string())?;
            read_message(&mut r).await.map_err(|e| e.to_string())
        });
        prop_assert_eq!(result, Ok(Some(next.clone())));
        // The skipped body goes through discard's small buffer, never into memory whole.
        prop_assert!(largest <= next.len().max(max) + SLACK, "largest allocation {largest}");
    }

    #[test]
    fn written_frames_read_back_unchanged(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 0..8),
        chunk in 1usize..4096,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut wire = Vec::new();
        rt.block_on(async {
            for b in &bodies {
                write_message(&mut wire, b).await.expect("write to a Vec");
            }
        });
        let expected: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        prop_assert_eq!(&wire, &expected);
        let read = rt.block_on(read_all(&wire, chunk, MAX_MESSAGE_BYTES));
        prop_assert_eq!(read.expect("valid frames"), bodies);
    }
}

/// The 4 GiB header on a stream that stays open: refused at once, without waiting for a body
/// that will never come, and without reserving it.
#[test]
fn a_four_gib_header_on_an_open_stream_is_refused_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let (mut writer, mut reader) = rt.block_on(async {
        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(&u32::MAX.to_be_bytes()).await.expect("header");
        (w, r)
    });
    let (result, largest, total) =
        measured(async { tokio::time::timeout(Duration::from_secs(10), read_message(&mut reader)).await });
    match result.expect("refused without waiting for the body") {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!((len, max), (u32::MAX as usize, MAX_MESSAGE_BYTES))
        }
        other => panic!("a 4 GiB header was not refused: {other:?}"),
    }
    assert!(
        largest <= SLACK && total <= SLACK,
        "largest {largest}, total {total}"
    );
    rt.block_on(writer.shutdown()).expect("close");
}

/// The bounds above mean something only if the counter sees allocations made inside the
/// measured future, as a reader reserving an announced body would.
#[test]
fn the_allocation_counter_sees_a_reserved_body() {
    let (len, largest, total) = measured(async { std::hint::black_box(vec![0u8; 8 << 20]).len() });
    assert_eq!(len, 8 << 20);
    assert!(
        largest >= 8 << 20 && total >= 8 << 20,
        "largest {largest}, total {total}"
    );
}
