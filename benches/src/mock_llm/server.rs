//! The accept loop and one task per connection (HTTP/1.1 with keep-alive, over TLS when the
//! mock has a certificate), both stopped by the shared shutdown token and tracked so
//! `shutdown` can wait for them.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::router;
use super::state::Shared;

/// How long an open connection may take to finish its request once shutdown starts. Hanging
/// and stalled answers end at once on shutdown, so only slow, paced streams use it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown, serving each on its own tracked task; with `tls`, each
/// connection's handshake runs on its task first, and one that fails (an untrusting client, a
/// plain-HTTP request) is closed without reaching the router, so it is never recorded.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    tasks: TaskTracker,
) {
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                // Streaming events are small writes that must leave at once.
                let _ = stream.set_nodelay(true);
                let (http, shared) = (http.clone(), Arc::clone(&shared));
                match tls.clone() {
                    None => tasks.spawn(serve(http, stream, shared)),
                    Some(acceptor) => tasks.spawn(serve_tls(acceptor, http, stream, shared)),
                };
            }
            // Out of file descriptors or a connection reset before accept: wait a moment
            // rather than spin; the listener itself stays usable.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Completes the TLS handshake, then serves the connection as [`serve`] does.
async fn serve_tls(
    acceptor: TlsAcceptor,
    http: http1::Builder,
    stream: TcpStream,
    shared: Arc<Shared>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) | Err(_) => return,
        },
    };
    serve(http, stream, shared).await;
}

/// Serves one connection until the client closes it or shutdown ends it. Connection errors
/// (a client hanging up, a reset stream) are the point of a mock and are not reported.
async fn serve<S>(http: http1::Builder, stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |req| router::handle(Arc::clone(&shared), req))
    };
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = shared.shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}
