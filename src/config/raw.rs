//! The raw TOML shape: one `Raw*` struct per section, exactly as the file spells it. Every
//! field has a default (the `Default` impls below are the documented defaults) and unknown
//! keys are errors; nothing here is checked beyond its TOML type — that is `validate`'s job.

use std::path::PathBuf;

use serde::Deserialize;

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
    pub limits: RawLimits,
    pub headers: RawHeaders,
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
    pub header_timeout: String,
    pub keepalive_timeout: String,
    pub websocket_max_lifetime: String,
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
            header_timeout: "20s".into(),
            keepalive_timeout: "75s".into(),
            websocket_max_lifetime: "24h".into(),
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
    pub max_connections: u32,
    pub connect_timeout: String,
    pub statement_timeout: String,
    pub cache_ttl: String,
    pub cache_capacity: usize,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            database: "nini-auth.db".into(),
            max_connections: 10,
            connect_timeout: "5s".into(),
            statement_timeout: "5s".into(),
            cache_ttl: "5m".into(),
            cache_capacity: 100_000,
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
    /// `[[routes.rules]]`, in file order (see `route_rules`).
    pub rules: Vec<super::route_rules::RawRouteRule>,
}

impl Default for RawRoutes {
    fn default() -> Self {
        RawRoutes {
            protected: vec!["/dashboard".into(), "/profile".into(), "/api/user".into()],
            rules: Vec::new(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub signin_starts_per_minute: u32,
    pub connections_per_client: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            signin_starts_per_minute: 60,
            connections_per_client: 256,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    pub strip_also: Vec<String>,
}
