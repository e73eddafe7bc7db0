//! The sync's HTTP surface: `POST <sync.path>` (sync now, with a per-user cool-down) and
//! the read endpoints the upstream app calls (`/api/auth/tiktok/profile`, `.../videos`),
//! as socket-free handlers returning a `Reply`.

use std::sync::Arc;

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{SyncError, SyncService, RATE_WINDOW};
use crate::store::{Identity, StoreError, StoredVideo, UserProfile};
use crate::tiktok::tokens::{TokenError, REFRESH_ERROR};
use crate::tiktok::TikTokError;
use crate::web::{Reply, Request};

const DEFAULT_VIDEO_LIMIT: u32 = 100;
const MAX_VIDEO_LIMIT: u32 = 1000;

fn iso(t: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// The session's user object (`authflow::session_json`) plus the synced profile and counts.
fn user_json(p: &UserProfile) -> serde_json::Value {
    json!({
        "id": p.id,
        "name": p.display_name,
        "email": null,
        "image": p.avatar,
        "tiktokId": p.open_id,
        "username": p.username,
        "tiktokUsername": p.tiktok_username,
        "verified": p.verified,
        "niniScore": p.nini_score,
        "videos": p.videos,
        "streak": p.streak,
        "bio": p.bio,
        "followerCount": p.follower_count,
        "followingCount": p.following_count,
        "likesCount": p.likes_count,
        "tiktokVideoCount": p.tiktok_video_count,
        "lastSyncedAt": p.last_synced_at.and_then(iso),
    })
}

fn video_json(v: &StoredVideo) -> serde_json::Value {
    json!({
        "id": v.id,
        "createTime": v.create_time,
        "title": v.title,
        "description": v.description,
        "coverImageUrl": v.cover_image_url,
        "shareUrl": v.share_url,
        "duration": v.duration,
        "viewCount": v.view_count,
        "likeCount": v.like_count,
        "commentCount": v.comment_count,
        "shareCount": v.share_count,
        "syncedAt": iso(v.synced_at),
    })
}

fn unauthorized() -> Reply {
    Reply::json(401, &json!({ "error": "unauthorized" })).header("WWW-Authenticate", "Cookie".into())
}

fn internal(request_id: &str) -> Reply {
    Reply::json(500, &json!({ "error": "InternalError", "requestId": request_id }))
}

fn too_many(error: &str, secs: u64, request_id: &str) -> Reply {
    let secs = secs.max(1);
    let status = if error == "cooldown" { 429 } else { 503 };
    Reply::json(
        status,
        &json!({ "error": error, "retryAfter": secs, "requestId": request_id }),
    )
    .header("Retry-After", secs.to_string())
}

fn failure_reply(sync: &SyncService, user_id: &str, e: &SyncError, request_id: &str) -> Reply {
    let transient = |t: &TikTokError| t.is_transient();
    match e {
        SyncError::GrantDead => {
            log::info!("sync of user {user_id}: grant is gone request_id={request_id}");
            return Reply::json(401, &json!({ "error": REFRESH_ERROR, "requestId": request_id }));
        }
        SyncError::ScopeMissing { .. } => {
            log::info!("sync of user {user_id}: {} request_id={request_id}", e.chain());
            return Reply::json(
                403,
                &json!({ "error": "ScopeMissing", "reconsent": sync.reconsent_url, "requestId": request_id }),
            );
        }
        SyncError::InProgress => {
            return too_many("cooldown", sync.cfg.cooldown.as_secs(), request_id);
        }
        _ => {}
    }
    log::warn!("sync of user {user_id} failed: {} request_id={request_id}", e.chain());
    match e {
        SyncError::RateLimited { retry_after } => too_many(
            "RateLimited",
            retry_after.map_or(RATE_WINDOW, |d| d.as_secs_f64().ceil() as u64),
            request_id,
        ),
        SyncError::TikTok(t) | SyncError::Token(TokenError::TikTok(t)) if transient(t) => {
            let r = Reply::json(503, &json!({ "error": "TikTokUnavailable", "requestId": request_id }));
            match t.retry_after() {
                Some(d) => r.header("Retry-After", d.as_secs().max(1).to_string()),
                None => r,
            }
        }
        SyncError::Token(TokenError::Busy) => {
            Reply::json(503, &json!({ "error": "TikTokUnavailable", "requestId": request_id }))
        }
        SyncError::TikTok(_) | SyncError::Token(TokenError::TikTok(_)) => {
            Reply::json(502, &json!({ "error": "TikTokError", "requestId": request_id }))
        }
        _ => internal(request_id),
    }
}

/// A store failure: 503 while the database is unreachable (try again), 500 otherwise.
fn store_failure(what: &str, e: &StoreError, request_id: &str) -> Reply {
    log::error!(
        "{what} failed: {} request_id={request_id}",
        crate::auth::error::chain(e)
    );
    if e.is_unavailable() {
        Reply::json(503, &json!({ "error": "Unavailable", "requestId": request_id })).header("Retry-After", "5".into())
    } else {
        internal(request_id)
    }
}

/// `POST <sync.path>`: sync the signed-in user's TikTok data now.
pub async fn sync_endpoint(sync: &SyncService, identity: Option<Arc<Identity>>, request_id: &str) -> Reply {
    let Some(id) = identity else {
        return unauthorized();
    };
    // Taken before the cool-down check, so two concurrent requests (on any replica) cannot
    // both pass it.
    let running = match sync.begin(&id.user_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            sync.metrics.sync("endpoint", "in_progress");
            return too_many("cooldown", sync.cfg.cooldown.as_secs(), request_id);
        }
        Err(e) => return store_failure("sync: taking the sync lock", &e, request_id),
    };
    let result = sync_after_cooldown(sync, &id, request_id).await;
    running.finish().await;
    result
}

async fn sync_after_cooldown(sync: &SyncService, id: &Identity, request_id: &str) -> Reply {
    let cooldown = sync.cfg.cooldown.as_secs() as i64;
    match sync.store.last_synced_at(&id.user_id).await {
        Ok(Some(last)) => {
            let wait = (last.saturating_add(cooldown) - sync.clock.now()).min(cooldown);
            if wait > 0 {
                sync.metrics.sync("endpoint", "cooldown");
                return too_many("cooldown", wait as u64, request_id);
            }
        }
        Ok(None) => {}
        Err(e) => return store_failure("sync: reading the last sync", &e, request_id),
    }
    let result = sync.sync_locked(&id.user_id).await;
    sync.metrics
        .sync("endpoint", result.as_ref().map_or_else(SyncError::outcome, |_| "ok"));
    match result {
        Ok(out) => {
            let mut body = json!({ "success": true, "user": user_json(&out.profile) });
            if let Some(obj) = body.as_object_mut() {
                obj.insert("videosSynced".into(), out.videos_synced.is_some().into());
                obj.insert("complete".into(), out.complete.into());
                if !out.missing_scopes.is_empty() {
                    obj.insert("missingScopes".into(), out.missing_scopes.clone().into());
                    obj.insert("reconsent".into(), sync.reconsent_url.clone().into());
                }
            }
            Reply::json(200, &body)
        }
        Err(SyncError::Store(e)) => store_failure("sync", &e, request_id),
        Err(e) => failure_reply(sync, &id.user_id, &e, request_id),
    }
}

/// `GET /api/auth/tiktok/profile`.
pub async fn profile(sync: &SyncService, request_id: &str, identity: Option<Arc<Identity>>) -> Reply {
    let Some(id) = identity else {
        return unauthorized();
    };
    match sync.store.user_profile(&id.user_id).await {
        Ok(Some(p)) => Reply::json(
            200,
            &json!({ "profile": user_json(&p), "lastSyncedAt": p.last_synced_at.and_then(iso) }),
        ),
        // Deleted since the session was cached: nobody is signed in.
        Ok(None) => unauthorized(),
        Err(e) => store_failure("profile read", &e, request_id),
    }
}

/// `?cursor=` of the videos endpoint: `<create_time>_<id>` of the previous page's last video.
fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let (t, id) = s.split_once('_')?;
    let t = t.parse().ok()?;
    (!id.is_empty() && id.len() <= 64).then(|| (t, id.to_string()))
}

/// `GET /api/auth/tiktok/videos[?limit=N&cursor=C]`: stored videos, newest first.
pub async fn videos(sync: &SyncService, req: &Request, identity: Option<Arc<Identity>>) -> Reply {
    let Some(id) = identity else {
        return unauthorized();
    };
    let bad = |what: &str| Reply::json(400, &json!({ "error": what, "requestId": req.request_id }));
    let limit = match req.query_one("limit") {
        None => DEFAULT_VIDEO_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_VIDEO_LIMIT).contains(&n) => n,
            _ => return bad("invalid_limit"),
        },
    };
    let before = match req.query_one("cursor") {
        None => None,
        Some(c) => match parse_cursor(&c) {
            Some(b) => Some(b),
            None => return bad("invalid_cursor"),
        },
    };
    let read = sync
        .store
        .user_videos(&id.user_id, limit + 1, before.as_ref().map(|(t, i)| (*t, i.as_str())))
        .await;
    match read {
        Ok((mut vs, total)) => {
            // One more than asked for tells whether another page exists.
            let more = vs.len() > limit as usize;
            vs.truncate(limit as usize);
            let next = vs
                .last()
                .filter(|_| more)
                .map(|v| format!("{}_{}", v.create_time, v.id));
            Reply::json(
                200,
                &json!({
                    "videos": vs.iter().map(video_json).collect::<Vec<_>>(),
                    "count": total,
                    "nextCursor": next,
                }),
            )
        }
        Err(e) => store_failure("videos read", &e, &req.request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        assert_eq!(parse_cursor("1700000000_7300"), Some((1_700_000_000, "7300".into())));
        for bad in ["", "_", "12_", "x_1", "123"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
