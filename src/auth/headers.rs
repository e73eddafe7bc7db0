//! Identity headers: which client-sent headers are removed from every request (any case,
//! `_` for `-`), and which headers the sidecar injects for the upstream.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::store::Identity;

pub const USER_ID: &str = "X-Nini-User-Id";
pub const OPEN_ID: &str = "X-Nini-Tiktok-Open-Id";
pub const DISPLAY_NAME: &str = "X-Nini-Display-Name";
pub const AVATAR_URL: &str = "X-Nini-Avatar-Url";
pub const VERIFIED: &str = "X-Nini-Verified";
pub const FORWARDED_USER: &str = "X-Forwarded-User";
pub const AUTH_REQUEST_USER: &str = "X-Auth-Request-User";
/// A short-lived EdDSA JWT naming the user (see `jwt`).
pub const IDENTITY_JWT: &str = "X-Nini-Identity";
/// Only with `upstream.forward_access_token`: the user's live TikTok access token.
pub const ACCESS_TOKEN: &str = "X-Nini-Access-Token";

/// Whole families an attacker could use to impersonate someone to some upstream: ours,
/// oauth2-proxy's, TikTok-named ones, and those other auth proxies and platforms inject
/// (Grafana's auth proxy, Pomerium, AWS ALB, Google IAP, Azure App Service, Cloudflare
/// Access). An upstream configured for one of them must not be fooled through us.
pub const SPOOFABLE_PREFIXES: &[&str] = &[
    "x-nini-",
    "x-auth-request-",
    "x-tiktok-",
    "x-webauth-",
    "x-pomerium-",
    "x-amzn-oidc-",
    "x-goog-authenticated-user-",
    "x-goog-iap-",
    "x-ms-client-principal",
    "x-ms-token-",
    "cf-access-",
];
/// Single identity headers of well-known conventions (Apache `REMOTE_USER` as a header,
/// Authelia/Traefik `Remote-*`, generic `X-User`-style names).
pub const SPOOFABLE_NAMES: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-forwarded-login",
    "remote-user",
    "remote-email",
    "remote-groups",
    "remote-name",
    "x-remote-user",
    "x-remote-email",
    "x-remote-groups",
    "x-user",
    "x-user-id",
    "x-user-email",
    "x-email",
    "x-auth-user",
    "x-authenticated-user",
    "x-authenticated-userid",
];

/// Forwarding headers a client could use to lie about where it comes from or what it asked
/// for. The sidecar sets X-Forwarded-For/Proto/Host itself; the rest are dropped.
const FORWARDING_NAMES: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-uri",
    "forwarded",
    "x-original-uri",
    "x-original-url",
    "x-rewrite-url",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-url-scheme",
];

/// Unreserved characters stay as they are; everything else (including non-ASCII) is
/// percent-encoded so the header value is plain ASCII.
const NAME_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Which client-sent headers are removed: the identity conventions above, client-sent
/// forwarding information, and the names an operator adds (`headers.strip_also`). Compared
/// case-insensitively with `_` read as `-` (upstreams differ on both, CVE-2025-64484), and
/// without allocating: it runs on every header of every request.
#[derive(Debug, Clone)]
pub struct StripPolicy {
    /// Folded (lowercase, `-`) operator additions.
    extra: Vec<String>,
    /// The folded first bytes any listed name or prefix starts with: most headers (`host`,
    /// `accept`, `user-agent`, …) are ruled out by one lookup.
    first: [bool; 256],
}

impl StripPolicy {
    /// `extra`: header names to strip as well (validated by the config).
    pub fn new(extra: &[String]) -> StripPolicy {
        let extra: Vec<String> = extra.iter().map(|n| fold(n)).collect();
        let mut first = [false; 256];
        let all = SPOOFABLE_PREFIXES
            .iter()
            .chain(SPOOFABLE_NAMES)
            .chain(FORWARDING_NAMES)
            .copied()
            .chain(extra.iter().map(String::as_str));
        for name in all {
            if let Some(&b) = name.as_bytes().first() {
                first[usize::from(b)] = true;
            }
        }
        StripPolicy { extra, first }
    }

    /// Removed from every request before routing and again before forwarding.
    pub fn must_strip(&self, name: &str) -> bool {
        match name.trim().as_bytes().first() {
            Some(&b) if self.first[usize::from(fold_byte(b))] => {}
            _ => return false,
        }
        is_spoofable(name) || is_untrusted_forwarding(name) || self.extra.iter().any(|e| folded_eq(name, e))
    }
}

/// Would an upstream read this header name as an identity header?
pub fn is_spoofable(name: &str) -> bool {
    SPOOFABLE_PREFIXES.iter().any(|p| folded_starts_with(name, p)) || SPOOFABLE_NAMES.iter().any(|n| folded_eq(name, n))
}

/// Client-sent forwarding information, in any spelling: never trusted.
pub fn is_untrusted_forwarding(name: &str) -> bool {
    FORWARDING_NAMES.iter().any(|n| folded_eq(name, n))
}

fn fold_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// `name` equals the folded `want` when folded itself.
fn folded_eq(name: &str, want: &str) -> bool {
    let n = name.trim().as_bytes();
    n.len() == want.len() && n.iter().zip(want.as_bytes()).all(|(a, b)| fold_byte(*a) == *b)
}

fn folded_starts_with(name: &str, prefix: &str) -> bool {
    let n = name.trim().as_bytes();
    n.len() >= prefix.len() && n.iter().zip(prefix.as_bytes()).all(|(a, b)| fold_byte(*a) == *b)
}

fn fold(name: &str) -> String {
    name.trim().bytes().map(|b| fold_byte(b) as char).collect()
}

/// The headers the upstream receives for a signed-in user.
pub fn identity_headers(id: &Identity) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (USER_ID, id.user_id.clone()),
        (OPEN_ID, visible_ascii(&id.open_id)),
        (VERIFIED, id.verified.to_string()),
        (FORWARDED_USER, id.user_id.clone()),
        (AUTH_REQUEST_USER, id.user_id.clone()),
    ];
    if let Some(name) = &id.display_name {
        out.push((DISPLAY_NAME, encode_display_name(name)));
    }
    if let Some(avatar) = id.avatar.as_deref().filter(|a| is_visible_ascii(a)) {
        out.push((AVATAR_URL, avatar.to_string()));
    }
    out
}

/// What the proxy forwards for one identity, made once per cached copy and dropped with it
/// (so a sync, a sign-out or a key change starts afresh): the identity headers as ready
/// values, which every request of the session clones (a reference count each), and the
/// session's current `X-Nini-Identity` token (`jwt`).
pub struct Ready {
    pub headers: Box<[(&'static str, http::HeaderValue)]>,
    pub(super) token: super::jwt::TokenSlot,
}

/// The identity's `Ready` values, made the first time they are asked for.
pub fn ready(id: &Identity) -> std::sync::Arc<Ready> {
    id.derived.get_or_init(|| Ready {
        headers: ready_headers(identity_headers(id)),
        token: Default::default(),
    })
}

/// Header values that are slices of one buffer: one allocation for all of them instead of
/// one each (a cached session's memory is mostly these), and a value repeated under several
/// names (the user id, three times) is stored once.
fn ready_headers(pairs: Vec<(&'static str, String)>) -> Box<[(&'static str, http::HeaderValue)]> {
    let mut buf = Vec::with_capacity(pairs.iter().map(|(_, v)| v.len()).sum());
    let mut spans: Vec<(&'static str, std::ops::Range<usize>)> = Vec::with_capacity(pairs.len());
    for (i, (name, value)) in pairs.iter().enumerate() {
        let span = match pairs[..i].iter().position(|(_, earlier)| earlier == value) {
            Some(j) => spans[j].1.clone(),
            None => {
                buf.extend_from_slice(value.as_bytes());
                buf.len() - value.len()..buf.len()
            }
        };
        spans.push((name, span));
    }
    let buf = bytes::Bytes::from(buf);
    spans
        .into_iter()
        // Every value is visible ASCII or percent-encoded, so this never drops one.
        .filter_map(|(name, span)| {
            http::HeaderValue::from_maybe_shared(buf.slice(span))
                .ok()
                .map(|v| (name, v))
        })
        .collect()
}

/// UTF-8 percent-encoding; upstreams decode with `decodeURIComponent`.
pub fn encode_display_name(name: &str) -> String {
    utf8_percent_encode(name, NAME_ENCODE).to_string()
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn visible_ascii(s: &str) -> String {
    if is_visible_ascii(s) {
        s.to_string()
    } else {
        utf8_percent_encode(s, NAME_ENCODE).to_string()
    }
}

/// Keeps only the standard tokens of a `Connection` header. A client listing
/// `X-Forwarded-User` there would otherwise ask a hop to drop our injected header.
pub fn sanitize_connection(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|t| ["close", "keep-alive", "upgrade"].contains(&t.to_ascii_lowercase().as_str()))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_spoofable() {
        for n in [
            "X-Nini-User-Id",
            "x-nini-user-id",
            "X_NINI_USER_ID",
            "x-nini_display-name",
            "X-Forwarded-User",
            "x_forwarded-email",
            "X-Auth-Request-Access-Token",
            "X-TikTok-Open-Id",
            "x_tiktok_union_id",
            "X-Nini-Access-Token",
            "Remote-User",
            "X-Remote-User",
            "X-WEBAUTH-USER",
            "X-User",
            "x_user_id",
            "X-Email",
            "X-Auth-User",
            "X-Authenticated-User",
            "X-Forwarded-Login",
            "X-Pomerium-Jwt-Assertion",
            "X-Amzn-Oidc-Identity",
            "X-Goog-Authenticated-User-Email",
            "Cf-Access-Authenticated-User-Email",
            "X-MS-CLIENT-PRINCIPAL-NAME",
        ] {
            assert!(is_spoofable(n), "{n}");
        }
        for n in [
            "Host",
            "Cookie",
            "X-Forwarded-For",
            "Accept",
            "X-Request-Id",
            "Authorization",
        ] {
            assert!(!is_spoofable(n), "{n}");
        }
    }

    #[test]
    fn the_policy_strips_every_listed_name_in_any_spelling() {
        let p = StripPolicy::new(&[]);
        let upper_underscore = |n: &str| n.to_ascii_uppercase().replace('-', "_");
        for n in SPOOFABLE_NAMES.iter().chain(FORWARDING_NAMES) {
            for spelling in [n.to_string(), upper_underscore(n), format!(" {n}")] {
                assert!(p.must_strip(&spelling), "{spelling}");
            }
        }
        for prefix in SPOOFABLE_PREFIXES {
            let n = format!("{prefix}something");
            assert!(p.must_strip(&n) && p.must_strip(&upper_underscore(&n)), "{n}");
        }
        for n in [
            "Host",
            "Cookie",
            "Accept",
            "User-Agent",
            "X-Request-Id",
            "Authorization",
            "Content-Type",
        ] {
            assert!(!p.must_strip(n), "{n}");
        }
    }

    #[test]
    fn operators_add_names_and_spellings_fold() {
        let p = StripPolicy::new(&["X-Team-Role".to_string()]);
        for n in ["x-team-role", "X_TEAM_ROLE", " X-Team-Role "] {
            assert!(p.must_strip(n), "{n}");
        }
        assert!(!p.must_strip("x-team-roles"));
        assert!(p.must_strip("X-Real-IP") && p.must_strip("Forwarded"));
        assert!(!StripPolicy::new(&[]).must_strip("X-Team-Role"));
    }

    #[test]
    fn ready_values_are_the_identity_headers() {
        let id = Identity {
            user_id: "u-1".into(),
            open_id: "open é".into(),
            display_name: Some("María".into()),
            avatar: Some("https://cdn.example/a.jpeg".into()),
            verified: true,
            ..Default::default()
        };
        let ready = ready(&id);
        let got: Vec<(&str, &str)> = ready
            .headers
            .iter()
            .map(|(n, v)| (*n, v.to_str().unwrap_or("(not ASCII)")))
            .collect();
        let want: Vec<(&str, String)> = identity_headers(&id);
        assert_eq!(got, want.iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
        assert!(
            std::sync::Arc::ptr_eq(&ready, &super::ready(&id)),
            "made once per identity"
        );
    }

    #[test]
    fn display_name_is_utf8_percent_encoded() {
        assert_eq!(
            encode_display_name("María José 🌮"),
            "Mar%C3%ADa%20Jos%C3%A9%20%F0%9F%8C%AE"
        );
        assert_eq!(encode_display_name("a\r\nb"), "a%0D%0Ab");
    }

    #[test]
    fn connection_keeps_only_standard_tokens() {
        assert_eq!(sanitize_connection("close, X-Forwarded-User").as_deref(), Some("close"));
        assert_eq!(sanitize_connection("x-nini-user-id"), None);
        assert_eq!(sanitize_connection("Upgrade").as_deref(), Some("Upgrade"));
    }
}
