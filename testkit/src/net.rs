//! Ports for tests. Servers are started on port 0 and report the address they bound (see
//! [`crate::process`] and each crate's start-up function); these cover the two cases left.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// An address where connections are refused, held for as long as the value lives: the socket
/// is bound but never listens, so no other process can take the port meanwhile (a port merely
/// found free could be taken by a server of a parallel test).
pub struct ClosedPort {
    _socket: TcpSocket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind port 0");
        let addr = socket.local_addr().expect("the bound address");
        Self {
            _socket: socket,
            addr,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A port free at the time of the call, for a server the test must stop and start again on
/// the same port (a private `redis-server`, which cannot report a port 0 choice). The one place
/// a port is found, released and then taken: a parallel test could take it in between, which
/// the caller's start-up retries or fails loudly on.
pub fn port_for_restarts() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}
