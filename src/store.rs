//! The SQLite store: schema and migrations, users with their sealed TikTok tokens, sessions
//! (keyed by the SHA-256 of the cookie value), and single-use login states. Every multi-row
//! change runs in one transaction. Calls are blocking; async callers go through `run`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::crypto::{self, CryptoError, KeyRing};

pub mod admin;
pub mod sync;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored token cannot be opened")]
    Crypto(#[from] CryptoError),
    #[error("database worker failed")]
    Join,
    #[error("too many sign-ins in progress")]
    TooManyPending,
    #[error("database file {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Each entry runs once, in order, inside a transaction; `PRAGMA user_version` records progress.
const MIGRATIONS: &[&str] = &[
    // 1: the NINI data model plus what the login flow needs.
    "CREATE TABLE users (
        id                 TEXT PRIMARY KEY,
        username           TEXT,
        email              TEXT,
        tiktok_id          TEXT NOT NULL UNIQUE,
        tiktok_username    TEXT,
        avatar             TEXT,
        display_name       TEXT,
        access_token       TEXT,
        refresh_token      TEXT,
        token_expires_at   INTEGER,
        refresh_expires_at INTEGER,
        token_scope        TEXT,
        videos             INTEGER NOT NULL DEFAULT 0,
        streak             INTEGER NOT NULL DEFAULT 0,
        earnings           REAL    NOT NULL DEFAULT 0,
        nini_score         INTEGER NOT NULL DEFAULT 0,
        verified           INTEGER NOT NULL DEFAULT 0,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        session_token TEXT PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires       INTEGER NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE INDEX sessions_user_id ON sessions(user_id);
    CREATE INDEX sessions_expires ON sessions(expires);
    CREATE TABLE login_states (
        state_hash    TEXT PRIMARY KEY,
        browser_hash  TEXT NOT NULL,
        pkce_verifier TEXT,
        callback_url  TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        expires       INTEGER NOT NULL
    );
    CREATE INDEX login_states_expires ON login_states(expires);",
    // 2: token lifecycle, TikTok data sync, cross-process cache invalidation.
    "ALTER TABLE users ADD COLUMN token_obtained_at INTEGER;
    ALTER TABLE users ADD COLUMN grant_error TEXT;
    ALTER TABLE users ADD COLUMN bio TEXT;
    ALTER TABLE users ADD COLUMN follower_count INTEGER;
    ALTER TABLE users ADD COLUMN following_count INTEGER;
    ALTER TABLE users ADD COLUMN likes_count INTEGER;
    ALTER TABLE users ADD COLUMN tiktok_video_count INTEGER;
    ALTER TABLE users ADD COLUMN last_synced_at INTEGER;
    CREATE TABLE videos (
        id              TEXT PRIMARY KEY,
        user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        create_time     INTEGER NOT NULL,
        title           TEXT,
        description     TEXT,
        cover_image_url TEXT,
        share_url       TEXT,
        duration        INTEGER,
        view_count      INTEGER,
        like_count      INTEGER,
        comment_count   INTEGER,
        share_count     INTEGER,
        synced_at       INTEGER NOT NULL
    );
    CREATE INDEX videos_user_time ON videos(user_id, create_time DESC);
    -- One refresh per user across processes: whoever holds the lease refreshes.
    CREATE TABLE refresh_leases (
        user_id TEXT PRIMARY KEY,
        holder  TEXT NOT NULL,
        expires INTEGER NOT NULL
    );
    -- Every change that makes a cached session or token stale, so other processes sharing
    -- this file can drop their copies.
    CREATE TABLE cache_invalidations (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id       TEXT,
        session_token TEXT,
        created_at    INTEGER NOT NULL
    );",
];

/// What the proxy needs to know about a signed-in user; cached in memory per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub open_id: String,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub verified: bool,
    pub videos: i64,
    pub streak: i64,
    pub nini_score: i64,
    /// When the session ends (unix seconds).
    pub session_expires: i64,
    /// Set when the TikTok grant died (refresh token expired or revoked): the session no
    /// longer authenticates and `/api/auth/session` reports this next-auth error.
    pub grant_error: Option<String>,
}

/// Profile fields read from TikTok at login.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub open_id: String,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub verified: Option<bool>,
}

/// Plaintext TikTok tokens with absolute expiry times (unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub scope: String,
    /// When TikTok issued this access token: with `access_expires_at`, its lifetime.
    pub obtained_at: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A pending sign-in, stored under the hash of its `state` value.
#[derive(Debug, Clone)]
pub struct LoginState {
    pub browser_hash: String,
    pub pkce_verifier: Option<String>,
    pub callback_url: String,
    pub expires: i64,
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    keys: KeyRing,
}

fn aad(column: &str, user_id: &str) -> String {
    format!("nini-auth:users.{column}:{user_id}")
}

impl Store {
    /// Opens (creating if needed) the database in WAL mode and applies migrations.
    pub fn open(path: &Path, keys: KeyRing) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(open_err(format!("directory {} does not exist", parent.display())));
            }
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        Self::init(conn, keys).map_err(|e| match e {
            StoreError::Sqlite(e) => open_err(e.to_string()),
            other => other,
        })
    }

    fn init(conn: Connection, keys: KeyRing) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Open {
                path: String::new(),
                reason: format!("cannot enable WAL journal mode (got {mode})"),
            });
        }
        // FULL: a commit survives power loss, not just a crash; our write rate is tiny.
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            keys,
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Runs blocking database work off the async executor.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|_| StoreError::Join)?
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A poisoned lock means a panic mid-call; the connection itself is still consistent
        // because every multi-row change is a transaction that rolled back.
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Readiness: the file at `path` is still the database we opened, is writable (by its
    /// mode bits, which hold for root too), and a write transaction commits.
    pub fn ready(&self, path: &Path) -> Result<(), StoreError> {
        let unready = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| unready(e.to_string()))?;
        if !meta.is_file() {
            return Err(unready("not a regular file".into()));
        }
        if meta.permissions().readonly() {
            return Err(unready("file is read-only".into()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let dmeta = std::fs::metadata(dir).map_err(|e| unready(e.to_string()))?;
            if dmeta.permissions().readonly() {
                return Err(unready("directory is read-only (WAL files cannot be created)".into()));
            }
        }
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE refresh_leases SET expires = expires WHERE 0", [])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Moves the WAL's content into the main database file (at shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    /// Unexpired sessions (for the active-sessions gauge).
    pub fn count_sessions(&self, now: i64) -> Result<i64, StoreError> {
        self.with_conn(|c| {
            Ok(
                c.query_row("SELECT count(*) FROM sessions WHERE expires > ?1", params![now], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Readiness: the database answers and accepts a write transaction.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.query_row("SELECT count(*) FROM sessions", [], |r| r.get::<_, i64>(0))?;
            tx.rollback()?;
            Ok(())
        })
    }

    // === login states ===

    /// Stores a pending sign-in. Starting a sign-in needs no session, so the table is bounded:
    /// one browser keeps at most `PER_BROWSER` pending states (the oldest go), and past
    /// `MAX_PENDING` unexpired states in all, new sign-ins are refused until they expire.
    pub fn insert_login_state(&self, state_hash: &str, st: &LoginState, now: i64) -> Result<(), StoreError> {
        const PER_BROWSER: i64 = 10;
        const MAX_PENDING: i64 = 100_000;
        let verifier = match &st.pkce_verifier {
            Some(v) => Some(self.keys.seal(
                v.as_bytes(),
                &format!("nini-auth:login_states.pkce_verifier:{state_hash}"),
            )?),
            None => None,
        };
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let pending: i64 = tx.query_row(
                "SELECT count(*) FROM login_states WHERE expires > ?1",
                params![now],
                |r| r.get(0),
            )?;
            if pending >= MAX_PENDING {
                return Err(StoreError::TooManyPending);
            }
            tx.execute(
                "DELETE FROM login_states WHERE state_hash IN (
                    SELECT state_hash FROM login_states WHERE browser_hash = ?1
                    ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?2)",
                params![st.browser_hash, PER_BROWSER - 1],
            )?;
            tx.execute(
                "INSERT INTO login_states (state_hash, browser_hash, pkce_verifier, callback_url, created_at, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![state_hash, st.browser_hash, verifier, st.callback_url, now, st.expires],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Removes and returns a login state: a state can be used once, whatever happens next.
    pub fn take_login_state(&self, state_hash: &str) -> Result<Option<LoginState>, StoreError> {
        let row = self.with_conn(|c| {
            Ok(c.query_row(
                "DELETE FROM login_states WHERE state_hash = ?1
                 RETURNING browser_hash, pkce_verifier, callback_url, expires",
                params![state_hash],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?)
        })?;
        let Some((browser_hash, sealed, callback_url, expires)) = row else {
            return Ok(None);
        };
        let pkce_verifier = match sealed {
            Some(s) => {
                let plain = self
                    .keys
                    .open(&s, &format!("nini-auth:login_states.pkce_verifier:{state_hash}"))?;
                Some(String::from_utf8(plain).map_err(|_| CryptoError::Malformed)?)
            }
            None => None,
        };
        Ok(Some(LoginState {
            browser_hash,
            pkce_verifier,
            callback_url,
            expires,
        }))
    }

    // === users and sessions ===

    /// One transaction: upsert the user by `open_id`, seal and store the new tokens, drop the
    /// session the browser had before (fixation), and create the new session.
    pub fn complete_login(
        &self,
        profile: &Profile,
        tokens: &Tokens,
        new_session_hash: &str,
        session_expires: i64,
        old_session_hash: Option<&str>,
        now: i64,
    ) -> Result<Identity, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM users WHERE tiktok_id = ?1",
                    params![profile.open_id],
                    |r| r.get(0),
                )
                .optional()?;
            let user_id = match existing {
                Some(id) => id,
                None => {
                    let id = new_user_id()?;
                    tx.execute(
                        "INSERT INTO users (id, tiktok_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                        params![id, profile.open_id, now],
                    )?;
                    id
                }
            };
            // Sessions that ended because the previous grant died stay ended: clearing
            // grant_error below must not bring them back.
            let dead_sessions = tx.execute(
                "DELETE FROM sessions WHERE user_id = ?1
                   AND (SELECT grant_error FROM users WHERE id = ?1) IS NOT NULL",
                params![user_id],
            )?;
            if dead_sessions > 0 {
                invalidate(&tx, Some(&user_id), None, now)?;
            }
            let access = self
                .keys
                .seal(tokens.access_token.as_bytes(), &aad("access_token", &user_id))?;
            let refresh = self
                .keys
                .seal(tokens.refresh_token.as_bytes(), &aad("refresh_token", &user_id))?;
            tx.execute(
                "UPDATE users SET
                    display_name = COALESCE(?2, display_name),
                    tiktok_username = COALESCE(?3, tiktok_username),
                    username = COALESCE(username, ?3),
                    avatar = COALESCE(?4, avatar),
                    verified = COALESCE(?5, verified),
                    access_token = ?6, refresh_token = ?7,
                    token_expires_at = ?8, refresh_expires_at = ?9, token_scope = ?10,
                    token_obtained_at = ?12, grant_error = NULL, updated_at = ?11
                 WHERE id = ?1",
                params![
                    user_id,
                    profile.display_name,
                    profile.username,
                    profile.avatar,
                    profile.verified,
                    access,
                    refresh,
                    tokens.access_expires_at,
                    tokens.refresh_expires_at,
                    tokens.scope,
                    now,
                    tokens.obtained_at
                ],
            )?;
            if let Some(old) = old_session_hash {
                if tx.execute("DELETE FROM sessions WHERE session_token = ?1", params![old])? > 0 {
                    invalidate(&tx, None, Some(old), now)?;
                }
            }
            invalidate(&tx, Some(&user_id), None, now)?;
            tx.execute(
                "INSERT INTO sessions (session_token, user_id, expires, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![new_session_hash, user_id, session_expires, now],
            )?;
            let identity = identity_for(&tx, new_session_hash, now)?;
            tx.commit()?;
            identity.ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
    }

    /// The identity behind a live session, or None (unknown or expired).
    pub fn session_identity(&self, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
        self.with_conn(|c| identity_for(c, session_hash, now))
    }

    /// Deletes a session; returns its user id if it existed.
    pub fn delete_session(&self, session_hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let uid: Option<String> = tx
                .query_row(
                    "DELETE FROM sessions WHERE session_token = ?1 RETURNING user_id",
                    params![session_hash],
                    |r| r.get(0),
                )
                .optional()?;
            if uid.is_some() {
                invalidate(&tx, None, Some(session_hash), now)?;
            }
            tx.commit()?;
            Ok(uid)
        })
    }

    // === token lifecycle ===

    /// Takes the refresh lease for a user unless another holder has an unexpired one.
    pub fn try_lease(&self, user_id: &str, holder: &str, now: i64, ttl: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.execute(
                "INSERT INTO refresh_leases (user_id, holder, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user_id) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
                 WHERE refresh_leases.expires <= ?4 OR refresh_leases.holder = excluded.holder",
                params![user_id, holder, now + ttl, now],
            )?;
            Ok(n == 1)
        })
    }

    pub fn release_lease(&self, user_id: &str, holder: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM refresh_leases WHERE user_id = ?1 AND holder = ?2",
                params![user_id, holder],
            )?;
            Ok(())
        })
    }

    /// Stores the tokens a refresh returned, in one transaction, only if the refresh token we
    /// redeemed is still the stored one (compare-and-swap: a slower holder cannot overwrite a
    /// newer rotation), and releases the lease. Returns whether the tokens were written.
    pub fn save_refreshed(
        &self,
        user_id: &str,
        redeemed_refresh_token: &str,
        new: &Tokens,
        holder: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let access = self
            .keys
            .seal(new.access_token.as_bytes(), &aad("access_token", user_id))?;
        let refresh = self
            .keys
            .seal(new.refresh_token.as_bytes(), &aad("refresh_token", user_id))?;
        let current = self.tokens(user_id)?;
        if current.as_ref().map(|t| t.refresh_token.as_str()) != Some(redeemed_refresh_token) {
            self.release_lease(user_id, holder)?;
            return Ok(false);
        }
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Re-check inside the write lock: the read above was outside it.
            let stored: Option<String> = tx
                .query_row("SELECT refresh_token FROM users WHERE id = ?1", params![user_id], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten();
            let still_ours = match stored {
                Some(sealed) => {
                    let plain = self.keys.open(&sealed, &aad("refresh_token", user_id))?;
                    crate::crypto::ct_eq(&plain, redeemed_refresh_token.as_bytes())
                }
                None => false,
            };
            if still_ours {
                tx.execute(
                    "UPDATE users SET access_token = ?2, refresh_token = ?3, token_expires_at = ?4,
                            refresh_expires_at = ?5, token_scope = ?6, token_obtained_at = ?7,
                            grant_error = NULL, updated_at = ?7
                     WHERE id = ?1",
                    params![
                        user_id,
                        access,
                        refresh,
                        new.access_expires_at,
                        new.refresh_expires_at,
                        new.scope,
                        now
                    ],
                )?;
                invalidate(&tx, Some(user_id), None, now)?;
            }
            tx.execute(
                "DELETE FROM refresh_leases WHERE user_id = ?1 AND holder = ?2",
                params![user_id, holder],
            )?;
            tx.commit()?;
            Ok(still_ours)
        })
    }

    /// The grant is dead at TikTok: forget the tokens and flag the user, so every session of
    /// theirs stops authenticating and reports `error` until they sign in again.
    pub fn mark_grant_dead(&self, user_id: &str, error: &str, now: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                        refresh_expires_at = NULL, grant_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![user_id, error, now],
            )?;
            tx.execute("DELETE FROM refresh_leases WHERE user_id = ?1", params![user_id])?;
            invalidate(&tx, Some(user_id), None, now)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// TikTok says the user removed the app: forget the tokens (already revoked at TikTok)
    /// and end every session of theirs, in one transaction. Returns (user id, sessions ended)
    /// when the user is known.
    pub fn authorization_removed(&self, open_id: &str, now: i64) -> Result<Option<(String, usize)>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let uid: Option<String> = tx
                .query_row("SELECT id FROM users WHERE tiktok_id = ?1", params![open_id], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(uid) = uid else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                        refresh_expires_at = NULL, updated_at = ?2 WHERE id = ?1",
                params![uid, now],
            )?;
            let n = tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![uid])?;
            tx.execute("DELETE FROM refresh_leases WHERE user_id = ?1", params![uid])?;
            invalidate(&tx, Some(&uid), None, now)?;
            tx.commit()?;
            Ok(Some((uid, n)))
        })
    }

    // === cross-process cache invalidation ===

    /// Invalidations after `seq`, oldest first: (seq, user_id, session hash).
    pub fn invalidations_since(&self, seq: i64) -> Result<Vec<Invalidation>, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, user_id, session_token FROM cache_invalidations WHERE seq > ?1 ORDER BY seq LIMIT 10000",
            )?;
            let rows = st.query_map(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The newest invalidation sequence number (0 when none).
    pub fn invalidation_head(&self) -> Result<i64, StoreError> {
        self.with_conn(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM cache_invalidations", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// The user's decrypted TikTok tokens, if any are stored.
    pub fn tokens(&self, user_id: &str) -> Result<Option<Tokens>, StoreError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            i64,
        );
        let row: Option<Row> = self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT access_token, refresh_token, token_expires_at, refresh_expires_at, token_scope,
                        COALESCE(token_obtained_at, updated_at)
                 FROM users WHERE id = ?1",
                params![user_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?)
        })?;
        let Some((Some(a), Some(r), Some(ae), Some(re), scope, obtained_at)) = row else {
            return Ok(None);
        };
        let access = self.keys.open(&a, &aad("access_token", user_id))?;
        let refresh = self.keys.open(&r, &aad("refresh_token", user_id))?;
        Ok(Some(Tokens {
            access_token: String::from_utf8(access).map_err(|_| CryptoError::Malformed)?,
            refresh_token: String::from_utf8(refresh).map_err(|_| CryptoError::Malformed)?,
            access_expires_at: ae,
            refresh_expires_at: re,
            scope: scope.unwrap_or_default(),
            obtained_at,
        }))
    }

    /// Forgets the user's TikTok tokens (after revoke, or when the grant is dead).
    pub fn clear_tokens(&self, user_id: &str, now: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                        refresh_expires_at = NULL, updated_at = ?2 WHERE id = ?1",
                params![user_id, now],
            )?;
            // Other processes must drop their cached access token for this user.
            invalidate(&tx, Some(user_id), None, now)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes expired sessions and login states; returns how many rows went.
    pub fn purge_expired(&self, now: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let s = tx.execute("DELETE FROM sessions WHERE expires <= ?1", params![now])?;
            let l = tx.execute("DELETE FROM login_states WHERE expires <= ?1", params![now])?;
            // Processes poll every second or so; an hour of history is plenty.
            tx.execute(
                "DELETE FROM cache_invalidations WHERE created_at <= ?1",
                params![now - 3600],
            )?;
            tx.execute("DELETE FROM refresh_leases WHERE expires <= ?1", params![now])?;
            tx.commit()?;
            Ok(s + l)
        })
    }
}

/// One row of the invalidation log: (sequence number, user id, session hash).
pub type Invalidation = (i64, Option<String>, Option<String>);

/// Records that cached data for a user and/or a session is stale (same transaction as the
/// change itself).
fn invalidate(c: &Connection, user_id: Option<&str>, session_hash: Option<&str>, now: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO cache_invalidations (user_id, session_token, created_at) VALUES (?1, ?2, ?3)",
        params![user_id, session_hash, now],
    )?;
    Ok(())
}

fn identity_for(c: &Connection, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
    Ok(c.query_row(
        "SELECT u.id, u.tiktok_id, u.display_name, u.username, u.avatar, u.verified,
                u.videos, u.streak, u.nini_score, s.expires, u.grant_error
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.session_token = ?1 AND s.expires > ?2",
        params![session_hash, now],
        |r| {
            Ok(Identity {
                user_id: r.get(0)?,
                open_id: r.get(1)?,
                display_name: r.get(2)?,
                username: r.get(3)?,
                avatar: r.get(4)?,
                verified: r.get::<_, i64>(5)? != 0,
                videos: r.get(6)?,
                streak: r.get(7)?,
                nini_score: r.get(8)?,
                session_expires: r.get(9)?,
                grant_error: r.get(10)?,
            })
        },
    )
    .optional()?)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        // A newer nini-auth wrote this schema; running on it could lose data. Roll forward,
        // or restore the backup taken before the upgrade.
        return Err(StoreError::Open {
            path: String::new(),
            reason: format!(
                "database schema version {version} is newer than this nini-auth knows ({}); use a newer binary",
                MIGRATIONS.len()
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-check inside the write lock: another process may have migrated meanwhile.
        let now_version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now_version > i as i64 {
            tx.rollback()?;
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// Opaque, URL-safe user id: 128 random bits, hex.
fn new_user_id() -> Result<String, CryptoError> {
    Ok(crypto::hex(&crypto::random_bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("t.db"), KeyRing::generate()).expect("open");
        (dir, s)
    }

    fn tokens(n: u32) -> Tokens {
        Tokens {
            access_token: format!("act.access{n}"),
            refresh_token: format!("rft.refresh{n}"),
            access_expires_at: 1000,
            refresh_expires_at: 2000,
            scope: "user.info.basic".into(),
            obtained_at: 10,
        }
    }

    fn profile() -> Profile {
        Profile {
            open_id: "open-1".into(),
            display_name: Some("Ana".into()),
            ..Default::default()
        }
    }

    #[test]
    fn login_upserts_by_open_id_and_replaces_old_session() {
        let (_d, s) = store();
        let a = s
            .complete_login(&profile(), &tokens(1), "h1", 500, None, 10)
            .expect("login");
        let b = s
            .complete_login(&profile(), &tokens(2), "h2", 500, Some("h1"), 20)
            .expect("login");
        assert_eq!(a.user_id, b.user_id);
        assert!(
            s.session_identity("h1", 30).expect("q").is_none(),
            "old session must be gone"
        );
        assert_eq!(
            s.session_identity("h2", 30).expect("q").map(|i| i.open_id),
            Some("open-1".into())
        );
        assert!(s.session_identity("h2", 500).expect("q").is_none(), "expired");
        assert_eq!(s.tokens(&a.user_id).expect("tokens"), Some(tokens(2)));
    }

    #[test]
    fn login_state_is_single_use() {
        let (_d, s) = store();
        let st = LoginState {
            browser_hash: "b".into(),
            pkce_verifier: Some("verifier".into()),
            callback_url: "http://x/".into(),
            expires: 99,
        };
        s.insert_login_state("sh", &st, 1).expect("insert");
        let got = s.take_login_state("sh").expect("take").expect("present");
        assert_eq!(got.pkce_verifier.as_deref(), Some("verifier"));
        assert!(s.take_login_state("sh").expect("take").is_none());
    }

    #[test]
    fn no_plaintext_tokens_on_disk_and_reopen_keeps_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let keys = KeyRing::generate();
        {
            let s = Store::open(&path, keys.clone()).expect("open");
            s.complete_login(&profile(), &tokens(7), "hash7", 500, None, 1)
                .expect("login");
        }
        let s = Store::open(&path, keys).expect("reopen");
        assert!(s.session_identity("hash7", 2).expect("q").is_some());
        drop(s);
        let mut bytes = std::fs::read(&path).expect("read");
        if let Ok(wal) = std::fs::read(dir.path().join("t.db-wal")) {
            bytes.extend(wal);
        }
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("act.access7") && !hay.contains("rft.refresh7"));
    }

    #[test]
    fn wrong_key_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let id = Store::open(&path, KeyRing::generate())
            .expect("open")
            .complete_login(&profile(), &tokens(1), "h", 500, None, 1)
            .expect("login")
            .user_id;
        let other = Store::open(&path, KeyRing::generate()).expect("open");
        assert!(matches!(
            other.tokens(&id),
            Err(StoreError::Crypto(CryptoError::UnknownKey(_)))
        ));
    }

    #[test]
    fn pending_states_per_browser_are_bounded() {
        let (_d, s) = store();
        let st = |b: &str| LoginState {
            browser_hash: b.into(),
            pkce_verifier: None,
            callback_url: "/".into(),
            expires: 1000,
        };
        for i in 0..15 {
            s.insert_login_state(&format!("s{i}"), &st("b1"), i).expect("insert");
        }
        s.insert_login_state("other", &st("b2"), 20).expect("insert");
        assert!(s.take_login_state("s0").expect("take").is_none(), "oldest evicted");
        assert!(s.take_login_state("s4").expect("take").is_none());
        assert!(s.take_login_state("s5").expect("take").is_some(), "newest ten kept");
        assert!(s.take_login_state("s14").expect("take").is_some());
        assert!(
            s.take_login_state("other").expect("take").is_some(),
            "other browsers untouched"
        );
    }

    #[test]
    fn purge_removes_expired_rows() {
        let (_d, s) = store();
        s.complete_login(&profile(), &tokens(1), "h", 50, None, 1)
            .expect("login");
        let st = LoginState {
            browser_hash: "b".into(),
            pkce_verifier: None,
            callback_url: "/".into(),
            expires: 40,
        };
        s.insert_login_state("st", &st, 1).expect("insert");
        assert_eq!(s.purge_expired(60).expect("purge"), 2);
    }
}
