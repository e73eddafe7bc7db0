//! What a trusted proxy in front of us says about the request (`X-Forwarded-For/Proto/Host`,
//! `X-Original-URI`), and who the client is: the rightmost address in `X-Forwarded-For`
//! that is not one of our trusted proxies. Everything left of that was written by the client
//! (a proxy that appends keeps what the client sent), so it never identifies anyone.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::Cidr;

/// Longest `X-Forwarded-For` we read; beyond it the header is ignored (the peer counts).
const MAX_CHAIN: usize = 2048;

/// `X-Forwarded-*` as sent by a peer in `server.trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-For`, only when every entry is an address (`ip` or `ip:port`).
    pub for_chain: Option<String>,
    pub proto: Option<String>,
    pub host: Option<String>,
    /// The URI the proxy is asking about in forward-auth mode (nginx `X-Original-URI`,
    /// Traefik `X-Forwarded-Uri`).
    pub uri: Option<String>,
}

impl Forwarded {
    /// Reads the forwarding headers, keeping only well-formed values.
    pub fn from_headers(h: &http::HeaderMap) -> Forwarded {
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let for_chain = get("x-forwarded-for")
            .filter(|v| v.len() <= MAX_CHAIN && v.split(',').all(|entry| parse_address(entry).is_some()));
        let proto = get("x-forwarded-proto").filter(|v| *v == "http" || *v == "https");
        let host = get("x-forwarded-host")
            .filter(|v| v.len() <= 255 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
        // nginx sets X-Original-URI, Traefik X-Forwarded-Uri, and each passes the other on from
        // the client untouched: two values that disagree mean one came from the client, and
        // neither is believed (the path is then unknown: every route rule applies).
        let uri = match (get("x-original-uri"), get("x-forwarded-uri")) {
            (Some(a), Some(b)) if a != b => None,
            (a, b) => a.or(b),
        }
        .filter(|v| v.starts_with('/') && v.len() <= 8192 && v.bytes().all(|b| b.is_ascii_graphic()));
        Forwarded {
            for_chain: for_chain.map(String::from),
            proto: proto.map(String::from),
            host: host.map(String::from),
            uri: uri.map(String::from),
        }
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:5678` (proxies differ on whether they add the port).
pub fn parse_address(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client's address: starting from the peer (which a caller only trusts when it is in
/// `trusted`), walk `chain` from the right while the address in hand is a trusted proxy; the
/// first address that is not is the client. An entry that does not parse stops the walk at
/// the proxy to its right.
pub fn client_address(chain: Option<&str>, peer: Option<IpAddr>, trusted: &[Cidr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer?;
    let Some(chain) = chain else {
        return Some(client);
    };
    for entry in chain.rsplit(',') {
        if !is_trusted(client) {
            break;
        }
        match parse_address(entry) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let peer = Some(ip("10.0.0.2"));
        // An appending proxy: whatever the client wrote stays on the left.
        let got = client_address(Some("6.6.6.6, 203.0.113.9"), peer, &trusted);
        assert_eq!(got, Some(ip("203.0.113.9")), "the client-chosen entry is ignored");
        // Two proxies of ours in a row.
        let got = client_address(Some("1.1.1.1, 203.0.113.9, 10.0.0.7"), peer, &trusted);
        assert_eq!(got, Some(ip("203.0.113.9")));
        // ip:port and bracketed IPv6 forms, as some proxies send them.
        let got = client_address(Some("203.0.113.9:51234"), peer, &trusted);
        assert_eq!(got, Some(ip("203.0.113.9")));
        let got = client_address(Some("[2001:db8::5]:443"), peer, &trusted);
        assert_eq!(got, Some(ip("2001:db8::5")));
        // Every hop trusted: the leftmost.
        let got = client_address(Some("10.1.1.1, 10.2.2.2"), peer, &trusted);
        assert_eq!(got, Some(ip("10.1.1.1")));
        // An unparsable entry stops at the proxy to its right.
        let got = client_address(Some("203.0.113.1, junk, 10.3.3.3"), peer, &trusted);
        assert_eq!(got, Some(ip("10.3.3.3")));
        // An untrusted peer's chain is never read.
        let got = client_address(Some("203.0.113.9"), Some(ip("198.51.100.1")), &trusted);
        assert_eq!(got, Some(ip("198.51.100.1")));
        assert_eq!(client_address(None, peer, &trusted), peer);
    }

    #[test]
    fn forwarding_headers_keep_only_address_lists() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9:5000, [2001:db8::1]:80, 10.0.0.1".parse().expect("v"),
        );
        assert!(Forwarded::from_headers(&h).for_chain.is_some());
        h.insert("x-forwarded-for", "203.0.113.9, unknown".parse().expect("v"));
        assert!(Forwarded::from_headers(&h).for_chain.is_none());
    }
}
