//! TikTok data sync end to end: paging through every public video, counts and streak in the
//! store and the session, 429 retries, cool-down, scopes, dead grants, the read endpoints and
//! the background job's selection of due users.

use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{Endpoint, Fault, MockUser, MockVideo, DEMO_OPEN_ID};
use serde_json::Value;

use crate::support::*;

const SYNC: &str = "/api/user/sync-tiktok";
const LIST: &str = "/v2/video/list/";
const INFO: &str = "/v2/user/info/";

/// The demo account with 45 public videos: one on each of the last five days (a five-day
/// streak whichever side of midnight the test runs), then a gap, then 40 older ones an hour
/// apart; plus a private one that must never be stored.
fn creator_with_45_videos() -> MockUser {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut user = MockUser::with_videos(DEMO_OPEN_ID, "creadora", 0);
    let recent = (0..5).map(|i| now - i * 86_400 - 60);
    let older = (0..40).map(|j| now - 7 * 86_400 - j * 3_600);
    user.videos = recent
        .chain(older)
        .enumerate()
        .map(|(seq, t)| MockVideo::generated("creadora", seq as u64, t))
        .collect();
    let mut private = MockVideo::generated("creadora", 99, now - 5 * 86_400);
    private.is_public = false;
    user.videos.push(private);
    user.display_name = "Creadora ✨".into();
    user.is_verified = true;
    user.bio_description = "Bailes diarios".into();
    user.follower_count = 1_234;
    user.following_count = 56;
    user.likes_count = 78_900;
    user.video_count = 46;
    user
}

async fn env_with_creator() -> TestEnv {
    TestEnv::builder()
        .mock(|m| m.users = vec![creator_with_45_videos()])
        .start()
        .await
}

async fn signed_in(env: &TestEnv) -> Browser {
    let b = Browser::new();
    let r = b.login(env, "/dashboard").await;
    assert_eq!(r.status, 302, "login: {}", r.body);
    b
}

async fn sync(b: &Browser, env: &TestEnv) -> Resp {
    b.send(b.client.post(env.url(SYNC))).await
}

fn body_json(r: &nini_auth::mock_tiktok::RecordedRequest) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("video/list body not JSON ({e}): {}", r.body))
}

/// Moves both clocks, so TikTok's token expiries and our cool-downs agree.
fn advance(env: &TestEnv, secs: i64) {
    env.mock.advance_clock(secs);
    env.sidecar().auth.clock.advance(secs);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pages_through_45_videos_and_derives_count_and_streak() {
    let env = env_with_creator().await;
    let b = signed_in(&env).await;
    env.mock.clear_requests();

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["success"], true);
    let user = &j["user"];
    assert_eq!(user["videos"], 45);
    assert_eq!(user["streak"], 5);
    assert_eq!(user["tiktokId"], DEMO_OPEN_ID);
    assert_eq!(user["name"], "Creadora ✨");
    assert_eq!(user["verified"], true);
    assert_eq!(user["followerCount"], 1_234);
    assert_eq!(user["likesCount"], 78_900);
    assert_eq!(user["tiktokVideoCount"], 46);
    assert_eq!(user["bio"], "Bailes diarios");
    assert_eq!(j["complete"], true);
    assert!(j.get("missingScopes").is_none(), "{j}");

    // Exactly three pages of at most 20, each cursor the previous page's answer.
    let info = env.mock.requests_to(INFO);
    assert_eq!(info.len(), 1);
    let fields = info[0].query_param("fields").expect("fields");
    assert!(
        fields.contains("follower_count") && fields.contains("bio_description"),
        "{fields}"
    );
    let pages = env.mock.requests_to(LIST);
    assert_eq!(pages.len(), 3, "{pages:?}");
    // The videos the mock actually serves (regenerating them here could land a second later).
    let served = env.mock.config().user(DEMO_OPEN_ID).cloned().expect("creator");
    let mut times: Vec<i64> = served
        .videos
        .iter()
        .filter(|v| v.is_public)
        .map(|v| v.create_time)
        .collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let expected_cursors = [None, Some(times[19] * 1000), Some(times[39] * 1000)];
    for (page, cursor) in pages.iter().zip(expected_cursors) {
        assert_eq!(page.status, 200);
        assert_eq!(page.method, "POST");
        assert!(page
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/json"));
        let fields = page.query_param("fields").expect("fields");
        for f in ["id", "create_time", "cover_image_url", "share_url", "view_count"] {
            assert!(fields.split(',').any(|x| x == f), "{fields} lacks {f}");
        }
        let body = body_json(page);
        assert_eq!(body["max_count"], 20);
        match cursor {
            None => assert!(body.get("cursor").is_none(), "first page sends no cursor: {body}"),
            Some(c) => assert_eq!(body["cursor"], c, "{body}"),
        }
    }

    // The session (what the NINI frontend polls) carries the new counts.
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["user"]["videos"], 45);
    assert_eq!(s["user"]["streak"], 5);
    assert_eq!(s["user"]["verified"], true);

    // The read endpoints: profile, and videos newest first with paging.
    let p = b.get(&env.url("/api/auth/tiktok/profile")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let p = p.json();
    assert_eq!(p["profile"]["videos"], 45);
    assert_eq!(p["profile"]["followingCount"], 56);
    assert!(p["lastSyncedAt"].is_string(), "{p}");

    let first = b.get(&env.url("/api/auth/tiktok/videos?limit=20")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["count"], 45);
    let vids = first["videos"].as_array().expect("videos");
    assert_eq!(vids.len(), 20);
    assert_eq!(vids[0]["createTime"], times[0]);
    assert!(vids[0]["id"].is_string() && vids[0]["id"].as_str().is_some_and(|s| s.len() >= 19));
    let mut seen = 20;
    let mut next = first["nextCursor"].as_str().map(String::from);
    while let Some(c) = next {
        let page = b
            .get(&env.url(&format!("/api/auth/tiktok/videos?limit=20&cursor={}", urlencode(&c))))
            .await
            .json();
        let n = page["videos"].as_array().map(Vec::len).unwrap_or(0);
        assert!(n > 0, "{page}");
        seen += n;
        next = page["nextCursor"].as_str().map(String::from);
    }
    assert_eq!(seen, 45, "paging returns every stored video once");
    let all = b.get(&env.url("/api/auth/tiktok/videos")).await.json();
    let private_title = "Video 99";
    assert!(
        all["videos"]
            .as_array()
            .expect("videos")
            .iter()
            .all(|v| v["title"] != private_title),
        "private videos are never stored"
    );
    let bad = b.get(&env.url("/api/auth/tiktok/videos?cursor=nonsense")).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_from_tiktok_is_retried_and_the_sync_succeeds() {
    let env = TestEnv::start().await;
    let b = signed_in(&env).await;
    env.mock.clear_requests();
    env.mock.inject_fault(Endpoint::VideoList, Fault::RateLimited, 1);

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The demo user: six public videos on the six days before now.
    assert_eq!(r.json()["user"]["videos"], 6);
    let statuses: Vec<u16> = env.mock.requests_to(LIST).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
    // The retry is the same first page.
    let bodies: Vec<Value> = env.mock.requests_to(LIST).iter().map(body_json).collect();
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_and_attempts_are_bounded() {
    let env = TestEnv::builder().mock(|m| m.retry_after_header = true).start().await;
    let b = signed_in(&env).await;
    env.mock.clear_requests();
    env.mock.inject_fault(Endpoint::UserInfo, Fault::RateLimited, 10);

    let started = Instant::now();
    let r = sync(&b, &env).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], "RateLimited");
    assert_eq!(j["retryAfter"], 1);
    assert!(j["requestId"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Four attempts, each one second (the mock's Retry-After) after the previous.
    assert_eq!(env.mock.requests_to(INFO).len(), 4);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(env.mock.requests_to(LIST).is_empty(), "no videos without a profile");
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_down_is_503_json_with_request_id() {
    let env = TestEnv::start().await;
    let b = signed_in(&env).await;
    env.mock.clear_requests();
    env.mock.inject_fault(Endpoint::VideoList, Fault::InternalError, 10);

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], "TikTokUnavailable");
    assert!(j["requestId"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
    assert_eq!(env.mock.requests_to(LIST).len(), 4);
    // Nothing was stored, so no cool-down: the user may try again.
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["user"]["videos"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_within_the_cooldown_is_429_until_it_passes() {
    let env = TestEnv::start().await;
    let b = signed_in(&env).await;

    assert_eq!(sync(&b, &env).await.status, 200);
    let again = sync(&b, &env).await;
    assert_eq!(again.status, 429, "{}", again.body);
    let j = again.json();
    assert_eq!(j["error"], "cooldown");
    let wait = j["retryAfter"].as_i64().expect("retryAfter");
    assert!((1..=300).contains(&wait), "default cool-down is 5 minutes: {wait}");
    assert_eq!(again.header("retry-after"), Some(wait.to_string().as_str()));

    advance(&env, 120);
    let still = sync(&b, &env).await;
    assert_eq!(still.status, 429);
    assert!(still.json()["retryAfter"].as_i64().expect("retryAfter") <= 180);

    advance(&env, 181);
    let r = sync(&b, &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_syncs_of_one_user_run_once() {
    let env = TestEnv::start().await;
    let b = std::sync::Arc::new(signed_in(&env).await);
    env.mock.clear_requests();
    env.mock
        .inject_fault(Endpoint::UserInfo, Fault::Delay(Duration::from_millis(1500)), 1);

    let url = env.url(SYNC);
    let b1 = b.clone();
    let first = tokio::spawn(async move { b1.send(b1.client.post(url)).await });
    // Wait (bounded) until the first sync is inside TikTok's user-info call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.mock.requests_to(INFO).iter().any(|r| r.status == 0) {
        assert!(Instant::now() < deadline, "first sync never reached TikTok");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = sync(&b, &env).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert_eq!(second.json()["error"], "cooldown");
    let first = first.await.expect("join");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(env.mock.requests_to(INFO).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_session_every_sync_endpoint_is_401_json() {
    let env = TestEnv::start().await;
    let b = Browser::api();
    let r = sync(&b, &env).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    for path in ["/api/auth/tiktok/profile", "/api/auth/tiktok/videos"] {
        let r = b.get(&env.url(path)).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"], "unauthorized", "{path}");
    }
    // A forged cookie is no session either.
    b.set_cookie(session_cookie_name(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(sync(&b, &env).await.status, 401);
    assert!(env.mock.requests_to(LIST).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_video_list_consent_videos_are_skipped_and_reconsent_offered() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    // The person unticks video.list and user.info.stats on TikTok's consent page.
    let cb = b
        .scripted_consent(
            &authorize,
            "mock_auto=authorize&mock_scopes=user.info.basic,user.info.profile",
        )
        .await;
    assert_eq!(b.get(&cb).await.status, 302);
    env.mock.clear_requests();

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["videosSynced"], false);
    assert_eq!(j["user"]["videos"], 0);
    assert_eq!(
        j["user"]["followerCount"],
        Value::Null,
        "stats not granted: never asked"
    );
    assert_eq!(j["user"]["bio"], "Tacos, viajes y código · CDMX ✈️");
    let missing: Vec<&str> = j["missingScopes"]
        .as_array()
        .expect("missingScopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(missing, vec!["user.info.stats", "video.list"]);
    let reconsent = j["reconsent"].as_str().expect("reconsent");
    assert!(
        reconsent.starts_with(&env.url("/api/auth/signin?callbackUrl=")),
        "{reconsent}"
    );
    assert!(
        env.mock.requests_to(LIST).is_empty(),
        "no call that TikTok would refuse"
    );
    let fields = env.mock.requests_to(INFO)[0]
        .query_param("fields")
        .expect("fields")
        .to_string();
    assert!(!fields.contains("follower_count"), "{fields}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_access_token_at_tiktok_is_refreshed_once_and_retried() {
    let env = TestEnv::start().await;
    let b = signed_in(&env).await;
    // TikTok's clock passes the 24 h access lifetime; ours does not, so we still think the
    // token is fresh and learn otherwise from user info.
    env.mock.advance_clock(86_400 + 60);
    env.mock.clear_requests();

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.mock.refresh_calls(), 1);
    let statuses: Vec<u16> = env.mock.requests_to(INFO).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 200]);
    assert_eq!(r.json()["user"]["videos"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_grant_ends_the_session_with_refresh_error() {
    let env = TestEnv::start().await;
    let b = signed_in(&env).await;
    env.mock.revoke_user_grants(DEMO_OPEN_ID);

    let r = sync(&b, &env).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "RefreshAccessTokenError");
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["error"], "RefreshAccessTokenError", "{s}");
    // The session no longer authenticates anything.
    assert_eq!(sync(&b, &env).await.status, 401);
    assert_eq!(b.get(&env.url("/api/auth/tiktok/profile")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn background_job_syncs_recently_active_users_when_due() {
    let env = env_with_creator().await;
    let b = signed_in(&env).await;
    let app = env.sidecar().auth.clone();

    // Signing in is not activity on the app; a request through the proxy is.
    assert_eq!(app.sync.sync_due_users().await.due, 0);
    assert_eq!(b.echo(&env.url("/dashboard"), &[]).await.status, 200);
    let first = app.sync.sync_due_users().await;
    assert_eq!((first.due, first.synced, first.failed), (1, 1, 0), "{first:?}");
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["user"]["videos"], 45);
    assert_eq!(s["user"]["streak"], 5);

    // Fresh data is left alone until `sync.interval` (6 h by default) has passed.
    assert_eq!(app.sync.sync_due_users().await.due, 0);
    advance(&env, 6 * 3_600 + 1);
    let later = app.sync.sync_due_users().await;
    assert_eq!((later.due, later.synced), (1, 1), "{later:?}");
    assert_eq!(env.mock.requests_to(LIST).len(), 6);

    // Users inactive for longer than `sync.active_within` (7 d) are not synced.
    advance(&env, 8 * 86_400);
    assert_eq!(app.sync.sync_due_users().await.due, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_requested_from_another_site_is_refused() {
    let env = env_with_creator().await;
    let b = signed_in(&env).await;
    env.mock.clear_requests();
    // A page on another site making the signed-in browser POST: the browser says where from.
    for (name, value) in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "https://evil.example"),
    ] {
        let r = b.send(b.client.post(env.url(SYNC)).header(name, value)).await;
        assert_eq!(r.status, 403, "{name}: {value}: {}", r.body);
        assert_eq!(r.json()["error"], "cross_site");
    }
    assert!(env.mock.requests().is_empty(), "nothing was asked of TikTok");
    // The app's own fetch (same origin) syncs.
    let r = b
        .send(
            b.client
                .post(env.url(SYNC))
                .header("Sec-Fetch-Site", "same-origin")
                .header("Origin", env.url("")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
