//! PostgreSQL statements for the operator CLI (read-only views that never decrypt a token,
//! revocation through the invalidation log, key rotation in locked batches) and for
//! `migrate-store` (export in key order, idempotent import), with the same rules as the
//! SQLite backend.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::queries::invalidate_users;
use super::sql::{count, execute, limit, query, query_opt};
use super::sync::{video_row, VIDEO_COLUMNS};
use crate::crypto::KeyRing;
use crate::store::{
    reseal_pair, AdminSession, AdminUser, ImportCounts, Record, RecordKind, Revoked, RotateReport, SessionRecord,
    StoreError, TokenInfo, UserRecord, VideoRecord, ROTATE_BATCH,
};

/// The operator's view of users. Session counts come from one grouped scan of `sessions`
/// rather than a subquery per user (the Prisma table has no index on user_id). `$1` = now.
const USER_FROM: &str = "SELECT u.id, u.tiktok_id, u.username, u.tiktok_username, u.display_name, u.email, u.avatar,
        st.bio, u.verified, u.videos::bigint, u.streak::bigint, u.nini_score::bigint, u.earnings::float8,
        st.follower_count, st.following_count, st.likes_count, st.tiktok_video_count, COALESCE(sc.n, 0),
        u.access_token, u.refresh_token,
        floor(extract(epoch FROM u.token_expires_at))::bigint,
        floor(extract(epoch FROM u.refresh_expires_at))::bigint,
        st.token_scope, st.grant_error,
        floor(extract(epoch FROM u.created_at))::bigint,
        floor(extract(epoch FROM u.updated_at))::bigint,
        st.last_synced_at
     FROM users u
     LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
     LEFT JOIN (SELECT user_id, count(*) AS n FROM sessions
                WHERE expires >= (to_timestamp($1::bigint + 1) AT TIME ZONE 'UTC') GROUP BY user_id) sc
        ON sc.user_id = u.id";

fn user_row(r: &Row) -> Result<AdminUser, StoreError> {
    let access: Option<String> = r.try_get(18)?;
    let refresh: Option<String> = r.try_get(19)?;
    Ok(AdminUser {
        id: r.try_get(0)?,
        open_id: r.try_get(1)?,
        username: r.try_get(2)?,
        tiktok_username: r.try_get(3)?,
        display_name: r.try_get(4)?,
        email: r.try_get(5)?,
        avatar: r.try_get(6)?,
        bio: r.try_get(7)?,
        verified: r.try_get(8)?,
        videos: r.try_get(9)?,
        streak: r.try_get(10)?,
        nini_score: r.try_get(11)?,
        earnings: r.try_get(12)?,
        follower_count: r.try_get(13)?,
        following_count: r.try_get(14)?,
        likes_count: r.try_get(15)?,
        tiktok_video_count: r.try_get(16)?,
        sessions: r.try_get(17)?,
        tokens: TokenInfo::from_sealed(
            access.as_deref(),
            refresh.as_deref(),
            r.try_get(20)?,
            r.try_get(21)?,
            r.try_get(22)?,
        ),
        grant_error: r.try_get(23)?,
        created_at: r.try_get(24)?,
        updated_at: r.try_get(25)?,
        last_synced_at: r.try_get(26)?,
    })
}

pub async fn users(c: &impl GenericClient, max: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
    // LIMIT NULL is no limit. Ordered by the whole seconds the trait shows (as SQLite does),
    // not by the column's milliseconds.
    let max = max.map(limit);
    let rows = query(
        c,
        &format!("{USER_FROM} ORDER BY floor(extract(epoch FROM u.created_at)) DESC, u.id LIMIT $2::bigint"),
        &[&now, &max],
    )
    .await?;
    rows.iter().map(user_row).collect()
}

pub async fn user(c: &impl GenericClient, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
    let row = query_opt(
        c,
        &format!("{USER_FROM} WHERE u.id = $2 OR u.tiktok_id = $2 ORDER BY u.id = $2 DESC LIMIT 1"),
        &[&now, &id_or_open_id],
    )
    .await?;
    row.as_ref().map(user_row).transpose()
}

pub async fn sessions(
    c: &impl GenericClient,
    user_id: Option<&str>,
    now: i64,
) -> Result<Vec<AdminSession>, StoreError> {
    // A session another program inserted has no meta row: it shows with created_at 0.
    let rows = query(
        c,
        "SELECT s.session_token, s.user_id, u.tiktok_id, u.display_name, COALESCE(m.created_at, 0),
                floor(extract(epoch FROM s.expires))::bigint
         FROM sessions s
         JOIN users u ON u.id = s.user_id
         LEFT JOIN nini_auth.session_meta m ON m.session_id = s.id
         WHERE s.expires >= (to_timestamp($1::bigint + 1) AT TIME ZONE 'UTC') AND ($2::text IS NULL OR s.user_id = $2)
         ORDER BY COALESCE(m.created_at, 0) DESC, s.session_token",
        &[&now, &user_id],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AdminSession {
                session: AdminSession::prefix(&r.try_get::<_, String>(0)?),
                user_id: r.try_get(1)?,
                open_id: r.try_get(2)?,
                display_name: r.try_get(3)?,
                created_at: r.try_get(4)?,
                expires: r.try_get(5)?,
            })
        })
        .collect()
}

/// Deletes the sessions of one user (or everyone's) and records one invalidation per affected
/// user in the same transaction. For everyone, the users are those whose rows this DELETE
/// removed (RETURNING), so a session committed by a concurrent sign-in between a SELECT and
/// the DELETE cannot end without its user being told.
pub async fn revoke(tx: &Transaction<'_>, user: Option<&str>) -> Result<Revoked, StoreError> {
    match user {
        Some(id) => {
            // The user is invalidated even with no session rows left: a cache entry can
            // outlive a row someone deleted by hand, and the entry costs nothing.
            let sessions = execute(tx, "DELETE FROM sessions WHERE user_id = $1", &[&id]).await?;
            invalidate_users(tx, &[id.to_string()]).await?;
            Ok(Revoked {
                sessions: count(sessions),
                users: 1,
            })
        }
        None => {
            let rows = query(tx, "DELETE FROM sessions RETURNING user_id", &[]).await?;
            let mut users = std::collections::BTreeSet::new();
            for r in &rows {
                users.insert(r.try_get::<_, String>(0)?);
            }
            let users: Vec<String> = users.into_iter().collect();
            invalidate_users(tx, &users).await?;
            Ok(Revoked {
                sessions: rows.len(),
                users: users.len(),
            })
        }
    }
}

/// Up to `ROTATE_BATCH` users with ids after `after`, locked (`FOR UPDATE`) and rewritten in
/// the caller's transaction, so a concurrent refresh either waits for this batch or has
/// already committed and is what gets re-sealed. Returns the last id seen, or None when no
/// row was left. (A row whose tokens a concurrent writer cleared is skipped by the lock's
/// re-check, so a short batch does not mean the table is exhausted; only an empty one does.)
pub async fn rotate_batch(
    tx: &Transaction<'_>,
    keys: &KeyRing,
    after: &str,
    report: &mut RotateReport,
) -> Result<Option<String>, StoreError> {
    let rows = query(
        tx,
        "SELECT id, access_token, refresh_token FROM users
         WHERE id > $1 AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)
         ORDER BY id LIMIT $2::bigint FOR UPDATE",
        &[&after, &limit(ROTATE_BATCH)],
    )
    .await?;
    let mut last = None;
    for r in rows {
        let id: String = r.try_get(0)?;
        let access: Option<String> = r.try_get(1)?;
        let refresh: Option<String> = r.try_get(2)?;
        match reseal_pair(keys, &id, access.as_deref(), refresh.as_deref()) {
            Ok(None) => report.current += 1,
            Ok(Some((a, rf))) => {
                // updated_at stays: the tokens are the same, only their envelope changed
                // (as in the SQLite backend).
                execute(
                    tx,
                    "UPDATE users SET access_token = $2, refresh_token = $3 WHERE id = $1",
                    &[&id, &a, &rf],
                )
                .await?;
                report.reencrypted += 1;
            }
            Err(_) => {
                report.unreadable += 1;
                report.unreadable_user_ids.push(id.clone());
            }
        }
        last = Some(id);
    }
    Ok(last)
}

const USER_RECORD_SQL: &str = "SELECT u.id, u.username, u.email, u.tiktok_id, u.tiktok_username, u.avatar,
        u.display_name, u.access_token, u.refresh_token,
        floor(extract(epoch FROM u.token_expires_at))::bigint,
        floor(extract(epoch FROM u.refresh_expires_at))::bigint,
        st.token_scope, st.token_obtained_at, st.grant_error,
        u.videos::bigint, u.streak::bigint, u.earnings::float8, u.nini_score::bigint, u.verified,
        st.bio, st.follower_count, st.following_count, st.likes_count, st.tiktok_video_count, st.last_synced_at,
        floor(extract(epoch FROM u.created_at))::bigint, floor(extract(epoch FROM u.updated_at))::bigint
     FROM users u LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
     WHERE u.id > $1 ORDER BY u.id LIMIT $2::bigint";

fn user_record(r: &Row) -> Result<Record, StoreError> {
    Ok(Record::User(Box::new(UserRecord {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        email: r.try_get(2)?,
        open_id: r.try_get(3)?,
        tiktok_username: r.try_get(4)?,
        avatar: r.try_get(5)?,
        display_name: r.try_get(6)?,
        sealed_access_token: r.try_get(7)?,
        sealed_refresh_token: r.try_get(8)?,
        token_expires_at: r.try_get(9)?,
        refresh_expires_at: r.try_get(10)?,
        token_scope: r.try_get(11)?,
        token_obtained_at: r.try_get(12)?,
        grant_error: r.try_get(13)?,
        videos: r.try_get(14)?,
        streak: r.try_get(15)?,
        earnings: r.try_get(16)?,
        nini_score: r.try_get(17)?,
        verified: r.try_get(18)?,
        bio: r.try_get(19)?,
        follower_count: r.try_get(20)?,
        following_count: r.try_get(21)?,
        likes_count: r.try_get(22)?,
        tiktok_video_count: r.try_get(23)?,
        last_synced_at: r.try_get(24)?,
        created_at: r.try_get(25)?,
        updated_at: r.try_get(26)?,
    })))
}

pub async fn export(
    c: &impl GenericClient,
    kind: RecordKind,
    after: &str,
    max: usize,
) -> Result<Vec<Record>, StoreError> {
    let max = limit(max);
    match kind {
        RecordKind::Users => {
            let rows = query(c, USER_RECORD_SQL, &[&after, &max]).await?;
            rows.iter().map(user_record).collect()
        }
        RecordKind::Sessions => {
            // A session another program inserted has no meta row: created_at 0.
            let rows = query(
                c,
                "SELECT s.id, s.session_token, s.user_id, floor(extract(epoch FROM s.expires))::bigint,
                        COALESCE(m.created_at, 0), m.last_seen_at, m.device
                 FROM sessions s LEFT JOIN nini_auth.session_meta m ON m.session_id = s.id
                 WHERE s.id > $1 ORDER BY s.id LIMIT $2::bigint",
                &[&after, &max],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Record::Session(SessionRecord {
                        id: r.try_get(0)?,
                        session_hash: r.try_get(1)?,
                        user_id: r.try_get(2)?,
                        expires: r.try_get(3)?,
                        created_at: r.try_get(4)?,
                        last_seen_at: r.try_get(5)?,
                        device: r.try_get(6)?,
                    }))
                })
                .collect()
        }
        RecordKind::Videos => {
            let rows = query(
                c,
                &format!(
                    "SELECT user_id, {VIDEO_COLUMNS} FROM nini_auth.videos WHERE id > $1 ORDER BY id LIMIT $2::bigint"
                ),
                &[&after, &max],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Record::Video(VideoRecord {
                        user_id: r.try_get(0)?,
                        video: video_row(r, 1)?,
                    }))
                })
                .collect()
        }
    }
}

pub async fn import(tx: &Transaction<'_>, records: &[Record]) -> Result<ImportCounts, StoreError> {
    let mut counts = ImportCounts::default();
    for rec in records {
        let written = match rec {
            Record::User(u) => import_user(tx, u).await?,
            Record::Session(s) => import_session(tx, s).await?,
            Record::Video(v) => import_video(tx, v).await?,
        };
        if written {
            counts.written += 1;
        } else {
            counts.skipped += 1;
        }
    }
    Ok(counts)
}

/// Upserts a user by id. The same TikTok account under another id at the target is not ours
/// to merge: skipped. `username` and `email` are UNIQUE in the NINI model (SQLite does not
/// enforce it): one already held by another user is imported as NULL, the rule sign-in
/// follows, rather than failing the whole batch.
async fn import_user(tx: &Transaction<'_>, u: &UserRecord) -> Result<bool, StoreError> {
    let other = query_opt(
        tx,
        "SELECT 1 FROM users WHERE tiktok_id = $1 AND id <> $2",
        &[&u.open_id, &u.id],
    )
    .await?;
    if other.is_some() {
        return Ok(false);
    }
    // A row changed at the target since (a refresh rotated its tokens there, a sign-in) is
    // newer than the copy: never rolled back by a later run.
    let written = execute(
        tx,
        "INSERT INTO users (id, username, email, tiktok_id, tiktok_username, avatar, display_name, access_token,
            refresh_token, token_expires_at, refresh_expires_at, videos, streak, earnings, nini_score, verified,
            created_at, updated_at)
         VALUES ($1,
            CASE WHEN EXISTS (SELECT 1 FROM users o WHERE o.username = $2 AND o.id <> $1) THEN NULL ELSE $2 END,
            CASE WHEN EXISTS (SELECT 1 FROM users o WHERE o.email = $3 AND o.id <> $1) THEN NULL ELSE $3 END,
            $4, $5, $6, $7, $8, $9,
            (to_timestamp($10::bigint) AT TIME ZONE 'UTC'), (to_timestamp($11::bigint) AT TIME ZONE 'UTC'),
            $12::bigint, $13::bigint, $14::float8, $15::bigint, $16::boolean,
            (to_timestamp($17::bigint) AT TIME ZONE 'UTC'), (to_timestamp($18::bigint) AT TIME ZONE 'UTC'))
         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email,
            tiktok_id = EXCLUDED.tiktok_id, tiktok_username = EXCLUDED.tiktok_username, avatar = EXCLUDED.avatar,
            display_name = EXCLUDED.display_name, access_token = EXCLUDED.access_token,
            refresh_token = EXCLUDED.refresh_token, token_expires_at = EXCLUDED.token_expires_at,
            refresh_expires_at = EXCLUDED.refresh_expires_at, videos = EXCLUDED.videos, streak = EXCLUDED.streak,
            earnings = EXCLUDED.earnings, nini_score = EXCLUDED.nini_score, verified = EXCLUDED.verified,
            created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
         WHERE users.updated_at <= EXCLUDED.updated_at",
        &[
            &u.id,
            &u.username,
            &u.email,
            &u.open_id,
            &u.tiktok_username,
            &u.avatar,
            &u.display_name,
            &u.sealed_access_token,
            &u.sealed_refresh_token,
            &u.token_expires_at,
            &u.refresh_expires_at,
            &u.videos,
            &u.streak,
            &u.earnings,
            &u.nini_score,
            &u.verified,
            &u.created_at,
            &u.updated_at,
        ],
    )
    .await?;
    if written == 0 {
        return Ok(false);
    }
    execute(
        tx,
        "INSERT INTO nini_auth.user_state (user_id, token_scope, token_obtained_at, grant_error, bio, follower_count,
            following_count, likes_count, tiktok_video_count, last_synced_at)
         VALUES ($1, $2, $3::bigint, $4, $5, $6::bigint, $7::bigint, $8::bigint, $9::bigint, $10::bigint)
         ON CONFLICT (user_id) DO UPDATE SET token_scope = EXCLUDED.token_scope,
            token_obtained_at = EXCLUDED.token_obtained_at, grant_error = EXCLUDED.grant_error, bio = EXCLUDED.bio,
            follower_count = EXCLUDED.follower_count, following_count = EXCLUDED.following_count,
            likes_count = EXCLUDED.likes_count, tiktok_video_count = EXCLUDED.tiktok_video_count,
            last_synced_at = EXCLUDED.last_synced_at",
        &[
            &u.id,
            &u.token_scope,
            &u.token_obtained_at,
            &u.grant_error,
            &u.bio,
            &u.follower_count,
            &u.following_count,
            &u.likes_count,
            &u.tiktok_video_count,
            &u.last_synced_at,
        ],
    )
    .await?;
    Ok(true)
}

/// Upserts a session by its token, as SQLite does: an existing one keeps its id, user and
/// created_at and takes the record's expiry, last activity and device. Skipped when its user
/// is missing at the target.
async fn import_session(tx: &Transaction<'_>, s: &SessionRecord) -> Result<bool, StoreError> {
    let row = query_opt(
        tx,
        "INSERT INTO sessions (id, session_token, user_id, expires)
         SELECT $1, $2, $3, (to_timestamp($4::bigint) AT TIME ZONE 'UTC')
         WHERE EXISTS (SELECT 1 FROM users WHERE id = $3)
         ON CONFLICT (session_token) DO UPDATE SET expires = EXCLUDED.expires
         RETURNING id, user_id",
        &[&s.id, &s.session_hash, &s.user_id, &s.expires],
    )
    .await?;
    let Some(r) = row else {
        return Ok(false);
    };
    let (id, user_id): (String, String) = (r.try_get(0)?, r.try_get(1)?);
    execute(
        tx,
        "INSERT INTO nini_auth.session_meta (session_id, user_id, created_at, last_seen_at, device)
         VALUES ($1, $2, $3::bigint, $4::bigint, $5)
         ON CONFLICT (session_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, device = EXCLUDED.device",
        &[&id, &user_id, &s.created_at, &s.last_seen_at, &s.device],
    )
    .await?;
    Ok(true)
}

/// Upserts a video by id; skipped when its user is missing, or when the id belongs to another
/// user at the target.
async fn import_video(tx: &Transaction<'_>, v: &VideoRecord) -> Result<bool, StoreError> {
    let x = &v.video;
    let n = execute(
        tx,
        "INSERT INTO nini_auth.videos (id, user_id, create_time, title, description, cover_image_url, share_url,
            duration, view_count, like_count, comment_count, share_count, synced_at)
         SELECT $1, $2, $3::bigint, $4, $5, $6, $7, $8::bigint, $9::bigint, $10::bigint, $11::bigint, $12::bigint,
            $13::bigint
         WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)
         ON CONFLICT (id) DO UPDATE SET create_time = EXCLUDED.create_time, title = EXCLUDED.title,
            description = EXCLUDED.description, cover_image_url = EXCLUDED.cover_image_url,
            share_url = EXCLUDED.share_url, duration = EXCLUDED.duration, view_count = EXCLUDED.view_count,
            like_count = EXCLUDED.like_count, comment_count = EXCLUDED.comment_count,
            share_count = EXCLUDED.share_count, synced_at = EXCLUDED.synced_at
         WHERE nini_auth.videos.user_id = EXCLUDED.user_id",
        &[
            &x.id,
            &v.user_id,
            &x.create_time,
            &x.title,
            &x.description,
            &x.cover_image_url,
            &x.share_url,
            &x.duration,
            &x.view_count,
            &x.like_count,
            &x.comment_count,
            &x.share_count,
            &x.synced_at,
        ],
    )
    .await?;
    Ok(n > 0)
}
