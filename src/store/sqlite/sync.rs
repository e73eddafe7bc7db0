//! SQLite statements for the TikTok data sync: writing a sync's result in one transaction,
//! and the reads the sync endpoints, the cool-down and the background job need.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::queries::invalidate;
use crate::store::{StoreError, StoredVideo, SyncedProfile, UserProfile};

const PROFILE_SQL: &str = "SELECT id, tiktok_id, username, tiktok_username, display_name, avatar, verified, bio,
     follower_count, following_count, likes_count, tiktok_video_count, videos, streak, nini_score, last_synced_at
     FROM users WHERE id = ?1";

pub fn profile_of(c: &Connection, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
    Ok(c.prepare_cached(PROFILE_SQL)?
        .query_row(params![user_id], |r| {
            Ok(UserProfile {
                id: r.get(0)?,
                open_id: r.get(1)?,
                username: r.get(2)?,
                tiktok_username: r.get(3)?,
                display_name: r.get(4)?,
                avatar: r.get(5)?,
                verified: r.get::<_, i64>(6)? != 0,
                bio: r.get(7)?,
                follower_count: r.get(8)?,
                following_count: r.get(9)?,
                likes_count: r.get(10)?,
                tiktok_video_count: r.get(11)?,
                videos: r.get(12)?,
                streak: r.get(13)?,
                nini_score: r.get(14)?,
                last_synced_at: r.get(15)?,
            })
        })
        .optional()?)
}

pub fn save_sync(
    c: &mut Connection,
    user_id: &str,
    profile: &SyncedProfile,
    videos: Option<(&[StoredVideo], i64)>,
    now: i64,
) -> Result<Option<UserProfile>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = tx
        .prepare_cached(
            "UPDATE users SET
                display_name = COALESCE(?2, display_name),
                avatar = COALESCE(?3, avatar),
                tiktok_username = COALESCE(?4, tiktok_username),
                username = COALESCE(username, ?4),
                verified = COALESCE(?5, verified),
                bio = COALESCE(?6, bio),
                follower_count = COALESCE(?7, follower_count),
                following_count = COALESCE(?8, following_count),
                likes_count = COALESCE(?9, likes_count),
                tiktok_video_count = COALESCE(?10, tiktok_video_count),
                last_synced_at = ?11, updated_at = ?11
             WHERE id = ?1",
        )?
        .execute(params![
            user_id,
            profile.display_name,
            profile.avatar,
            profile.username,
            profile.verified,
            profile.bio,
            profile.follower_count,
            profile.following_count,
            profile.likes_count,
            profile.video_count,
            now
        ])?;
    if changed == 0 {
        return Ok(None);
    }
    if let Some((set, streak)) = videos {
        tx.execute("DELETE FROM videos WHERE user_id = ?1", params![user_id])?;
        let mut stored: i64 = 0;
        {
            // OR IGNORE: an id already stored for another account (never seen at TikTok)
            // must not move that row over to this user.
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO videos (id, user_id, create_time, title, description, cover_image_url,
                    share_url, duration, view_count, like_count, comment_count, share_count, synced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for v in set {
                stored += ins.execute(params![
                    v.id,
                    user_id,
                    v.create_time,
                    v.title,
                    v.description,
                    v.cover_image_url,
                    v.share_url,
                    v.duration,
                    v.view_count,
                    v.like_count,
                    v.comment_count,
                    v.share_count,
                    v.synced_at
                ])? as i64;
            }
        }
        tx.execute(
            "UPDATE users SET videos = ?2, streak = ?3 WHERE id = ?1",
            params![user_id, stored, streak],
        )?;
    }
    invalidate(&tx, Some(user_id), None, now)?;
    let out = profile_of(&tx, user_id)?;
    tx.commit()?;
    Ok(out)
}

pub fn last_synced_at(c: &Connection, user_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(c.prepare_cached("SELECT last_synced_at FROM users WHERE id = ?1")?
        .query_row(params![user_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

pub fn video_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredVideo> {
    Ok(StoredVideo {
        id: r.get(first)?,
        create_time: r.get(first + 1)?,
        title: r.get(first + 2)?,
        description: r.get(first + 3)?,
        cover_image_url: r.get(first + 4)?,
        share_url: r.get(first + 5)?,
        duration: r.get(first + 6)?,
        view_count: r.get(first + 7)?,
        like_count: r.get(first + 8)?,
        comment_count: r.get(first + 9)?,
        share_count: r.get(first + 10)?,
        synced_at: r.get(first + 11)?,
    })
}

pub const VIDEO_COLUMNS: &str = "id, create_time, title, description, cover_image_url, share_url, duration,
     view_count, like_count, comment_count, share_count, synced_at";

pub fn user_videos(
    c: &Connection,
    user_id: &str,
    limit: u32,
    before: Option<(i64, &str)>,
) -> Result<(Vec<StoredVideo>, i64), StoreError> {
    let (bt, bid) = match before {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    let mut st = c.prepare_cached(&format!(
        "SELECT {VIDEO_COLUMNS} FROM videos
         WHERE user_id = ?1 AND (?2 IS NULL OR create_time < ?2 OR (create_time = ?2 AND id < ?3))
         ORDER BY create_time DESC, id DESC
         LIMIT ?4"
    ))?;
    let rows = st.query_map(params![user_id, bt, bid, limit], |r| video_row(r, 0))?;
    let videos = rows.collect::<Result<Vec<_>, _>>()?;
    let total: i64 = c
        .prepare_cached("SELECT count(*) FROM videos WHERE user_id = ?1")?
        .query_row(params![user_id], |r| r.get(0))?;
    Ok((videos, total))
}

pub fn due_for_sync(
    c: &Connection,
    candidates: &[String],
    synced_before: i64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    // Chunks keep each statement short.
    const CHUNK: usize = 500;
    let mut due: Vec<(i64, String)> = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT id, COALESCE(last_synced_at, 0) FROM users
         WHERE id IN (SELECT value FROM json_each(?1))
           AND access_token IS NOT NULL AND grant_error IS NULL
           AND (last_synced_at IS NULL OR last_synced_at < ?2)",
    )?;
    for chunk in candidates.chunks(CHUNK) {
        let ids = serde_json::Value::from(chunk.to_vec()).to_string();
        let rows = st.query_map(params![ids, synced_before], |r| Ok((r.get(1)?, r.get(0)?)))?;
        due.extend(rows.collect::<Result<Vec<(i64, String)>, _>>()?);
    }
    due.sort();
    Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
}
