//! The validated shape the rest of the program uses: `Config` and its per-section parts,
//! with parsed addresses, URLs and durations, and secrets wrapped so `Debug` cannot leak them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::CALLBACK_PATH;
use crate::crypto::KeyRing;

/// The signed identity (`X-Nini-Identity` JWT) for upstreams that verify instead of trusting
/// the network.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub jwt: bool,
    pub audience: String,
    /// Lifetime of each token; at most 5 minutes.
    pub ttl: Duration,
}

/// PKCE variant sent to TikTok (see tiktok-api.md §1.3): Web officially needs none, Desktop
/// registrations want a lowercase-hex SHA-256 challenge instead of RFC 7636 base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkce {
    Off,
    S256,
    S256Hex,
}

impl fmt::Display for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pkce::Off => "off",
            Pkce::S256 => "s256",
            Pkce::S256Hex => "s256_hex",
        })
    }
}

/// A secret string whose `Debug` never shows the value, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct TikTokConfig {
    pub client_key: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub pkce: Pkce,
    pub authorize_url: Url,
    pub api_base_url: Url,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: Url,
    /// Resolved once at start-up: pingora's `HttpPeer::new` panics on an unresolvable address.
    pub addr: SocketAddr,
    pub tls: bool,
    pub sni: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Send the user's TikTok access token upstream as `X-Nini-Access-Token` (off by default:
    /// the app then holds a credential for the user's TikTok account).
    pub forward_access_token: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// An IP network from `server.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (one host).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Operational settings: TLS, extra listeners, limits, logging.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// PEM certificate chain and key; when set, `server.listen` speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain-HTTP listener that redirects everything to `public_url` (with TLS).
    pub http_redirect_listen: Option<SocketAddr>,
    /// `Strict-Transport-Security` max-age on https; None when zero or not https.
    pub hsts_max_age: Option<Duration>,
    /// Peers whose `X-Forwarded-For/Proto/Host` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request body forwarded upstream (bytes); larger gets 413.
    pub max_request_body: u64,
    /// Time a client has to send a whole request head (from its first byte; for a new
    /// connection, from the accept).
    pub header_timeout: Duration,
    /// Idle time allowed between keep-alive requests; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
    /// Longest an upgraded (WebSocket) connection stays open; it also ends with its session.
    pub websocket_max_lifetime: Duration,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`); None when `admin.listen = ""`.
    pub admin_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// TikTok data sync (profile and videos).
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `POST` here (by a signed-in user) syncs now; answered by the sidecar.
    pub path: String,
    /// A user's second sync within this gets 429 with `retryAfter`.
    pub cooldown: Duration,
    /// Days for the posting streak are counted in this zone.
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    /// Upper bound on `video/list` pages per sync (20 videos each).
    pub max_pages: u32,
    /// The background job re-syncs users active within `active_within` whose data is older
    /// than this; "0s" turns the job off.
    pub interval: Duration,
    pub active_within: Duration,
    /// Users per background run.
    pub batch: u32,
    /// App-wide budget per TikTok endpoint (TikTok allows 600 per minute).
    pub requests_per_minute: u32,
}

/// Where sessions and users live.
#[derive(Debug, Clone)]
pub enum Database {
    /// The embedded default: one file, one process (or several on one host).
    Sqlite(PathBuf),
    /// Many replicas on one server.
    Postgres(PgUrl),
}

/// A `postgres://` URL. The whole URL is a secret (it may carry the password); `redacted`
/// is what `check` and logs show.
#[derive(Clone)]
pub struct PgUrl {
    url: Secret,
    redacted: String,
}

impl PgUrl {
    pub fn new(url: &Url) -> PgUrl {
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        // libpq also takes the password as a query parameter.
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        PgUrl {
            url: Secret::new(url.as_str()),
            redacted: shown.to_string(),
        }
    }

    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Database::Postgres(u) => f.write_str(u.redacted()),
        }
    }
}

/// `[storage]`: the database and how the sidecar talks to it.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub database: Database,
    /// PostgreSQL pool size per replica; SQLite reader connections (at most 4).
    pub max_connections: u32,
    /// How long opening a connection (or waiting for a pooled one) may take.
    pub connect_timeout: Duration,
    /// How long one statement may run (PostgreSQL `statement_timeout`, SQLite busy timeout).
    pub statement_timeout: Duration,
    /// How long a cached session is trusted without reading the store again: the bound on
    /// staleness if every invalidation were missed, and how long signed-in users keep
    /// working while the database is down.
    pub cache_ttl: Duration,
    /// Sessions kept in memory per replica.
    pub cache_capacity: usize,
}

/// `[limits]`: per-client limits on what costs us without a session.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Sign-ins one client (an IPv4 address, an IPv6 /64) may start per minute.
    pub signin_starts_per_minute: u32,
    /// Connections one client address may hold open at once (0: no bound). Trusted proxies
    /// are exempt: they carry many clients.
    pub connections_per_client: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub threads: usize,
    pub shutdown_timeout: Duration,
    pub upstream: UpstreamConfig,
    pub tiktok: TikTokConfig,
    pub storage: StorageConfig,
    pub session_lifetime: Duration,
    pub refresh_margin: Duration,
    pub keys: KeyRing,
    pub protected: Vec<String>,
    /// `[[routes.rules]]`: who may enter which prefix, first match wins (`auth::rules`).
    pub route_rules: Vec<super::RouteRule>,
    pub sync: SyncConfig,
    pub ops: OpsConfig,
    pub identity: IdentityConfig,
    pub limits: LimitsConfig,
    /// More client-sent header names to remove (besides the built-in identity conventions).
    pub strip_also: Vec<String>,
}

impl Config {
    /// The redirect URI to register in the TikTok developer portal.
    pub fn redirect_uri(&self) -> String {
        format!("{}{}", origin_of(&self.public_url), CALLBACK_PATH)
    }

    /// `scheme://host[:port]` of the public URL, no trailing slash.
    pub fn origin(&self) -> String {
        origin_of(&self.public_url)
    }

    /// Cookies get `Secure` and the `__Host-` prefix only when browsers reach us over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}
