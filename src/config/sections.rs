//! Per-section validation that is more than a one-liner: `[upstream]` (URL and address
//! resolution), `[sync]`, the operational keys (`[server]` TLS/limits, `[admin]`, `[log]`),
//! and the shared checks for base URLs, database paths and durations. Each builder records
//! its problems in `Problems` under the key they are about and returns `None` when it
//! cannot build its part.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{
    Cidr, Database, LogFormat, OpsConfig, PgUrl, Problems, RawAdmin, RawLog, RawServer, RawStorage, RawSync,
    RawUpstream, StorageConfig, SyncConfig, UpstreamConfig,
};

pub(super) fn ops_config(
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
    // pingora times out each read of a first request's head after 60 s on its own, so a
    // longer head deadline would never be reached.
    let header_timeout = duration(p, "server.header_timeout", &server.header_timeout).filter(|d| {
        let ok = *d >= Duration::from_secs(1) && *d <= Duration::from_secs(60);
        if !ok {
            p.add("server.header_timeout", "must be between 1s and 60s");
        }
        ok
    });
    let keepalive_timeout = duration(p, "server.keepalive_timeout", &server.keepalive_timeout).filter(|d| {
        let ok = *d <= Duration::from_secs(3600);
        if !ok {
            p.add(
                "server.keepalive_timeout",
                "must be at most 1h (\"0s\" turns keep-alive off)",
            );
        }
        ok
    });
    let websocket_max_lifetime =
        duration(p, "server.websocket_max_lifetime", &server.websocket_max_lifetime).filter(|d| {
            let ok = *d >= Duration::from_secs(1);
            if !ok {
                p.add("server.websocket_max_lifetime", "must be at least 1s");
            }
            ok
        });
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
        header_timeout: header_timeout?,
        keepalive_timeout: keepalive_timeout?,
        websocket_max_lifetime: websocket_max_lifetime?,
        admin_listen,
        log_format: log_format?,
    })
}

pub(super) fn sync_config(p: &mut Problems, raw: RawSync) -> Option<SyncConfig> {
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

pub(super) fn upstream_config(p: &mut Problems, raw: &RawUpstream) -> Option<UpstreamConfig> {
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

pub(super) fn parse_base_url(p: &mut Problems, key: &str, raw: &str, origin_only: bool) -> Option<Url> {
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

/// `storage.database` (or `DATABASE_URL`): a SQLite file (a path, `sqlite:PATH`, `file:PATH`)
/// or a PostgreSQL URL (`postgres://` / `postgresql://`).
pub(super) fn database(p: &mut Problems, key: &str, raw: &str) -> Option<Database> {
    let lower = raw.trim().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return postgres_url(p, key, raw.trim()).map(Database::Postgres);
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .or_else(|| raw.strip_prefix("file:"))
        .unwrap_or(raw);
    if path.is_empty() {
        p.add(key, "must name a SQLite file or a postgres:// URL");
        return None;
    }
    if path.contains("://") {
        p.add(
            key,
            "unsupported database: use a SQLite file (a path or sqlite:PATH) or postgres://user@host/db",
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
    Some(Database::Sqlite(path))
}

/// A PostgreSQL URL with a host and a database name. Problems never quote the URL itself:
/// it may carry the password.
fn postgres_url(p: &mut Problems, key: &str, raw: &str) -> Option<PgUrl> {
    let Ok(url) = Url::parse(raw) else {
        p.add(key, "is not a valid URL (postgres://user:password@host:5432/database)");
        return None;
    };
    let shown = PgUrl::new(&url);
    if url.host_str().is_none_or(str::is_empty) {
        p.add(key, format!("{}: names no host", shown.redacted()));
        return None;
    }
    if url.path().trim_start_matches('/').is_empty() {
        p.add(key, format!("{}: names no database (…/database)", shown.redacted()));
        return None;
    }
    Some(shown)
}

/// `[storage]` without the database itself.
pub(super) fn storage_config(p: &mut Problems, raw: &RawStorage, database: Option<Database>) -> Option<StorageConfig> {
    if raw.max_connections == 0 || raw.max_connections > 1000 {
        p.add("storage.max_connections", "must be between 1 and 1000");
    }
    let connect_timeout = duration(p, "storage.connect_timeout", &raw.connect_timeout);
    let statement_timeout = duration(p, "storage.statement_timeout", &raw.statement_timeout);
    let cache_ttl = duration(p, "storage.cache_ttl", &raw.cache_ttl);
    for (key, d) in [
        ("storage.connect_timeout", connect_timeout),
        ("storage.statement_timeout", statement_timeout),
    ] {
        if d.is_some_and(|d| d < Duration::from_millis(100) || d > Duration::from_secs(300)) {
            p.add(key, "must be between 100ms and 5m");
        }
    }
    if cache_ttl.is_some_and(|d| d < Duration::from_secs(1) || d > Duration::from_secs(3600)) {
        p.add("storage.cache_ttl", "must be between 1s and 1h");
    }
    if raw.cache_capacity < 100 || raw.cache_capacity > 10_000_000 {
        p.add("storage.cache_capacity", "must be between 100 and 10000000");
    }
    Some(StorageConfig {
        database: database?,
        max_connections: raw.max_connections,
        connect_timeout: connect_timeout?,
        statement_timeout: statement_timeout?,
        cache_ttl: cache_ttl?,
        cache_capacity: raw.cache_capacity,
    })
}

pub(super) fn duration(p: &mut Problems, key: &str, raw: &str) -> Option<Duration> {
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
