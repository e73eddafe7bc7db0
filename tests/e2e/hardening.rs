//! Defects a security review found, each with the attack that exposed it: HEAD and other
//! methods running state-changing handlers, sign-in starts that fill the database, forged
//! session cookies that cost a database read each.

use crate::support::*;

fn used_states(env: &TestEnv) -> i64 {
    rusqlite::Connection::open(&env.raw_db)
        .expect("db")
        .query_row("SELECT count(*) FROM used_states", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_unserved_methods_change_nothing() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = b.cookie_header().expect("the pending sign-in's cookie");

    // HEAD on the callback: refused before anything is read, the state stays usable.
    let r = client.head(&cb).header("cookie", &cookie).send().await.expect("head");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
    assert!(env.mock.requests_to("/v2/oauth/token/").is_empty(), "no code redeemed");
    assert_eq!(used_states(&env), 0, "the state is not used up");
    // So the browser's real GET still signs in.
    let done = b.get(&cb).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert!(b.cookie(session_cookie_name()).is_some());

    // Every other method on a state-changing endpoint: 405 with Allow, nothing changes.
    for (method, path, allow) in [
        ("PUT", "/api/auth/callback/tiktok", "GET"),
        ("POST", "/api/auth/callback/tiktok", "GET"),
        ("DELETE", "/api/auth/signout", "GET, HEAD, POST"),
        ("PATCH", "/api/auth/session", "GET, HEAD, POST"),
        ("GET", "/api/auth/webhooks/tiktok", "POST"),
        ("HEAD", "/api/auth/webhooks/tiktok", "POST"),
        ("PUT", "/api/auth/signin/tiktok", "GET, HEAD, POST"),
        ("POST", "/api/auth/csrf", "GET, HEAD"),
        ("DELETE", "/api/auth/jwks.json", "GET, HEAD"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = client
            .request(m, env.url(path))
            .header("cookie", b.cookie_header().expect("cookies"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    assert_eq!(
        b.get(&env.url("/api/auth/session")).await.json()["user"]["tiktokId"],
        nini_auth::mock_tiktok::DEMO_OPEN_ID,
        "still signed in"
    );

    // Reads answer HEAD without a body.
    let r = client.head(env.url("/api/auth/signout")).send().await.expect("head");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_of_the_start_address_is_a_link_to_the_sign_in_page() {
    let env = TestEnv::start().await;
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let b = Browser::new();
        let req = b.client.request(
            method.clone(),
            env.url("/api/auth/signin/tiktok?callbackUrl=%2Fdashboard"),
        );
        let r = b.send(req).await;
        assert_eq!(r.status, 302, "{method}");
        let page = url::Url::parse(r.location().expect("location")).expect("url");
        assert_eq!(page.path(), "/api/auth/signin", "{method}: the page, whose form POSTs");
        let target: Vec<(String, String)> = page.query_pairs().into_owned().collect();
        assert_eq!(
            target,
            vec![("callbackUrl".to_string(), env.url("/dashboard"))],
            "{method}"
        );
        assert!(
            r.set_cookie_prefixed("nini-auth.state.").is_none(),
            "{method}: nothing started"
        );
    }
    assert!(env.mock.requests().is_empty(), "TikTok never involved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_sign_in_starts_writes_nothing_and_blocks_no_one() {
    let env = TestEnv::builder()
        .raw(|r| {
            r.server.trusted_proxies = vec!["127.0.0.1/32".into()];
            r.limits.signin_starts_per_minute = 100_000;
        })
        .start()
        .await;
    let api = Browser::api();
    let csrf = api.csrf(&env).await;
    // Many clients (rotating addresses) start sign-ins they never finish.
    let starts: Vec<_> = (0..2000u32)
        .map(|i| {
            let req = api
                .client
                .post(env.url("/api/auth/signin/tiktok"))
                .header(
                    "X-Forwarded-For",
                    format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                )
                .form(&[("csrfToken", csrf.as_str())]);
            api.send(req)
        })
        .collect();
    for r in join_all(starts).await {
        assert_eq!(r.status, 302);
    }
    // The server kept nothing: a pending sign-in lives in its browser's sealed cookie.
    assert_eq!(used_states(&env), 0);
    let size = std::fs::metadata(&env.raw_db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(env.raw_db.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(size < 1_000_000, "the database grew to {size} bytes");
    // A real person signs in as usual.
    let b = Browser::new();
    assert_eq!(b.login(&env, "/dashboard").await.status, 302);
    assert_eq!(used_states(&env), 1, "only the completed sign-in's state is recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_session_cookies_are_refused_in_memory() {
    let env = TestEnv::start().await;
    let auth = env.sidecar().auth.clone();
    let lookups = &auth.metrics.session_lookups;
    let store_reads = || lookups.found.get() + lookups.unknown.get();
    let before = (store_reads(), lookups.forged.get());
    // Random values of the right shape (and of the old 43-character shape).
    for i in 0..300 {
        let len = if i % 2 == 0 { 64 } else { 43 };
        let forged: String = (0..len)
            .map(|j| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 31 + j * 7) % 64] as char)
            .collect();
        let r = api_with(&forged).get(&env.url("/api/user")).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(store_reads(), before.0, "no forged cookie reached the store");
    assert_eq!(lookups.forged.get() - before.1, 300);

    // A cookie we did issue whose session is gone (signed out elsewhere, expired): the store
    // is asked once, then the answer is remembered.
    let (b, session, _) = signed_in(&env).await;
    let csrf = b.csrf(&env).await;
    assert_eq!(
        b.post_form(&env.url("/api/auth/signout"), &[("csrfToken", &csrf)])
            .await
            .status,
        302
    );
    let before = (lookups.unknown.get(), lookups.known_unknown.get());
    for _ in 0..50 {
        assert_eq!(api_with(&session).get(&env.url("/api/user")).await.status, 401);
    }
    assert_eq!(lookups.unknown.get() - before.0, 1, "one store read");
    assert_eq!(lookups.known_unknown.get() - before.1, 49);

    // Junk cookies planted beside the real one cannot push it out.
    let (_, live, _) = signed_in(&env).await;
    let api = Browser::api();
    let req = api.client.get(env.url("/api/user")).header(
        "cookie",
        format!("{0}=junk1; {0}=junk2; {0}={live}", session_cookie_name()),
    );
    assert_eq!(api.send(req).await.status, 200);
}

/// At most two session cookie values are looked at per request, and sign-out ends at most
/// two: a request stuffed with genuine (MAC-valid) cookies costs two store reads, not one
/// per value.
#[tokio::test(flavor = "multi_thread")]
async fn at_most_two_session_cookies_count_per_request() {
    let env = TestEnv::start().await;
    let ring = nini_auth::crypto::KeyRing::from_base64(&env.keys).expect("ring");
    let unknown = || ring.new_session_token().expect("token").0;
    let name = session_cookie_name();
    let lookups = &env.sidecar().auth.metrics.session_lookups;
    let (_, live, _) = signed_in(&env).await;

    // Two genuine but unknown values first: the live third one is never looked at.
    let before = lookups.found.get() + lookups.unknown.get();
    let api = Browser::api();
    let header = format!("{name}={}; {name}={}; {name}={live}", unknown(), unknown());
    let r = api
        .send(api.client.get(env.url("/api/user")).header("cookie", header))
        .await;
    assert_eq!(r.status, 401, "only the first two values count");
    assert_eq!(
        lookups.found.get() + lookups.unknown.get() - before,
        2,
        "two store reads"
    );
    // One unknown value first: the live one is second and counts.
    let header = format!("{name}={}; {name}={live}", unknown());
    let r = api
        .send(api.client.get(env.url("/api/user")).header("cookie", header))
        .await;
    assert_eq!(r.status, 200);

    // Sign-out with three live sessions in one header ends the first two only.
    let (b, s1, _) = signed_in(&env).await;
    let (_, s2, _) = signed_in(&env).await;
    let (_, s3, _) = signed_in(&env).await;
    let csrf = b.csrf(&env).await;
    let csrf_cookie = b.cookie(&name.replace("session", "csrf")).expect("csrf cookie");
    let header = format!(
        "{name}={s1}; {name}={s2}; {name}={s3}; {}={csrf_cookie}",
        name.replace("session", "csrf")
    );
    let r = api
        .send(
            api.client
                .post(env.url("/api/auth/signout"))
                .header("cookie", header)
                .form(&[("csrfToken", csrf.as_str())]),
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(api_with(&s1).get(&env.url("/api/user")).await.status, 401);
    assert_eq!(api_with(&s2).get(&env.url("/api/user")).await.status, 401);
    assert_eq!(
        api_with(&s3).get(&env.url("/api/user")).await.status,
        200,
        "the third was not touched"
    );
}
