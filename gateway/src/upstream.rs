//! The provider side: where to connect (resolved once per loaded record), the peer with its
//! timeouts and TLS, the request headers the provider gets, and how upstream failures map to
//! the contract's 502 and 504.

use std::{net::SocketAddr, time::Duration};

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;

use crate::{errors::ErrorKind, providers::ProviderDialect};

/// The provider's address, resolved when its record is loaded (records live seconds, so DNS
/// changes are followed).
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The name for SNI and certificate checks.
    pub sni: String,
    /// The `Host` header: the name, with the port when it is not the scheme's default.
    pub host: String,
    /// The path of the chat completions route, e.g. `/v1/chat/completions`.
    pub chat_path: String,
    /// The path of Anthropic's Messages route, e.g. `/v1/messages`.
    pub messages_path: String,
}

impl UpstreamTarget {
    pub async fn resolve(base_url: &str, allow_loopback: bool) -> Result<Self, String> {
        let url = url::Url::parse(base_url).map_err(|e| format!("{e}"))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("unsupported scheme {other}")),
        };
        let name = url
            .host_str()
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().ok_or("no port")?;
        let addr = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .next()
            .ok_or_else(|| format!("{name} resolves to no address"))?;
        if !allow_loopback && is_internal(addr) {
            return Err(format!("{name} resolves to an internal address"));
        }
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&name)),
            None => url.host_str().unwrap_or(&name).to_owned(),
        };
        let base = url.path().trim_end_matches('/');
        Ok(Self {
            addr,
            tls,
            sni: name,
            host,
            chat_path: format!("{base}/chat/completions"),
            messages_path: format!("{base}/messages"),
        })
    }

    /// A peer with the configured timeouts. pingora has one per-read upstream timeout, so it is
    /// set to the larger of first byte and idle, as a backstop: the request's
    /// [`crate::watchdog::Watchdog`] enforces each of the two exactly.
    pub fn peer(&self, timeouts: &Timeouts) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(self.addr, self.tls, self.sni.clone());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.first_byte.max(timeouts.idle));
        peer.options.write_timeout = Some(timeouts.idle);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Box::new(peer)
    }
}

fn is_internal(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private() || v4.is_link_local())
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// The Messages API version the gateway's translation is written against.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers only Anthropic's API reads; an OpenAI-compatible provider never gets them.
const ANTHROPIC_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// Rewrites the client's request header into the provider's: path, host, the provider's key
/// instead of the client's (in the header the provider's dialect expects), no hop-by-hop
/// headers, the rewritten body's length (chunked when it is still arriving), no compression (usage is read from the answer on the
/// way through).
///
/// `authorization` is the loaded API's `Bearer <provider key>`; Anthropic gets the bare key in
/// `x-api-key` and never an `authorization` header.
pub fn prepare_request(
    req: &mut RequestHeader,
    target: &UpstreamTarget,
    dialect: ProviderDialect,
    authorization: &str,
    body_len: Option<usize>,
) -> pingora_error::Result<()> {
    // Headers the `Connection` header nominates are hop-by-hop too.
    let nominated: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in nominated.iter().map(String::as_str).chain(HOP_BY_HOP) {
        req.remove_header(name);
    }
    req.remove_header("x-api-key");
    req.remove_header("authorization");
    req.remove_header("content-length");
    let (path, key_header, key) = match dialect {
        ProviderDialect::OpenAiChat => {
            for name in ANTHROPIC_HEADERS {
                req.remove_header(name);
            }
            (&target.chat_path, "authorization", authorization)
        }
        ProviderDialect::AnthropicMessages => {
            // The client's own version header is replaced too: the translation speaks this one.
            req.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
            let key = authorization
                .strip_prefix("Bearer ")
                .unwrap_or(authorization);
            (&target.messages_path, "x-api-key", key)
        }
    };
    req.set_uri(
        http::Uri::try_from(path.as_str())
            .map_err(|e| Error::because(ErrorType::InternalError, "upstream path", e))?,
    );
    req.insert_header("host", target.host.as_str())?;
    let mut key = http::HeaderValue::from_str(key)
        .map_err(|e| Error::because(ErrorType::InternalError, "provider key header", e))?;
    key.set_sensitive(true);
    req.insert_header(key_header, key)?;
    match body_len {
        Some(n) => req.insert_header("content-length", n.to_string())?,
        None => req.insert_header("transfer-encoding", "chunked")?,
    }
    req.insert_header("accept-encoding", "identity")?;
    Ok(())
}

/// How a proxy error ends for the client: a timeout (504), an upstream failure (502), the
/// client gone (no answer possible), or the gateway's own fault (500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Timeout,
    Upstream,
    ClientGone,
    Internal,
}

impl FailureClass {
    pub fn of(e: &Error) -> Self {
        use ErrorType::*;
        match (e.esource(), e.etype()) {
            (ErrorSource::Downstream, _) => Self::ClientGone,
            (_, ConnectTimedout | ReadTimedout | WriteTimedout) => Self::Timeout,
            (ErrorSource::Upstream, _) => Self::Upstream,
            (
                _,
                ConnectRefused | ConnectNoRoute | ConnectError | ConnectionClosed
                | TLSHandshakeFailure | InvalidCert | HandshakeError,
            ) => Self::Upstream,
            _ => Self::Internal,
        }
    }

    pub fn error_kind(self) -> ErrorKind {
        match self {
            Self::Timeout => ErrorKind::UpstreamTimeout,
            Self::Upstream => ErrorKind::UpstreamError,
            Self::ClientGone | Self::Internal => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn targets_keep_the_base_path_and_port() {
        let t = UpstreamTarget::resolve("http://127.0.0.1:8089/v1", true)
            .await
            .unwrap();
        assert_eq!(t.chat_path, "/v1/chat/completions");
        assert_eq!(t.messages_path, "/v1/messages");
        assert_eq!(t.host, "127.0.0.1:8089");
        assert!(!t.tls);
        let t = UpstreamTarget::resolve("http://127.0.0.1:80/openai/v1/", true)
            .await
            .unwrap();
        assert_eq!(t.chat_path, "/openai/v1/chat/completions");
        assert!(UpstreamTarget::resolve("http://127.0.0.1:8089/v1", false)
            .await
            .is_err());
        assert!(UpstreamTarget::resolve("ftp://x/v1", true).await.is_err());
    }

    fn target() -> UpstreamTarget {
        UpstreamTarget {
            addr: "127.0.0.1:1".parse().unwrap(),
            tls: false,
            sni: "h".into(),
            host: "h:1".into(),
            chat_path: "/v1/chat/completions".into(),
            messages_path: "/v1/messages".into(),
        }
    }

    #[test]
    fn the_client_key_and_hop_by_hop_headers_never_go_upstream() {
        let target = target();
        let mut req = RequestHeader::build("POST", b"/w/ep_x/v1/chat/completions", None).unwrap();
        for (n, v) in [
            ("authorization", "Bearer wxk_client"),
            ("x-api-key", "wxk_client"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-mock-behavior", "normal"),
            ("content-length", "5"),
        ] {
            req.append_header(n, v).unwrap();
        }
        let mut anthropic = req.clone();
        prepare_request(
            &mut req,
            &target,
            ProviderDialect::OpenAiChat,
            "Bearer sk-provider",
            Some(42),
        )
        .unwrap();
        let get = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("authorization").as_deref(), Some("Bearer sk-provider"));
        assert_eq!(get("x-api-key"), None);
        assert_eq!(get("connection"), None);
        assert_eq!(get("x-secret-hop"), None);
        assert_eq!(get("transfer-encoding"), None);
        assert_eq!(get("x-mock-behavior").as_deref(), Some("normal"));
        assert_eq!(get("content-length").as_deref(), Some("42"));
        assert_eq!(get("host").as_deref(), Some("h:1"));
        assert_eq!(req.uri.path(), "/v1/chat/completions");

        anthropic
            .append_header("anthropic-version", "2099-01-01")
            .unwrap();
        prepare_request(
            &mut anthropic,
            &target,
            ProviderDialect::AnthropicMessages,
            "Bearer sk-provider",
            Some(42),
        )
        .unwrap();
        let get = |n: &str| {
            anthropic
                .headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("x-api-key").as_deref(), Some("sk-provider"));
        assert_eq!(get("authorization"), None);
        assert_eq!(get("anthropic-version").as_deref(), Some(ANTHROPIC_VERSION));
        assert_eq!(
            anthropic
                .headers
                .get_all("anthropic-version")
                .iter()
                .count(),
            1
        );
        assert_eq!(get("x-secret-hop"), None);
        assert_eq!(anthropic.uri.path(), "/v1/messages");
    }

    #[test]
    fn a_body_still_arriving_goes_out_chunked() {
        let target = target();
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.append_header("transfer-encoding", "chunked").unwrap();
        prepare_request(
            &mut req,
            &target,
            ProviderDialect::OpenAiChat,
            "Bearer sk-provider",
            None,
        )
        .unwrap();
        assert_eq!(req.headers.get_all("transfer-encoding").iter().count(), 1);
        assert_eq!(req.headers["transfer-encoding"], "chunked");
        assert!(req.headers.get("content-length").is_none());
    }
}
