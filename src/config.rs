//! Configuration: the raw TOML shape (`RawConfig`, unknown keys are errors), environment
//! overrides, and validation into the `Config` the rest of the program uses.
//!
//! Layering, highest priority first: environment variables (`TIKTOK_CLIENT_KEY`,
//! `TIKTOK_CLIENT_SECRET`, `DATABASE_URL`, `NINI_AUTH_SECRET`), then `*_file` keys, then
//! plain keys. Validation collects every problem before failing so an operator fixes them
//! all in one go; each problem names its key.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::crypto::KeyRing;

/// Environment variables we read, in one place so docs and code agree.
pub const ENV_CONFIG: &str = "NINI_AUTH_CONFIG";
pub const ENV_CLIENT_KEY: &str = "TIKTOK_CLIENT_KEY";
pub const ENV_CLIENT_SECRET: &str = "TIKTOK_CLIENT_SECRET";
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_SECRET: &str = "NINI_AUTH_SECRET";

/// The path every TikTok redirect comes back to; registered in the developer portal.
pub const CALLBACK_PATH: &str = "/api/auth/callback/tiktok";

/// Scopes TikTok Login Kit knows; anything else is a typo that TikTok would reject before
/// consent, on a page the sidecar never sees.
pub const KNOWN_SCOPES: &[&str] = &[
    "user.info.basic",
    "user.info.profile",
    "user.info.stats",
    "video.list",
    "video.publish",
    "video.upload",
    "artist.certification.read",
    "artist.certification.update",
];

// === raw file shape ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub tiktok: RawTikTok,
    pub storage: RawStorage,
    pub session: RawSession,
    pub secrets: RawSecrets,
    pub routes: RawRoutes,
    pub sync: RawSync,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub identity: RawIdentity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub public_url: String,
    pub threads: usize,
    pub shutdown_timeout: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_redirect_listen: Option<String>,
    pub hsts_max_age: String,
    pub trusted_proxies: Vec<String>,
    pub max_request_body: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:4180".into(),
            public_url: "http://localhost:4180".into(),
            threads: 2,
            shutdown_timeout: "10s".into(),
            tls_cert: None,
            tls_key: None,
            http_redirect_listen: None,
            hsts_max_age: "365d".into(),
            trusted_proxies: Vec::new(),
            max_request_body: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: String,
    pub connect_timeout: String,
    pub read_timeout: String,
    pub forward_access_token: bool,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:3000".into(),
            connect_timeout: "5s".into(),
            read_timeout: "60s".into(),
            forward_access_token: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTikTok {
    pub client_key: String,
    pub client_secret: String,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    pub pkce: String,
    pub authorize_url: String,
    pub api_base_url: String,
    pub timeout: String,
}

impl Default for RawTikTok {
    fn default() -> Self {
        RawTikTok {
            client_key: String::new(),
            client_secret: String::new(),
            client_secret_file: None,
            scopes: vec!["user.info.basic".into(), "video.list".into()],
            pkce: "off".into(),
            authorize_url: "https://www.tiktok.com/v2/auth/authorize/".into(),
            api_base_url: "https://open.tiktokapis.com".into(),
            timeout: "10s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub database: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            database: "nini-auth.db".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub lifetime: String,
    pub refresh_margin: String,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            lifetime: "30d".into(),
            refresh_margin: "1h".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecrets {
    pub encryption_keys: Vec<String>,
    pub encryption_keys_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoutes {
    pub protected: Vec<String>,
}

impl Default for RawRoutes {
    fn default() -> Self {
        RawRoutes {
            protected: vec!["/dashboard".into(), "/profile".into(), "/api/user".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    pub path: String,
    pub cooldown: String,
    pub timezone: String,
    pub max_pages: u32,
    pub interval: String,
    pub active_within: String,
    pub batch: u32,
    pub requests_per_minute: u32,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            path: "/api/user/sync-tiktok".into(),
            cooldown: "5m".into(),
            timezone: "UTC".into(),
            max_pages: 50,
            interval: "6h".into(),
            active_within: "7d".into(),
            batch: 50,
            requests_per_minute: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: "text".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub jwt: bool,
    pub audience: String,
    pub ttl: String,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            jwt: true,
            audience: "nini-app".into(),
            ttl: "5m".into(),
        }
    }
}

/// The signed identity (`X-Nini-Identity` JWT) for upstreams that verify instead of trusting
/// the network.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub jwt: bool,
    pub audience: String,
    /// Lifetime of each token; at most 5 minutes.
    pub ttl: Duration,
}

// === validated shape ===

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

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub threads: usize,
    pub shutdown_timeout: Duration,
    pub upstream: UpstreamConfig,
    pub tiktok: TikTokConfig,
    pub database: PathBuf,
    pub session_lifetime: Duration,
    pub refresh_margin: Duration,
    pub keys: KeyRing,
    pub protected: Vec<String>,
    pub sync: SyncConfig,
    pub ops: OpsConfig,
    pub identity: IdentityConfig,
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

    /// The effective configuration as TOML-like text with every secret redacted (`check`).
    pub fn describe(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
        let redacted = |s: &str| {
            if s.is_empty() {
                "\"\" # not set".to_string()
            } else {
                "\"<redacted>\"".to_string()
            }
        };
        format!(
            "[server]\nlisten = {}\npublic_url = {}\nthreads = {}\nshutdown_timeout = {}\n\n\
             [upstream]\nurl = {}\nconnect_timeout = {}\nread_timeout = {}\nforward_access_token = {}\n\n\
             [tiktok]\nclient_key = {}\nclient_secret = {}\nscopes = {}\npkce = {}\nauthorize_url = {}\napi_base_url = {}\ntimeout = {}\n\n\
             [storage]\ndatabase = {}\n\n\
             [session]\nlifetime = {}\nrefresh_margin = {}\n\n\
             [secrets]\nencryption_keys = {} # {} key(s); key ids {}\n\n\
             [routes]\nprotected = {}\n\n\
             [sync]\npath = {}\ncooldown = {}\ntimezone = {}\nmax_pages = {}\ninterval = {}\nactive_within = {}\nbatch = {}\nrequests_per_minute = {}\n",
            q(&self.listen.to_string()),
            q(self.public_url.as_str()),
            self.threads,
            q(&format_duration(self.shutdown_timeout)),
            q(self.upstream.url.as_str()),
            q(&format_duration(self.upstream.connect_timeout)),
            q(&format_duration(self.upstream.read_timeout)),
            self.upstream.forward_access_token,
            q(&self.tiktok.client_key),
            redacted(self.tiktok.client_secret.expose()),
            list(&self.tiktok.scopes),
            q(&self.tiktok.pkce.to_string()),
            q(self.tiktok.authorize_url.as_str()),
            q(self.tiktok.api_base_url.as_str()),
            q(&format_duration(self.tiktok.timeout)),
            q(&self.database.display().to_string()),
            q(&format_duration(self.session_lifetime)),
            q(&format_duration(self.refresh_margin)),
            "[\"<redacted>\"]",
            self.keys.len(),
            self.keys.key_ids().join(","),
            list(&self.protected),
            q(&self.sync.path),
            q(&format_duration(self.sync.cooldown)),
            q(&self.sync.timezone_name),
            self.sync.max_pages,
            q(&format_duration(self.sync.interval)),
            q(&format_duration(self.sync.active_within)),
            self.sync.batch,
            self.sync.requests_per_minute,
        ) + &self.describe_ops()
    }

    fn describe_ops(&self) -> String {
        let o = &self.ops;
        let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
        let (cert, key) = match &o.tls {
            Some((c, k)) => (path(c), path(k)),
            None => ("\"\" # plain HTTP".into(), "\"\"".into()),
        };
        let proxies: Vec<String> = o.trusted_proxies.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "\n[server] # operations\ntls_cert = {cert}\ntls_key = {key}\nhttp_redirect_listen = {}\nhsts_max_age = {}\n\
             trusted_proxies = [{}]\nmax_request_body = {}\n\n[admin]\nlisten = {}\n\n[log]\nformat = {:?}\n",
            o.http_redirect_listen.map(|a| format!("\"{a}\"")).unwrap_or_else(|| "\"\" # off".into()),
            o.hsts_max_age.map(|d| format!("\"{}\"", format_duration(d))).unwrap_or_else(|| "\"0s\" # off (not https)".into()),
            proxies.join(", "),
            o.max_request_body,
            o.admin_listen.map(|a| format!("\"{a}\"")).unwrap_or_else(|| "\"\" # off".into()),
            match o.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        )
    }
}

pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

// === errors ===

/// One configuration problem, naming the key (dotted TOML path or env var) it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem(s))", .0.len())]
pub struct ConfigError(pub Vec<Problem>);

impl ConfigError {
    /// All problems, one per line, for stderr.
    pub fn report(&self) -> String {
        self.0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    }
}

// === environment ===

/// Read access to environment variables, so tests never mutate the process environment.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key)
            .cloned()
            .filter(|v| !v.is_empty())
    }
}

/// Whether missing secrets are errors. `demo` generates its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsPolicy {
    Required,
    Generate,
}

// === loading ===

/// Reads and validates a config file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![Problem {
            key: "config".into(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let raw = parse(&text)?;
    validate(raw, env, SecretsPolicy::Required)
}

/// Checks one key of a section by deserialising it alone (every field has a default), so an
/// unknown key or a wrong type is found for each key, not just the first in the file.
type KeyCheck = fn(toml::Value) -> Result<(), toml::de::Error>;

const SECTIONS: &[(&str, KeyCheck)] = &[
    ("server", |v| v.try_into::<RawServer>().map(drop)),
    ("upstream", |v| v.try_into::<RawUpstream>().map(drop)),
    ("tiktok", |v| v.try_into::<RawTikTok>().map(drop)),
    ("storage", |v| v.try_into::<RawStorage>().map(drop)),
    ("session", |v| v.try_into::<RawSession>().map(drop)),
    ("secrets", |v| v.try_into::<RawSecrets>().map(drop)),
    ("routes", |v| v.try_into::<RawRoutes>().map(drop)),
    ("sync", |v| v.try_into::<RawSync>().map(drop)),
    ("admin", |v| v.try_into::<RawAdmin>().map(drop)),
    ("log", |v| v.try_into::<RawLog>().map(drop)),
    ("identity", |v| v.try_into::<RawIdentity>().map(drop)),
];

/// Parses TOML text into the raw shape. Syntax errors stop at the first one (the rest of the
/// file cannot be read reliably); unknown sections, unknown keys and wrong types are all
/// reported, each naming its dotted key.
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let key = match e.span() {
            Some(span) => key_at(text, span.start),
            None => "config".into(),
        };
        ConfigError(vec![Problem {
            key,
            message: format!("syntax error: {}", e.message().trim()),
        }])
    })?;
    let mut p = Problems(Vec::new());
    for (section, value) in &table {
        let Some((_, check)) = SECTIONS.iter().find(|(name, _)| name == section) else {
            let known: Vec<&str> = SECTIONS.iter().map(|(n, _)| *n).collect();
            p.add(section, format!("unknown section (known: {})", known.join(", ")));
            continue;
        };
        let Some(keys) = value.as_table() else {
            p.add(section, "must be a table ([section])");
            continue;
        };
        for (k, v) in keys {
            let mut single = toml::Table::new();
            single.insert(k.clone(), v.clone());
            if let Err(e) = check(toml::Value::Table(single)) {
                p.add(&format!("{section}.{k}"), e.message().trim().to_string());
            }
        }
    }
    if !p.0.is_empty() {
        return Err(ConfigError(p.0));
    }
    toml::Value::Table(table).try_into::<RawConfig>().map_err(|e| {
        ConfigError(vec![Problem {
            key: "config".into(),
            message: e.message().trim().to_string(),
        }])
    })
}

/// Best-effort dotted key for a syntax error position: the enclosing `[table]` plus the key
/// on that line.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            (t.starts_with('[') && t.ends_with(']'))
                .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        })
        .unwrap_or_default();
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or("");
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "config".into(),
        (true, false) => key.into(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Validates the raw config with environment overrides; every problem is reported at once.
pub fn validate(raw: RawConfig, env: &dyn Env, policy: SecretsPolicy) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());
    let RawConfig {
        server,
        upstream,
        tiktok,
        storage,
        session,
        secrets,
        routes,
        sync,
        admin,
        log,
        identity,
    } = raw;

    // [server]
    let listen = match server.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "server.listen",
                format!(
                    "{:?} is not an IP:port address (e.g. \"127.0.0.1:4180\")",
                    server.listen
                ),
            );
            None
        }
    };
    let public_url = parse_base_url(&mut p, "server.public_url", &server.public_url, true);
    if server.threads == 0 || server.threads > 256 {
        p.add("server.threads", "must be between 1 and 256");
    }
    let shutdown_timeout = duration(&mut p, "server.shutdown_timeout", &server.shutdown_timeout);

    // [upstream]
    let upstream_cfg = upstream_config(&mut p, &upstream);

    // [tiktok]
    let client_key = env.get(ENV_CLIENT_KEY).unwrap_or(tiktok.client_key.clone());
    let client_secret = match env.get(ENV_CLIENT_SECRET) {
        Some(s) => s,
        None => match &tiktok.client_secret_file {
            Some(path) => {
                if !tiktok.client_secret.is_empty() {
                    p.add(
                        "tiktok.client_secret_file",
                        "set either client_secret or client_secret_file, not both",
                    );
                }
                match std::fs::read_to_string(path) {
                    Ok(s) => s.trim().to_string(),
                    Err(e) => {
                        p.add(
                            "tiktok.client_secret_file",
                            format!("cannot read {}: {e}", path.display()),
                        );
                        String::new()
                    }
                }
            }
            None => tiktok.client_secret.clone(),
        },
    };
    if policy == SecretsPolicy::Required {
        if client_key.trim().is_empty() {
            p.add(
                "tiktok.client_key",
                format!("missing; set it in the file or the {ENV_CLIENT_KEY} environment variable"),
            );
        }
        if client_secret.trim().is_empty() {
            p.add(
                "tiktok.client_secret",
                format!("missing; set the {ENV_CLIENT_SECRET} environment variable or tiktok.client_secret_file"),
            );
        }
    }
    if client_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add("tiktok.client_key", "must not contain whitespace");
    }
    if tiktok.scopes.is_empty() {
        p.add("tiktok.scopes", "must list at least \"user.info.basic\"");
    }
    for s in &tiktok.scopes {
        if !KNOWN_SCOPES.contains(&s.as_str()) {
            p.add(
                "tiktok.scopes",
                format!("unknown scope {s:?} (known: {})", KNOWN_SCOPES.join(", ")),
            );
        }
    }
    if !tiktok.scopes.is_empty() && !tiktok.scopes.iter().any(|s| s == "user.info.basic") {
        p.add(
            "tiktok.scopes",
            "must include \"user.info.basic\" (needed to read the user's open_id and name)",
        );
    }
    let pkce = match tiktok.pkce.as_str() {
        "off" => Some(Pkce::Off),
        "s256" | "s256_base64url" => Some(Pkce::S256),
        "s256_hex" => Some(Pkce::S256Hex),
        other => {
            p.add(
                "tiktok.pkce",
                format!("{other:?} is not one of \"off\", \"s256\", \"s256_hex\""),
            );
            None
        }
    };
    let authorize_url = parse_base_url(&mut p, "tiktok.authorize_url", &tiktok.authorize_url, false);
    let api_base_url = parse_base_url(&mut p, "tiktok.api_base_url", &tiktok.api_base_url, true);
    let tiktok_timeout = duration(&mut p, "tiktok.timeout", &tiktok.timeout);

    // [storage]
    let database = match env.get(ENV_DATABASE_URL) {
        Some(url) => database_path(&mut p, ENV_DATABASE_URL, &url),
        None => database_path(&mut p, "storage.database", &storage.database),
    };

    // [session]
    let lifetime = duration(&mut p, "session.lifetime", &session.lifetime);
    let refresh_margin = duration(&mut p, "session.refresh_margin", &session.refresh_margin);
    if let Some(l) = lifetime {
        if l < Duration::from_secs(60) {
            p.add("session.lifetime", "must be at least 1m");
        }
    }

    // [secrets]
    let key_strings: Vec<String> = match env.get(ENV_SECRET) {
        Some(v) => v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => {
            let mut keys = secrets.encryption_keys.clone();
            if let Some(path) = &secrets.encryption_keys_file {
                match std::fs::read_to_string(path) {
                    Ok(s) => keys.extend(
                        s.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(String::from),
                    ),
                    Err(e) => p.add(
                        "secrets.encryption_keys_file",
                        format!("cannot read {}: {e}", path.display()),
                    ),
                }
            }
            keys
        }
    };
    let keys = if key_strings.is_empty() {
        match policy {
            SecretsPolicy::Required => {
                p.add(
                    "secrets.encryption_keys",
                    format!("missing; set {ENV_SECRET} to a key from `nini-auth keygen` (base64, 32 bytes)"),
                );
                None
            }
            SecretsPolicy::Generate => Some(KeyRing::generate()),
        }
    } else {
        match KeyRing::from_base64(&key_strings) {
            Ok(k) => Some(k),
            Err(e) => {
                p.add("secrets.encryption_keys", e.to_string());
                None
            }
        }
    };

    // [routes]
    for r in &routes.protected {
        if !r.starts_with('/') || r.contains(['?', '#', '\\']) || r.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            p.add(
                "routes.protected",
                format!("{r:?} must be a path prefix starting with '/' (no query, fragment or spaces)"),
            );
        }
        let lower = r.to_ascii_lowercase();
        if lower == "/api/auth" || lower.starts_with("/api/auth/") {
            p.add(
                "routes.protected",
                format!("{r:?} overlaps the sidecar's own /api/auth endpoints"),
            );
        }
    }

    let sync_cfg = sync_config(&mut p, sync);
    let identity_ttl = duration(&mut p, "identity.ttl", &identity.ttl);
    if identity_ttl.is_some_and(|d| d < Duration::from_secs(10) || d > Duration::from_secs(300)) {
        p.add("identity.ttl", "must be between 10s and 5m");
    }
    if identity.audience.trim().is_empty() || identity.audience.chars().any(|c| c.is_control()) {
        p.add("identity.audience", "must be a non-empty string");
    }
    let ops_cfg = ops_config(&mut p, &server, &admin, &log, public_url.as_ref());

    if !p.0.is_empty() {
        return Err(ConfigError(p.0));
    }
    let (Some(sync), Some(ops), Some(identity_ttl)) = (sync_cfg, ops_cfg, identity_ttl) else {
        return Err(ConfigError(vec![Problem {
            key: "sync".into(),
            message: "internal: validation incomplete".into(),
        }]));
    };
    // Every Option below is Some when no problem was recorded.
    match (
        listen,
        public_url,
        shutdown_timeout,
        upstream_cfg,
        pkce,
        authorize_url,
        api_base_url,
        tiktok_timeout,
        database,
        lifetime,
        refresh_margin,
        keys,
    ) {
        (
            Some(listen),
            Some(public_url),
            Some(shutdown_timeout),
            Some(upstream),
            Some(pkce),
            Some(authorize_url),
            Some(api_base_url),
            Some(timeout),
            Some(database),
            Some(session_lifetime),
            Some(refresh_margin),
            Some(keys),
        ) => Ok(Config {
            listen,
            public_url,
            threads: server.threads,
            shutdown_timeout,
            upstream,
            tiktok: TikTokConfig {
                client_key: client_key.trim().to_string(),
                client_secret: Secret::new(client_secret.trim()),
                scopes: tiktok.scopes,
                pkce,
                authorize_url,
                api_base_url,
                timeout,
            },
            database,
            session_lifetime,
            refresh_margin,
            keys,
            protected: routes.protected,
            sync,
            ops,
            identity: IdentityConfig {
                jwt: identity.jwt,
                audience: identity.audience,
                ttl: identity_ttl,
            },
        }),
        _ => Err(ConfigError(vec![Problem {
            key: "config".into(),
            message: "internal: validation incomplete".into(),
        }])),
    }
}

fn ops_config(
    p: &mut Problems,
    server: &RawServer,
    admin: &RawAdmin,
    log: &RawLog,
    public: Option<&Url>,
) -> Option<OpsConfig> {
    let tls = match (&server.tls_cert, &server.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            for (key, path) in [("server.tls_cert", c), ("server.tls_key", k)] {
                if let Err(e) = std::fs::metadata(path) {
                    p.add(key, format!("cannot read {}: {e}", path.display()));
                }
            }
            Some((c.clone(), k.clone()))
        }
        (Some(_), None) => {
            p.add("server.tls_key", "must be set together with server.tls_cert");
            None
        }
        (None, Some(_)) => {
            p.add("server.tls_cert", "must be set together with server.tls_key");
            None
        }
    };
    let http_redirect_listen = match &server.http_redirect_listen {
        None => None,
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(a) => {
                if tls.is_none() && public.is_some_and(|u| u.scheme() != "https") {
                    p.add(
                        "server.http_redirect_listen",
                        "redirects to https: needs an https server.public_url",
                    );
                }
                Some(a)
            }
            Err(_) => {
                p.add(
                    "server.http_redirect_listen",
                    format!("{a:?} is not an IP:port address"),
                );
                None
            }
        },
    };
    let hsts = duration(p, "server.hsts_max_age", &server.hsts_max_age);
    let mut trusted = Vec::new();
    for t in &server.trusted_proxies {
        match Cidr::parse(t) {
            Some(c) => trusted.push(c),
            None => p.add(
                "server.trusted_proxies",
                format!("{t:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"),
            ),
        }
    }
    if server.max_request_body == 0 {
        p.add("server.max_request_body", "must be at least 1 (bytes)");
    }
    let admin_listen = if admin.listen.trim().is_empty() {
        None
    } else {
        match admin.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    "admin.listen",
                    format!("{:?} is not an IP:port address (or \"\" to disable)", admin.listen),
                );
                None
            }
        }
    };
    let log_format = match log.format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            p.add("log.format", format!("{other:?} is not \"text\" or \"json\""));
            None
        }
    };
    let https = public.is_some_and(|u| u.scheme() == "https");
    Some(OpsConfig {
        tls,
        http_redirect_listen,
        hsts_max_age: hsts.filter(|d| https && !d.is_zero()),
        trusted_proxies: trusted,
        max_request_body: server.max_request_body,
        admin_listen,
        log_format: log_format?,
    })
}

fn sync_config(p: &mut Problems, raw: RawSync) -> Option<SyncConfig> {
    let path_ok = raw.path.starts_with('/')
        && !raw.path.starts_with("//")
        && !raw.path.contains(['?', '#', '\\', '%'])
        && !raw.path.chars().any(|c| c.is_control() || c.is_whitespace());
    if !path_ok {
        p.add(
            "sync.path",
            format!(
                "{:?} must be a plain absolute path such as \"/api/user/sync-tiktok\"",
                raw.path
            ),
        );
    }
    let lower = raw.path.to_ascii_lowercase();
    if lower == "/api/auth" || lower.starts_with("/api/auth/") {
        p.add("sync.path", "must not be under /api/auth (the sidecar's own endpoints)");
    }
    let cooldown = duration(p, "sync.cooldown", &raw.cooldown);
    let interval = duration(p, "sync.interval", &raw.interval);
    let active_within = duration(p, "sync.active_within", &raw.active_within);
    let tz = match jiff::tz::TimeZone::get(&raw.timezone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            p.add(
                "sync.timezone",
                format!(
                    "{:?} is not an IANA time zone (e.g. \"America/Mexico_City\", \"UTC\")",
                    raw.timezone
                ),
            );
            None
        }
    };
    if raw.max_pages == 0 || raw.max_pages > 1000 {
        p.add("sync.max_pages", "must be between 1 and 1000");
    }
    if raw.batch == 0 {
        p.add("sync.batch", "must be at least 1");
    }
    if raw.requests_per_minute == 0 || raw.requests_per_minute > 600 {
        p.add(
            "sync.requests_per_minute",
            "must be between 1 and 600 (TikTok's limit per endpoint)",
        );
    }
    Some(SyncConfig {
        path: raw.path,
        cooldown: cooldown?,
        timezone: tz?,
        timezone_name: raw.timezone,
        max_pages: raw.max_pages,
        interval: interval?,
        active_within: active_within?,
        batch: raw.batch,
        requests_per_minute: raw.requests_per_minute,
    })
}

fn upstream_config(p: &mut Problems, raw: &RawUpstream) -> Option<UpstreamConfig> {
    let url = parse_base_url(p, "upstream.url", &raw.url, false);
    let connect_timeout = duration(p, "upstream.connect_timeout", &raw.connect_timeout);
    let read_timeout = duration(p, "upstream.read_timeout", &raw.read_timeout);
    let url = url?;
    if url.path() != "/" {
        p.add("upstream.url", "must not have a path: requests keep their own path");
        return None;
    }
    let host = url.host_str()?.trim_matches(|c| c == '[' || c == ']').to_string();
    let port = url.port_or_known_default()?;
    let addr = match (host.as_str(), port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    let Some(addr) = addr else {
        p.add("upstream.url", format!("cannot resolve host {host:?}"));
        return None;
    };
    Some(UpstreamConfig {
        tls: url.scheme() == "https",
        sni: host,
        url,
        addr,
        connect_timeout: connect_timeout?,
        read_timeout: read_timeout?,
        forward_access_token: raw.forward_access_token,
    })
}

fn parse_base_url(p: &mut Problems, key: &str, raw: &str, origin_only: bool) -> Option<Url> {
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            p.add(key, format!("{raw:?} is not a URL: {e}"));
            return None;
        }
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        p.add(key, format!("{raw:?} must use http or https"));
        return None;
    }
    if url.host_str().is_none() {
        p.add(key, format!("{raw:?} has no host"));
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        p.add(
            key,
            format!("{raw:?} must not contain credentials, a query or a fragment"),
        );
        return None;
    }
    if origin_only && url.path() != "/" {
        p.add(
            key,
            format!("{raw:?} must be an origin without a path (e.g. \"https://app.example.com\")"),
        );
        return None;
    }
    Some(url)
}

fn database_path(p: &mut Problems, key: &str, raw: &str) -> Option<PathBuf> {
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .or_else(|| raw.strip_prefix("file:"))
        .unwrap_or(raw);
    if path.is_empty() {
        p.add(key, "must name a SQLite file");
        return None;
    }
    if path.contains("://") {
        p.add(
            key,
            format!("{raw:?}: only SQLite is supported (a file path or sqlite:PATH)"),
        );
        return None;
    }
    if path == ":memory:" {
        p.add(key, "\":memory:\" would lose every session on restart; name a file");
        return None;
    }
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !parent.is_dir() {
            p.add(key, format!("directory {} does not exist", parent.display()));
            return None;
        }
    }
    Some(path)
}

fn duration(p: &mut Problems, key: &str, raw: &str) -> Option<Duration> {
    match parse_duration(raw) {
        Some(d) => Some(d),
        None => {
            p.add(
                key,
                format!("{raw:?} is not a duration (e.g. \"500ms\", \"30s\", \"10m\", \"1h\", \"30d\", \"1h30m\")"),
            );
            None
        }
    }
}

/// Parses `500ms`, `30s`, `10m`, `1h`, `30d`, `1w` and sums like `1h30m`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms)?)?;
    }
    Some(Duration::from_millis(total))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(86_400_000) && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests;
