//! SSRF protection for webhook deliveries, checked at delivery time on the address actually
//! connected to: the HTTP client resolves names through [`GuardedResolver`], which refuses
//! names resolving to private, loopback, link-local (cloud metadata), CGNAT, unique-local,
//! multicast, reserved or unspecified addresses, and the client connects only to the
//! addresses it returned (no second lookup, so DNS rebinding cannot swap them). IP literals
//! never reach a resolver, so [`check_url`] checks them first; the URL parser has already
//! normalised decimal, octal and hex IPv4 forms. IPv4-mapped, 6to4 and NAT64 IPv6 addresses
//! are judged by the IPv4 address inside. No proxy is used, and redirects are not followed.
//!
//! `security.allow_loopback` (the default, for tests and the demo) allows loopback only.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// A destination the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook destination refused: {host} is {reason}")]
pub struct Refused {
    pub host: String,
    pub reason: String,
}

/// The kind of a non-public address, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Some("unspecified"),
        (127, _, _) => Some("loopback"),
        (10, _, _) => Some("private"),
        (172, 16..=31, _) => Some("private"),
        (192, 168, _) => Some("private"),
        (169, 254, _) => Some("link-local"),
        (100, 64..=127, _) => Some("shared address space (CGNAT)"),
        (192, 0, 0) => Some("IETF protocol assignment"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation"),
        (198, 18..=19, _) => Some("benchmarking"),
        (224..=239, _, _) => Some("multicast"),
        (240..=255, _, _) => Some("reserved"),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    match s {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        [0, 0, 0, 0, 0, 0, _, _] => Some("IPv4-compatible"),
        // NAT64: judged by the IPv4 address it reaches.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => classify_v4(v4_from(hi, lo)),
        // 6to4: judged by the IPv4 address it embeds.
        [0x2002, hi, lo, ..] => classify_v4(v4_from(hi, lo)),
        [0x2001, 0, ..] => Some("Teredo"),
        [0x2001, 0xdb8, ..] => Some("documentation"),
        [0x100, 0, 0, 0, ..] => Some("discard-only"),
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("unique-local"),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("link-local"),
        [first, ..] if first & 0xffc0 == 0xfec0 => Some("site-local"),
        [first, ..] if first & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Whether the policy allows connecting to `ip`; the error names the kind of address.
pub fn check_ip(ip: IpAddr, allow_loopback: bool) -> Result<(), &'static str> {
    match classify(ip) {
        None => Ok(()),
        Some("loopback") if allow_loopback => Ok(()),
        Some(kind) => Err(kind),
    }
}

/// Checks what can be checked before connecting: the scheme, and the host when it is an IP
/// literal (names are checked by the resolver, at connect time).
pub fn check_url(url: &Url, allow_loopback: bool) -> Result<(), Refused> {
    let refused = |host: String, reason: String| Refused { host, reason };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused(
            url.to_string(),
            format!("not http(s) but {}", url.scheme()),
        ));
    }
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(Host::Domain(_)) => return Ok(()),
        None => return Err(refused(url.to_string(), "without a host".into())),
    };
    check_ip(ip, allow_loopback)
        .map_err(|kind| refused(ip.to_string(), format!("a {kind} address")))
}

/// Resolves names and returns only their addresses if every one of them is allowed: a name
/// with any refused address is refused whole, so it cannot mix in an internal target.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_loopback: bool,
}

impl GuardedResolver {
    pub async fn lookup(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no address").into());
        }
        for addr in &addrs {
            if let Err(kind) = check_ip(addr.ip(), self.allow_loopback) {
                return Err(Box::new(Refused {
                    host: host.to_owned(),
                    reason: format!("resolving to {} (a {kind} address)", addr.ip()),
                }));
            }
        }
        Ok(addrs)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = *self;
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str()).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The webhook HTTP client: guarded DNS, no proxy (a proxy would resolve for us), no
/// automatic redirects, and the per-delivery timeout. HTTPS receivers are checked against the
/// bundled roots plus `extra_roots` (`security.extra_ca_file`), which add to them.
pub fn client(
    allow_loopback: bool,
    timeout: Duration,
    extra_roots: &[reqwest::Certificate],
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    for root in extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent("Wrap-X-Webhooks/1")
        .build()
}

/// The SSRF refusal inside a client error, if that is what it was.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn addresses_are_classified() {
        let refused = [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001:db8::1",
            "::10.0.0.1",
            "2001::1",
            "fec0::1",
        ];
        for ip in refused {
            assert!(
                classify(ip.parse().unwrap()).is_some(),
                "{ip} should be refused"
            );
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for ip in allowed {
            assert_eq!(
                classify(ip.parse().unwrap()),
                None,
                "{ip} should be allowed"
            );
        }
    }

    #[test]
    fn allow_loopback_allows_only_loopback() {
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(check_ip(ip.parse().unwrap(), true).is_ok(), "{ip}");
            assert!(check_ip(ip.parse().unwrap(), false).is_err(), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "169.254.169.254",
            "::ffff:10.0.0.1",
            "0.0.0.0",
            "fd00::1",
        ] {
            assert!(check_ip(ip.parse().unwrap(), true).is_err(), "{ip}");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling_are_checked() {
        let refused = [
            "http://127.0.0.1/hook",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[::1]:8080/",
            "http://[::ffff:10.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0/",
            "ftp://example.com/",
            "file:///etc/passwd",
        ];
        for url in refused {
            assert!(
                check_url(&Url::parse(url).unwrap(), false).is_err(),
                "{url}"
            );
        }
        assert!(check_url(&Url::parse("http://127.0.0.1:9/").unwrap(), true).is_ok());
        assert!(check_url(&Url::parse("http://[::ffff:10.0.0.1]/").unwrap(), true).is_err());
        assert!(check_url(&Url::parse("https://example.com/hook").unwrap(), false).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let strict = GuardedResolver {
            allow_loopback: false,
        };
        let err = strict.lookup("localhost").await.unwrap_err();
        assert!(err.downcast_ref::<Refused>().is_some(), "{err}");
        let loose = GuardedResolver {
            allow_loopback: true,
        };
        assert!(!loose.lookup("localhost").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_client_refuses_names_at_connect_time() {
        let client = client(false, Duration::from_secs(2), &[]).unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        assert!(refusal(&err).is_some(), "{err:?}");
    }
}
