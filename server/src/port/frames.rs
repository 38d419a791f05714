//! Reading request frames off the broker port within limits.
//!
//! The port is open to anyone who can reach it, so what a peer *claims*
//! costs nothing until it sends it:
//! - **Bytes as they arrive.** A header may announce up to
//!   [`MAX_FRAME`](waybill_client::wire::MAX_FRAME) bytes; the payload
//!   buffer starts small and grows only as bytes come in.
//! - **A global budget.** Every buffered payload byte holds one permit of a
//!   byte semaphore shared by all connections ([`Limits::budget`]), taken
//!   before the buffer grows and held until the request is done (the
//!   decoded request holds about as many bytes). When the budget is taken,
//!   reading waits and TCP pushes back on the senders. Outside it each
//!   connection has only its read buffer ([`READ_BUFFER`]).
//! - **Deadlines.** A frame that has started (its first header byte came)
//!   must be complete within [`Limits::frame_timeout`], time spent waiting
//!   for the budget included, so stalled frames give their bytes back. A
//!   connection may be silent between frames for [`Limits::idle_timeout`].
//!
//! Invariant: payload bytes held across the port ≤ the budget; a frame never
//! holds its bytes longer than the frame timeout while it is being read.
//! Frames that wait for the budget while holding part of it can starve
//! each other only until the first of them times out.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use waybill_client::wire::{Header, WireError, HEADER_LEN};

/// Per-connection read buffer: the bytes a connection holds outside the
/// budget. 64 KiB still parses many small pipelined frames per syscall; a
/// large payload is read straight into its own (budgeted) buffer.
pub const READ_BUFFER: usize = 64 * 1024;

/// Smallest and largest step by which a payload buffer grows: doubling from
/// 64 KiB keeps reallocations few for big frames, the 1 MiB cap keeps what
/// one frame holds ahead of its data (and of the budget) small.
const MIN_STEP: usize = 64 * 1024;
const MAX_STEP: usize = 1 << 20;

/// The broker port's limits, shared by all its connections.
#[derive(Clone)]
pub struct Limits {
    /// From a frame's first byte to its last. Default 30 s: the largest
    /// frame (16 MiB) over a 10 Mbit/s link takes ~13 s, so an honest peer
    /// fits twice over, while a stalled one gives its bytes back soon.
    /// Honest clients never get near it: their send timeout is 3 s.
    pub frame_timeout: Duration,
    /// Silence allowed between frames. Default 5 min: ten times the longest
    /// long poll (30 s), which is the longest a live client may say nothing
    /// (producers reconnect on their own when closed), while a peer gone
    /// without a FIN is still reclaimed within minutes.
    pub idle_timeout: Duration,
    /// Payload bytes buffered across all connections: a semaphore of bytes
    /// (a semaphore because waiting for bytes must be fair and async, and
    /// permits release themselves when a request is dropped).
    pub budget: Arc<Semaphore>,
}

impl Limits {
    pub fn new(frame_timeout: Duration, idle_timeout: Duration, budget_bytes: usize) -> Limits {
        Limits {
            frame_timeout,
            idle_timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
        }
    }
}

/// Why no (complete) frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("closed by the peer")]
    Closed,
    #[error("silent for {0:?} between frames")]
    Idle(Duration),
    #[error("frame not complete within {0:?}")]
    Slow(Duration),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// A header that is not one (magic, version, length): answered, then
    /// the connection closes.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A payload and the budget it holds (released on drop).
pub struct Payload {
    pub bytes: Vec<u8>,
    pub held: Option<OwnedSemaphorePermit>,
}

/// Waits up to `idle` for the next frame to start, then reads its header;
/// returns it with the deadline by which the whole frame must be in.
pub async fn next_header<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    idle: Duration,
    frame_timeout: Duration,
) -> Result<(Header, Instant), FrameError> {
    let started = tokio::time::timeout(idle, rd.fill_buf())
        .await
        .map_err(|_| FrameError::Idle(idle))??;
    if started.is_empty() {
        return Err(FrameError::Closed);
    }
    let deadline = Instant::now() + frame_timeout;
    let mut head = [0u8; HEADER_LEN];
    match tokio::time::timeout_at(deadline, rd.read_exact(&mut head)).await {
        Err(_) => return Err(FrameError::Slow(frame_timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Truncated),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    Ok((Header::parse(&head)?, deadline))
}

/// Reads `len` payload bytes by `deadline`, growing the buffer (and the
/// budget it holds) as they arrive.
pub async fn read_payload<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    len: usize,
    budget: &Arc<Semaphore>,
    deadline: Instant,
    frame_timeout: Duration,
) -> Result<Payload, FrameError> {
    tokio::time::timeout_at(deadline, fill(rd, len, budget))
        .await
        .map_err(|_| FrameError::Slow(frame_timeout))?
}

async fn fill<R: AsyncBufRead + Unpin>(rd: &mut R, len: usize, budget: &Arc<Semaphore>) -> Result<Payload, FrameError> {
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while bytes.len() < len {
        if bytes.len() == bytes.capacity() {
            let step = bytes.capacity().clamp(MIN_STEP, MAX_STEP).min(len - bytes.len());
            // Fits u32: a step is at most MAX_STEP.
            let more = budget
                .clone()
                .acquire_many_owned(step as u32)
                .await
                .map_err(|_| std::io::Error::other("the broker port is shutting down"))?;
            match held.as_mut() {
                Some(h) => h.merge(more),
                None => held = Some(more),
            }
            bytes.reserve_exact(step);
        }
        let room = (bytes.capacity() - bytes.len()).min(len - bytes.len());
        let n = (&mut *rd).take(room as u64).read_buf(&mut bytes).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Payload { bytes, held })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};
    use waybill_client::wire;

    #[tokio::test]
    async fn a_frame_is_read_and_its_budget_returned_when_dropped() {
        let budget = Arc::new(Semaphore::new(MAX_STEP));
        let body = vec![7u8; 200_000];
        let frame = wire::frame(1, 5, &body);
        let mut rd = BufReader::new(&frame[..]);
        let t = Duration::from_secs(5);
        let (h, deadline) = next_header(&mut rd, t, t).await.expect("header");
        let p = read_payload(&mut rd, h.len, &budget, deadline, t)
            .await
            .expect("payload");
        assert_eq!(p.bytes, body);
        assert!(budget.available_permits() < MAX_STEP - body.len() + 1);
        drop(p);
        assert_eq!(budget.available_permits(), MAX_STEP);
        assert!(matches!(next_header(&mut rd, t, t).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn a_stalled_frame_times_out_and_gives_its_bytes_back() {
        let budget = Arc::new(Semaphore::new(16 << 20));
        // The writer stays open (and silent) after part of the frame.
        let (mut wr, server) = tokio::io::duplex(1 << 20);
        let mut rd = BufReader::new(server);
        let frame = wire::frame(1, 1, &vec![1u8; 4 << 20]);
        wr.write_all(&frame[..HEADER_LEN + 300_000]).await.expect("write");
        let t = Duration::from_millis(300);
        let (h, deadline) = next_header(&mut rd, t, t).await.expect("header");
        let r = read_payload(&mut rd, h.len, &budget, deadline, t).await;
        assert!(matches!(r, Err(FrameError::Slow(_))));
        assert_eq!(budget.available_permits(), 16 << 20);
        drop(wr);
    }

    #[tokio::test]
    async fn a_silent_connection_is_idle_and_a_short_one_truncated() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut rd = BufReader::new(server);
        let t = Duration::from_millis(100);
        assert!(matches!(next_header(&mut rd, t, t).await, Err(FrameError::Idle(_))));
        let frame = wire::frame(1, 1, b"hello");
        let mut rd = BufReader::new(&frame[..HEADER_LEN + 2]);
        let budget = Arc::new(Semaphore::new(1 << 20));
        let (h, deadline) = next_header(&mut rd, t, t).await.expect("header");
        let r = read_payload(&mut rd, h.len, &budget, deadline, t).await;
        assert!(matches!(r, Err(FrameError::Truncated)));
    }
}
