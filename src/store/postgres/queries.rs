//! PostgreSQL statements for sign-in, sessions, tokens, used states, rate windows and the
//! invalidation records. Every function that changes more than one row does it in one
//! transaction, together with the invalidation record (and its NOTIFY) other replicas follow,
//! in the same places as the SQLite backend.
//!
//! Per-user session lookups: the Prisma `sessions` table has no index on `user_id` (adding
//! one would change what `prisma db pull` shows), so hot per-user reads (the devices list,
//! the remaining count after a sign-out) go through `nini_auth.session_meta.user_id`, which
//! nini-auth writes with every session it creates. Deletions that must not miss a session
//! (revocations, a dead grant, the app being deauthorised) filter `sessions.user_id` itself:
//! a session another program inserted without a meta row still ends, at the price of a
//! sequential scan on those rare paths.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::error::SqlState;

use super::connect::Inconsistent;
use super::sql::{count, execute, query, query_one, query_opt};
use crate::crypto::KeyRing;
use crate::store::{
    new_id, open_token, seal_tokens, sealed_refresh_is, DeviceSession, EndedSession, Identity, NewLogin, Profile,
    Purged, StoreError, Tokens, INVALIDATION_RETENTION_SECS,
};

/// The channel invalidations are announced on (payload: see `record_invalidations`).
pub(super) const CHANNEL: &str = "nini_auth_invalidations";

/// `NewLogin` with owned fields, to move into a task on the database runtime.
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

/// Records that cached data for a user and/or a session is stale, in the caller's
/// transaction, and announces it: NOTIFY is transactional, so followers hear of it exactly
/// when the change commits (and never of a change that rolled back).
pub async fn invalidate(
    c: &impl GenericClient,
    user_id: Option<&str>,
    session_hash: Option<&str>,
) -> Result<(), StoreError> {
    record_invalidations(c, &[user_id], &[session_hash]).await
}

/// One invalidation per session hash (a user's sessions ending together).
pub async fn invalidate_sessions(c: &impl GenericClient, hashes: &[String]) -> Result<(), StoreError> {
    let sessions: Vec<Option<&str>> = hashes.iter().map(|h| Some(h.as_str())).collect();
    record_invalidations(c, &vec![None; sessions.len()], &sessions).await
}

/// One invalidation per user.
pub async fn invalidate_users(c: &impl GenericClient, users: &[String]) -> Result<(), StoreError> {
    let us: Vec<Option<&str>> = users.iter().map(|u| Some(u.as_str())).collect();
    record_invalidations(c, &us, &vec![None; us.len()]).await
}

/// Inserts the rows (in order) and NOTIFYs one payload per row: `{"seq":..,"u":..,"s":..}`.
/// The seq lets a follower skip what its backstop poll already delivered.
async fn record_invalidations(
    c: &impl GenericClient,
    users: &[Option<&str>],
    sessions: &[Option<&str>],
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    execute(
        c,
        "WITH ins AS (
            INSERT INTO nini_auth.invalidations (user_id, session_token, origin)
            SELECT u, s, current_setting('nini_auth.origin', true)
            FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(u, s, n) ORDER BY n
            RETURNING seq, user_id, session_token, origin
         )
         SELECT pg_notify('nini_auth_invalidations',
                          json_build_object('seq', seq, 'u', user_id, 's', session_token, 'o', origin)::text)
         FROM ins",
        &[&users, &sessions],
    )
    .await?;
    Ok(())
}

pub async fn consume_state(c: &impl GenericClient, state_hash: &str, expires: i64) -> Result<bool, StoreError> {
    let n = execute(
        c,
        "INSERT INTO nini_auth.used_states (state_hash, expires) VALUES ($1, $2::bigint) ON CONFLICT DO NOTHING",
        &[&state_hash, &expires],
    )
    .await?;
    Ok(n == 1)
}

const IDENTITY_SQL: &str = "SELECT u.id, s.id, u.tiktok_id, u.display_name, u.username, u.avatar, u.verified,
        u.videos::bigint, u.streak::bigint, u.nini_score::bigint, st.follower_count,
        floor(extract(epoch FROM s.expires))::bigint, st.grant_error
     FROM sessions s
     JOIN users u ON u.id = s.user_id
     LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
     WHERE s.session_token = $1 AND s.expires >= (to_timestamp($2::bigint + 1) AT TIME ZONE 'UTC')";

pub async fn identity_for(
    c: &impl GenericClient,
    session_hash: &str,
    now: i64,
) -> Result<Option<Identity>, StoreError> {
    let Some(r) = query_opt(c, IDENTITY_SQL, &[&session_hash, &now]).await? else {
        return Ok(None);
    };
    Ok(Some(Identity {
        user_id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        open_id: r.try_get(2)?,
        display_name: r.try_get(3)?,
        username: r.try_get(4)?,
        avatar: r.try_get(5)?,
        verified: r.try_get(6)?,
        videos: r.try_get(7)?,
        streak: r.try_get(8)?,
        nini_score: r.try_get(9)?,
        follower_count: r.try_get(10)?,
        session_expires: r.try_get(11)?,
        grant_error: r.try_get(12)?,
        derived: Default::default(),
    }))
}

/// The user row for `open_id`, locked for this transaction: (id, username, grant_error).
async fn lock_user_by_open_id(
    tx: &impl GenericClient,
    open_id: &str,
) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
    let row = query_opt(
        tx,
        "SELECT u.id, u.username, st.grant_error FROM users u
         LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
         WHERE u.tiktok_id = $1 FOR UPDATE OF u",
        &[&open_id],
    )
    .await?;
    match row {
        Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))),
        None => Ok(None),
    }
}

pub async fn complete_login(tx: &mut Transaction<'_>, keys: &KeyRing, l: &OwnedLogin) -> Result<Identity, StoreError> {
    let now = l.now;
    let p = &l.profile;
    let (user_id, username, grant_error) = match lock_user_by_open_id(&*tx, &p.open_id).await? {
        Some(found) => found,
        None => {
            // Two first sign-ins of one account at once: the loser's insert does nothing
            // (after waiting for the winner's commit) and it locks the winner's row instead.
            let inserted = query_opt(
                &*tx,
                "INSERT INTO users (id, tiktok_id, created_at, updated_at)
                 VALUES ($1, $2, (to_timestamp($3::bigint) AT TIME ZONE 'UTC'), (to_timestamp($3::bigint) AT TIME ZONE 'UTC'))
                 ON CONFLICT (tiktok_id) DO NOTHING RETURNING id",
                &[&new_id()?, &p.open_id, &now],
            )
            .await?;
            match inserted {
                Some(r) => (r.try_get(0)?, None, None),
                None => lock_user_by_open_id(&*tx, &p.open_id)
                    .await?
                    .ok_or_else(|| StoreError::backend(Inconsistent("user vanished during sign-in")))?,
            }
        }
    };
    // Sessions that ended because the previous grant died stay ended: clearing grant_error
    // below must not bring them back.
    if grant_error.is_some() {
        let dead = execute(&*tx, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
        if dead > 0 {
            invalidate(&*tx, Some(&user_id), None).await?;
        }
    }
    let sealed = seal_tokens(keys, &user_id, &l.tokens)?;
    execute(
        &*tx,
        "UPDATE users SET
            display_name = COALESCE($2, display_name),
            tiktok_username = COALESCE($3, tiktok_username),
            avatar = COALESCE($4, avatar),
            verified = COALESCE($5::boolean, verified),
            access_token = $6, refresh_token = $7,
            token_expires_at = (to_timestamp($8::bigint) AT TIME ZONE 'UTC'),
            refresh_expires_at = (to_timestamp($9::bigint) AT TIME ZONE 'UTC'),
            updated_at = (to_timestamp($10::bigint) AT TIME ZONE 'UTC')
         WHERE id = $1",
        &[
            &user_id,
            &p.display_name,
            &p.username,
            &p.avatar,
            &p.verified,
            &sealed.access,
            &sealed.refresh,
            &l.tokens.access_expires_at,
            &l.tokens.refresh_expires_at,
            &now,
        ],
    )
    .await?;
    if username.is_none() {
        claim_username(tx, &user_id, p.username.as_deref()).await?;
    }
    execute(
        &*tx,
        "INSERT INTO nini_auth.user_state (user_id, token_scope, token_obtained_at, grant_error)
         VALUES ($1, $2, $3::bigint, NULL)
         ON CONFLICT (user_id) DO UPDATE SET token_scope = EXCLUDED.token_scope,
            token_obtained_at = EXCLUDED.token_obtained_at, grant_error = NULL",
        &[&user_id, &l.tokens.scope, &l.tokens.obtained_at],
    )
    .await?;
    if let Some(old) = &l.replaces {
        if execute(&*tx, "DELETE FROM sessions WHERE session_token = $1", &[old]).await? > 0 {
            invalidate(&*tx, None, Some(old)).await?;
        }
    }
    invalidate(&*tx, Some(&user_id), None).await?;
    execute(
        &*tx,
        "WITH s AS (
            INSERT INTO sessions (id, session_token, user_id, expires)
            VALUES ($1, $2, $3, (to_timestamp($4::bigint) AT TIME ZONE 'UTC'))
            RETURNING id, user_id
         )
         INSERT INTO nini_auth.session_meta (session_id, user_id, created_at, last_seen_at, device)
         SELECT id, user_id, $5::bigint, $5::bigint, $6 FROM s",
        &[
            &new_id()?,
            &l.session_hash,
            &user_id,
            &l.session_expires,
            &now,
            &l.device,
        ],
    )
    .await?;
    identity_for(&*tx, &l.session_hash, now)
        .await?
        .ok_or_else(|| StoreError::backend(Inconsistent("the new session is not live (expires <= now?)")))
}

/// `username = COALESCE(username, handle)`, except that `users.username` is UNIQUE in the
/// NINI model: when another user already holds the handle, the username stays unset rather
/// than failing the sign-in or sync. The savepoint covers the race where that other user
/// takes it between our check and our write (the unique index then refuses ours).
pub async fn claim_username(tx: &mut Transaction<'_>, user_id: &str, handle: Option<&str>) -> Result<(), StoreError> {
    let Some(handle) = handle else {
        return Ok(());
    };
    let sp = tx.savepoint("nini_auth_username").await?;
    let claimed = sp
        .execute(
            "UPDATE users SET username = $2 WHERE id = $1 AND username IS NULL
               AND NOT EXISTS (SELECT 1 FROM users o WHERE o.username = $2 AND o.id <> $1)",
            &[&user_id, &handle],
        )
        .await;
    match claimed {
        Ok(_) => sp.commit().await?,
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => sp.rollback().await?,
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Live sessions of a user that nini-auth knows (see the module doc on per-user lookups).
async fn live_sessions_of(c: &impl GenericClient, user_id: &str, now: i64) -> Result<i64, StoreError> {
    Ok(query_one(
        c,
        "SELECT count(*) FROM nini_auth.session_meta m JOIN sessions s ON s.id = m.session_id
         WHERE m.user_id = $1 AND s.user_id = $1
           AND s.expires >= (to_timestamp($2::bigint + 1) AT TIME ZONE 'UTC')",
        &[&user_id, &now],
    )
    .await?
    .try_get(0)?)
}

pub async fn end_session(
    tx: &Transaction<'_>,
    session_hash: &str,
    now: i64,
) -> Result<Option<EndedSession>, StoreError> {
    let Some(r) = query_opt(
        tx,
        "DELETE FROM sessions WHERE session_token = $1 RETURNING user_id",
        &[&session_hash],
    )
    .await?
    else {
        return Ok(None);
    };
    let user_id: String = r.try_get(0)?;
    invalidate(tx, None, Some(session_hash)).await?;
    let remaining = live_sessions_of(tx, &user_id, now).await?;
    Ok(Some(EndedSession { user_id, remaining }))
}

pub async fn end_session_by_id(tx: &Transaction<'_>, user_id: &str, session_id: &str) -> Result<bool, StoreError> {
    let hash = query_opt(
        tx,
        "DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING session_token",
        &[&session_id, &user_id],
    )
    .await?;
    let Some(r) = hash else {
        return Ok(false);
    };
    let h: String = r.try_get(0)?;
    invalidate(tx, None, Some(&h)).await?;
    Ok(true)
}

pub async fn end_user_sessions(tx: &Transaction<'_>, user_id: &str, keep: Option<&str>) -> Result<usize, StoreError> {
    let rows = query(
        tx,
        "DELETE FROM sessions WHERE user_id = $1 AND ($2::text IS NULL OR session_token <> $2)
         RETURNING session_token",
        &[&user_id, &keep],
    )
    .await?;
    let mut hashes = Vec::with_capacity(rows.len());
    for r in rows {
        hashes.push(r.try_get::<_, String>(0)?);
    }
    invalidate_sessions(tx, &hashes).await?;
    Ok(hashes.len())
}

pub async fn user_sessions(c: &impl GenericClient, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError> {
    let rows = query(
        c,
        "SELECT s.id, m.created_at, m.last_seen_at, m.device, floor(extract(epoch FROM s.expires))::bigint
         FROM nini_auth.session_meta m JOIN sessions s ON s.id = m.session_id
         WHERE m.user_id = $1 AND s.user_id = $1
           AND s.expires >= (to_timestamp($2::bigint + 1) AT TIME ZONE 'UTC')
         ORDER BY m.created_at DESC, s.id",
        &[&user_id, &now],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceSession {
                id: r.try_get(0)?,
                created_at: r.try_get(1)?,
                last_seen_at: r.try_get(2)?,
                device: r.try_get(3)?,
                expires: r.try_get(4)?,
            })
        })
        .collect()
}

/// One statement for the batch. Rows are updated in hash order, so two replicas flushing
/// overlapping batches lock them in the same order and cannot deadlock; a hash seen twice
/// keeps its latest time (what applying the batch in order would leave).
pub async fn touch_sessions(c: &impl GenericClient, seen: &[(String, i64)]) -> Result<(), StoreError> {
    let mut latest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (hash, at) in seen {
        let e = latest.entry(hash.as_str()).or_insert(*at);
        *e = (*e).max(*at);
    }
    let hashes: Vec<&str> = latest.keys().copied().collect();
    let times: Vec<i64> = latest.values().copied().collect();
    execute(
        c,
        "UPDATE nini_auth.session_meta m SET last_seen_at = v.at
         FROM unnest($1::text[], $2::bigint[]) AS v(hash, at)
         JOIN sessions s ON s.session_token = v.hash
         WHERE m.session_id = s.id AND COALESCE(m.last_seen_at, 0) < v.at",
        &[&hashes, &times],
    )
    .await?;
    Ok(())
}

pub async fn count_sessions(c: &impl GenericClient, now: i64) -> Result<i64, StoreError> {
    Ok(query_one(
        c,
        "SELECT count(*) FROM sessions WHERE expires >= (to_timestamp($1::bigint + 1) AT TIME ZONE 'UTC')",
        &[&now],
    )
    .await?
    .try_get(0)?)
}

pub async fn purge_expired(tx: &Transaction<'_>, now: i64) -> Result<Purged, StoreError> {
    // Session meta rows go with their sessions (ON DELETE CASCADE).
    let sessions = execute(
        tx,
        "DELETE FROM sessions WHERE expires < (to_timestamp($1::bigint + 1) AT TIME ZONE 'UTC')",
        &[&now],
    )
    .await?;
    let states = execute(
        tx,
        "DELETE FROM nini_auth.used_states WHERE expires <= $1::bigint",
        &[&now],
    )
    .await?;
    let horizon = now - INVALIDATION_RETENTION_SECS;
    // Followers poll every second and look back 30 s; an hour of history is plenty.
    execute(
        tx,
        "DELETE FROM nini_auth.invalidations WHERE created_at <= to_timestamp($1::bigint)",
        &[&horizon],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM nini_auth.rate_windows WHERE window_start <= $1::bigint",
        &[&horizon],
    )
    .await?;
    Ok(Purged {
        sessions: count(sessions),
        states: count(states),
    })
}

pub async fn tokens(c: &impl GenericClient, keys: &KeyRing, user_id: &str) -> Result<Option<Tokens>, StoreError> {
    let Some(r) = query_opt(
        c,
        "SELECT u.access_token, u.refresh_token,
                floor(extract(epoch FROM u.token_expires_at))::bigint,
                floor(extract(epoch FROM u.refresh_expires_at))::bigint,
                st.token_scope,
                COALESCE(st.token_obtained_at, floor(extract(epoch FROM u.updated_at))::bigint)
         FROM users u LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
         WHERE u.id = $1",
        &[&user_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let (Some(a), Some(rt), Some(ae), Some(re)) = (
        r.try_get::<_, Option<String>>(0)?,
        r.try_get::<_, Option<String>>(1)?,
        r.try_get::<_, Option<i64>>(2)?,
        r.try_get::<_, Option<i64>>(3)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Tokens {
        access_token: open_token(keys, "access_token", user_id, &a)?,
        refresh_token: open_token(keys, "refresh_token", user_id, &rt)?,
        access_expires_at: ae,
        refresh_expires_at: re,
        scope: r.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
        obtained_at: r.try_get(5)?,
    }))
}

/// The stored sealed refresh token, with the user row locked until the transaction ends:
/// a compare-and-swap reads and writes under this lock, so a slower writer waits and then
/// compares against what the faster one stored. None when there is no such user.
async fn lock_refresh(tx: &impl GenericClient, user_id: &str) -> Result<Option<Option<String>>, StoreError> {
    match query_opt(
        tx,
        "SELECT refresh_token FROM users WHERE id = $1 FOR UPDATE",
        &[&user_id],
    )
    .await?
    {
        Some(r) => Ok(Some(r.try_get(0)?)),
        None => Ok(None),
    }
}

pub async fn save_refreshed(
    tx: &Transaction<'_>,
    keys: &KeyRing,
    user_id: &str,
    redeemed: &str,
    new: &Tokens,
    now: i64,
) -> Result<bool, StoreError> {
    let sealed = seal_tokens(keys, user_id, new)?;
    let stored = lock_refresh(tx, user_id).await?.flatten();
    if !sealed_refresh_is(keys, user_id, stored.as_deref(), Some(redeemed)) {
        return Ok(false);
    }
    execute(
        tx,
        "UPDATE users SET access_token = $2, refresh_token = $3,
            token_expires_at = (to_timestamp($4::bigint) AT TIME ZONE 'UTC'),
            refresh_expires_at = (to_timestamp($5::bigint) AT TIME ZONE 'UTC'),
            updated_at = (to_timestamp($6::bigint) AT TIME ZONE 'UTC')
         WHERE id = $1",
        &[
            &user_id,
            &sealed.access,
            &sealed.refresh,
            &new.access_expires_at,
            &new.refresh_expires_at,
            &now,
        ],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO nini_auth.user_state (user_id, token_scope, token_obtained_at, grant_error)
         VALUES ($1, $2, $3::bigint, NULL)
         ON CONFLICT (user_id) DO UPDATE SET token_scope = EXCLUDED.token_scope,
            token_obtained_at = EXCLUDED.token_obtained_at, grant_error = NULL",
        &[&user_id, &new.scope, &new.obtained_at],
    )
    .await?;
    invalidate(tx, Some(user_id), None).await?;
    Ok(true)
}

/// Forgets the user's tokens if the stored refresh token is still `expected`; with `error`,
/// also flags the grant as dead (every session of the user stops authenticating).
pub async fn clear_tokens(
    tx: &Transaction<'_>,
    keys: &KeyRing,
    user_id: &str,
    expected: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let Some(stored) = lock_refresh(tx, user_id).await? else {
        return Ok(false);
    };
    if !sealed_refresh_is(keys, user_id, stored.as_deref(), expected) {
        return Ok(false);
    }
    execute(
        tx,
        "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
            refresh_expires_at = NULL, updated_at = (to_timestamp($2::bigint) AT TIME ZONE 'UTC')
         WHERE id = $1",
        &[&user_id, &now],
    )
    .await?;
    if let Some(error) = error {
        execute(
            tx,
            "INSERT INTO nini_auth.user_state (user_id, grant_error) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET grant_error = EXCLUDED.grant_error",
            &[&user_id, &error],
        )
        .await?;
    }
    // Other processes must drop their cached access token (and, for a dead grant, sessions).
    invalidate(tx, Some(user_id), None).await?;
    Ok(true)
}

pub async fn authorization_removed(
    tx: &Transaction<'_>,
    open_id: &str,
    now: i64,
) -> Result<Option<(String, usize)>, StoreError> {
    let Some(r) = query_opt(tx, "SELECT id FROM users WHERE tiktok_id = $1 FOR UPDATE", &[&open_id]).await? else {
        return Ok(None);
    };
    let uid: String = r.try_get(0)?;
    execute(
        tx,
        "UPDATE users SET access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
            refresh_expires_at = NULL, updated_at = (to_timestamp($2::bigint) AT TIME ZONE 'UTC')
         WHERE id = $1",
        &[&uid, &now],
    )
    .await?;
    let n = execute(tx, "DELETE FROM sessions WHERE user_id = $1", &[&uid]).await?;
    invalidate(tx, Some(&uid), None).await?;
    Ok(Some((uid, count(n))))
}

/// Counts a hit in the shared fixed window; saturates instead of overflowing int4.
pub async fn rate_hit(c: &impl GenericClient, key: &str, start: i64) -> Result<u32, StoreError> {
    let n: i32 = query_one(
        c,
        "INSERT INTO nini_auth.rate_windows (key, window_start, count) VALUES ($1, $2::bigint, 1)
         ON CONFLICT (key, window_start) DO UPDATE
            SET count = nini_auth.rate_windows.count + (nini_auth.rate_windows.count < 2147483647)::int
         RETURNING count",
        &[&key, &start],
    )
    .await?
    .try_get(0)?;
    Ok(u32::try_from(n).unwrap_or(0))
}

pub async fn rate_peek(c: &impl GenericClient, key: &str, start: i64) -> Result<u32, StoreError> {
    let row = query_opt(
        c,
        "SELECT count FROM nini_auth.rate_windows WHERE key = $1 AND window_start = $2::bigint",
        &[&key, &start],
    )
    .await?;
    match row {
        Some(r) => Ok(u32::try_from(r.try_get::<_, i32>(0)?).unwrap_or(0)),
        None => Ok(0),
    }
}
