//! Configuration: the raw TOML shape (`RawConfig`, unknown keys are errors), environment
//! overrides, and validation into the `Config` the rest of the program uses.
//!
//! Layering, highest priority first: environment variables (`TIKTOK_CLIENT_KEY`,
//! `TIKTOK_CLIENT_SECRET`, `DATABASE_URL`, `NINI_AUTH_SECRET`), then `*_file` keys, then
//! plain keys. Validation collects every problem before failing so an operator fixes them
//! all in one go; each problem names its key.
//!
//! Layout: `raw` (the file shape and its defaults), `types` (the validated shape),
//! `sections` (per-section builders and duration parsing), `describe` (`nini-auth check`
//! output). This file holds the pipeline itself — `load`, `parse`, `validate` — plus the
//! environment access and the error types; every public item is re-exported here, so callers
//! only ever name `config::X`.

mod describe;
mod raw;
pub mod route_rules;
mod sections;
mod types;

pub use raw::{
    RawAdmin, RawConfig, RawHeaders, RawIdentity, RawLimits, RawLog, RawRoutes, RawSecrets, RawServer, RawSession,
    RawStorage, RawSync, RawTikTok, RawUpstream,
};
pub use route_rules::{RawRouteRule, RouteRule};
pub use sections::{format_duration, parse_duration};
pub use types::{
    origin_of, Cidr, Config, Database, IdentityConfig, LimitsConfig, LogFormat, OpsConfig, PgUrl, Pkce, Secret,
    StorageConfig, SyncConfig, TikTokConfig, UpstreamConfig,
};

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::crypto::KeyRing;
use sections::{database, duration, ops_config, parse_base_url, storage_config, sync_config, upstream_config};

/// Environment variables we read, in one place so docs and code agree.
pub const ENV_CONFIG: &str = "NINI_AUTH_CONFIG";
pub const ENV_CLIENT_KEY: &str = "TIKTOK_CLIENT_KEY";
pub const ENV_CLIENT_SECRET: &str = "TIKTOK_CLIENT_SECRET";
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_SECRET: &str = "NINI_AUTH_SECRET";

/// The path every TikTok redirect comes back to; registered in the developer portal.
pub const CALLBACK_PATH: &str = "/api/auth/callback/tiktok";

/// Where the sidecar's own endpoints live (the base path next-auth clients call).
pub const AUTH_BASE: &str = "/api/auth";

/// Exit status for a configuration or usage error (sysexits' EX_USAGE); every command that
/// loads a configuration uses it.
pub const EXIT_CONFIG: u8 = 64;

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

/// A `[storage]` with defaults around one database URL (for `migrate-store`); problems name
/// `key` (the command-line flag).
pub fn storage_from_url(key: &str, url: &str) -> Result<StorageConfig, ConfigError> {
    let mut p = Problems(Vec::new());
    let db = database(&mut p, key, url);
    let storage = storage_config(&mut p, &RawStorage::default(), db);
    match storage {
        Some(s) if p.0.is_empty() => Ok(s),
        _ => Err(ConfigError(p.0)),
    }
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
    ("limits", |v| v.try_into::<RawLimits>().map(drop)),
    ("headers", |v| v.try_into::<RawHeaders>().map(drop)),
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
            // Rules are an array of tables: their keys are checked one by one, by index.
            if section == "routes" && k == "rules" {
                p.0.extend(route_rules::check_keys(v));
                continue;
            }
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
        limits,
        headers,
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
    let db = match env.get(ENV_DATABASE_URL) {
        Some(url) => database(&mut p, ENV_DATABASE_URL, &url),
        None => database(&mut p, "storage.database", &storage.database),
    };
    let storage_cfg = storage_config(&mut p, &storage, db);

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
            SecretsPolicy::Generate => match KeyRing::generate() {
                Ok(k) => Some(k),
                Err(e) => {
                    p.add("secrets.encryption_keys", e.to_string());
                    None
                }
            },
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

    let (route_rules, rule_problems) = route_rules::validate(&routes.rules, &tiktok.scopes);
    p.0.extend(rule_problems);

    let sync_cfg = sync_config(&mut p, sync);
    let identity_ttl = duration(&mut p, "identity.ttl", &identity.ttl);
    if identity_ttl.is_some_and(|d| d < Duration::from_secs(10) || d > Duration::from_secs(300)) {
        p.add("identity.ttl", "must be between 10s and 5m");
    }
    if identity.audience.trim().is_empty() || identity.audience.chars().any(|c| c.is_control()) {
        p.add("identity.audience", "must be a non-empty string");
    }
    let ops_cfg = ops_config(&mut p, &server, &admin, &log, public_url.as_ref());
    for name in &headers.strip_also {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            p.add("headers.strip_also", format!("{name:?} is not a header name"));
        }
        let lower = name.to_ascii_lowercase();
        if ["cookie", "host", "authorization", "content-length", "transfer-encoding"].contains(&lower.as_str()) {
            p.add(
                "headers.strip_also",
                format!("{name:?} is needed by the request itself; it cannot be stripped"),
            );
        }
    }
    if limits.signin_starts_per_minute == 0 || limits.signin_starts_per_minute > 100_000 {
        p.add("limits.signin_starts_per_minute", "must be between 1 and 100000");
    }

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
        storage_cfg,
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
            Some(storage),
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
            storage,
            session_lifetime,
            refresh_margin,
            keys,
            protected: routes.protected,
            route_rules,
            sync,
            ops,
            identity: IdentityConfig {
                jwt: identity.jwt,
                audience: identity.audience,
                ttl: identity_ttl,
            },
            limits: LimitsConfig {
                signin_starts_per_minute: limits.signin_starts_per_minute,
                connections_per_client: limits.connections_per_client,
            },
            strip_also: headers.strip_also,
        }),
        _ => Err(ConfigError(vec![Problem {
            key: "config".into(),
            message: "internal: validation incomplete".into(),
        }])),
    }
}

#[cfg(test)]
mod tests;
