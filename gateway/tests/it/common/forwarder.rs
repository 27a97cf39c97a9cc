//! A TCP forwarder that a test switches on and off, to play an outage of RabbitMQ or
//! PostgreSQL without touching the shared servers.

#![allow(dead_code)]

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const RABBIT: &str = "127.0.0.1:5672";

/// The vhost's path part of an AMQP URL, to rebuild the URL on another port.
fn vhost_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A TCP forwarder to RabbitMQ the test switches on and off: off refuses new connections (by
/// closing them at once) and cuts the live ones.
pub struct Forwarder {
    pub port: u16,
    enabled: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl Forwarder {
    /// A forwarder to the shared RabbitMQ.
    pub async fn start(enabled: bool) -> Self {
        Self::to(RABBIT, enabled).await
    }

    /// A forwarder to `target` (`host:port`).
    pub async fn to(target: &'static str, enabled: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let enabled = Arc::new(AtomicBool::new(enabled));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (on, token) = (Arc::clone(&enabled), Arc::clone(&cut));
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                if !on.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = token.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, enabled, cut }
    }

    /// `vhost_url` (a RabbitMQ URL) through this forwarder.
    pub fn url(&self, vhost_url: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            self.port,
            vhost_of(vhost_url)
        )
    }

    pub fn set(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
        if !on {
            let mut cut = self.cut.lock().unwrap();
            cut.cancel();
            *cut = CancellationToken::new();
        }
    }
}
