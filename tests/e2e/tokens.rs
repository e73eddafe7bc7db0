//! Token lifecycle: one refresh however many requests (and processes) need the token, the
//! rotated refresh token stored and used next time, and dead grants ending sessions cleanly.

use std::process::Stdio;

use crate::support::*;

const OPEN_ID: &str = nini_auth::mock_tiktok::DEMO_OPEN_ID;

/// Moves both clocks: the mock's (token expiry at TikTok) and the sidecar's.
fn advance(env: &TestEnv, secs: i64) {
    env.mock.advance_clock(secs);
    env.sidecar().auth.clock.advance(secs);
}

fn forwarding(r: &mut nini_auth::config::RawConfig) {
    r.upstream.forward_access_token = true;
}

/// The access token the upstream received for one request of `session` (forwarding on).
async fn forwarded_token(env: &TestEnv, session: &str) -> Option<String> {
    let echo = api_with(session).echo(&env.url("/x"), &[]).await.json();
    upstream_header(&echo, "x-nini-access-token").pop()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_requests_cause_one_refresh() {
    let env = TestEnv::builder()
        .mock(|m| {
            m.access_ttl_s = 7200;
            m.refresh_delay_ms = 300;
        })
        .raw(forwarding)
        .start()
        .await;
    let (_b, session, uid) = signed_in(&env).await;
    let first_token = forwarded_token(&env, &session).await.expect("token forwarded");
    assert!(first_token.starts_with("act."));
    assert_eq!(env.mock.refresh_calls(), 0);

    // 2 h token, 1 h margin: after 3700 s it is due (but still valid at TikTok).
    advance(&env, 3700);
    let api = api_with(&session);
    let urls: Vec<String> = (0..20).map(|i| env.url(&format!("/api/user?i={i}"))).collect();
    let results = join_all(urls.iter().map(|u| api.echo(u, &[])).collect()).await;
    assert_eq!(env.mock.refresh_calls(), 1, "exactly one refresh reached TikTok");
    assert_eq!(env.mock.max_concurrent_refreshes(), 1);
    let mut tokens = std::collections::BTreeSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(upstream_header(&r.json(), "x-nini-access-token").pop().expect("token"));
    }
    assert_eq!(tokens.len(), 1, "all 20 use the same fresh token: {tokens:?}");
    let fresh = tokens.into_iter().next().expect("one");
    assert_ne!(fresh, first_token);
    assert_eq!(env.sidecar().auth.tokens.stats().refreshed, 1);

    // The rotated refresh token was stored (sealed) and is the one the next refresh uses.
    let stored = env
        .sidecar()
        .auth
        .store
        .tokens(&uid)
        .await
        .expect("read")
        .expect("tokens");
    assert_eq!(stored.access_token, fresh);
    let first_refresh = env
        .mock
        .requests_to("/v2/oauth/token/")
        .last()
        .cloned()
        .expect("refresh request");
    assert_eq!(first_refresh.form_param("grant_type"), Some("refresh_token"));
    assert_ne!(
        first_refresh.form_param("refresh_token"),
        Some(stored.refresh_token.as_str())
    );
    advance(&env, 3700);
    let r = api.echo(&env.url("/api/user"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.mock.refresh_calls(), 2);
    let second_refresh = env
        .mock
        .requests_to("/v2/oauth/token/")
        .last()
        .cloned()
        .expect("refresh");
    assert_eq!(
        second_refresh.form_param("refresh_token"),
        Some(stored.refresh_token.as_str()),
        "newest refresh token used"
    );
    // In between, requests used the cached token without touching TikTok.
    let before = env.mock.requests().len();
    for _ in 0..5 {
        assert_eq!(api.echo(&env.url("/api/user"), &[]).await.status, 200);
    }
    assert_eq!(env.mock.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_grant_ends_the_session_cleanly() {
    let env = TestEnv::builder().mock(|m| m.access_ttl_s = 7200).start().await;
    let (b, session, _uid) = signed_in(&env).await;
    // A second device (e.g. a shared computer) with its own session of the same user.
    let (_other, other_session, _) = signed_in(&env).await;
    // The user removes the app at TikTok.
    env.mock.revoke_user_grants(OPEN_ID);
    // Plain browsing needs no token: still signed in.
    assert_eq!(api_with(&session).echo(&env.url("/api/user"), &[]).await.status, 200);
    // Once the token is due, the session check refreshes, TikTok says invalid_grant.
    advance(&env, 3700);
    let s = b.get(&env.url("/api/auth/session")).await;
    assert_eq!(s.status, 200);
    let body = s.json();
    assert_eq!(body["error"], "RefreshAccessTokenError", "{body}");
    assert_eq!(body["user"]["tiktokId"], OPEN_ID);
    // From now on the session no longer authenticates: browser → sign-in, API → 401. No 5xx.
    let r = b.get(&env.url("/dashboard")).await;
    assert_eq!(r.status, 302);
    assert!(r
        .location()
        .is_some_and(|l| l.contains("/api/auth/signin?callbackUrl=%2Fdashboard")));
    let r = api_with(&session).get(&env.url("/api/user")).await;
    assert_eq!(r.status, 401);
    let r = api_with(&session).echo(&env.url("/public"), &[]).await;
    assert!(
        upstream_header(&r.json(), "x-nini-user-id").is_empty(),
        "no identity for a dead grant"
    );
    // Tokens are gone from the store.
    let conn = rusqlite::Connection::open(&env.raw_db).expect("db");
    let (n, err): (i64, Option<String>) = conn
        .query_row("SELECT count(access_token), max(grant_error) FROM users", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert_eq!((n, err.as_deref()), (0, Some("RefreshAccessTokenError")));
    // Signing in again clears the error.
    assert_eq!(b.login(&env, "/").await.status, 302);
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert!(s.get("error").is_none(), "{s}");
    assert_eq!(b.get(&env.url("/dashboard")).await.status, 200);
    // ...but never revives the sessions that ended with the dead grant.
    assert_eq!(api_with(&other_session).get(&env.url("/api/user")).await.status, 401);
    assert_eq!(api_with(&session).get(&env.url("/api/user")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_grant_with_forwarding_redirects_at_once() {
    let env = TestEnv::builder()
        .mock(|m| m.access_ttl_s = 7200)
        .raw(forwarding)
        .start()
        .await;
    let (b, session, _) = signed_in(&env).await;
    env.mock.revoke_user_grants(OPEN_ID);
    advance(&env, 3700);
    let r = b.get(&env.url("/dashboard")).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let r = api_with(&session).get(&env.url("/api/user")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), serde_json::json!({"error": "unauthorized"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_refresh_token_needs_no_tiktok_call() {
    let env = TestEnv::builder()
        .mock(|m| {
            m.access_ttl_s = 7200;
            m.refresh_ttl_s = 10_000;
        })
        .start()
        .await;
    let (b, _session, _) = signed_in(&env).await;
    advance(&env, 20_000);
    let before = env.mock.requests_to("/v2/oauth/token/").len();
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["error"], "RefreshAccessTokenError");
    assert_eq!(
        env.mock.requests_to("/v2/oauth/token/").len(),
        before,
        "no refresh attempted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_outage_during_refresh_keeps_the_session() {
    use nini_auth::mock_tiktok::{Endpoint, Fault};
    let env = TestEnv::builder()
        .mock(|m| m.access_ttl_s = 7200)
        .raw(forwarding)
        .start()
        .await;
    let (b, session, _) = signed_in(&env).await;
    let first = forwarded_token(&env, &session).await.expect("token forwarded");
    advance(&env, 3700);
    env.mock.inject_fault(Endpoint::Token, Fault::InternalError, 1);
    // The early refresh fails: the still-valid token keeps being forwarded, no 5xx.
    let r = api_with(&session).echo(&env.url("/api/user"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream_header(&r.json(), "x-nini-access-token"), vec![first.clone()]);
    // During the retry pause no request waits on TikTok.
    let calls = env.mock.requests_to("/v2/oauth/token/").len();
    let r = api_with(&session).echo(&env.url("/api/user"), &[]).await;
    assert_eq!(upstream_header(&r.json(), "x-nini-access-token"), vec![first.clone()]);
    assert_eq!(env.mock.requests_to("/v2/oauth/token/").len(), calls);
    // After the pause the refresh is retried and succeeds.
    advance(&env, 61);
    let r = api_with(&session).echo(&env.url("/api/user"), &[]).await;
    let fresh = upstream_header(&r.json(), "x-nini-access-token").pop().expect("token");
    assert_ne!(fresh, first);
    assert!(b.get(&env.url("/api/auth/session")).await.json().get("error").is_none());
    // Once the old token has actually expired, a failing refresh means no token (not a stale one).
    advance(&env, 7200);
    env.mock.inject_fault(Endpoint::Token, Fault::InternalError, 1);
    let r = api_with(&session).echo(&env.url("/api/user"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(upstream_header(&r.json(), "x-nini-access-token").is_empty());
}

// === two processes, one database ===

/// Another sidecar process (the real binary) on the test's database, mock and upstream.
fn spawn_sidecar(env: &TestEnv, dir: &std::path::Path, name: &str) -> (Kill, std::net::SocketAddr) {
    // Callbacks never reach these processes; they only proxy for an existing session.
    let config = |listen: std::net::SocketAddr| {
        format!(
            "[admin]\nlisten = \"\"\n[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\nshutdown_timeout = \"2s\"\n\
             [upstream]\nurl = \"http://{}\"\nforward_access_token = true\n\
             [tiktok]\nclient_key = \"{}\"\nscopes = [\"user.info.basic\", \"user.info.profile\", \"user.info.stats\", \"video.list\"]\n\
             authorize_url = \"{}/v2/auth/authorize/\"\napi_base_url = \"{}\"\n\
             [storage]\ndatabase = \"{}\"\n",
            env.upstream,
            nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
            env.mock.base_url(),
            env.mock.base_url(),
            env.raw_db.display()
        )
    };
    let secret = env.keys.join(",");
    let envs = [
        ("NINI_AUTH_SECRET", secret.as_str()),
        ("TIKTOK_CLIENT_SECRET", nini_auth::mock_tiktok::DEMO_CLIENT_SECRET),
        ("RUST_LOG", "warn"),
    ];
    spawn_binary(dir, name, config, &envs, Stdio::null())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_database_refresh_once() {
    let env = TestEnv::builder()
        .mock(|m| {
            m.access_ttl_s = 7200;
            m.refresh_delay_ms = 300;
        })
        .start()
        .await;
    let (_b, session, uid) = signed_in(&env).await;
    let dir = tempfile::tempdir().expect("dir");
    let (_p1, a1) = spawn_sidecar(&env, dir.path(), "one");
    let (_p2, a2) = spawn_sidecar(&env, dir.path(), "two");

    // Make the stored token due for refresh (it is still valid at TikTok): obtained 2 h ago,
    // a minute left, so the 1 h margin applies.
    let conn = rusqlite::Connection::open(&env.raw_db).expect("db");
    let now = unix_now();
    conn.execute(
        "UPDATE users SET token_expires_at = ?1, token_obtained_at = ?2 WHERE id = ?3",
        rusqlite::params![now + 60, now + 60 - 7200, uid],
    )
    .expect("update");
    drop(conn);

    let api = api_with(&session);
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://{}/api/user?i={i}", if i % 2 == 0 { a1 } else { a2 }))
        .collect();
    let results = join_all(urls.iter().map(|u| api.echo(u, &[])).collect()).await;
    let mut tokens = std::collections::BTreeSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(
            upstream_header(&r.json(), "x-nini-access-token")
                .pop()
                .expect("token forwarded"),
        );
    }
    assert_eq!(env.mock.refresh_calls(), 1, "one refresh across two processes");
    assert_eq!(tokens.len(), 1, "both processes forward the rotated token: {tokens:?}");
    let stored = env
        .sidecar()
        .auth
        .store
        .tokens(&uid)
        .await
        .expect("read")
        .expect("tokens");
    assert_eq!(Some(&stored.access_token), tokens.iter().next());
}

#[tokio::test(flavor = "multi_thread")]
async fn signout_in_one_process_reaches_the_other_within_a_second() {
    let env = TestEnv::start().await;
    let (b, session, _) = signed_in(&env).await;
    let dir = tempfile::tempdir().expect("dir");
    let (_p, addr) = spawn_sidecar(&env, dir.path(), "other");
    let api = api_with(&session);
    // The other process caches the session.
    assert_eq!(api.echo(&format!("http://{addr}/api/user"), &[]).await.status, 200);
    let csrf = b.csrf(&env).await;
    let r = b
        .post_form(&env.url("/api/auth/signout"), &[("csrfToken", &csrf)])
        .await;
    assert_eq!(r.status, 302);
    // Poll (bounded) until the other process drops it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let status = api.get(&format!("http://{addr}/api/user")).await.status;
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "other process still serves the signed-out session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
