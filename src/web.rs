//! The socket-free request and reply model: what the auth handlers read (`Request`) and what
//! they answer (`Reply`). The proxy converts pingora's types to and from these, so every
//! handler can be unit-tested without a server.

use bytes::Bytes;
use http::HeaderMap;

/// Largest request body the sidecar reads for its own endpoints (forms, JSON).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    /// Canonical path (see `paths`), no query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: String,
    /// The original URI a trusted proxy asked about (`X-Original-URI` / `X-Forwarded-Uri`);
    /// None from anyone else.
    pub forwarded_uri: Option<String>,
    /// The client's address: the peer, or the rightmost untrusted address a trusted proxy
    /// reported.
    pub client_ip: Option<std::net::IpAddr>,
    /// The connection came from a peer in `server.trusted_proxies` (a front proxy doing
    /// forward-auth), not from a browser.
    pub from_trusted_proxy: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        match &self.query {
            Some(q) => url::form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            None => Vec::new(),
        }
    }

    /// The single value of a query parameter; None when absent *or repeated* (a repeated
    /// security parameter such as `state` or `code` is an attack, not a choice).
    pub fn query_one(&self, name: &str) -> Option<String> {
        single(self.query_pairs(), name)
    }

    pub fn query_count(&self, name: &str) -> usize {
        self.query_pairs().iter().filter(|(k, _)| k == name).count()
    }

    /// Form fields of an `application/x-www-form-urlencoded` body, or of a JSON object body
    /// (next-auth's `update()` posts JSON).
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        let ctype = self.header("content-type").unwrap_or("").to_ascii_lowercase();
        if ctype.starts_with("application/json") {
            match serde_json::from_slice::<serde_json::Value>(&self.body) {
                Ok(serde_json::Value::Object(map)) => map
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k, s)),
                        serde_json::Value::Bool(b) => Some((k, b.to_string())),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            url::form_urlencoded::parse(&self.body).into_owned().collect()
        }
    }

    pub fn form_one(&self, name: &str) -> Option<String> {
        single(self.form_pairs(), name)
    }

    /// Every cookie (name, value) across all `Cookie` headers, in order.
    pub fn cookie_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(cookie_pairs)
    }

    /// Every value of the named cookie across all `Cookie` headers, in order.
    pub fn cookies(&self, name: &str) -> Vec<&str> {
        self.cookie_pairs()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies(name).into_iter().next()
    }

    /// See [`is_navigation`].
    pub fn is_navigation(&self) -> bool {
        is_navigation(&self.method, &self.headers)
    }

    /// See [`accepts_html`].
    pub fn accepts_html(&self) -> bool {
        accepts_html(&self.headers)
    }

    /// next-auth v5 sends `X-Auth-Return-Redirect: 1`, v4 sends `json=true` in the form:
    /// both want `200 {"url": ...}` instead of a 302.
    pub fn wants_json_redirect(&self) -> bool {
        self.header("x-auth-return-redirect").is_some_and(|v| !v.is_empty())
            || self.form_one("json").as_deref() == Some("true")
    }
}

/// The client reads HTML: browsers send `text/html` in `Accept` for every navigation and
/// form submission; `fetch`, curl and API clients do not.
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// A browser navigation: GET or HEAD that accepts HTML. Only these are redirected to the
/// sign-in page; every other unauthenticated request to a protected path gets 401 JSON.
pub fn is_navigation(method: &http::Method, headers: &HeaderMap) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD) && accepts_html(headers)
}

/// The key a per-client limit counts under: the IPv4 address, or the /64 an IPv6 address is
/// in (one subscriber usually holds a whole /64, so counting single v6 addresses would give
/// every client 2^64 tries).
pub fn limit_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Name/value pairs of one `Cookie` header; malformed parts are skipped, never a panic.
pub fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|part| {
        let (name, value) = part.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let value = value.trim().trim_matches('"');
        Some((name, value))
    })
}

fn single(pairs: Vec<(String, String)>, name: &str) -> Option<String> {
    let mut it = pairs.into_iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(first)
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn html(status: u16, body: String) -> Reply {
        Reply::new(status, "text/html; charset=utf-8", body).no_store()
    }

    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        // Our own types and `Value`s: serialising them cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Reply::new(status, "application/json", body).no_store()
    }

    /// 302 to an already-validated absolute URL.
    pub fn redirect(location: &str) -> Reply {
        let mut r = Reply::new(302, "text/plain; charset=utf-8", Bytes::new());
        r.headers.push(("Location", location.to_string()));
        r.no_store()
    }

    /// Auth responses carry per-user data or one-time values: never cache them.
    pub fn no_store(mut self) -> Reply {
        self.headers.retain(|(k, _)| *k != "Cache-Control");
        self.headers
            .push(("Cache-Control", "private, no-cache, no-store".into()));
        self.headers.push(("Pragma", "no-cache".into()));
        self.headers.push(("Expires", "0".into()));
        self
    }

    pub fn set_cookie(mut self, cookie: String) -> Reply {
        self.headers.push(("Set-Cookie", cookie));
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The access log's `log` target. In JSON logs its message is an object whose fields are
/// lifted to the top level of the line.
pub const ACCESS_TARGET: &str = "nini_auth::access";

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    use std::io::Write as _;
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f | 0x7f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(limit_key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(limit_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff::9")), limit_key(ip("2001:db8:1:2::1")));
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), limit_key(ip("2001:db8:1:2::1")));
    }

    fn req(query: &str, cookie: &str) -> Request {
        let mut headers = HeaderMap::new();
        if let Ok(v) = cookie.parse() {
            headers.insert(http::header::COOKIE, v);
        }
        Request {
            method: http::Method::GET,
            path: "/".into(),
            query: Some(query.into()),
            headers,
            body: Bytes::new(),
            request_id: "r".into(),
            forwarded_uri: None,
            client_ip: None,
            from_trusted_proxy: false,
        }
    }

    #[test]
    fn repeated_parameters_are_not_a_value() {
        let r = req("state=a&state=b&code=x", "");
        assert_eq!(r.query_one("state"), None);
        assert_eq!(r.query_one("code").as_deref(), Some("x"));
        assert_eq!(r.query_count("state"), 2);
    }

    #[test]
    fn cookies_parse_without_panicking_on_junk() {
        for junk in [";", "=;", "a=1;;;b", "=", ";;=;=", "\u{7f}"] {
            let r = req("", junk);
            let _ = r.cookie("a");
        }
        let r = req("", "a=1; b=2; a=3");
        assert_eq!(r.cookies("a"), vec!["1", "3"]);
    }
}
