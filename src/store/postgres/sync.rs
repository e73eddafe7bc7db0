//! PostgreSQL statements for the TikTok data sync: writing a sync's result in one transaction,
//! and the reads the sync endpoints, the cool-down and the background job need. Profile
//! fields the NINI model has live in `users`; the rest in `nini_auth.user_state`, videos in
//! `nini_auth.videos`.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::queries::{claim_username, invalidate};
use super::sql::{execute, limit, query, query_one, query_opt};
use crate::store::{StoreError, StoredVideo, SyncedProfile, UserProfile};

const PROFILE_SQL: &str = "SELECT u.id, u.tiktok_id, u.username, u.tiktok_username, u.display_name, u.avatar,
        u.verified, st.bio, st.follower_count, st.following_count, st.likes_count, st.tiktok_video_count,
        u.videos::bigint, u.streak::bigint, u.nini_score::bigint, st.last_synced_at
     FROM users u LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
     WHERE u.id = $1";

pub async fn profile_of(c: &impl GenericClient, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
    let Some(r) = query_opt(c, PROFILE_SQL, &[&user_id]).await? else {
        return Ok(None);
    };
    Ok(Some(UserProfile {
        id: r.try_get(0)?,
        open_id: r.try_get(1)?,
        username: r.try_get(2)?,
        tiktok_username: r.try_get(3)?,
        display_name: r.try_get(4)?,
        avatar: r.try_get(5)?,
        verified: r.try_get(6)?,
        bio: r.try_get(7)?,
        follower_count: r.try_get(8)?,
        following_count: r.try_get(9)?,
        likes_count: r.try_get(10)?,
        tiktok_video_count: r.try_get(11)?,
        videos: r.try_get(12)?,
        streak: r.try_get(13)?,
        nini_score: r.try_get(14)?,
        last_synced_at: r.try_get(15)?,
    }))
}

pub async fn save_sync(
    tx: &mut Transaction<'_>,
    user_id: &str,
    profile: &SyncedProfile,
    videos: Option<(&[StoredVideo], i64)>,
    now: i64,
) -> Result<Option<UserProfile>, StoreError> {
    // Locks the row too: two syncs of one user serialise here, not on the video rows.
    let Some(before) = query_opt(
        &*tx,
        "UPDATE users SET
            display_name = COALESCE($2, display_name),
            avatar = COALESCE($3, avatar),
            tiktok_username = COALESCE($4, tiktok_username),
            verified = COALESCE($5::boolean, verified),
            updated_at = (to_timestamp($6::bigint) AT TIME ZONE 'UTC')
         WHERE id = $1
         RETURNING username IS NULL",
        &[
            &user_id,
            &profile.display_name,
            &profile.avatar,
            &profile.username,
            &profile.verified,
            &now,
        ],
    )
    .await?
    else {
        return Ok(None);
    };
    if before.try_get::<_, bool>(0)? {
        claim_username(tx, user_id, profile.username.as_deref()).await?;
    }
    execute(
        &*tx,
        "INSERT INTO nini_auth.user_state (user_id, bio, follower_count, following_count, likes_count,
            tiktok_video_count, last_synced_at)
         VALUES ($1, $2, $3::bigint, $4::bigint, $5::bigint, $6::bigint, $7::bigint)
         ON CONFLICT (user_id) DO UPDATE SET
            bio = COALESCE(EXCLUDED.bio, nini_auth.user_state.bio),
            follower_count = COALESCE(EXCLUDED.follower_count, nini_auth.user_state.follower_count),
            following_count = COALESCE(EXCLUDED.following_count, nini_auth.user_state.following_count),
            likes_count = COALESCE(EXCLUDED.likes_count, nini_auth.user_state.likes_count),
            tiktok_video_count = COALESCE(EXCLUDED.tiktok_video_count, nini_auth.user_state.tiktok_video_count),
            last_synced_at = EXCLUDED.last_synced_at",
        &[
            &user_id,
            &profile.bio,
            &profile.follower_count,
            &profile.following_count,
            &profile.likes_count,
            &profile.video_count,
            &now,
        ],
    )
    .await?;
    if let Some((set, streak)) = videos {
        execute(&*tx, "DELETE FROM nini_auth.videos WHERE user_id = $1", &[&user_id]).await?;
        let stored = insert_videos(&*tx, user_id, set).await?;
        execute(
            &*tx,
            "UPDATE users SET videos = $2::bigint, streak = $3::bigint WHERE id = $1",
            &[&user_id, &stored, &streak],
        )
        .await?;
    }
    invalidate(&*tx, Some(user_id), None).await?;
    profile_of(&*tx, user_id).await
}

/// The whole set in one statement (a sync may bring a thousand videos); returns how many were
/// stored. DO NOTHING: an id already stored for another account (never seen at TikTok) must
/// not move that row over to this user, and a duplicate within the set is stored once.
async fn insert_videos(c: &impl GenericClient, user_id: &str, set: &[StoredVideo]) -> Result<i64, StoreError> {
    if set.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = set.iter().map(|v| v.id.as_str()).collect();
    let create_time: Vec<i64> = set.iter().map(|v| v.create_time).collect();
    let title: Vec<Option<&str>> = set.iter().map(|v| v.title.as_deref()).collect();
    let description: Vec<Option<&str>> = set.iter().map(|v| v.description.as_deref()).collect();
    let cover: Vec<Option<&str>> = set.iter().map(|v| v.cover_image_url.as_deref()).collect();
    let share_url: Vec<Option<&str>> = set.iter().map(|v| v.share_url.as_deref()).collect();
    let duration: Vec<Option<i64>> = set.iter().map(|v| v.duration).collect();
    let views: Vec<Option<i64>> = set.iter().map(|v| v.view_count).collect();
    let likes: Vec<Option<i64>> = set.iter().map(|v| v.like_count).collect();
    let comments: Vec<Option<i64>> = set.iter().map(|v| v.comment_count).collect();
    let shares: Vec<Option<i64>> = set.iter().map(|v| v.share_count).collect();
    let synced: Vec<i64> = set.iter().map(|v| v.synced_at).collect();
    let n = execute(
        c,
        "INSERT INTO nini_auth.videos (id, user_id, create_time, title, description, cover_image_url, share_url,
            duration, view_count, like_count, comment_count, share_count, synced_at)
         SELECT v.id, $1, v.create_time, v.title, v.description, v.cover, v.share_url, v.duration, v.views,
            v.likes, v.comments, v.shares, v.synced
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                     $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
            WITH ORDINALITY AS v(id, create_time, title, description, cover, share_url, duration, views, likes,
                                 comments, shares, synced, n)
         ORDER BY v.n
         ON CONFLICT (id) DO NOTHING",
        &[
            &user_id,
            &ids,
            &create_time,
            &title,
            &description,
            &cover,
            &share_url,
            &duration,
            &views,
            &likes,
            &comments,
            &shares,
            &synced,
        ],
    )
    .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

pub async fn last_synced_at(c: &impl GenericClient, user_id: &str) -> Result<Option<i64>, StoreError> {
    let row = query_opt(
        c,
        "SELECT last_synced_at FROM nini_auth.user_state WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    match row {
        Some(r) => Ok(r.try_get(0)?),
        None => Ok(None),
    }
}

pub const VIDEO_COLUMNS: &str = "id, create_time, title, description, cover_image_url, share_url, duration,
     view_count, like_count, comment_count, share_count, synced_at";

pub fn video_row(r: &Row, first: usize) -> Result<StoredVideo, StoreError> {
    Ok(StoredVideo {
        id: r.try_get(first)?,
        create_time: r.try_get(first + 1)?,
        title: r.try_get(first + 2)?,
        description: r.try_get(first + 3)?,
        cover_image_url: r.try_get(first + 4)?,
        share_url: r.try_get(first + 5)?,
        duration: r.try_get(first + 6)?,
        view_count: r.try_get(first + 7)?,
        like_count: r.try_get(first + 8)?,
        comment_count: r.try_get(first + 9)?,
        share_count: r.try_get(first + 10)?,
        synced_at: r.try_get(first + 11)?,
    })
}

pub async fn user_videos(
    c: &impl GenericClient,
    user_id: &str,
    page: u32,
    before: Option<(i64, &str)>,
) -> Result<(Vec<StoredVideo>, i64), StoreError> {
    let (bt, bid) = match before {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    let rows = query(
        c,
        &format!(
            "SELECT {VIDEO_COLUMNS} FROM nini_auth.videos
             WHERE user_id = $1 AND ($2::bigint IS NULL OR create_time < $2 OR (create_time = $2 AND id < $3::text))
             ORDER BY create_time DESC, id DESC
             LIMIT $4::bigint"
        ),
        &[&user_id, &bt, &bid, &i64::from(page)],
    )
    .await?;
    let videos = rows.iter().map(|r| video_row(r, 0)).collect::<Result<Vec<_>, _>>()?;
    let total: i64 = query_one(
        c,
        "SELECT count(*) FROM nini_auth.videos WHERE user_id = $1",
        &[&user_id],
    )
    .await?
    .try_get(0)?;
    Ok((videos, total))
}

pub async fn due_for_sync(
    c: &impl GenericClient,
    candidates: &[String],
    synced_before: i64,
    max: usize,
) -> Result<Vec<String>, StoreError> {
    if candidates.is_empty() || max == 0 {
        return Ok(Vec::new());
    }
    let rows = query(
        c,
        "SELECT u.id FROM users u LEFT JOIN nini_auth.user_state st ON st.user_id = u.id
         WHERE u.id = ANY($1::text[])
           AND u.access_token IS NOT NULL AND st.grant_error IS NULL
           AND (st.last_synced_at IS NULL OR st.last_synced_at < $2::bigint)
         ORDER BY COALESCE(st.last_synced_at, 0), u.id
         LIMIT $3::bigint",
        &[&candidates, &synced_before, &limit(max)],
    )
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}
