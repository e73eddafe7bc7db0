//! Sign-out: revoke reaches TikTok with the user's access token, the old cookie is dead
//! afterwards, and a POST without a valid csrfToken changes nothing.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn signout_revokes_and_kills_the_cookie() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    b.login(&env, "/").await;
    let session = b.cookie(session_cookie_name()).expect("session");
    let access = env.mock.requests_to("/v2/user/info/")[0]
        .header("authorization")
        .expect("bearer")
        .trim_start_matches("Bearer ")
        .to_string();

    // The confirmation page.
    let page = b.get(&env.url("/api/auth/signout?callbackUrl=%2Fbye")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Cerrar sesión"));
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");
    assert_eq!(extract_value(&page.body, "callbackUrl"), Some(env.url("/bye")));

    // Without csrfToken: nothing happens.
    let r = b
        .post_form(&env.url("/api/auth/signout"), &[("callbackUrl", "/bye")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.set_cookie(session_cookie_name()).is_none());
    // With a wrong token: nothing happens either.
    let r = b
        .post_form(
            &env.url("/api/auth/signout"),
            &[("csrfToken", "wrong"), ("callbackUrl", "/bye")],
        )
        .await;
    assert_eq!(r.status, 403);
    // Token right but CSRF cookie missing (cross-site form): nothing.
    let stranger = Browser::new();
    stranger.set_cookie(session_cookie_name(), &session);
    let r = stranger
        .post_form(&env.url("/api/auth/signout"), &[("csrfToken", &csrf)])
        .await;
    assert_eq!(r.status, 403);
    assert!(env.mock.requests_to("/v2/oauth/revoke/").is_empty());
    let api = Browser::api();
    api.set_cookie(session_cookie_name(), &session);
    assert_eq!(
        api.echo(&env.url("/api/user"), &[]).await.status,
        200,
        "still signed in"
    );

    // The real thing.
    let r = b
        .post_form(
            &env.url("/api/auth/signout"),
            &[("csrfToken", &csrf), ("callbackUrl", "/bye")],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.location(), Some(env.url("/bye").as_str()));
    let clear = r.set_cookie(session_cookie_name()).expect("cookie cleared");
    assert!(clear.contains("Max-Age=0"), "{clear}");

    let revokes = env.mock.requests_to("/v2/oauth/revoke/");
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].form_param("token"), Some(access.as_str()));
    assert_eq!(
        revokes[0].form_param("client_key"),
        Some(nini_auth::mock_tiktok::DEMO_CLIENT_KEY)
    );
    assert_eq!(env.mock.live_grants(nini_auth::mock_tiktok::DEMO_OPEN_ID), 0);

    // The old cookie is dead, replayed by anyone.
    let r = api.get(&env.url("/api/user")).await;
    assert_eq!(r.status, 401);
    let r = api.get(&env.url("/api/auth/session")).await;
    assert_eq!(r.body.trim(), "null");
    // And the database forgot the tokens.
    let conn = rusqlite::Connection::open(&env.raw_db).expect("db");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM users WHERE access_token IS NOT NULL", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn signout_json_answer_and_tiktok_failure_still_signs_out() {
    use nini_auth::mock_tiktok::{Endpoint, Fault};
    let env = TestEnv::start().await;
    let b = Browser::new();
    b.login(&env, "/").await;
    env.mock.inject_fault(Endpoint::Revoke, Fault::NonJson502, 1);
    let csrf = b.csrf(&env).await;
    let r = b
        .post_v5(
            &env.url("/api/auth/signout"),
            &[("csrfToken", csrf.as_str()), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"url": env.url("/")}));
    assert!(
        b.cookie(session_cookie_name()).is_none(),
        "cookie cleared even though TikTok failed"
    );
    assert_eq!(b.get(&env.url("/api/auth/session")).await.body.trim(), "null");
}

/// Signs `b` out (this device only, unless `everywhere`).
async fn sign_out(env: &TestEnv, b: &Browser, everywhere: bool) {
    let csrf = b.csrf(env).await;
    let mut form = vec![("csrfToken", csrf.as_str())];
    if everywhere {
        form.push(("everywhere", "true"));
    }
    let r = b.post_form(&env.url("/api/auth/signout"), &form).await;
    assert_eq!(r.status, 302, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_out_one_device_leaves_the_others_and_the_last_one_revokes() {
    let env = TestEnv::start().await;
    let (phone, phone_session, _) = signed_in(&env).await;
    let (laptop, laptop_session, _) = signed_in(&env).await;
    let grants_before = env.mock.live_grants(nini_auth::mock_tiktok::DEMO_OPEN_ID);

    sign_out(&env, &phone, false).await;
    assert_eq!(api_with(&phone_session).get(&env.url("/api/user")).await.status, 401);
    // The laptop is still signed in, with a working TikTok grant.
    assert_eq!(
        api_with(&laptop_session).echo(&env.url("/api/user"), &[]).await.status,
        200
    );
    let s = laptop.get(&env.url("/api/auth/session")).await.json();
    assert!(s["error"].is_null(), "{s}");
    assert!(
        env.mock.requests_to("/v2/oauth/revoke/").is_empty(),
        "not the last session"
    );
    assert_eq!(
        env.mock.live_grants(nini_auth::mock_tiktok::DEMO_OPEN_ID),
        grants_before
    );

    // The user's last session ends: now the grant is revoked.
    sign_out(&env, &laptop, false).await;
    assert_eq!(env.mock.requests_to("/v2/oauth/revoke/").len(), 1);
    assert_eq!(api_with(&laptop_session).get(&env.url("/api/user")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_out_everywhere_ends_every_session_and_revokes() {
    let env = TestEnv::start().await;
    let (phone, phone_session, _) = signed_in(&env).await;
    let (_laptop, laptop_session, _) = signed_in(&env).await;
    sign_out(&env, &phone, true).await;
    for s in [&phone_session, &laptop_session] {
        assert_eq!(api_with(s).get(&env.url("/api/user")).await.status, 401);
    }
    assert_eq!(env.mock.requests_to("/v2/oauth/revoke/").len(), 1);
    // everywhere is CSRF-protected like any sign-out.
    let (other, other_session, _) = signed_in(&env).await;
    let r = other
        .post_form(
            &env.url("/api/auth/signout"),
            &[("csrfToken", "forged"), ("everywhere", "true")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        api_with(&other_session).echo(&env.url("/api/user"), &[]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_racing_the_last_sign_out_keeps_its_tokens() {
    // Revoke is slow at TikTok: while device A's sign-out waits on it, device B signs in and
    // stores a new grant. Only the tokens A read may be forgotten.
    let env = TestEnv::builder().mock(|m| m.revoke_delay_ms = 800).start().await;
    let (a, _, uid) = signed_in(&env).await;
    let signout = {
        let env_url = env.url("/api/auth/signout");
        let csrf = a.csrf(&env).await;
        let a = std::sync::Arc::new(a);
        let a2 = a.clone();
        tokio::spawn(async move { a2.post_form(&env_url, &[("csrfToken", csrf.as_str())]).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.mock.requests_to("/v2/oauth/revoke/").is_empty() {
        assert!(std::time::Instant::now() < deadline, "sign-out never reached TikTok");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_b, b_session, b_uid) = signed_in(&env).await;
    assert_eq!(b_uid, uid);
    assert_eq!(signout.await.expect("join").status, 302);
    let stored = env.sidecar().auth.store.tokens(&uid).await.expect("read");
    assert!(stored.is_some(), "B's fresh tokens survived A's sign-out");
    let r = api_with(&b_session).echo(&env.url("/api/user"), &[]).await;
    assert_eq!(r.status, 200);
    let s = Browser::api();
    s.set_cookie(session_cookie_name(), &b_session);
    assert!(s.get(&env.url("/api/auth/session")).await.json()["error"].is_null());
}
