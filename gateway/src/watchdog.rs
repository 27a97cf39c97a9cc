//! The first-byte and idle deadlines of one upstream exchange, kept apart.
//!
//! pingora has a single per-read upstream timeout (`PeerOptions::read_timeout`): it cannot tell
//! the wait for the provider's first byte (long: the model is thinking) from the silence between
//! two chunks of a stream (short: a stalled stream should be cut early). The proxy sets that
//! read timeout to the larger of the two as a backstop, and this watchdog enforces each one
//! exactly: when a deadline passes it shuts the upstream socket down, which ends pingora's
//! pending read at once, and the proxy reads [`Watchdog::fired`] to answer and log a timeout.
//!
//! The watchdog owns a duplicate of the socket's descriptor, so the socket cannot be closed,
//! and its number handed to another connection, while the watchdog may still act on it.

use std::{
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use nix::sys::socket::Shutdown;
use tokio::{sync::Notify, task::JoinHandle, time::Instant};

/// Watches one upstream exchange from the moment the request goes out.
pub struct Watchdog {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    started: Instant,
    /// Milliseconds after `started` of the last byte from upstream; `NOTHING` before the first.
    last_progress_ms: AtomicU64,
    /// The exchange is over: the watchdog must not touch the socket any more.
    done: AtomicBool,
    fired: AtomicBool,
    /// The first byte came: the deadline moves from the first-byte one to the idle one, which
    /// may be sooner, so the sleeping watchdog must look again.
    first_byte: Notify,
    socket: OwnedDup,
}

const NOTHING: u64 = u64::MAX;

/// A duplicate descriptor of the upstream socket, closed when the last holder lets go.
struct OwnedDup(RawFd);

impl Drop for OwnedDup {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

impl Watchdog {
    /// Starts watching the socket `fd` (which must be open: pingora's connection, as passed to
    /// `connected_to_upstream`). `None` when the descriptor cannot be duplicated; the backstop
    /// read timeout still applies then.
    pub fn start(fd: RawFd, first_byte: Duration, idle: Duration) -> Option<Self> {
        // Close-on-exec like every descriptor Rust opens.
        let dup = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)).ok()?;
        let dup = OwnedDup(dup);
        let shared = Arc::new(Shared {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(NOTHING),
            done: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            first_byte: Notify::new(),
            socket: dup,
        });
        let task = tokio::spawn(watch(Arc::clone(&shared), first_byte, idle));
        Some(Self { shared, task })
    }

    /// Bytes arrived from upstream: the idle deadline starts again from now.
    pub fn progress(&self) {
        let ms = u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(NOTHING - 1);
        if self.shared.last_progress_ms.swap(ms, Ordering::Relaxed) == NOTHING {
            self.shared.first_byte.notify_one();
        }
    }

    /// The exchange ended (the whole answer is in, or it failed): stop watching. Called before
    /// pingora may put the connection back in its pool.
    pub fn finish(&self) {
        self.shared.done.store(true, Ordering::SeqCst);
        self.task.abort();
    }

    /// Whether a deadline passed and the watchdog cut the exchange.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("fired", &self.fired())
            .finish_non_exhaustive()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

async fn watch(shared: Arc<Shared>, first_byte: Duration, idle: Duration) {
    loop {
        let deadline = match shared.last_progress_ms.load(Ordering::Relaxed) {
            NOTHING => shared.started + first_byte,
            ms => shared.started + Duration::from_millis(ms) + idle,
        };
        if Instant::now() < deadline {
            // Progress may move the deadline while we sleep: look again after either.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.first_byte.notified() => {}
            }
            continue;
        }
        if shared.done.load(Ordering::SeqCst) {
            return;
        }
        shared.fired.store(true, Ordering::SeqCst);
        if let Err(error) = nix::sys::socket::shutdown(shared.socket.0, Shutdown::Both) {
            tracing::debug!(%error, "shutting down a timed-out upstream socket failed");
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::fd::AsRawFd;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// A connected pair: (the "gateway" side, the "provider" side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// Reads until EOF or error; how long that took.
    async fn read_until_cut(stream: &mut TcpStream, dog: &Watchdog) -> Duration {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => dog.progress(),
            }
        }
    }

    #[tokio::test]
    async fn a_silent_upstream_is_cut_at_the_first_byte_deadline() {
        let (mut gateway, _provider) = pair().await;
        let dog = Watchdog::start(
            gateway.as_raw_fd(),
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .unwrap();
        let took = read_until_cut(&mut gateway, &dog).await;
        assert!(dog.fired());
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_stalled_stream_is_cut_at_the_idle_deadline_not_the_first_byte_one() {
        let (mut gateway, mut provider) = pair().await;
        let dog = Watchdog::start(
            gateway.as_raw_fd(),
            Duration::from_secs(30),
            Duration::from_millis(300),
        )
        .unwrap();
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                provider.write_all(b"data: x\n\n").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Then silence, with the connection open.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(provider);
        });
        let took = read_until_cut(&mut gateway, &dog).await;
        assert!(dog.fired());
        // Five chunks 100 ms apart kept it alive; the silence after them did not.
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        talker.abort();
    }

    #[tokio::test]
    async fn a_finished_exchange_is_never_cut() {
        let (gateway, _provider) = pair().await;
        let dog = Watchdog::start(
            gateway.as_raw_fd(),
            Duration::from_millis(50),
            Duration::from_millis(50),
        )
        .unwrap();
        dog.finish();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!dog.fired());
        // The socket still works: a write reaches the peer side's buffer.
        let mut gateway = gateway;
        gateway.write_all(b"still open").await.unwrap();
    }
}
