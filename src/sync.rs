//! TikTok data sync: the signed-in user's profile and all public videos into the store, the
//! derived `videos` count and posting `streak`, the sync endpoint with its per-user cool-down,
//! the read endpoints for the upstream app, and the background refresher. Every TikTok call
//! goes through an app-wide per-endpoint budget and bounded, jittered retries.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::app::App;
use crate::authflow;
use crate::config::SyncConfig;
use crate::store::sync::{StoredVideo, SyncedProfile, UserProfile, VideoSet};
use crate::store::{Identity, StoreError};
use crate::tiktok::{self, TikTokError, Video, MAX_VIDEO_PAGE};
use crate::tokens::{TokenError, REFRESH_ERROR};
use crate::web::{Reply, Request};

/// Calls per TikTok request, the first included; one more only for the token refresh.
const MAX_ATTEMPTS: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// All one sync may spend waiting (budget and backoff): someone may be waiting on the answer.
const WAIT_BUDGET: Duration = Duration::from_secs(20);
/// TikTok's limits are per sliding minute (tiktok-api.md §7).
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The background job looks for due users at least this often.
const MAX_TICK: Duration = Duration::from_secs(300);
/// Scopes whose absence makes a sync incomplete; re-consent can add them.
const SYNC_SCOPES: &[&str] = &["user.info.profile", "user.info.stats", "video.list"];
const VIDEO_SCOPE: &str = "video.list";
const DEFAULT_VIDEO_LIMIT: u32 = 100;
const MAX_VIDEO_LIMIT: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The refresh token expired or was revoked: the user must sign in again.
    #[error("TikTok grant is gone; the user must sign in again")]
    GrantDead,
    /// TikTok refused for lack of consent (`scope_not_authorized`, `scope_permission_missed`).
    #[error("TikTok answered {code}: the user must consent again")]
    ScopeMissing { code: String },
    #[error("a sync of this user is already running")]
    InProgress,
    /// Our budget or TikTok's limit stayed exhausted for as long as we were willing to wait.
    #[error("TikTok rate limit still exhausted after waiting")]
    RateLimited { retry_after: Option<Duration> },
    #[error("TikTok request failed")]
    TikTok(#[source] TikTokError),
    #[error("TikTok token refresh failed")]
    Token(#[source] TokenError),
    #[error("store failure")]
    Store(#[from] StoreError),
}

impl SyncError {
    fn from_token(e: TokenError) -> SyncError {
        match e {
            TokenError::GrantDead => SyncError::GrantDead,
            other => SyncError::Token(other),
        }
    }

    /// The `outcome` label of the sync metric.
    fn outcome(&self) -> &'static str {
        match self {
            SyncError::GrantDead => "grant_dead",
            SyncError::ScopeMissing { .. } => "scope_missing",
            SyncError::InProgress => "in_progress",
            SyncError::RateLimited { .. } => "rate_limited",
            SyncError::TikTok(_) | SyncError::Token(_) => "tiktok_error",
            SyncError::Store(_) => "store_error",
        }
    }

    fn chain(&self) -> String {
        crate::error::chain(self)
    }
}

/// What one successful sync stored.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub profile: UserProfile,
    /// Videos stored; `None` when `video.list` is not granted (stored videos were kept).
    pub videos_synced: Option<usize>,
    pub pages: u32,
    /// False when paging stopped early (page cap or a cursor that did not move back).
    pub complete: bool,
    /// Sync scopes the app asks for but the user did not grant.
    pub missing_scopes: Vec<String>,
}

// === budget ===

/// A sliding-window limit: at most `limit` acquisitions in any `window`.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    hits: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: limit.max(1) as usize,
            window,
            hits: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a slot at `now`, or says how long until the oldest one frees up.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut hits, now);
        if hits.len() < self.limit {
            hits.push_back(now);
            return Ok(());
        }
        let oldest = hits.front().copied().unwrap_or(now);
        Err((oldest + self.window)
            .saturating_duration_since(now)
            .max(Duration::from_millis(1)))
    }

    /// Slots free at `now`.
    pub fn remaining(&self, now: Instant) -> usize {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut hits, now);
        self.limit.saturating_sub(hits.len())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn expire(&self, hits: &mut VecDeque<Instant>, now: Instant) {
        while hits
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            hits.pop_front();
        }
    }
}

/// Display API endpoints; TikTok limits each separately.
#[derive(Debug, Clone, Copy)]
enum Api {
    UserInfo,
    VideoList,
}

/// One sidecar's sync state: the per-endpoint budgets and the users being synced right now.
pub struct SyncState {
    user_info: RateLimiter,
    video_list: RateLimiter,
    running: Arc<Mutex<HashSet<String>>>,
}

impl SyncState {
    pub fn new(cfg: &SyncConfig) -> SyncState {
        SyncState {
            user_info: RateLimiter::new(cfg.requests_per_minute, RATE_WINDOW),
            video_list: RateLimiter::new(cfg.requests_per_minute, RATE_WINDOW),
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn limiter(&self, api: Api) -> &RateLimiter {
        match api {
            Api::UserInfo => &self.user_info,
            Api::VideoList => &self.video_list,
        }
    }

    /// Marks the user as being synced; None if a sync of theirs is already running.
    fn begin(&self, user_id: &str) -> Option<Running> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(user_id.to_string()).then(|| Running {
            set: self.running.clone(),
            user_id: user_id.to_string(),
        })
    }
}

/// Held while a user's sync runs; dropping it (also on error or cancellation) ends it.
struct Running {
    set: Arc<Mutex<HashSet<String>>>,
    user_id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.set.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.user_id);
    }
}

/// The sync state of `app`: limiters and in-progress users.
fn state(app: &App) -> &SyncState {
    &app.sync
}

/// Delay before retry `attempt` (1-based): exponential and capped, half of it fixed and half
/// random ("equal jitter"), so syncs that failed together do not come back together.
fn backoff(attempt: u32, random: u64) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let half = exp / 2;
    let spread = half.as_millis() as u64;
    half + Duration::from_millis(random % (spread + 1))
}

fn jitter() -> u64 {
    // Without randomness the delay is simply the longest one: still bounded.
    crate::crypto::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(u64::MAX)
}

// === TikTok calls ===

/// One sync's TikTok session: the user's token (refreshed at most once) and its wait budget.
struct Caller<'a> {
    app: &'a App,
    state: &'a SyncState,
    user_id: &'a str,
    token: String,
    refreshed: bool,
    deadline: Instant,
}

impl Caller<'_> {
    /// Sleeps for `d` unless that would overrun the wait budget.
    async fn pause(&self, d: Duration) -> bool {
        if Instant::now() + d > self.deadline {
            return false;
        }
        tokio::time::sleep(d).await;
        true
    }

    async fn slot(&self, api: Api) -> Result<(), SyncError> {
        let limiter = self.state.limiter(api);
        loop {
            match limiter.try_acquire(Instant::now()) {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    if !self.pause(wait).await {
                        return Err(SyncError::RateLimited {
                            retry_after: Some(wait),
                        });
                    }
                }
            }
        }
    }

    /// Calls TikTok with the user's token: within the budget, one refresh and one retry on
    /// `access_token_invalid`, backoff on 429 and 5xx, never a refresh for a scope error.
    async fn call<T, F, Fut>(&mut self, api: Api, mut f: F) -> Result<T, SyncError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, TikTokError>>,
    {
        let mut attempt = 0u32;
        loop {
            self.slot(api).await?;
            attempt += 1;
            let err = match f(self.token.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if err.is_access_token_invalid() {
                if self.refreshed {
                    return Err(SyncError::TikTok(err));
                }
                self.refreshed = true;
                self.token = self
                    .app
                    .tokens
                    .force_refresh(self.app, self.user_id, &self.token)
                    .await
                    .map_err(SyncError::from_token)?;
                continue;
            }
            if err.is_scope_error() {
                let code = match &err {
                    TikTokError::Api { code, .. } => code.clone(),
                    _ => "scope_not_authorized".into(),
                };
                return Err(SyncError::ScopeMissing { code });
            }
            if !err.is_transient() {
                return Err(SyncError::TikTok(err));
            }
            let hinted = err.retry_after();
            let delay = hinted.unwrap_or_else(|| backoff(attempt, jitter()));
            if attempt >= MAX_ATTEMPTS || !self.pause(delay).await {
                return Err(if err.is_rate_limited() {
                    SyncError::RateLimited { retry_after: hinted }
                } else {
                    SyncError::TikTok(err)
                });
            }
            log::info!(
                "TikTok {api:?} for user {} failed ({err}); retry {attempt} after {delay:?}",
                self.user_id
            );
        }
    }
}

fn stored_video(v: Video, now: i64) -> Option<StoredVideo> {
    Some(StoredVideo {
        id: v.id.filter(|id| !id.is_empty() && id.len() <= 64)?,
        create_time: v.create_time.unwrap_or(0),
        title: v.title,
        description: v.video_description,
        cover_image_url: v.cover_image_url,
        share_url: v.share_url,
        duration: v.duration,
        view_count: v.view_count,
        like_count: v.like_count,
        comment_count: v.comment_count,
        share_count: v.share_count,
        synced_at: now,
    })
}

/// All public videos through cursor paging, newest first; stops at `max_pages` or when the
/// cursor fails to move back in time (TikTok has been seen to repeat pages). Returns the
/// videos, the pages read and whether the list is complete.
async fn fetch_videos(c: &mut Caller<'_>, max_pages: u32) -> Result<(Vec<StoredVideo>, u32, bool), SyncError> {
    let tiktok = &c.app.tiktok;
    let now = c.app.clock.now();
    let mut cursor: Option<i64> = None;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut pages = 0u32;
    while pages < max_pages {
        let page = c
            .call(Api::VideoList, move |token| async move {
                tiktok.video_list(&token, cursor, MAX_VIDEO_PAGE).await
            })
            .await?;
        pages += 1;
        for v in page.videos.into_iter().filter_map(|v| stored_video(v, now)) {
            if seen.insert(v.id.clone()) {
                out.push(v);
            }
        }
        if !page.has_more {
            return Ok((out, pages, true));
        }
        match page.cursor {
            Some(next) if next > 0 && cursor.is_none_or(|prev| next < prev) => cursor = Some(next),
            other => {
                log::warn!(
                    "video/list cursor {other:?} after {cursor:?} does not move back; stopping at {} videos for user {}",
                    out.len(),
                    c.user_id
                );
                return Ok((out, pages, false));
            }
        }
    }
    log::warn!(
        "video/list page cap ({max_pages}) reached for user {}; {} videos stored",
        c.user_id,
        out.len()
    );
    Ok((out, pages, false))
}

/// Syncs one user now: profile (the fields the granted scopes allow) and, with `video.list`,
/// every public video; stores the result in one transaction and drops cached identities.
pub async fn sync_user(app: &App, user_id: &str) -> Result<SyncOutcome, SyncError> {
    let st = state(app);
    let _running = st.begin(user_id).ok_or(SyncError::InProgress)?;
    sync_locked(app, st, user_id).await
}

async fn sync_locked(app: &App, st: &SyncState, user_id: &str) -> Result<SyncOutcome, SyncError> {
    let token = app
        .tokens
        .access_token(app, user_id)
        .await
        .map_err(SyncError::from_token)?;
    let uid = user_id.to_string();
    let scope = match app.store.run(move |s| s.tokens(&uid)).await? {
        Some(t) => t.scope,
        None => return Err(SyncError::GrantDead),
    };
    let granted = tiktok::split_scopes(&scope);
    let missing_scopes: Vec<String> = SYNC_SCOPES
        .iter()
        .filter(|s| !granted.contains(s) && app.config.tiktok.scopes.iter().any(|c| c == *s))
        .map(|s| s.to_string())
        .collect();
    let mut caller = Caller {
        app,
        state: st,
        user_id,
        token,
        refreshed: false,
        deadline: Instant::now() + WAIT_BUDGET,
    };

    let fields = tiktok::fields_for_scopes(&granted);
    let profile = if fields.is_empty() {
        SyncedProfile::default()
    } else {
        let (tiktok, fields) = (&app.tiktok, &fields);
        let info = caller
            .call(Api::UserInfo, move |token| async move {
                tiktok.user_info_with_retry_after(&token, fields).await
            })
            .await?;
        SyncedProfile {
            display_name: info.display_name,
            avatar: info.avatar_url,
            username: info.username,
            verified: info.is_verified,
            bio: info.bio_description,
            follower_count: info.follower_count,
            following_count: info.following_count,
            likes_count: info.likes_count,
            video_count: info.video_count,
        }
    };

    let (videos, pages, complete) = if granted.contains(&VIDEO_SCOPE) {
        let (v, pages, complete) = fetch_videos(&mut caller, app.config.sync.max_pages).await?;
        (Some(v), pages, complete)
    } else {
        (None, 0, true)
    };

    let now = app.clock.now();
    let streak_days = videos.as_ref().map(|vs| {
        let times: Vec<i64> = vs.iter().map(|v| v.create_time).collect();
        streak(&times, now, &app.config.sync.timezone)
    });
    let videos_synced = videos.as_ref().map(Vec::len);
    let uid = user_id.to_string();
    let saved = app
        .store
        .run(move |s| {
            let set = videos.as_deref().map(|v| VideoSet {
                videos: v,
                streak: streak_days.unwrap_or(0),
            });
            s.save_sync(&uid, &profile, set, now)
        })
        .await?;
    app.sessions.remove_user(user_id);
    // The user was deleted while we were talking to TikTok: nothing is signed in any more.
    let profile = saved.ok_or(SyncError::GrantDead)?;
    log::info!(
        "synced TikTok data of user {user_id}: {} videos, streak {}, {pages} pages",
        profile.videos,
        profile.streak
    );
    Ok(SyncOutcome {
        profile,
        videos_synced,
        pages,
        complete,
        missing_scopes,
    })
}

// === streak ===

/// Consecutive calendar days (in `tz`) with at least one post, ending today or yesterday
/// (a streak is not broken before the day is over); 0 otherwise. Times are epoch seconds;
/// posts dated after today are ignored.
pub fn streak(create_times: &[i64], now: i64, tz: &TimeZone) -> i64 {
    let day = |t: i64| Timestamp::from_second(t).ok().map(|ts| tz.to_datetime(ts).date());
    let Some(today) = day(now) else {
        return 0;
    };
    let days: HashSet<Date> = create_times
        .iter()
        .filter_map(|t| day(*t))
        .filter(|d| *d <= today)
        .collect();
    let mut cur = if days.contains(&today) {
        today
    } else {
        match today.yesterday() {
            Ok(y) if days.contains(&y) => y,
            _ => return 0,
        }
    };
    let mut n = 0;
    while days.contains(&cur) {
        n += 1;
        match cur.yesterday() {
            Ok(y) => cur = y,
            Err(_) => break,
        }
    }
    n
}

// === endpoints ===

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

/// Where the user goes to grant the missing scopes: sign-in again, back to the home page.
fn reconsent_url(app: &App) -> String {
    let target = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("callbackUrl", &app.url("/"))
        .finish();
    app.url(&format!("{}/signin?{target}", authflow::BASE))
}

fn failure_reply(app: &App, user_id: &str, e: &SyncError, request_id: &str) -> Reply {
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
                &json!({ "error": "ScopeMissing", "reconsent": reconsent_url(app), "requestId": request_id }),
            );
        }
        SyncError::InProgress => {
            return too_many("cooldown", app.config.sync.cooldown.as_secs(), request_id);
        }
        _ => {}
    }
    log::warn!("sync of user {user_id} failed: {} request_id={request_id}", e.chain());
    match e {
        SyncError::RateLimited { retry_after } => too_many(
            "RateLimited",
            retry_after.unwrap_or(RATE_WINDOW).as_secs_f64().ceil() as u64,
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

/// `POST <sync.path>`: sync the signed-in user's TikTok data now.
pub async fn sync_endpoint(app: &App, identity: Option<Arc<Identity>>, request_id: &str) -> Reply {
    let Some(id) = identity else {
        return unauthorized();
    };
    let st = state(app);
    // Taken before the cool-down check, so two concurrent requests cannot both pass it.
    let Some(_running) = st.begin(&id.user_id) else {
        app.metrics.sync("endpoint", "in_progress");
        return too_many("cooldown", app.config.sync.cooldown.as_secs(), request_id);
    };
    let cooldown = app.config.sync.cooldown.as_secs() as i64;
    let uid = id.user_id.clone();
    match app.store.run(move |s| s.last_synced_at(&uid)).await {
        Ok(Some(last)) => {
            let wait = (last.saturating_add(cooldown) - app.clock.now()).min(cooldown);
            if wait > 0 {
                app.metrics.sync("endpoint", "cooldown");
                return too_many("cooldown", wait as u64, request_id);
            }
        }
        Ok(None) => {}
        Err(e) => {
            log::error!("sync: reading last sync failed: {e} request_id={request_id}");
            return internal(request_id);
        }
    }
    let result = sync_locked(app, st, &id.user_id).await;
    app.metrics
        .sync("endpoint", result.as_ref().map_or_else(SyncError::outcome, |_| "ok"));
    match result {
        Ok(out) => {
            let mut body = json!({ "success": true, "user": user_json(&out.profile) });
            if let Some(obj) = body.as_object_mut() {
                obj.insert("videosSynced".into(), out.videos_synced.is_some().into());
                obj.insert("complete".into(), out.complete.into());
                if !out.missing_scopes.is_empty() {
                    obj.insert("missingScopes".into(), out.missing_scopes.clone().into());
                    obj.insert("reconsent".into(), reconsent_url(app).into());
                }
            }
            Reply::json(200, &body)
        }
        Err(e) => failure_reply(app, &id.user_id, &e, request_id),
    }
}

/// `GET /api/auth/tiktok/profile`.
pub async fn profile(app: &App, req: &Request, identity: Option<Arc<Identity>>) -> Reply {
    let Some(id) = identity else {
        return unauthorized();
    };
    let uid = id.user_id.clone();
    match app.store.run(move |s| s.user_profile(&uid)).await {
        Ok(Some(p)) => Reply::json(
            200,
            &json!({ "profile": user_json(&p), "lastSyncedAt": p.last_synced_at.and_then(iso) }),
        ),
        // Deleted since the session was cached: nobody is signed in.
        Ok(None) => unauthorized(),
        Err(e) => {
            log::error!("profile read failed: {e} request_id={}", req.request_id);
            internal(&req.request_id)
        }
    }
}

/// `?cursor=` of the videos endpoint: `<create_time>_<id>` of the previous page's last video.
fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let (t, id) = s.split_once('_')?;
    let t = t.parse().ok()?;
    (!id.is_empty() && id.len() <= 64).then(|| (t, id.to_string()))
}

/// `GET /api/auth/tiktok/videos[?limit=N&cursor=C]`: stored videos, newest first.
pub async fn videos(app: &App, req: &Request, identity: Option<Arc<Identity>>) -> Reply {
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
    let uid = id.user_id.clone();
    let read = app
        .store
        .run(move |s| s.user_videos(&uid, limit + 1, before.as_ref().map(|(t, i)| (*t, i.as_str()))))
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
        Err(e) => {
            log::error!("videos read failed: {e} request_id={}", req.request_id);
            internal(&req.request_id)
        }
    }
}

// === background ===

/// What one background run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Recently active users whose data was older than `sync.interval`, up to `sync.batch`.
    pub due: usize,
    pub synced: usize,
    pub failed: usize,
    /// Left for a later run to keep half of the budget for people pressing "sync".
    pub deferred: usize,
}

/// Syncs up to `sync.batch` recently active users whose data is older than `sync.interval`,
/// least recently synced first. Failures are logged; nothing here panics or gives up for good.
pub async fn sync_due_users(app: &App) -> BatchReport {
    let cfg = &app.config.sync;
    let now = app.clock.now();
    let active = app
        .activity
        .active_since(now.saturating_sub(cfg.active_within.as_secs() as i64));
    let mut report = BatchReport::default();
    if active.is_empty() {
        return report;
    }
    let before = now.saturating_sub(cfg.interval.as_secs() as i64);
    let batch = cfg.batch as usize;
    let due = match app.store.run(move |s| s.due_for_sync(&active, before, batch)).await {
        Ok(d) => d,
        Err(e) => {
            log::warn!("background sync: cannot list due users: {e}");
            return report;
        }
    };
    report.due = due.len();
    let st = state(app);
    for (i, uid) in due.iter().enumerate() {
        let t = Instant::now();
        let low = |l: &RateLimiter| l.remaining(t) * 2 < l.limit();
        if low(&st.user_info) || low(&st.video_list) {
            report.deferred = due.len() - i;
            log::info!("background sync: budget low, {} users deferred", report.deferred);
            break;
        }
        let Some(_running) = st.begin(uid) else {
            continue;
        };
        let result = sync_locked(app, st, uid).await;
        app.metrics
            .sync("background", result.as_ref().map_or_else(SyncError::outcome, |_| "ok"));
        match result {
            Ok(_) => report.synced += 1,
            Err(SyncError::GrantDead) => {
                report.failed += 1;
                log::info!("background sync: grant of user {uid} is gone");
            }
            Err(e) => {
                report.failed += 1;
                log::warn!("background sync of user {uid} failed: {}", e.chain());
            }
        }
    }
    report
}

/// Keeps recently active users' TikTok data fresh: every `min(sync.interval, 5 min)`, one
/// [`sync_due_users`] run. `sync.interval = "0s"` turns it off.
pub struct BackgroundSync {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for BackgroundSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = self.app.config.sync.interval;
        if interval.is_zero() {
            let _ = shutdown.changed().await;
            return;
        }
        let mut tick = tokio::time::interval(interval.min(MAX_TICK));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        r = sync_due_users(&self.app) => {
                            if r.due > 0 {
                                log::info!("background sync: {r:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Zoned>().expect("zoned").timestamp().as_second()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("tz")
    }

    #[test]
    fn streak_counts_consecutive_days_ending_today_or_yesterday() {
        let utc = TimeZone::UTC;
        let now = at("2024-05-10T15:00:00[UTC]");
        let days = |list: &[&str]| -> Vec<i64> { list.iter().map(|d| at(&format!("{d}T12:00:00[UTC]"))).collect() };
        assert_eq!(streak(&[], now, &utc), 0);
        assert_eq!(streak(&days(&["2024-05-10", "2024-05-09", "2024-05-08"]), now, &utc), 3);
        // Not posted yet today: the streak still stands on yesterday.
        assert_eq!(streak(&days(&["2024-05-09", "2024-05-08"]), now, &utc), 2);
        // Last post two days ago: broken.
        assert_eq!(streak(&days(&["2024-05-08", "2024-05-07"]), now, &utc), 0);
        // A gap ends the count; older posts do not matter.
        assert_eq!(
            streak(
                &days(&["2024-05-10", "2024-05-09", "2024-05-07", "2024-05-06", "2024-05-05"]),
                now,
                &utc
            ),
            2
        );
        // Duplicates and order do not matter.
        let mut many = days(&["2024-05-08", "2024-05-10", "2024-05-09", "2024-05-10"]);
        many.push(at("2024-05-10T00:00:00[UTC]"));
        assert_eq!(streak(&many, now, &utc), 3);
        // Future-dated posts are ignored rather than counted as today.
        assert_eq!(streak(&days(&["2024-05-11", "2024-05-12"]), now, &utc), 0);
    }

    #[test]
    fn streak_midnight_edges() {
        let utc = TimeZone::UTC;
        let posts = [at("2024-05-09T23:59:59[UTC]"), at("2024-05-10T00:00:00[UTC]")];
        assert_eq!(streak(&posts, at("2024-05-10T00:00:00[UTC]"), &utc), 2);
        assert_eq!(streak(&posts, at("2024-05-11T23:59:59[UTC]"), &utc), 2);
        // One second later the 10th is the day before yesterday.
        assert_eq!(streak(&posts, at("2024-05-12T00:00:00[UTC]"), &utc), 0);
    }

    #[test]
    fn streak_days_follow_the_time_zone() {
        let mx = tz("America/Mexico_City");
        // 03:00 UTC is still the previous evening in Mexico City (UTC-6).
        let posts = [at("2024-05-10T03:00:00[UTC]"), at("2024-05-10T20:00:00[UTC]")];
        let now = at("2024-05-10T21:00:00[UTC]");
        assert_eq!(streak(&posts, now, &TimeZone::UTC), 1);
        assert_eq!(streak(&posts, now, &mx), 2);
    }

    #[test]
    fn streak_across_dst_changes() {
        let ny = tz("America/New_York");
        // Spring forward: 2024-03-10 has 23 hours.
        let posts: Vec<i64> = [
            "2024-03-09T23:30",
            "2024-03-10T00:30",
            "2024-03-10T23:30",
            "2024-03-11T00:15",
        ]
        .iter()
        .map(|t| at(&format!("{t}:00[America/New_York]")))
        .collect();
        assert_eq!(streak(&posts, at("2024-03-11T09:00:00[America/New_York]"), &ny), 3);
        // Fall back: 2024-11-03 has 25 hours; 00:30 and 23:30 are the same day.
        let posts: Vec<i64> = ["2024-11-02T12:00", "2024-11-03T00:30", "2024-11-03T23:30"]
            .iter()
            .map(|t| at(&format!("{t}:00[America/New_York]")))
            .collect();
        assert_eq!(streak(&posts, at("2024-11-04T08:00:00[America/New_York]"), &ny), 2);
        // A 24-hour step from 23:30 on the 2nd lands on 22:30 on the 3rd: still the next day.
        let first = at("2024-11-02T23:30:00[America/New_York]");
        assert_eq!(streak(&[first, first + 86_400], first + 86_400, &ny), 2);
    }

    #[test]
    fn limiter_allows_limit_per_sliding_window() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.try_acquire(t0 + Duration::from_secs(i)).is_ok());
        }
        assert_eq!(l.remaining(t0 + Duration::from_secs(2)), 0);
        assert_eq!(
            l.try_acquire(t0 + Duration::from_secs(30)),
            Err(Duration::from_secs(30))
        );
        // The first slot frees exactly one window after it was taken, not earlier.
        assert!(l.try_acquire(t0 + Duration::from_millis(59_999)).is_err());
        assert!(l.try_acquire(t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(l.try_acquire(t0 + Duration::from_secs(60)), Err(Duration::from_secs(1)));
        assert_eq!(l.remaining(t0 + Duration::from_secs(200)), 3);
        let one = RateLimiter::new(0, Duration::from_secs(1));
        assert_eq!(one.limit(), 1, "a zero limit would block forever");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        for attempt in 1..10 {
            let exp = (BACKOFF_BASE * 2u32.pow(attempt - 1)).min(BACKOFF_CAP);
            let lo = backoff(attempt, 0);
            let hi = backoff(attempt, u64::MAX);
            assert_eq!(lo, exp / 2);
            assert!(hi >= lo && hi <= exp, "{attempt}: {hi:?}");
        }
        assert_eq!(backoff(1, 0), Duration::from_millis(500));
        assert_eq!(backoff(40, 0), BACKOFF_CAP / 2);
    }

    #[test]
    fn cursor_round_trips() {
        assert_eq!(parse_cursor("1700000000_7300"), Some((1_700_000_000, "7300".into())));
        for bad in ["", "_", "12_", "x_1", "123"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
