//! A deadline on the request head, for the whole head rather than each read.
//!
//! pingora times each read of a request head on its own (pingora issue #447), so a client that
//! sends a byte every few seconds holds a connection, a task and a buffer for as long as it
//! likes. [`HeadDeadline`] wraps every accepted connection: from the first byte of a request,
//! the head (up to its blank line) must arrive within `gateway.header_read_timeout_ms`, or the
//! read fails and pingora closes the connection. The body has its own deadline
//! (`gateway.body_read_timeout_ms`, in `respond::read_body`), and a keep-alive connection idle
//! between requests is pingora's keep-alive timeout's business, so neither starts this clock.
//!
//! The wrapper sees bytes, not requests: a head ends at the first `\r\n\r\n` after a request's
//! first byte, and the next head starts with the first byte read after the gateway writes its
//! answer (an interim `100 Continue` excepted). Clients that pipeline a second request behind
//! a first are not told apart from body bytes; no LLM SDK pipelines.
//!
//! Per read on the hot path: a scan of the bytes just read while a head is open (a few hundred
//! bytes, once), nothing after it. The timer is only armed when a head read has to wait.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use pingora_core::{
    apps::ServerApp,
    protocols::{
        GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
        UniqueIDType, ALPN,
    },
    server::ShutdownWatch,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// A pingora app whose connections all pass through [`HeadDeadline`] on their way to `inner`.
pub struct WithHeadDeadline<A> {
    inner: Arc<A>,
    limit: Duration,
}

impl<A> WithHeadDeadline<A> {
    pub fn new(inner: A, limit: Duration) -> Self {
        Self {
            inner: Arc::new(inner),
            limit,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for WithHeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The inner app keeps a connection for all its requests (its keep-alive loop is
        // inside), so one wrapper per connection covers every head on it.
        self.inner
            .process_new(Box::new(HeadDeadline::new(stream, self.limit)), shutdown)
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where a connection is in the request it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: nothing of the next head has arrived.
    Idle,
    /// A head has started and its blank line has not arrived; it must by `deadline`.
    /// `tail` is where the bytes so far leave the search for its blank line.
    Head { deadline: Instant, tail: u8 },
    /// Past the head: body bytes, the answer, reads that only watch for a hang-up.
    Rest,
}

/// A connection whose request heads must each arrive within `limit` of their first byte.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    /// Armed only when a head read has to wait, so whole heads never touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl HeadDeadline {
    pub fn new(inner: Stream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            phase: Phase::Idle,
            timer: None,
        }
    }

    /// Moves the phase on over bytes just read.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let (deadline, tail) = match self.phase {
            Phase::Rest => return,
            Phase::Idle => (Instant::now() + self.limit, 0),
            Phase::Head { deadline, tail } => (deadline, tail),
        };
        self.phase = match blank_line(tail, bytes) {
            Ok(()) => Phase::Rest,
            Err(tail) => Phase::Head { deadline, tail },
        };
    }

    /// Whether the head's deadline has passed, arming the timer to wake this read at it.
    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Phase::Head { deadline, .. } = self.phase else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// Scans `bytes` for the end of a head, a blank line (`\r\n\r\n`, or with bare `\n` line
/// ends, which parsers accept too), given the state the bytes before them left: `Ok` when it
/// is found, else the state to carry on with (1: a line just ended, 2: and a `\r` followed).
fn blank_line(mut state: u8, bytes: &[u8]) -> Result<(), u8> {
    for &b in bytes {
        state = match (b, state) {
            (b'\n', 1 | 2) => return Ok(()),
            (b'\n', _) => 1,
            (b'\r', 1) => 2,
            (b'\r', _) => 0,
            _ => 0,
        };
    }
    Err(state)
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.overdue(cx) => {
                crate::metrics::head_timeout();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within gateway.header_read_timeout_ms",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        // The gateway answering means the request it read is over: the next byte read starts
        // a new head. An interim answer (`100 Continue`) is followed by the same request's body.
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && !buf.starts_with(b"HTTP/1.1 1") {
            self.phase = Phase::Idle;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]);
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0)
            && !first.is_some_and(|b| b.starts_with(b"HTTP/1.1 1"))
        {
            self.phase = Phase::Idle;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// The rest of pingora's `IO` is the inner connection's.

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora_core::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_blank_line_is_found_across_reads() {
        assert_eq!(
            blank_line(0, b"POST / HTTP/1.1\r\nhost: x\r\n\r\n{}"),
            Ok(())
        );
        let state = blank_line(0, b"POST / HTTP/1.1\r\nhost: x\r").unwrap_err();
        let state = blank_line(state, b"\n").unwrap_err();
        let state = blank_line(state, b"\r").unwrap_err();
        assert_eq!(blank_line(state, b"\n"), Ok(()));
    }

    #[test]
    fn bare_line_feeds_end_a_head_too() {
        assert_eq!(blank_line(0, b"GET / HTTP/1.1\nhost: x\n\n"), Ok(()));
        assert_eq!(blank_line(0, b"GET / HTTP/1.1\r\nhost: x\n\r\n"), Ok(()));
    }

    #[test]
    fn line_ends_alone_are_not_a_blank_line() {
        assert_eq!(blank_line(0, b"a\r\nb\r\nc\r\r\n"), Err(1));
        assert!(blank_line(0, b"a\r\nb: \r\r\nc").is_err());
        assert_eq!(blank_line(2, b"x"), Err(0));
        assert_eq!(blank_line(1, b"\r"), Err(2));
    }

    #[test]
    fn a_byte_at_a_time_finds_it_too() {
        let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut tail = 0;
        let mut found_at = None;
        for (i, b) in head.iter().enumerate() {
            match blank_line(tail, std::slice::from_ref(b)) {
                Ok(()) => {
                    found_at = Some(i);
                    break;
                }
                Err(t) => tail = t,
            }
        }
        assert_eq!(found_at, Some(head.len() - 1));
    }
}
