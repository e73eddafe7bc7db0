//! SQLite statements for sign-in, sessions, tokens, locks and invalidations. Every function
//! that changes more than one row does it in one transaction, together with the
//! invalidation record other processes follow.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::crypto::KeyRing;
use crate::store::{
    new_id, open_token, seal_tokens, sealed_refresh_is, DeviceSession, EndedSession, Identity, Invalidation,
    LockPurpose, NewLogin, Profile, Purged, StoreError, Tokens, INVALIDATION_RETENTION_SECS,
};

/// `NewLogin` with owned fields, to cross into a blocking task.
pub struct OwnedLogin {
    profile: Profile,
    tokens: Tokens,
    session_hash: String,
    session_expires: i64,
    replaces: Option<String>,
    device: Option<String>,
    now: i64,
}

impl From<NewLogin<'_>> for OwnedLogin {
    fn from(l: NewLogin<'_>) -> OwnedLogin {
        OwnedLogin {
            profile: l.profile.clone(),
            tokens: l.tokens.clone(),
            session_hash: l.session_hash.to_string(),
            session_expires: l.session_expires,
            replaces: l.replaces.map(str::to_string),
            device: l.device.map(str::to_string),
            now: l.now,
        }
    }
}

/// Records that cached data for a user and/or a session is stale (same transaction as the
/// change itself).
pub fn invalidate(
    c: &Connection,
    user_id: Option<&str>,
    session_hash: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    c.prepare_cached("INSERT INTO cache_invalidations (user_id, session_token, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![user_id, session_hash, now])?;
    Ok(())
}

pub fn invalidation_head(c: &Connection) -> Result<i64, StoreError> {
    Ok(
        c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM cache_invalidations")?
            .query_row([], |r| r.get(0))?,
    )
}

/// Invalidations after `seq` written by other stores than `origin`, oldest first, with the
/// last seq read (which moves on past skipped rows too).
pub fn invalidations_since(
    c: &Connection,
    seq: i64,
    origin: &str,
) -> Result<Vec<(i64, Option<Invalidation>)>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT seq, user_id, session_token, origin IS ?2 FROM cache_invalidations WHERE seq > ?1 ORDER BY seq LIMIT 10000",
    )?;
    let rows = st.query_map(params![seq, origin], |r| {
        let ours: bool = r.get(3)?;
        let inv = Invalidation {
            user_id: r.get(1)?,
            session_hash: r.get(2)?,
        };
        Ok((r.get(0)?, (!ours).then_some(inv)))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A write that leaves nothing behind but goes through the journal like any other: whether
/// writes work again after a storage failure.
pub fn write_probe(c: &mut Connection) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT OR REPLACE INTO used_states (state_hash, expires) VALUES ('nini-auth:readiness-probe', 0)",
        [],
    )?;
    tx.execute(
        "DELETE FROM used_states WHERE state_hash = 'nini-auth:readiness-probe'",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn consume_state(c: &Connection, state_hash: &str, expires: i64) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached("INSERT OR IGNORE INTO used_states (state_hash, expires) VALUES (?1, ?2)")?
        .execute(params![state_hash, expires])?;
    Ok(n == 1)
}

const IDENTITY_SQL: &str = "SELECT u.id, s.id, u.tiktok_id, u.display_name, u.username, u.avatar, u.verified,
        u.videos, u.streak, u.nini_score, u.follower_count, s.expires, u.grant_error
     FROM sessions s JOIN users u ON u.id = s.user_id
     WHERE s.session_token = ?1 AND s.expires > ?2";

pub fn identity_for(c: &Connection, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
    Ok(c.prepare_cached(IDENTITY_SQL)?
        .query_row(params![session_hash, now], |r| {
            Ok(Identity {
                user_id: r.get(0)?,
                session_id: r.get(1)?,
                open_id: r.get(2)?,
                display_name: r.get(3)?,
                username: r.get(4)?,
                avatar: r.get(5)?,
                verified: r.get::<_, i64>(6)? != 0,
                videos: r.get(7)?,
                streak: r.get(8)?,
                nini_score: r.get(9)?,
                follower_count: r.get(10)?,
                session_expires: r.get(11)?,
                grant_error: r.get(12)?,
                derived: Default::default(),
            })
        })
        .optional()?)
}

pub fn complete_login(c: &mut Connection, keys: &KeyRing, l: &OwnedLogin) -> Result<Identity, StoreError> {
    let now = l.now;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<String> = tx
        .prepare_cached("SELECT id FROM users WHERE tiktok_id = ?1")?
        .query_row(params![l.profile.open_id], |r| r.get(0))
        .optional()?;
    let user_id = match existing {
        Some(id) => id,
        None => {
            let id = new_id()?;
            tx.prepare_cached("INSERT INTO users (id, tiktok_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)")?
                .execute(params![id, l.profile.open_id, now])?;
            id
        }
    };
    // Sessions that ended because the previous grant died stay ended: clearing grant_error
    // below must not bring them back.
    // Asked first, as on PostgreSQL: folded into the DELETE, the condition was evaluated for
    // every session of the user, so an account with many sessions signed in ever slower.
    let grant_dead: bool = tx
        .prepare_cached("SELECT grant_error IS NOT NULL FROM users WHERE id = ?1")?
        .query_row(params![user_id], |r| r.get(0))?;
    let dead_sessions = if grant_dead {
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![user_id])?
    } else {
        0
    };
    if dead_sessions > 0 {
        invalidate(&tx, Some(&user_id), None, now)?;
    }
    let sealed = seal_tokens(keys, &user_id, &l.tokens)?;
    let p = &l.profile;
    tx.prepare_cached(
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
    )?
    .execute(params![
        user_id,
        p.display_name,
        p.username,
        p.avatar,
        p.verified,
        sealed.access,
        sealed.refresh,
        l.tokens.access_expires_at,
        l.tokens.refresh_expires_at,
        l.tokens.scope,
        now,
        l.tokens.obtained_at
    ])?;
    if let Some(old) = &l.replaces {
        if tx.execute("DELETE FROM sessions WHERE session_token = ?1", params![old])? > 0 {
            invalidate(&tx, None, Some(old), now)?;
        }
    }
    invalidate(&tx, Some(&user_id), None, now)?;
    tx.prepare_cached(
        "INSERT INTO sessions (id, session_token, user_id, expires, created_at, last_seen_at, device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
    )?
    .execute(params![
        new_id()?,
        l.session_hash,
        user_id,
        l.session_expires,
        now,
        l.device
    ])?;
    let identity = identity_for(&tx, &l.session_hash, now)?;
    tx.commit()?;
    identity.ok_or_else(|| StoreError::backend(rusqlite::Error::QueryReturnedNoRows))
}

fn live_sessions_of(c: &Connection, user_id: &str, now: i64) -> Result<i64, StoreError> {
    Ok(
        c.prepare_cached("SELECT count(*) FROM sessions WHERE user_id = ?1 AND expires > ?2")?
            .query_row(params![user_id, now], |r| r.get(0))?,
    )
}

pub fn end_session(c: &mut Connection, session_hash: &str, now: i64) -> Result<Option<EndedSession>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let uid: Option<String> = tx
        .prepare_cached("DELETE FROM sessions WHERE session_token = ?1 RETURNING user_id")?
        .query_row(params![session_hash], |r| r.get(0))
        .optional()?;
    let Some(user_id) = uid else {
        return Ok(None);
    };
    invalidate(&tx, None, Some(session_hash), now)?;
    let remaining = live_sessions_of(&tx, &user_id, now)?;
    tx.commit()?;
    Ok(Some(EndedSession { user_id, remaining }))
}

pub fn end_session_by_id(c: &mut Connection, user_id: &str, session_id: &str, now: i64) -> Result<bool, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let hash: Option<String> = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND user_id = ?2 RETURNING session_token")?
        .query_row(params![session_id, user_id], |r| r.get(0))
        .optional()?;
    if let Some(h) = &hash {
        invalidate(&tx, None, Some(h), now)?;
    }
    tx.commit()?;
    Ok(hash.is_some())
}

pub fn end_user_sessions(c: &mut Connection, user_id: &str, keep: Option<&str>, now: i64) -> Result<usize, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let hashes: Vec<String> = {
        let mut st = tx.prepare_cached(
            "DELETE FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR session_token <> ?2) RETURNING session_token",
        )?;
        let rows = st.query_map(params![user_id, keep], |r| r.get(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    for h in &hashes {
        invalidate(&tx, None, Some(h), now)?;
    }
    tx.commit()?;
    Ok(hashes.len())
}

pub fn user_sessions(c: &Connection, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT id, created_at, last_seen_at, device, expires FROM sessions
         WHERE user_id = ?1 AND expires > ?2 ORDER BY created_at DESC, id",
    )?;
    let rows = st.query_map(params![user_id, now], |r| {
        Ok(DeviceSession {
            id: r.get(0)?,
            created_at: r.get(1)?,
            last_seen_at: r.get(2)?,
            device: r.get(3)?,
            expires: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn touch_sessions(c: &mut Connection, seen: &[(String, i64)]) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "UPDATE sessions SET last_seen_at = ?2 WHERE session_token = ?1 AND COALESCE(last_seen_at, 0) < ?2",
        )?;
        for (hash, at) in seen {
            st.execute(params![hash, at])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub fn purge_expired(c: &mut Connection, now: i64) -> Result<Purged, StoreError> {
    let tx = c.transaction()?;
    let sessions = tx.execute("DELETE FROM sessions WHERE expires <= ?1", params![now])?;
    let states = tx.execute("DELETE FROM used_states WHERE expires <= ?1", params![now])?;
    // Processes poll several times a second; an hour of history is plenty.
    tx.execute(
        "DELETE FROM cache_invalidations WHERE created_at <= ?1",
        params![now - INVALIDATION_RETENTION_SECS],
    )?;
    tx.execute("DELETE FROM user_locks WHERE expires <= ?1", params![now])?;
    tx.commit()?;
    Ok(Purged { sessions, states })
}

type TokenRow = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
);

pub fn tokens(c: &Connection, keys: &KeyRing, user_id: &str) -> Result<Option<Tokens>, StoreError> {
    let row: Option<TokenRow> = c
        .prepare_cached(
            "SELECT access_token, refresh_token, token_expires_at, refresh_expires_at, token_scope,
                    COALESCE(token_obtained_at, updated_at)
             FROM users WHERE id = ?1",
        )?
        .query_row(params![user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    let Some((Some(a), Some(r), Some(ae), Some(re), scope, obtained_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Tokens {
        access_token: open_token(keys, "access_token", user_id, &a)?,
        refresh_token: open_token(keys, "refresh_token", user_id, &r)?,
        access_expires_at: ae,
        refresh_expires_at: re,
        scope: scope.unwrap_or_default(),
        obtained_at,
    }))
}

/// Takes the lease unless another holder has an unexpired one.
pub fn try_lock(
    c: &Connection,
    purpose: LockPurpose,
    user_id: &str,
    holder: &str,
    now: i64,
    ttl: i64,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "INSERT INTO user_locks (purpose, user_id, holder, expires) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(purpose, user_id) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE user_locks.expires <= ?5",
        )?
        .execute(params![purpose.as_str(), user_id, holder, now + ttl, now])?;
    Ok(n == 1)
}

pub fn release_lock(c: &Connection, purpose: LockPurpose, user_id: &str, holder: &str) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM user_locks WHERE purpose = ?1 AND user_id = ?2 AND holder = ?3")?
        .execute(params![purpose.as_str(), user_id, holder])?;
    Ok(())
}

fn stored_refresh(c: &Connection, user_id: &str) -> Result<Option<Option<String>>, StoreError> {
    Ok(c.prepare_cached("SELECT refresh_token FROM users WHERE id = ?1")?
        .query_row(params![user_id], |r| r.get(0))
        .optional()?)
}

pub fn save_refreshed(
    c: &mut Connection,
    keys: &KeyRing,
    user_id: &str,
    redeemed: &str,
    new: &Tokens,
    now: i64,
) -> Result<bool, StoreError> {
    let sealed = seal_tokens(keys, user_id, new)?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Compared inside the write lock: a slower refresher cannot overwrite a newer rotation.
    let stored = stored_refresh(&tx, user_id)?.flatten();
    if !sealed_refresh_is(keys, user_id, stored.as_deref(), Some(redeemed)) {
        return Ok(false);
    }
    tx.prepare_cached(
        "UPDATE users SET access_token = ?2, refresh_token = ?3, token_expires_at = ?4,
                refresh_expires_at = ?5, token_scope = ?6, token_obtained_at = ?7,
                grant_error = NULL, updated_at = ?8
         WHERE id = ?1",
    )?
    .execute(params![
        user_id,
        sealed.access,
        sealed.refresh,
        new.access_expires_at,
        new.refresh_expires_at,
        new.scope,
        new.obtained_at,
        now
    ])?;
    invalidate(&tx, Some(user_id), None, now)?;
    tx.commit()?;
    Ok(true)
}

/// Forgets the user's tokens if the stored refresh token is still `expected`; with `error`,
/// also flags the grant as dead (every session of the user stops authenticating).
pub fn clear_tokens(
    c: &mut Connection,
    keys: &KeyRing,
    user_id: &str,
    expected: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(stored) = stored_refresh(&tx, user_id)? else {
        return Ok(false);
    };
    if !sealed_refresh_is(keys, user_id, stored.as_deref(), expected) {
        return Ok(false);
    }
    tx.prepare_cached(
        "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                refresh_expires_at = NULL, grant_error = COALESCE(?2, grant_error), updated_at = ?3
         WHERE id = ?1",
    )?
    .execute(params![user_id, error, now])?;
    // Other processes must drop their cached access token (and, for a dead grant, sessions).
    invalidate(&tx, Some(user_id), None, now)?;
    tx.commit()?;
    Ok(true)
}

pub fn authorization_removed(
    c: &mut Connection,
    open_id: &str,
    now: i64,
) -> Result<Option<(String, usize)>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let uid: Option<String> = tx
        .prepare_cached("SELECT id FROM users WHERE tiktok_id = ?1")?
        .query_row(params![open_id], |r| r.get(0))
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
    invalidate(&tx, Some(&uid), None, now)?;
    tx.commit()?;
    Ok(Some((uid, n)))
}
