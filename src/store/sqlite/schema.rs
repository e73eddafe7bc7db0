//! The SQLite schema as numbered migrations, applied at open under SQLite's write lock
//! (`BEGIN IMMEDIATE`), which is what serialises several processes opening one file.
//! `PRAGMA user_version` records progress; a newer version than we know is refused.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Each entry runs once, in order, inside a transaction.
pub const MIGRATIONS: &[&str] = &[
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
    CREATE TABLE refresh_leases (
        user_id TEXT PRIMARY KEY,
        holder  TEXT NOT NULL,
        expires INTEGER NOT NULL
    );
    CREATE TABLE cache_invalidations (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id       TEXT,
        session_token TEXT,
        created_at    INTEGER NOT NULL
    );",
    // 3: sign-in state moves into a sealed cookie (only used states are recorded, so
    // starting sign-ins no longer writes rows anyone can fill); sessions get an id, the
    // device and last activity (devices list); per-user locks for refresh and sync.
    "DROP TABLE login_states;
    CREATE TABLE used_states (
        state_hash TEXT PRIMARY KEY,
        expires    INTEGER NOT NULL
    );
    CREATE INDEX used_states_expires ON used_states(expires);
    ALTER TABLE sessions ADD COLUMN id TEXT;
    UPDATE sessions SET id = lower(hex(randomblob(16))) WHERE id IS NULL;
    CREATE UNIQUE INDEX sessions_id ON sessions(id);
    ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER;
    ALTER TABLE sessions ADD COLUMN device TEXT;
    DROP TABLE refresh_leases;
    -- Which store (process) wrote an invalidation: its own follower skips it.
    ALTER TABLE cache_invalidations ADD COLUMN origin TEXT;
    CREATE TABLE user_locks (
        purpose TEXT NOT NULL,
        user_id TEXT NOT NULL,
        holder  TEXT NOT NULL,
        expires INTEGER NOT NULL,
        PRIMARY KEY (purpose, user_id)
    );",
];

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::SchemaTooNew { found: version, known });
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
