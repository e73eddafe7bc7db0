//! Owns persistence: the `Store` trait every caller goes through (users, sessions, used
//! sign-in states, sealed tokens with compare-and-swap, per-user locks, invalidations, shared
//! rate limits, sync data, operator queries, `migrate-store` copies), the domain types it
//! speaks (`model`), the in-memory session cache (`cache`), and its two backends: `sqlite`
//! (embedded, the default) and `postgres` (many replicas). No SQL exists outside the
//! backends, and no backend type leaks through the trait.

pub mod cache;
pub mod model;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{Database, StorageConfig};
use crate::crypto::{CryptoError, KeyRing};
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: callers answer 503 and
    /// try again later; nothing was changed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed for another reason (constraint, bug, corrupt file).
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored token cannot be opened")]
    Crypto(#[from] CryptoError),
    #[error("database worker failed")]
    Join,
    #[error("{what}: {reason}")]
    Open { what: String, reason: String },
    #[error(
        "database schema version {found} is newer than this nini-auth knows ({known}); \
         run a newer binary (or restore the backup taken before the upgrade)"
    )]
    SchemaTooNew { found: i64, known: i64 },
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(e))
    }

    /// True when the failure says nothing about the request: the database is down or slow.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Join)
    }
}

/// Called for every invalidation a follower sees (including this process's own).
pub type InvalidationSink = Arc<dyn Fn(&Invalidation) + Send + Sync>;

/// A per-user lock (`Store::try_lock_user`). Release it explicitly; a lock that is merely
/// dropped is still given up (PostgreSQL: its connection is closed; SQLite: the lease row is
/// deleted in the background, or expires).
pub struct UserLock(Box<dyn HeldLock>);

impl UserLock {
    pub fn new(inner: Box<dyn HeldLock>) -> UserLock {
        UserLock(inner)
    }

    pub async fn release(self) {
        self.0.release().await
    }
}

#[async_trait]
pub trait HeldLock: Send + Sync {
    async fn release(self: Box<Self>);
}

/// A fixed-window rate counter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHit {
    /// Hits in the current window, this one included.
    pub count: u32,
    /// Seconds until the window ends.
    pub resets_in: u64,
}

/// Everything nini-auth does with its database. Both backends pass the same conformance
/// suite (tests/e2e/store_conformance.rs). Times are unix seconds from the caller's clock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    fn keys(&self) -> &KeyRing;

    // === health ===

    /// Readiness: answers a read within `deadline` (never takes a write lock).
    async fn ping(&self, deadline: Duration) -> Result<(), StoreError>;
    /// Called once at shutdown, after the last request (SQLite folds its WAL back).
    async fn close(&self) -> Result<(), StoreError>;

    // === sign-in ===

    /// Records that the sign-in state with this hash was used; false when it already was (a
    /// replay). The record is kept until `expires` (then `purge_expired` drops it).
    async fn consume_state(&self, state_hash: &str, expires: i64) -> Result<bool, StoreError>;
    /// One transaction: upsert the user by open_id, seal and store the new tokens, end the
    /// sessions whose grant had died, drop the session the browser had before, create the
    /// new session; returns its identity.
    async fn complete_login(&self, login: NewLogin<'_>) -> Result<Identity, StoreError>;

    // === sessions ===

    /// The identity behind a live session, or None (unknown or expired). Read-only.
    async fn session_identity(&self, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError>;
    /// Deletes one session; returns its user and how many live sessions they have left.
    async fn end_session(&self, session_hash: &str, now: i64) -> Result<Option<EndedSession>, StoreError>;
    /// Deletes one session of `user_id` by its id (devices page); false when no such session.
    async fn end_session_by_id(&self, user_id: &str, session_id: &str, now: i64) -> Result<bool, StoreError>;
    /// Deletes every session of the user but `keep` (a session hash); returns how many ended.
    async fn end_user_sessions(&self, user_id: &str, keep: Option<&str>, now: i64) -> Result<usize, StoreError>;
    /// The user's live sessions, newest first.
    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError>;
    /// Records when sessions (by hash) were last seen; a batch, written off the hot path.
    async fn touch_sessions(&self, seen: &[(String, i64)]) -> Result<(), StoreError>;
    /// Unexpired sessions (the active-sessions gauge).
    async fn count_sessions(&self, now: i64) -> Result<i64, StoreError>;
    /// Deletes expired sessions and used-state records, and old invalidations and leases.
    async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError>;

    // === tokens ===

    /// The user's decrypted TikTok tokens, if any are stored.
    async fn tokens(&self, user_id: &str) -> Result<Option<Tokens>, StoreError>;
    /// Takes the user's lock for `purpose` unless someone (any process) holds it. `ttl`
    /// bounds how long a holder that vanished without releasing keeps others out, where the
    /// backend cannot tell on its own (SQLite lease rows; PostgreSQL ends a dead holder's
    /// lock with its connection).
    async fn try_lock_user(
        &self,
        purpose: LockPurpose,
        user_id: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<UserLock>, StoreError>;
    /// Stores a refresh's result only if `redeemed` is still the stored refresh token
    /// (compare-and-swap); returns whether it was written.
    async fn save_refreshed(&self, user_id: &str, redeemed: &str, new: &Tokens, now: i64) -> Result<bool, StoreError>;
    /// Forgets the user's tokens only if the stored refresh token is still `read` (so a
    /// sign-in on another device that stored new tokens meanwhile keeps them).
    async fn clear_tokens(&self, user_id: &str, read: &str, now: i64) -> Result<bool, StoreError>;
    /// The grant is dead at TikTok: forget the tokens and flag the user so every session of
    /// theirs reports `error`, only if the stored refresh token is still `dead` (None: only
    /// if no tokens are stored). Returns whether the user was marked.
    async fn mark_grant_dead(
        &self,
        user_id: &str,
        dead: Option<&str>,
        error: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// TikTok says the user removed the app: forget the tokens and end every session of
    /// theirs. Returns (user id, sessions ended) when the user is known.
    async fn authorization_removed(&self, open_id: &str, now: i64) -> Result<Option<(String, usize)>, StoreError>;

    // === invalidations ===

    /// Follows the invalidations every process records (revocations, dead grants, syncs,
    /// sign-ins), calling `sink` for each, until `stop` turns true. Survives the database
    /// going away and coming back.
    async fn follow_invalidations(&self, sink: InvalidationSink, stop: tokio::sync::watch::Receiver<bool>);

    // === shared limits ===

    /// Counts one hit for `key` in the fixed window of `window` seconds containing `now`.
    /// PostgreSQL shares the count between replicas; SQLite counts in this process.
    async fn rate_hit(&self, key: &str, window: u64, now: i64) -> Result<RateHit, StoreError>;
    /// The count for `key` in the current window, without adding a hit.
    async fn rate_peek(&self, key: &str, window: u64, now: i64) -> Result<u32, StoreError>;

    // === sync ===

    /// Stores one sync's result in one transaction (absent profile fields keep their value;
    /// a video set replaces the stored one and sets `videos` and `streak`); None when the
    /// user no longer exists.
    async fn save_sync(
        &self,
        user_id: &str,
        profile: &SyncedProfile,
        videos: Option<VideoSet<'_>>,
        now: i64,
    ) -> Result<Option<UserProfile>, StoreError>;
    async fn user_profile(&self, user_id: &str) -> Result<Option<UserProfile>, StoreError>;
    async fn last_synced_at(&self, user_id: &str) -> Result<Option<i64>, StoreError>;
    /// Up to `limit` videos, newest first, strictly after `before` = (create_time, id) of
    /// the previous page's last video; and how many are stored.
    async fn user_videos(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<(i64, &str)>,
    ) -> Result<(Vec<StoredVideo>, i64), StoreError>;
    /// Of `candidates`, up to `limit` users that still hold tokens and were never synced or
    /// last synced before `synced_before`, least recently synced first.
    async fn due_for_sync(
        &self,
        candidates: &[String],
        synced_before: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    // === operator ===

    async fn admin_users(&self, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError>;
    /// One user by internal id or TikTok open_id (the id wins if both would match).
    async fn admin_user(&self, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError>;
    async fn admin_sessions(&self, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError>;
    /// Deletes the sessions in scope and records an invalidation per user, in one transaction.
    async fn revoke_sessions(&self, scope: RevokeScope<'_>, now: i64) -> Result<Revoked, StoreError>;
    /// Re-seals every stored token under the primary key, in small committed batches; values
    /// already under it are skipped, unreadable rows are counted and left alone.
    async fn rotate_keys(&self) -> Result<RotateReport, StoreError>;

    // === migrate-store ===

    /// Up to `limit` records of `kind` with keys greater than `after`, in key order.
    async fn export(&self, kind: RecordKind, after: &str, limit: usize) -> Result<Vec<Record>, StoreError>;
    /// Upserts records by key in one transaction; running it twice gives the same result.
    async fn import(&self, records: &[Record]) -> Result<ImportCounts, StoreError>;
}

/// Opens the configured backend, creating or migrating its schema.
pub async fn open(cfg: &StorageConfig, keys: KeyRing) -> Result<Arc<dyn Store>, StoreError> {
    match &cfg.database {
        Database::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path, cfg, keys).await?)),
        Database::Postgres(url) => Ok(Arc::new(postgres::PgStore::open(url, cfg, keys).await?)),
    }
}

// === sealing, shared by both backends ===

/// Binds a sealed token to its column and user: a ciphertext copied to another row or
/// column fails to open.
pub(crate) fn aad(column: &str, user_id: &str) -> String {
    format!("nini-auth:users.{column}:{user_id}")
}

pub(crate) struct SealedTokens {
    pub access: String,
    pub refresh: String,
}

pub(crate) fn seal_tokens(keys: &KeyRing, user_id: &str, t: &Tokens) -> Result<SealedTokens, StoreError> {
    Ok(SealedTokens {
        access: keys.seal(t.access_token.as_bytes(), &aad("access_token", user_id))?,
        refresh: keys.seal(t.refresh_token.as_bytes(), &aad("refresh_token", user_id))?,
    })
}

pub(crate) fn open_token(keys: &KeyRing, column: &str, user_id: &str, sealed: &str) -> Result<String, StoreError> {
    let plain = keys.open(sealed, &aad(column, user_id))?;
    Ok(String::from_utf8(plain).map_err(|_| CryptoError::Malformed)?)
}

/// Whether the sealed refresh token opens to `expected` (compare-and-swap checks).
pub(crate) fn sealed_refresh_is(keys: &KeyRing, user_id: &str, sealed: Option<&str>, expected: Option<&str>) -> bool {
    match (sealed, expected) {
        (None, None) => true,
        (Some(s), Some(e)) => keys
            .open(s, &aad("refresh_token", user_id))
            .is_ok_and(|plain| crate::crypto::ct_eq(&plain, e.as_bytes())),
        _ => false,
    }
}

/// Opens with whichever key of the ring the value names and seals again with the primary.
pub(crate) fn reseal(keys: &KeyRing, sealed: &str, aad: &str) -> Result<String, CryptoError> {
    keys.seal(&keys.open(sealed, aad)?, aad)
}

/// Re-sealed access and refresh tokens (either may be absent).
pub(crate) type SealedPair = (Option<String>, Option<String>);

/// A user's two sealed tokens re-sealed under the primary key in the current format, or
/// None when both already are (only the ids are compared: opening every current value would
/// make a re-run as slow as the first run); an error when a value does not open.
pub(crate) fn reseal_pair(
    keys: &KeyRing,
    user_id: &str,
    access: Option<&str>,
    refresh: Option<&str>,
) -> Result<Option<SealedPair>, CryptoError> {
    let values = [("access_token", access), ("refresh_token", refresh)];
    if values.iter().all(|(_, v)| v.is_none_or(|s| keys.is_current(s))) {
        return Ok(None);
    }
    let mut out = values
        .iter()
        .map(|(col, v)| v.map(|s| reseal(keys, s, &aad(col, user_id))).transpose());
    let a = out.next().transpose()?.flatten();
    let r = out.next().transpose()?.flatten();
    Ok(Some((a, r)))
}

/// Opaque, URL-safe id for users and sessions: 128 random bits, hex.
pub(crate) fn new_id() -> Result<String, CryptoError> {
    Ok(crate::crypto::hex(&crate::crypto::random_bytes::<16>()?))
}

/// Rows re-sealed per write transaction by `rotate_keys`: small enough that a running sidecar
/// never waits long, large enough that a big table is not one commit per row.
pub(crate) const ROTATE_BATCH: usize = 100;

/// How long used sign-in states, invalidations and rate windows are kept.
pub(crate) const INVALIDATION_RETENTION_SECS: i64 = 3600;
