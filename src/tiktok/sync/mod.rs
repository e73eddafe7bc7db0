//! TikTok data sync: the signed-in user's profile and all public videos into the store, the
//! derived `videos` count and posting `streak` (`streak`), the sync and read endpoints
//! (`endpoints`), and the background refresher. Every TikTok call goes through a
//! per-endpoint budget the replicas share (`Store::rate_hit`) and bounded, jittered
//! retries; a user is synced by one task on one replica at a time.

mod endpoints;
mod streak;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use endpoints::{profile, sync_endpoint, videos};
pub use streak::streak;

use crate::clock::Clock;
use crate::config::SyncConfig;
use crate::metrics::Metrics;
use crate::store::cache::{Activity, SessionCache};
use crate::store::{LockPurpose, Store, StoreError, StoredVideo, SyncedProfile, UserLock, UserProfile, VideoSet};
use crate::tiktok::tokens::{TokenError, TokenManager};
use crate::tiktok::{self, TikTokClient, TikTokError, Video, MAX_VIDEO_PAGE};

/// Calls per TikTok request, the first included; one more only for the token refresh.
const MAX_ATTEMPTS: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// All one sync may spend waiting (budget and backoff): someone may be waiting on the answer.
const WAIT_BUDGET: Duration = Duration::from_secs(20);
/// TikTok's limits are per minute (tiktok-api.md §7); we count in fixed minute windows.
const RATE_WINDOW: u64 = 60;
/// The background job looks for due users at least this often.
const MAX_TICK: Duration = Duration::from_secs(300);
/// How long a replica may hold a user's sync lock before another may assume it died
/// (SQLite leases; PostgreSQL releases with the connection).
const SYNC_LOCK_TTL: Duration = Duration::from_secs(120);
/// Scopes whose absence makes a sync incomplete; re-consent can add them.
const SYNC_SCOPES: &[&str] = &["user.info.profile", "user.info.stats", "video.list"];
const VIDEO_SCOPE: &str = "video.list";

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
            TokenError::Store(s) => SyncError::Store(s),
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
        crate::auth::error::chain(self)
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

/// Display API endpoints; TikTok limits each separately.
#[derive(Debug, Clone, Copy)]
enum Api {
    UserInfo,
    VideoList,
}

impl Api {
    /// The shared budget's key.
    fn budget_key(self) -> &'static str {
        match self {
            Api::UserInfo => "tiktok:user/info",
            Api::VideoList => "tiktok:video/list",
        }
    }
}

/// The sync service: what it needs from the layers below, and the users this process is
/// syncing right now.
pub struct SyncService {
    cfg: SyncConfig,
    /// The scopes the app asks for (a missing one is worth re-consent).
    requested_scopes: Vec<String>,
    /// Where a user goes to consent again (the sign-in page, back to home).
    reconsent_url: String,
    store: Arc<dyn Store>,
    tiktok: TikTokClient,
    tokens: Arc<TokenManager>,
    sessions: Arc<SessionCache>,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    clock: Clock,
    running: Arc<Mutex<HashSet<String>>>,
}

/// Held while a user's sync runs here and (across replicas) in the store; dropping it, also
/// on error or cancellation, ends it.
struct Running {
    set: Arc<Mutex<HashSet<String>>>,
    user_id: String,
    lock: Option<UserLock>,
}

impl Running {
    async fn finish(mut self) {
        if let Some(l) = self.lock.take() {
            l.release().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.set.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.user_id);
    }
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

/// What `SyncService::new` is built from.
pub struct SyncDeps {
    pub store: Arc<dyn Store>,
    pub tiktok: TikTokClient,
    pub tokens: Arc<TokenManager>,
    pub sessions: Arc<SessionCache>,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl SyncService {
    pub fn new(cfg: SyncConfig, requested_scopes: Vec<String>, reconsent_url: String, d: SyncDeps) -> SyncService {
        SyncService {
            cfg,
            requested_scopes,
            reconsent_url,
            store: d.store,
            tiktok: d.tiktok,
            tokens: d.tokens,
            sessions: d.sessions,
            activity: d.activity,
            metrics: d.metrics,
            clock: d.clock,
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// Marks the user as being synced, here and across replicas; None if a sync of theirs is
    /// already running anywhere.
    async fn begin(&self, user_id: &str) -> Result<Option<Running>, StoreError> {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(user_id.to_string()) {
                return Ok(None);
            }
        }
        let mut guard = Running {
            set: self.running.clone(),
            user_id: user_id.to_string(),
            lock: None,
        };
        let now = self.clock.now();
        match self
            .store
            .try_lock_user(LockPurpose::Sync, user_id, SYNC_LOCK_TTL, now)
            .await?
        {
            Some(l) => {
                guard.lock = Some(l);
                Ok(Some(guard))
            }
            None => Ok(None),
        }
    }

    /// Syncs one user now: profile (the fields the granted scopes allow) and, with
    /// `video.list`, every public video; stores the result in one transaction.
    pub async fn sync_user(&self, user_id: &str) -> Result<SyncOutcome, SyncError> {
        let running = self.begin(user_id).await?.ok_or(SyncError::InProgress)?;
        let out = self.sync_locked(user_id).await;
        running.finish().await;
        out
    }

    async fn sync_locked(&self, user_id: &str) -> Result<SyncOutcome, SyncError> {
        let token = self.tokens.access_token(user_id).await.map_err(SyncError::from_token)?;
        let scope = match self.store.tokens(user_id).await? {
            Some(t) => t.scope,
            None => return Err(SyncError::GrantDead),
        };
        let granted = tiktok::split_scopes(&scope);
        let missing_scopes: Vec<String> = SYNC_SCOPES
            .iter()
            .filter(|s| !granted.contains(s) && self.requested_scopes.iter().any(|c| c == *s))
            .map(|s| s.to_string())
            .collect();
        let mut caller = Caller {
            sync: self,
            user_id,
            token,
            refreshed: false,
            deadline: Instant::now() + WAIT_BUDGET,
        };

        let fields = tiktok::fields_for_scopes(&granted);
        let profile = if fields.is_empty() {
            SyncedProfile::default()
        } else {
            let (client, fields) = (&self.tiktok, &fields);
            let info = caller
                .call(Api::UserInfo, move |token| async move {
                    client.user_info_with_retry_after(&token, fields).await
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
            let (v, pages, complete) = caller.fetch_videos(self.cfg.max_pages).await?;
            (Some(v), pages, complete)
        } else {
            (None, 0, true)
        };

        let now = self.clock.now();
        let streak_days = videos.as_ref().map(|vs| {
            let times: Vec<i64> = vs.iter().map(|v| v.create_time).collect();
            streak(&times, now, &self.cfg.timezone)
        });
        let videos_synced = videos.as_ref().map(Vec::len);
        let set = videos.as_deref().map(|v| VideoSet {
            videos: v,
            streak: streak_days.unwrap_or(0),
        });
        let saved = self.store.save_sync(user_id, &profile, set, now).await?;
        self.sessions.remove_user(user_id);
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

    /// Whether more than half of an endpoint's budget for this minute is spent (the
    /// background job leaves that half to people pressing "sync").
    async fn budget_low(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let limit = self.cfg.requests_per_minute.max(1);
        for api in [Api::UserInfo, Api::VideoList] {
            let used = self.store.rate_peek(api.budget_key(), RATE_WINDOW, now).await?;
            if used.saturating_mul(2) > limit {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Syncs up to `sync.batch` recently active users whose data is older than
    /// `sync.interval`, least recently synced first. Failures are logged; nothing here
    /// panics or gives up for good.
    pub async fn sync_due_users(&self) -> BatchReport {
        let cfg = &self.cfg;
        let now = self.clock.now();
        let active = self
            .activity
            .active_since(now.saturating_sub(cfg.active_within.as_secs() as i64));
        let mut report = BatchReport::default();
        if active.is_empty() {
            return report;
        }
        let before = now.saturating_sub(cfg.interval.as_secs() as i64);
        let due = match self.store.due_for_sync(&active, before, cfg.batch as usize).await {
            Ok(d) => d,
            Err(e) => {
                log::warn!("background sync: cannot list due users: {e}");
                return report;
            }
        };
        report.due = due.len();
        for (i, uid) in due.iter().enumerate() {
            match self.budget_low().await {
                Ok(false) => {}
                Ok(true) => {
                    report.deferred = due.len() - i;
                    log::info!("background sync: budget low, {} users deferred", report.deferred);
                    break;
                }
                Err(e) => {
                    log::warn!("background sync: cannot read the budget: {e}");
                    report.deferred = due.len() - i;
                    break;
                }
            }
            // Being synced here or on another replica: that one will do.
            let Ok(Some(running)) = self.begin(uid).await else {
                continue;
            };
            let result = self.sync_locked(uid).await;
            running.finish().await;
            self.metrics
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
    /// `sync_due_users` run, until `stop` turns true. `sync.interval = "0s"` turns it off.
    pub async fn run_background(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.cfg.interval;
        if interval.is_zero() {
            let _ = stop.changed().await;
            return;
        }
        let mut tick = tokio::time::interval(interval.min(MAX_TICK));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    tokio::select! {
                        _ = stop.changed() => break,
                        r = self.sync_due_users() => {
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

// === TikTok calls ===

/// One sync's TikTok session: the user's token (refreshed at most once) and its wait budget.
struct Caller<'a> {
    sync: &'a SyncService,
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

    /// One call's worth of the shared per-endpoint budget, waiting for the next window
    /// when this one is spent (within the wait budget).
    async fn slot(&self, api: Api) -> Result<(), SyncError> {
        let limit = self.sync.cfg.requests_per_minute.max(1);
        loop {
            let now = self.sync.clock.now();
            let hit = self.sync.store.rate_hit(api.budget_key(), RATE_WINDOW, now).await?;
            if hit.count <= limit {
                return Ok(());
            }
            let wait = Duration::from_secs(hit.resets_in);
            if !self.pause(wait).await {
                return Err(SyncError::RateLimited {
                    retry_after: Some(wait),
                });
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
                    .sync
                    .tokens
                    .force_refresh(self.user_id, &self.token)
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

    /// All public videos through cursor paging, newest first; stops at `max_pages` or when
    /// the cursor fails to move back in time (TikTok has been seen to repeat pages). Returns
    /// the videos, the pages read and whether the list is complete.
    async fn fetch_videos(&mut self, max_pages: u32) -> Result<(Vec<StoredVideo>, u32, bool), SyncError> {
        let client = &self.sync.tiktok;
        let now = self.sync.clock.now();
        let mut cursor: Option<i64> = None;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut pages = 0u32;
        while pages < max_pages {
            let page = self
                .call(Api::VideoList, move |token| async move {
                    client.video_list(&token, cursor, MAX_VIDEO_PAGE).await
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
                        self.user_id
                    );
                    return Ok((out, pages, false));
                }
            }
        }
        log::warn!(
            "video/list page cap ({max_pages}) reached for user {}; {} videos stored",
            self.user_id,
            out.len()
        );
        Ok((out, pages, false))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
