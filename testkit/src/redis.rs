//! A private `redis-server` for a test that stops and restarts Redis: the shared one must stay
//! up for the other tests.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{eventually, net};

/// A `redis-server` child on its own port, killed when stopped or dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// On a port of its own (see [`net::port_for_restarts`]: Redis cannot bind port 0).
    pub async fn start() -> Self {
        Self::start_on(net::port_for_restarts()).await
    }

    /// On `port`, typically that of one stopped earlier in the test; returns once it accepts
    /// connections.
    pub async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        eventually(
            &format!("redis-server accepting on port {port}"),
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        Self {
            port,
            child: Some(child),
        }
    }

    /// Its URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it; connections to its port are refused from then on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
