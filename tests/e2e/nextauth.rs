//! The next-auth REST surface: csrf, providers, session (`null` without one), JSON
//! redirects for v5 (`X-Auth-Return-Redirect`) and v4 (`json=true`), error codes, pages.

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn csrf_providers_session_contract() {
    let env = TestEnv::start().await;
    let b = Browser::api();

    let r = b.get(&env.url("/api/auth/csrf")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("cache-control").is_some_and(|c| c.contains("no-store")));
    let token = r.json()["csrfToken"].as_str().expect("token").to_string();
    let cookie = r.set_cookie("nini-auth.csrf").expect("csrf cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    // Same browser, same token; no new cookie.
    let r2 = b.get(&env.url("/api/auth/csrf")).await;
    assert_eq!(r2.json()["csrfToken"], token);
    assert!(r2.set_cookie("nini-auth.csrf").is_none());
    // A forged CSRF cookie is replaced, not trusted.
    let f = Browser::api();
    f.set_cookie("nini-auth.csrf", &format!("{token}.AAAA"));
    let r3 = f.get(&env.url("/api/auth/csrf")).await;
    assert_ne!(r3.json()["csrfToken"], token);

    let p = b.get(&env.url("/api/auth/providers")).await.json();
    assert_eq!(
        p,
        json!({"tiktok": {"id": "tiktok", "name": "TikTok", "type": "oauth",
            "signinUrl": env.url("/api/auth/signin/tiktok"),
            "callbackUrl": env.url("/api/auth/callback/tiktok")}})
    );

    let s = b.get(&env.url("/api/auth/session")).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body, "null", "literal null without a session");

    // Unknown actions: 400 "Bad request."; a method an action does not serve: 405 with Allow.
    assert_eq!(b.get(&env.url("/api/auth/nope")).await.status, 400);
    let r = b.send(b.client.delete(env.url("/api/auth/session"))).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    // v4 logger endpoint.
    assert_eq!(
        b.post_form(&env.url("/api/auth/_log"), &[("level", "error")])
            .await
            .json(),
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_json_after_login_and_update() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    b.login(&env, "/").await;
    let s = b.get(&env.url("/api/auth/session")).await.json();
    let user = &s["user"];
    assert_eq!(user["name"], "María José 🌮");
    assert_eq!(user["tiktokId"], nini_auth::mock_tiktok::DEMO_OPEN_ID);
    assert_eq!(user["username"], "mariajose");
    assert_eq!(user["verified"], true);
    assert!(user["id"].as_str().is_some_and(|id| id.len() == 32));
    assert!(user["image"].as_str().is_some());
    for k in ["niniScore", "videos", "streak"] {
        assert!(user[k].is_i64(), "{k}");
    }
    let expires = s["expires"].as_str().expect("expires");
    assert!(
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339).is_ok(),
        "{expires}"
    );

    // update(): CSRF-checked JSON POST returns the session; without CSRF 400 null.
    let csrf = b.csrf(&env).await;
    let r = b
        .send(
            b.client
                .post(env.url("/api/auth/session"))
                .header("content-type", "application/json")
                .body(json!({"csrfToken": csrf, "data": {"name": "Hacker"}}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user"]["name"], "María José 🌮", "identity is server-owned");
    let r = b
        .send(
            b.client
                .post(env.url("/api/auth/session"))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "null");

    // A stale cookie gets `null` and is cleared.
    let stale = Browser::api();
    stale.set_cookie(session_cookie_name(), &"B".repeat(43));
    let r = stale.get(&env.url("/api/auth/session")).await;
    assert_eq!(r.body, "null");
    assert!(r
        .set_cookie(session_cookie_name())
        .is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_redirects_v5_and_v4_and_errors() {
    let env = TestEnv::start().await;
    let b = Browser::api();
    let csrf = b.csrf(&env).await;
    // v5
    let r = b
        .post_v5(
            &env.url("/api/auth/signin/tiktok"),
            &[("csrfToken", csrf.as_str()), ("callbackUrl", "/dashboard")],
        )
        .await;
    assert_eq!(r.status, 200);
    let url = r.json()["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&format!("{}/v2/auth/authorize/?client_key=", env.mock.base_url())),
        "{url}"
    );
    // v4
    let r = b
        .post_form(
            &env.url("/api/auth/signin/tiktok"),
            &[("csrfToken", &csrf), ("callbackUrl", "/"), ("json", "true")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["url"]
        .as_str()
        .is_some_and(|u| u.contains("/v2/auth/authorize/")));
    // Missing CSRF: 200 with an absolute error URL (v5 semantics), and nothing stored.
    let r = b
        .post_v5(&env.url("/api/auth/signin/tiktok"), &[("callbackUrl", "/dashboard")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"url": env.url("/api/auth/signin?error=MissingCSRF")}));
    // Without the header, a form POST with a bad token gets the error page.
    let r = Browser::new()
        .post_form(&env.url("/api/auth/signin/tiktok"), &[("csrfToken", "x")])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("data-error=\"MissingCSRF\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_in_spanish_and_english() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let es = b.get(&env.url("/api/auth/signin?callbackUrl=%2Fdashboard")).await;
    assert!(es.body.contains("Continuar con TikTok") && es.body.contains("lang=\"es\""));
    let en = b
        .get_with(&env.url("/api/auth/signin"), &[("accept-language", "en-GB,en;q=0.9")])
        .await;
    assert!(en.body.contains("Continue with TikTok") && en.body.contains("lang=\"en\""));
    let forced = b
        .get_with(&env.url("/api/auth/signin?lang=es"), &[("accept-language", "en")])
        .await;
    assert!(forced.body.contains("Continuar con TikTok"));
    assert!(es
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));

    for (code, status, text) in [
        ("AccessDenied", 403, "Cancelaste"),
        ("Configuration", 500, "configuración"),
        ("OAuthCallbackError", 200, "caducó"),
        ("<script>", 200, "Algo salió mal"),
    ] {
        let r = b
            .get(&env.url(&format!("/api/auth/error?error={}", urlencode(code))))
            .await;
        assert_eq!(r.status, status, "{code}");
        assert!(r.body.contains(text), "{code}: {}", r.body);
        assert!(!r.body.contains("<script>"));
        let rid = r.header("x-request-id").expect("rid");
        assert!(r.body.contains(rid));
    }
    let en = b
        .get_with(
            &env.url("/api/auth/error?error=AccessDenied"),
            &[("accept-language", "en")],
        )
        .await;
    assert!(en.body.contains("You cancelled on TikTok"));
}
