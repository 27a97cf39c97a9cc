//! `wrapx-bare-proxy`: pingora doing nothing but proxying, set up as the gateway sets it up (the
//! same runtime, listener buffers, allocator and connection reuse) and with none of its job: no
//! key, rate limit, body rewrite, usage metering, events or metrics. `benches/run` puts it
//! beside nginx and the gateway, so the gap between nginx and the gateway splits into what
//! pingora itself costs and what the gateway's job costs.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::{
    listeners::{L4BufferSettings, ListenerConfig},
    server::configuration::ServerConf,
    services::{listening::Service, Service as _},
    upstreams::peer::HttpPeer,
};
use pingora_proxy::{ProxyHttp, Session};

#[derive(Parser)]
#[command(name = "wrapx-bare-proxy")]
struct Cli {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The plain-HTTP upstream every request goes to, path and all.
    #[arg(long)]
    upstream: SocketAddr,
}

/// The gateway's allocator, so that the comparison is of the work alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

#[tokio::main]
async fn main() {
    // As the gateway does (gateway/src/main.rs).
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    let conf = std::sync::Arc::new(ServerConf::default());
    let proxy = pingora_proxy::http_proxy(
        &conf,
        Bare {
            upstream: cli.upstream,
        },
    );
    let mut service = Service::new("wrapx-bare-proxy".to_owned(), proxy);
    service.add_listener(
        ListenerConfig::tcp(cli.listen.to_string()).l4_buffer(L4BufferSettings::default().read(0)),
    );
    // Runs until killed; benches/run stops it.
    let (_keep_accepting, accepting) = tokio::sync::watch::channel(false);
    Service::start_service(&mut service, None, accepting, 1).await;
}
