//! The whole login: protected path → sign-in → TikTok authorize → consent → callback →
//! cookie → upstream sees the identity.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn full_login_reaches_upstream_with_identity_headers() {
    let env = TestEnv::start().await;
    let b = Browser::new();

    // A browser asking for a protected page goes to the sign-in page, keeping the target.
    let r = b.get(&env.url("/dashboard?tab=videos")).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location(),
        Some(
            env.url("/api/auth/signin?callbackUrl=%2Fdashboard%3Ftab%3Dvideos")
                .as_str()
        )
    );

    // The sign-in page (Spanish by default) carries the callback and a CSRF token.
    let page = b.get(r.location().expect("location")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Continuar con TikTok"), "{}", page.body);
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf field");
    let callback = extract_value(&page.body, "callbackUrl").expect("callback field");
    assert_eq!(callback, env.url("/dashboard?tab=videos"));

    // Clicking the button POSTs the form; we are sent to TikTok's authorize URL.
    let start = b
        .post_form(
            &env.url("/api/auth/signin/tiktok"),
            &[("csrfToken", &csrf), ("callbackUrl", &callback)],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = url::Url::parse(start.location().expect("location")).expect("url");
    assert_eq!(authorize.path(), "/v2/auth/authorize/");
    assert_eq!(
        authorize.origin(),
        url::Url::parse(&env.mock.base_url()).expect("mock").origin()
    );
    let q: std::collections::BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("client_key").map(String::as_str),
        Some(nini_auth::mock_tiktok::DEMO_CLIENT_KEY)
    );
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(
        q.get("scope").map(String::as_str),
        Some("user.info.basic,user.info.profile,user.info.stats,video.list")
    );
    assert_eq!(q.get("redirect_uri"), Some(&env.url("/api/auth/callback/tiktok")));
    let state = q.get("state").expect("state");
    assert_eq!(state.len(), 43, "256-bit state");
    assert!(!q.contains_key("client_id") && !q.contains_key("client_secret"));
    assert!(!q.contains_key("code_challenge"), "pkce is off by default");
    assert_eq!(q.len(), 5, "{q:?}");
    // The pending sign-in lives in a sealed cookie of this browser, named after the state.
    let state_cookie = start
        .set_cookie_prefixed("nini-auth.state.")
        .expect("pending sign-in cookie");
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"));
    assert!(state_cookie.contains("Max-Age=600"), "{state_cookie}");
    let sealed = state_cookie
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v)
        .expect("value");
    assert!(
        sealed.starts_with("v2.") && !sealed.contains(state.as_str()),
        "sealed: {state_cookie}"
    );

    // Consent on the mock, then TikTok redirects back with a code containing * and !.
    let cb = b.consent(authorize.as_str(), "authorize").await;
    assert!(cb.contains("%2A0%21"), "codes carry encoded * and !: {cb}");
    let done = b.get(&cb).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(done.location(), Some(env.url("/dashboard?tab=videos").as_str()));

    // Cookie attributes.
    let sc = done.set_cookie(session_cookie_name()).expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"] {
        assert!(sc.contains(attr), "{sc} lacks {attr}");
    }
    assert!(!sc.contains("Domain"), "{sc}");
    let token = b.cookie(session_cookie_name()).expect("stored");
    assert_eq!(token.len(), 64, "256 random bits and a 128-bit MAC, base64url");

    // The code was exchanged decoded exactly once, with client_key and form encoding.
    let tok = env.mock.requests_to("/v2/oauth/token/");
    assert_eq!(tok.len(), 1);
    let code = tok[0].form_param("code").expect("code");
    assert!(code.contains("*0!") && !code.contains('%'), "{code}");
    assert_eq!(
        tok[0].form_param("client_key"),
        Some(nini_auth::mock_tiktok::DEMO_CLIENT_KEY)
    );
    assert!(tok[0]
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/x-www-form-urlencoded"));
    let info = env.mock.requests_to("/v2/user/info/");
    assert_eq!(info.len(), 1);
    let fields = info[0].query_param("fields").expect("fields");
    assert!(
        fields.contains("display_name") && fields.contains("is_verified"),
        "{fields}"
    );

    // The upstream sees the identity; the display name is UTF-8 percent-encoded.
    let echo = b.echo(&env.url("/dashboard/data"), &[]).await;
    assert_eq!(echo.status, 200);
    let e = echo.json();
    assert_eq!(e["path"], "/dashboard/data");
    let name = upstream_header(&e, "x-nini-display-name");
    assert_eq!(name, vec!["Mar%C3%ADa%20Jos%C3%A9%20%F0%9F%8C%AE".to_string()]);
    let decoded = percent_encoding::percent_decode_str(&name[0])
        .decode_utf8()
        .expect("utf8");
    assert_eq!(decoded, "María José 🌮");
    let uid = upstream_header(&e, "x-nini-user-id");
    assert_eq!(uid.len(), 1);
    assert_eq!(upstream_header(&e, "x-forwarded-user"), uid);
    assert_eq!(upstream_header(&e, "x-auth-request-user"), uid);
    assert_eq!(
        upstream_header(&e, "x-nini-tiktok-open-id"),
        vec![nini_auth::mock_tiktok::DEMO_OPEN_ID.to_string()]
    );
    assert_eq!(upstream_header(&e, "x-nini-verified"), vec!["true".to_string()]);
    assert_eq!(upstream_header(&e, "x-nini-avatar-url").len(), 1);
    // Our cookies stay with us.
    assert!(
        upstream_header(&e, "cookie").iter().all(|c| !c.contains("nini-auth")),
        "{e}"
    );
    // A request id is forwarded and echoed back.
    assert_eq!(upstream_header(&e, "x-request-id").len(), 1);
    assert_eq!(
        echo.header("x-request-id"),
        upstream_header(&e, "x-request-id").first().map(String::as_str)
    );

    // The HTML dashboard of the demo app shows the name.
    let dash = b.get(&env.url("/dashboard")).await;
    assert_eq!(dash.status, 200);
    assert!(dash.body.contains("María José 🌮"), "{}", dash.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_clients_get_401_json_and_public_paths_pass() {
    let env = TestEnv::start().await;
    let api = Browser::api();
    for path in ["/dashboard", "/profile/x", "/api/user", "/api/user/settings"] {
        let r = api.get(&env.url(path)).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json(), serde_json::json!({"error": "unauthorized"}));
    }
    // A POST from a browser is not a navigation: 401, not a redirect.
    let b = Browser::new();
    let r = b.post_form(&env.url("/dashboard"), &[("a", "b")]).await;
    assert_eq!(r.status, 401);
    // Public paths go through without identity headers.
    let r = api.echo(&env.url("/public/page?x=1"), &[]).await;
    assert_eq!(r.status, 200);
    let e = r.json();
    assert_eq!(e["path"], "/public/page");
    assert_eq!(e["query"], "x=1");
    assert!(upstream_header(&e, "x-nini-user-id").is_empty());
    // Nothing reached TikTok.
    assert!(env.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pkce_variants_are_sent_and_verified() {
    for (mode, mock_mode) in [
        ("s256", nini_auth::mock_tiktok::PkceMode::RequiredBase64Url),
        ("s256_hex", nini_auth::mock_tiktok::PkceMode::RequiredHex),
    ] {
        let env = TestEnv::builder()
            .mock(move |m| m.pkce_mode = mock_mode)
            .raw(move |r| r.tiktok.pkce = mode.into())
            .start()
            .await;
        let b = Browser::new();
        let authorize = b.start_signin(&env, "/dashboard").await;
        let u = url::Url::parse(&authorize).expect("url");
        let q: std::collections::BTreeMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(
            q.get("code_challenge_method").map(String::as_str),
            Some("S256"),
            "{mode}"
        );
        let ch = q.get("code_challenge").expect("challenge");
        if mode == "s256_hex" {
            assert_eq!(ch.len(), 64);
            assert!(ch.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        } else {
            assert_eq!(ch.len(), 43);
        }
        let cb = b.consent(&authorize, "authorize").await;
        let done = b.get(&cb).await;
        assert_eq!(done.status, 302, "{mode}: {}", done.body);
        let tok = env.mock.requests_to("/v2/oauth/token/");
        assert!(
            tok[0].form_param("code_verifier").is_some_and(|v| v.len() >= 43),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_errors_in_200_and_4xx_bodies_become_error_pages() {
    for status in [200u16, 400] {
        let env = TestEnv::builder()
            .mock(move |m| m.oauth_error_status = status)
            .raw(|r| r.tiktok.client_secret = "wrong-secret".into())
            .start()
            .await;
        let b = Browser::new();
        let authorize = b.start_signin(&env, "/dashboard").await;
        let cb = b.consent(&authorize, "authorize").await;
        let r = b.get(&cb).await;
        assert_eq!(
            r.status, 500,
            "invalid_client is our configuration problem (mock status {status})"
        );
        assert!(r.body.contains("data-error=\"Configuration\""), "{}", r.body);
        let rid = r.header("x-request-id").expect("request id");
        assert!(r.body.contains(rid), "error page shows the request id");
        assert!(b.cookie(session_cookie_name()).is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_outage_and_timeout_are_clean_errors() {
    use nini_auth::mock_tiktok::{Endpoint, Fault};
    let env = TestEnv::builder().raw(|r| r.tiktok.timeout = "1s".into()).start().await;
    let b = Browser::new();

    env.mock.inject_fault(Endpoint::Token, Fault::NonJson502, 1);
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let r = b.get(&cb).await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("data-error=\"TikTokUnavailable\""));

    env.mock
        .inject_fault(Endpoint::UserInfo, Fault::Delay(std::time::Duration::from_secs(3)), 1);
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let started = std::time::Instant::now();
    let r = b.get(&cb).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "timeout applies");
    assert!(b.cookie(session_cookie_name()).is_none());
}
