//! SQLite statements for the operator CLI (read-only views that never decrypt a token,
//! revocation through the invalidation log, key rotation in batches) and for
//! `migrate-store` (export in key order, idempotent import).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::queries::invalidate;
use super::sync::{video_row, VIDEO_COLUMNS};
use crate::crypto::KeyRing;
use crate::store::{
    reseal_pair, AdminSession, AdminUser, ImportCounts, Record, RecordKind, Revoked, RotateReport, SessionRecord,
    StoreError, TokenInfo, UserRecord, VideoRecord, ROTATE_BATCH,
};

const USER_COLUMNS: &str = "u.id, u.tiktok_id, u.username, u.tiktok_username, u.display_name, u.email, u.avatar, u.bio,
     u.verified, u.videos, u.streak, u.nini_score, u.earnings, u.follower_count, u.following_count, u.likes_count,
     u.tiktok_video_count, (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.expires > ?1),
     u.access_token, u.refresh_token, u.token_expires_at, u.refresh_expires_at, u.token_scope, u.grant_error,
     u.created_at, u.updated_at, u.last_synced_at";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminUser> {
    let access: Option<String> = r.get(18)?;
    let refresh: Option<String> = r.get(19)?;
    Ok(AdminUser {
        id: r.get(0)?,
        open_id: r.get(1)?,
        username: r.get(2)?,
        tiktok_username: r.get(3)?,
        display_name: r.get(4)?,
        email: r.get(5)?,
        avatar: r.get(6)?,
        bio: r.get(7)?,
        verified: r.get::<_, i64>(8)? != 0,
        videos: r.get(9)?,
        streak: r.get(10)?,
        nini_score: r.get(11)?,
        earnings: r.get(12)?,
        follower_count: r.get(13)?,
        following_count: r.get(14)?,
        likes_count: r.get(15)?,
        tiktok_video_count: r.get(16)?,
        sessions: r.get(17)?,
        tokens: TokenInfo::from_sealed(
            access.as_deref(),
            refresh.as_deref(),
            r.get(20)?,
            r.get(21)?,
            r.get(22)?,
        ),
        grant_error: r.get(23)?,
        created_at: r.get(24)?,
        updated_at: r.get(25)?,
        last_synced_at: r.get(26)?,
    })
}

pub fn users(c: &Connection, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
    // SQLite reads a negative LIMIT as "no limit".
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut st = c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at DESC, u.id LIMIT ?2"
    ))?;
    let rows = st.query_map(params![now, limit], user_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn user(c: &Connection, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?2 OR u.tiktok_id = ?2
         ORDER BY u.id = ?2 DESC LIMIT 1"
    ))?
    .query_row(params![now, id_or_open_id], user_row)
    .optional()?)
}

pub fn sessions(c: &Connection, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT s.session_token, s.user_id, u.tiktok_id, u.display_name, s.created_at, s.expires
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.expires > ?1 AND (?2 IS NULL OR s.user_id = ?2)
         ORDER BY s.created_at DESC, s.session_token",
    )?;
    let rows = st.query_map(params![now, user_id], |r| {
        Ok(AdminSession {
            session: AdminSession::prefix(&r.get::<_, String>(0)?),
            user_id: r.get(1)?,
            open_id: r.get(2)?,
            display_name: r.get(3)?,
            created_at: r.get(4)?,
            expires: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Deletes the sessions of one user (or everyone's) and records one invalidation per
/// affected user in the same transaction.
pub fn revoke(c: &mut Connection, user: Option<&str>, now: i64) -> Result<Revoked, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let users: Vec<String> = match user {
        // The user is invalidated even with no session rows left: a cache entry can outlive
        // a row someone deleted by hand, and the entry costs nothing.
        Some(id) => vec![id.to_string()],
        None => {
            let mut st = tx.prepare("SELECT DISTINCT user_id FROM sessions")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
    };
    let sessions = match user {
        Some(id) => tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?,
        None => tx.execute("DELETE FROM sessions", [])?,
    };
    for u in &users {
        invalidate(&tx, Some(u), None, now)?;
    }
    tx.commit()?;
    Ok(Revoked {
        sessions,
        users: users.len(),
    })
}

/// Up to `ROTATE_BATCH` users with ids after `after`, read and rewritten inside one write
/// transaction so a concurrent refresh cannot be overwritten with older tokens. Returns the
/// last id seen and whether the table is exhausted.
pub fn rotate_batch(
    c: &mut Connection,
    keys: &KeyRing,
    after: &str,
    report: &mut RotateReport,
) -> Result<(String, bool), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    type Row = (String, Option<String>, Option<String>);
    let rows: Vec<Row> = {
        let mut st = tx.prepare_cached(
            "SELECT id, access_token, refresh_token FROM users
             WHERE id > ?1 AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)
             ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, ROTATE_BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let done = rows.len() < ROTATE_BATCH;
    let last = rows.last().map(|r| r.0.clone()).unwrap_or_default();
    for (id, access, refresh) in rows {
        match reseal_pair(keys, &id, access.as_deref(), refresh.as_deref()) {
            Ok(None) => report.current += 1,
            Ok(Some((a, r))) => {
                tx.execute(
                    "UPDATE users SET access_token = ?2, refresh_token = ?3 WHERE id = ?1",
                    params![id, a, r],
                )?;
                report.reencrypted += 1;
            }
            Err(_) => {
                report.unreadable += 1;
                report.unreadable_user_ids.push(id);
            }
        }
    }
    tx.commit()?;
    Ok((last, done))
}

const USER_RECORD_COLUMNS: &str = "id, username, email, tiktok_id, tiktok_username, avatar, display_name,
     access_token, refresh_token, token_expires_at, refresh_expires_at, token_scope, token_obtained_at,
     grant_error, videos, streak, earnings, nini_score, verified, bio, follower_count, following_count,
     likes_count, tiktok_video_count, last_synced_at, created_at, updated_at";

pub fn export(c: &Connection, kind: RecordKind, after: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match kind {
        RecordKind::Users => {
            let mut st = c.prepare_cached(&format!(
                "SELECT {USER_RECORD_COLUMNS} FROM users WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok(Record::User(Box::new(UserRecord {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    email: r.get(2)?,
                    open_id: r.get(3)?,
                    tiktok_username: r.get(4)?,
                    avatar: r.get(5)?,
                    display_name: r.get(6)?,
                    sealed_access_token: r.get(7)?,
                    sealed_refresh_token: r.get(8)?,
                    token_expires_at: r.get(9)?,
                    refresh_expires_at: r.get(10)?,
                    token_scope: r.get(11)?,
                    token_obtained_at: r.get(12)?,
                    grant_error: r.get(13)?,
                    videos: r.get(14)?,
                    streak: r.get(15)?,
                    earnings: r.get(16)?,
                    nini_score: r.get(17)?,
                    verified: r.get::<_, i64>(18)? != 0,
                    bio: r.get(19)?,
                    follower_count: r.get(20)?,
                    following_count: r.get(21)?,
                    likes_count: r.get(22)?,
                    tiktok_video_count: r.get(23)?,
                    last_synced_at: r.get(24)?,
                    created_at: r.get(25)?,
                    updated_at: r.get(26)?,
                })))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }
        RecordKind::Sessions => {
            let mut st = c.prepare_cached(
                "SELECT id, session_token, user_id, expires, created_at, last_seen_at, device
                 FROM sessions WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok(Record::Session(SessionRecord {
                    id: r.get(0)?,
                    session_hash: r.get(1)?,
                    user_id: r.get(2)?,
                    expires: r.get(3)?,
                    created_at: r.get(4)?,
                    last_seen_at: r.get(5)?,
                    device: r.get(6)?,
                }))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }
        RecordKind::Videos => {
            let mut st = c.prepare_cached(&format!(
                "SELECT user_id, {VIDEO_COLUMNS} FROM videos WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok(Record::Video(VideoRecord {
                    user_id: r.get(0)?,
                    video: video_row(r, 1)?,
                }))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }
    }
}

pub fn import(c: &mut Connection, records: &[Record]) -> Result<ImportCounts, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut counts = ImportCounts::default();
    for rec in records {
        let written = match rec {
            Record::User(u) => {
                // Same TikTok account under another id at the target: not ours to merge.
                let other: Option<String> = tx
                    .prepare_cached("SELECT id FROM users WHERE tiktok_id = ?1 AND id <> ?2")?
                    .query_row(params![u.open_id, u.id], |r| r.get(0))
                    .optional()?;
                if other.is_some() {
                    0
                } else {
                    tx.prepare_cached(&format!(
                        "INSERT INTO users ({USER_RECORD_COLUMNS}) VALUES
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                          ?21, ?22, ?23, ?24, ?25, ?26, ?27)
                         ON CONFLICT(id) DO UPDATE SET username = excluded.username, email = excluded.email,
                           tiktok_id = excluded.tiktok_id, tiktok_username = excluded.tiktok_username,
                           avatar = excluded.avatar, display_name = excluded.display_name,
                           access_token = excluded.access_token, refresh_token = excluded.refresh_token,
                           token_expires_at = excluded.token_expires_at,
                           refresh_expires_at = excluded.refresh_expires_at, token_scope = excluded.token_scope,
                           token_obtained_at = excluded.token_obtained_at, grant_error = excluded.grant_error,
                           videos = excluded.videos, streak = excluded.streak, earnings = excluded.earnings,
                           nini_score = excluded.nini_score, verified = excluded.verified, bio = excluded.bio,
                           follower_count = excluded.follower_count, following_count = excluded.following_count,
                           likes_count = excluded.likes_count, tiktok_video_count = excluded.tiktok_video_count,
                           last_synced_at = excluded.last_synced_at, created_at = excluded.created_at,
                           updated_at = excluded.updated_at
                         WHERE users.updated_at <= excluded.updated_at"
                    ))?
                    .execute(params![
                        u.id,
                        u.username,
                        u.email,
                        u.open_id,
                        u.tiktok_username,
                        u.avatar,
                        u.display_name,
                        u.sealed_access_token,
                        u.sealed_refresh_token,
                        u.token_expires_at,
                        u.refresh_expires_at,
                        u.token_scope,
                        u.token_obtained_at,
                        u.grant_error,
                        u.videos,
                        u.streak,
                        u.earnings,
                        u.nini_score,
                        u.verified,
                        u.bio,
                        u.follower_count,
                        u.following_count,
                        u.likes_count,
                        u.tiktok_video_count,
                        u.last_synced_at,
                        u.created_at,
                        u.updated_at
                    ])?
                }
            }
            Record::Session(s) => tx
                .prepare_cached(
                    "INSERT INTO sessions (id, session_token, user_id, expires, created_at, last_seen_at, device)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?3)
                     ON CONFLICT(session_token) DO UPDATE SET expires = excluded.expires,
                       last_seen_at = excluded.last_seen_at, device = excluded.device",
                )?
                .execute(params![
                    s.id,
                    s.session_hash,
                    s.user_id,
                    s.expires,
                    s.created_at,
                    s.last_seen_at,
                    s.device
                ])?,
            Record::Video(v) => {
                let x = &v.video;
                tx.prepare_cached(
                    "INSERT INTO videos (id, user_id, create_time, title, description, cover_image_url, share_url,
                        duration, view_count, like_count, comment_count, share_count, synced_at)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)
                     ON CONFLICT(id) DO UPDATE SET create_time = excluded.create_time, title = excluded.title,
                       description = excluded.description, cover_image_url = excluded.cover_image_url,
                       share_url = excluded.share_url, duration = excluded.duration,
                       view_count = excluded.view_count, like_count = excluded.like_count,
                       comment_count = excluded.comment_count, share_count = excluded.share_count,
                       synced_at = excluded.synced_at
                     WHERE videos.user_id = excluded.user_id",
                )?
                .execute(params![
                    x.id,
                    v.user_id,
                    x.create_time,
                    x.title,
                    x.description,
                    x.cover_image_url,
                    x.share_url,
                    x.duration,
                    x.view_count,
                    x.like_count,
                    x.comment_count,
                    x.share_count,
                    x.synced_at
                ])?
            }
        };
        if written > 0 {
            counts.written += 1;
        } else {
            counts.skipped += 1;
        }
    }
    tx.commit()?;
    Ok(counts)
}
