//! Spoofed identity headers (any case, `_` variants, duplicates) never reach the upstream,
//! with or without a session, and our cookies are never forwarded.

use crate::support::*;

const SPOOFS: &[(&str, &str)] = &[
    ("X-Forwarded-User", "admin"),
    ("x-forwarded-user", "admin2"),
    ("X_Forwarded_User", "admin3"),
    ("X-Forwarded_User", "admin4"),
    ("x_forwarded-email", "a@b"),
    ("X-Forwarded-Email", "a@b"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Forwarded-Preferred-Username", "root"),
    ("X-Forwarded-Access-Token", "forged"),
    ("X-Auth-Request-User", "admin"),
    ("X-Auth-Request-Email", "a@b"),
    ("X-Auth-Request-Access-Token", "forged"),
    ("X-Nini-User-Id", "victim"),
    ("x-nini-user-id", "victim2"),
    ("X_NINI_USER_ID", "victim3"),
    ("X-Nini-Tiktok-Open-Id", "victim"),
    ("x_nini_tiktok_open_id", "victim"),
    ("X-Nini-Display-Name", "Mallory"),
    ("X-Nini-Avatar-Url", "https://evil/x.png"),
    ("X-Nini-Verified", "true"),
    ("X-Nini-Access-Token", "forged"),
    ("X-TikTok-Open-Id", "victim"),
    ("X-TikTok-Union-Id", "victim"),
    ("x_tiktok_union_id", "victim"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=6.6.6.6"),
    ("X-Forwarded-Uri", "/public"),
    ("Connection", "close, X-Forwarded-User"),
];

fn build(b: &Browser, url: &str) -> reqwest::RequestBuilder {
    let mut req = b.client.get(url);
    for (k, v) in SPOOFS {
        req = req.header(*k, *v);
    }
    // Duplicates of the same name. (Cookies are added by `Browser::send`.)
    req.header("X-Nini-User-Id", "dup1").header("X-Nini-User-Id", "dup2")
}

fn assert_clean(e: &serde_json::Value, signed_in_user: Option<&str>) {
    let names = upstream_header_names(e);
    for (k, _) in SPOOFS {
        let folded = k.to_ascii_lowercase();
        if ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "connection"].contains(&folded.as_str()) {
            continue;
        }
        let allowed_ours = signed_in_user.is_some()
            && nini_auth::auth::headers::identity_headers(&dummy())
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(k));
        if !allowed_ours {
            assert!(
                !names.iter().any(|n| n.eq_ignore_ascii_case(k)),
                "{k} reached upstream: {e}"
            );
        }
    }
    for n in &names {
        assert!(!n.contains('_'), "underscore header {n} reached upstream");
    }
    for v in e["headers"]
        .as_object()
        .expect("headers")
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
    {
        let v = v.as_str().unwrap_or("");
        for bad in [
            "admin", "victim", "Mallory", "forged", "evil", "6.6.6.6", "dup1", "dup2", "a@b", "root",
        ] {
            assert!(!v.contains(bad), "spoofed value {v:?} reached upstream: {e}");
        }
    }
    assert_eq!(upstream_header(e, "x-forwarded-for"), vec!["127.0.0.1".to_string()]);
    match signed_in_user {
        Some(uid) => {
            assert_eq!(upstream_header(e, "x-nini-user-id"), vec![uid.to_string()]);
            assert_eq!(upstream_header(e, "x-forwarded-user"), vec![uid.to_string()]);
            assert_eq!(upstream_header(e, "x-auth-request-user"), vec![uid.to_string()]);
        }
        None => {
            assert!(upstream_header(e, "x-nini-user-id").is_empty());
            assert!(upstream_header(e, "x-forwarded-user").is_empty());
        }
    }
}

fn dummy() -> nini_auth::store::Identity {
    nini_auth::store::Identity {
        user_id: "u".into(),
        session_id: "s".into(),
        open_id: "o".into(),
        display_name: Some("n".into()),
        username: None,
        avatar: Some("https://a".into()),
        verified: false,
        videos: 0,
        streak: 0,
        nini_score: 0,
        follower_count: None,
        session_expires: 0,
        grant_error: None,
        derived: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_headers_never_reach_upstream() {
    let env = TestEnv::start().await;
    let anon = Browser::api();
    for path in ["/public", "/", "/_next/static/x.js"] {
        let r = anon.send(build(&anon, &env.url(path))).await;
        assert_eq!(r.status, 200, "{path}");
        assert_clean(&r.json(), None);
    }
    // Without a session a protected path is refused even with forged identity.
    let r = anon.send(build(&anon, &env.url("/dashboard"))).await;
    assert_eq!(r.status, 401);
    // OPTIONS (preflight) is stripped too.
    let r = anon
        .send(
            anon.client
                .request(reqwest::Method::OPTIONS, env.url("/public"))
                .header("X-Forwarded-User", "admin"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_clean(&r.json(), None);

    let b = Browser::new();
    b.login(&env, "/").await;
    let api = Browser::api();
    api.set_cookie(
        session_cookie_name(),
        &b.cookie(session_cookie_name()).expect("session"),
    );
    api.set_cookie("theme", "dark");
    let r = api.send(build(&api, &env.url("/dashboard"))).await;
    assert_eq!(r.status, 200);
    let e = r.json();
    let uid = upstream_header(&e, "x-nini-user-id").first().cloned().expect("uid");
    assert_clean(&e, Some(&uid));
    assert_eq!(
        upstream_header(&e, "cookie"),
        vec!["theme=dark".to_string()],
        "only the app's cookies go upstream"
    );
    // Public path with a session: identity headers present, spoofs gone.
    let r = api.send(build(&api, &env.url("/public"))).await;
    assert_clean(&r.json(), Some(&uid));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_header_tricks_are_refused_or_stripped() {
    let env = TestEnv::start().await;
    let addr = env.sidecar().addr;
    for head in [
        // Whitespace before the colon (a parser might read the name as `X-Nini-User-Id`).
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Nini-User-Id : admin",
        // obs-fold: a continuation line that some upstreams join onto the previous header.
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Other: a\r\n X-Nini-User-Id: admin",
        // Two copies, different case.
        "GET /public HTTP/1.1\r\nHost: x\r\nx-nini-user-id: admin\r\nX-NINI-USER-ID: admin2",
        // NUL in a value.
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: ad\0min",
    ] {
        let (status, body) = raw_request(addr, head).await;
        if status == 200 {
            let start = body.find('{').expect("json");
            let end = body.rfind('}').expect("json");
            let echo: serde_json::Value = serde_json::from_str(&body[start..=end]).expect("echo");
            assert!(
                !echo.to_string().contains("admin"),
                "{head:?} reached the upstream: {echo}"
            );
        } else {
            assert_eq!(status, 400, "{head:?}: {status} {body}");
        }
    }
}

/// Identity headers of other auth proxies' conventions never reach the upstream, nor the
/// names an operator adds with `headers.strip_also`: an upstream configured for Authelia,
/// Grafana's auth proxy, ALB or IAP cannot be fooled through nini-auth.
#[tokio::test(flavor = "multi_thread")]
async fn other_identity_conventions_and_operator_names_are_stripped() {
    let env = TestEnv::builder()
        .raw(|r| r.headers.strip_also = vec!["X-Team-Role".into()])
        .start()
        .await;
    let conventions = [
        "Remote-User",
        "X-Remote-User",
        "X-WEBAUTH-USER",
        "X-User",
        "X-User-Id",
        "X-Email",
        "X-Auth-User",
        "X-Authenticated-User",
        "X-Forwarded-Login",
        "Remote-Groups",
        "X-Pomerium-Claim-Email",
        "X-Amzn-Oidc-Identity",
        "X-Goog-Authenticated-User-Email",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "Cf-Access-Authenticated-User-Email",
        "X-Team-Role",
        "x_team_role",
    ];
    for with_session in [false, true] {
        let b = if with_session {
            signed_in(&env).await.0
        } else {
            Browser::new()
        };
        let mut req = b.client.get(env.url("/public/echo"));
        for name in conventions {
            req = req.header(name, "admin");
        }
        let r = b.send(req).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let names = upstream_header_names(&r.json());
        for name in conventions {
            let folded = name.to_ascii_lowercase().replace('_', "-");
            assert!(
                !names.iter().any(|n| n.replace('_', "-") == folded),
                "{name} reached the upstream (signed in: {with_session}): {names:?}"
            );
        }
    }
}
