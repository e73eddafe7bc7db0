//! How the PostgreSQL backend reaches its server: the connection settings derived from the URL
//! and `[storage]`, the TLS choice, the pool, dedicated (unpooled) connections, and how driver
//! and pool errors map onto `StoreError` without ever showing the password.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::config::{PgUrl, StorageConfig};
use crate::store::StoreError;

/// What the config key is called in messages: operators fix `storage.database`, not a URL.
pub(super) const WHAT: &str = "storage.database";

/// The TLS connector every connection uses. Plain TCP for now; TLS is a change of these two
/// lines (e.g. `tokio_postgres_rustls::MakeRustlsConnect` built from the system roots) since
/// the pool and the dedicated LISTEN connection both get their connector from `tls()`.
pub(super) type Tls = tokio_postgres::NoTls;

pub(super) fn tls() -> Tls {
    tokio_postgres::NoTls
}

/// Bounds on how long a dead peer can hold a connection: the kernel gives up on unacknowledged
/// data after `tcp_user_timeout`, and idle connections (the LISTEN one) are probed after
/// `KEEPALIVE_IDLE`. Without them a server that vanished without a RST would hang a query
/// until the OS default (minutes to hours); statement_timeout runs on the server and cannot
/// help there.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const MIN_TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The per-connection settings: the URL's own, plus ours. A URL that does not parse is an
/// `Open` error naming the config key and the redacted URL, never the password.
pub(super) fn pg_config(url: &PgUrl, cfg: &StorageConfig, origin: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg = tokio_postgres::Config::from_str(url.expose()).map_err(|e| StoreError::Open {
        what: WHAT.into(),
        reason: scrub(
            &format!("{} is not a usable PostgreSQL URL: {}", url.redacted(), chain(&e)),
            url_password(url).as_deref().map(str::as_bytes),
        ),
    })?;
    pg.connect_timeout(cfg.connect_timeout);
    pg.tcp_user_timeout(cfg.connect_timeout.max(MIN_TCP_USER_TIMEOUT));
    pg.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    // A startup option rather than a SET after connecting: it holds for every connection the
    // pool or the follower ever opens, with no hook that could be skipped. Appended, so other
    // options from the URL (search_path, TimeZone...) are kept; ours wins for this one.
    let mut options = pg.get_options().map(str::to_owned).unwrap_or_default();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!("-c statement_timeout={}", cfg.statement_timeout.as_millis()));
    // Which store wrote an invalidation (read back with current_setting in the insert): a
    // store's own follower skips them, the writer having updated its caches already.
    options.push_str(&format!(" -c nini_auth.origin={origin}"));
    pg.options(options);
    // An explicit application_name in the URL (several deployments sharing a server) wins.
    if pg.get_application_name().is_none() {
        pg.application_name("nini-auth");
    }
    Ok(pg)
}

pub(super) fn pool(pg: tokio_postgres::Config, cfg: &StorageConfig) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg,
        tls(),
        ManagerConfig {
            // Fast: a connection that is not closed is reused as is. Verified recycling would
            // add a round trip to every checkout; a broken connection fails its first query,
            // which maps to Unavailable, and the pool drops it.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.max_connections.max(1) as usize)
        .wait_timeout(Some(cfg.connect_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Open {
            what: WHAT.into(),
            reason: format!("cannot build the connection pool: {e}"),
        })
}

/// A connection of its own (not from the pool), for LISTEN. tokio-postgres' connect_timeout
/// only covers the TCP connect, so the startup handshake is bounded here too.
pub(super) async fn connect_dedicated(
    pg: &tokio_postgres::Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, TlsStream>,
    ),
    StoreError,
> {
    let limit = pg.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
    match tokio::time::timeout(limit, pg.connect(tls())).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(StoreError::Unavailable(scrub(&chain(&e), pg.get_password()))),
        Err(_) => Err(StoreError::Unavailable(format!("no connection within {limit:?}"))),
    }
}

/// The stream type of a connection made with `Tls` (changes with it).
pub(super) type TlsStream = <Tls as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// A pool checkout failure as the reason given to an operator at start-up.
pub(super) fn describe_pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(TimeoutType::Create) => "no connection within storage.connect_timeout".into(),
        PoolError::Timeout(TimeoutType::Wait) => "no free pooled connection within storage.connect_timeout".into(),
        PoolError::Timeout(TimeoutType::Recycle) => "recycling a pooled connection timed out".into(),
        PoolError::Backend(e) => chain(e),
        PoolError::Closed => "the connection pool is closed".into(),
        PoolError::NoRuntimeSpecified => "the connection pool has no runtime".into(),
        PoolError::PostCreateHook(e) => format!("post-create hook: {e}"),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if is_unavailable(&e) {
            StoreError::Unavailable(chain(&e))
        } else {
            StoreError::backend(e)
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> StoreError {
        match e {
            PoolError::Backend(e) => {
                // Making a new connection failed: whatever the cause (refused, reset, auth
                // after a password rotation, too many clients), the request can only wait.
                StoreError::Unavailable(chain(&e))
            }
            other => StoreError::Unavailable(describe_pool_error(&other)),
        }
    }
}

/// The database is down, restarting, overloaded, or too slow: callers answer 503 and retry;
/// nothing else about the request was wrong.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") // connection exception
            || c.starts_with("53") // insufficient resources (too many connections, disk full, out of memory)
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            // statement_timeout (or a cancel): the server was too slow for this request.
            || *code == SqlState::QUERY_CANCELED;
    }
    // No SQLSTATE: transport failures (reset, timed out, refused) carry an io::Error.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error and its causes on one line: tokio-postgres' own Display stops at "error
/// connecting to server" or "db error", which tells an operator nothing.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Belt and braces for messages that leave the store: no driver message we know of echoes
/// the password, but a future one might, and a password in a log line is a leak.
pub(super) fn scrub(msg: &str, password: Option<&[u8]>) -> String {
    match password
        .and_then(|p| std::str::from_utf8(p).ok())
        .filter(|p| p.len() >= 3)
    {
        Some(p) => msg.replace(p, "***"),
        None => msg.to_string(),
    }
}

fn url_password(url: &PgUrl) -> Option<String> {
    url::Url::parse(url.expose()).ok()?.password().map(str::to_owned)
}

/// A database answer that breaks an invariant the queries rely on (a row that must exist).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Inconsistent(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keeps_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(chain(&Outer(io)), "outer: refused");
    }

    #[test]
    fn scrub_hides_password() {
        assert_eq!(scrub("x sekret y", Some(b"sekret")), "x *** y");
        assert_eq!(scrub("x", None), "x");
    }
}
