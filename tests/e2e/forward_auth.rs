//! Forward-auth mode with a real nginx (`auth_request`) in front of the upstream: sign-in
//! through nginx, identity headers via `auth_request_set`, unauthenticated requests sent to
//! sign-in, and `/api/auth/verify` itself (202/401, never a redirect).

use crate::support::*;

/// Starts nginx with examples/nginx/nini-auth-forward-auth.conf (addresses filled in).
fn start_forward_auth_nginx(
    listen: std::net::SocketAddr,
    sidecar: std::net::SocketAddr,
    app: std::net::SocketAddr,
) -> Option<Nginx> {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/nginx/nini-auth-forward-auth.conf"
    ))
    .expect("example config");
    let server = example
        .replace("LISTEN", &listen.to_string())
        .replace("NINI_AUTH", &sidecar.to_string())
        .replace("APP", &app.to_string());
    start_nginx(listen, &server)
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_in_front_of_the_app() {
    let front = nini_auth::ops::free_port().expect("port");
    let front_origin = format!("http://{front}");
    let origin = front_origin.clone();
    let env = TestEnv::builder()
        .raw(move |r| {
            r.server.public_url = origin;
            r.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .start()
        .await;
    env.allow_redirect_uri(&format!("{front_origin}{}", nini_auth::config::CALLBACK_PATH));
    let Some(_nginx) = start_forward_auth_nginx(front, env.sidecar().addr, env.upstream) else {
        return;
    };

    // Not signed in: nginx sends the browser to sign-in, keeping where it wanted to go.
    let b = Browser::new();
    let r = b.get(&format!("{front_origin}/dashboard?tab=1&view=grid")).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let signin = r.location().expect("location").to_string();
    // The whole target, query included, survives (nini-auth encoded it from X-Original-URI).
    let want = format!(
        "{front_origin}/api/auth/signin?callbackUrl={}",
        urlencode(&format!("{front_origin}/dashboard?tab=1&view=grid"))
    );
    assert_eq!(signin, want);
    // API-style requests too (nginx decides; the sidecar only said 401).
    let r = Browser::api().get(&format!("{front_origin}/api/data")).await;
    assert_eq!(r.status, 302);

    // The sign-in page through nginx keeps the target from `rd`.
    // nginx may send the Location absolute (with its own host) or as a path.
    let signin_url = if signin.starts_with("http") {
        format!("{front_origin}/{}", signin.splitn(4, '/').nth(3).unwrap_or(""))
    } else {
        format!("{front_origin}{signin}")
    };
    let page = b.get(&signin_url).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        extract_value(&page.body, "callbackUrl"),
        Some(format!("{front_origin}/dashboard?tab=1&view=grid"))
    );
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");

    // Full sign-in through nginx.
    let start = b
        .post_form(
            &format!("{front_origin}/api/auth/signin/tiktok"),
            &[
                ("csrfToken", &csrf),
                ("callbackUrl", &format!("{front_origin}/dashboard?tab=1&view=grid")),
            ],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    let cb = b.consent(start.location().expect("authorize"), "authorize").await;
    assert!(cb.starts_with(&front_origin), "TikTok returns through nginx: {cb}");
    let done = b.get(&cb).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(
        done.location(),
        Some(format!("{front_origin}/dashboard?tab=1&view=grid").as_str())
    );

    // Signed in: the app behind nginx sees the identity nginx copied from the 202 answer, and
    // never a client-sent copy.
    let r = b
        .echo(
            &format!("{front_origin}/dashboard/data"),
            &[
                ("X-Nini-User-Id", "forged"),
                ("X-Forwarded-User", "forged"),
                ("X-Nini-Access-Token", "forged"),
                ("X-Auth-Request-Email", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.json();
    let uid = upstream_header(&e, "x-nini-user-id");
    assert_eq!(uid.len(), 1);
    assert_ne!(uid[0], "forged");
    assert_eq!(upstream_header(&e, "x-forwarded-user"), uid);
    assert_eq!(
        upstream_header(&e, "x-nini-display-name"),
        vec!["Mar%C3%ADa%20Jos%C3%A9%20%F0%9F%8C%AE".to_string()]
    );
    assert_eq!(
        upstream_header(&e, "x-nini-tiktok-open-id"),
        vec![nini_auth::mock_tiktok::DEMO_OPEN_ID.to_string()]
    );
    assert_eq!(upstream_header(&e, "x-nini-identity").len(), 1);
    assert!(!e.to_string().contains("forged"));
    assert!(upstream_header(&e, "x-nini-access-token").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_answers_202_or_401_and_never_redirects() {
    let env = TestEnv::builder()
        .raw(|r| r.server.trusted_proxies = vec!["127.0.0.1/32".into()])
        .start()
        .await;
    let api = Browser::api();
    let r = api
        .get_with(&env.url("/api/auth/verify"), &[("X-Original-URI", "/dashboard?x=1")])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.location().is_none());
    let expected = format!(
        "{}?callbackUrl={}",
        env.url("/api/auth/signin"),
        urlencode(&env.url("/dashboard?x=1"))
    );
    assert_eq!(r.header("x-auth-request-redirect"), Some(expected.as_str()));
    // A browser-looking request gets no redirect either.
    assert_eq!(Browser::new().get(&env.url("/api/auth/verify")).await.status, 401);
    // Envoy ext_authz appends the original path to the prefix.
    assert_eq!(api.get(&env.url("/api/auth/verify/dashboard/x")).await.status, 401);
    // Dot segments in that suffix cannot walk out of /api/auth/verify into the upstream.
    let (status, body) = raw_request(
        env.sidecar().addr,
        "GET /api/auth/verify/../../public HTTP/1.1\r\nHost: x",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("\"headers\""), "reached the upstream: {body}");

    let b = Browser::new();
    b.login(&env, "/").await;
    let signed = api_with(&b.cookie(session_cookie_name()).expect("session"));
    // 202 for nginx/Traefik; 200 for Envoy's path-suffix form (its HTTP ext_authz allows only 200).
    for (method, path, status) in [
        ("GET", "/api/auth/verify", 202),
        ("POST", "/api/auth/verify", 202),
        ("GET", "/api/auth/verify/any/path", 200),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = signed.send(signed.client.request(m, env.url(path))).await;
        assert_eq!(r.status, status, "{method} {path}");
        assert!(r.header("x-nini-user-id").is_some());
        assert_eq!(r.header("x-forwarded-user"), r.header("x-nini-user-id"));
        // A trusted proxy (this test's client) also gets the signed identity.
        assert!(r.header("x-nini-identity").is_some(), "{method} {path}");
        assert_eq!(
            r.header("x-nini-display-name"),
            Some("Mar%C3%ADa%20Jos%C3%A9%20%F0%9F%8C%AE")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_original_uri_is_ignored() {
    let env = TestEnv::start().await;
    let r = Browser::api()
        .get_with(&env.url("/api/auth/verify"), &[("X-Original-URI", "/public")])
        .await;
    assert_eq!(r.status, 401);
    // The sign-in link falls back to home: the header came from an untrusted peer.
    let home = format!(
        "{}?callbackUrl={}",
        env.url("/api/auth/signin"),
        urlencode(&env.url("/"))
    );
    assert_eq!(r.header("x-auth-request-redirect"), Some(home.as_str()));
    // A signed-in browser calling /verify itself (same-origin JavaScript can) gets the
    // identity headers but not the signed identity: that is a bearer credential for the app.
    let (_, session, _) = signed_in(&env).await;
    let r = api_with(&session).get(&env.url("/api/auth/verify")).await;
    assert_eq!(r.status, 202);
    assert!(r.header("x-nini-user-id").is_some());
    assert!(r.header("x-nini-identity").is_none(), "JWT handed to an untrusted peer");
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_deauthorization_webhook_ends_sessions() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    b.login(&env, "/").await;
    let api = api_with(&b.cookie(session_cookie_name()).expect("session"));
    assert_eq!(api.echo(&env.url("/api/user"), &[]).await.status, 200);

    let body = serde_json::json!({
        "client_key": nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
        "event": "authorization.removed",
        "create_time": 1_700_000_000,
        "user_openid": nini_auth::mock_tiktok::DEMO_OPEN_ID,
        "content": "{\"reason\": 1}",
    })
    .to_string();
    let now = env.sidecar().auth.clock.now();
    let post = |sig: String, body: String| {
        let c = reqwest::Client::new();
        let url = env.url("/api/auth/webhooks/tiktok");
        async move {
            c.post(url)
                .header("content-type", "application/json")
                .header("TikTok-Signature", sig)
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    };
    let secret = nini_auth::mock_tiktok::DEMO_CLIENT_SECRET;
    // Bad signature, stale timestamp, other secret: refused, nothing changes.
    assert_eq!(post("t=1,s=00".into(), body.clone()).await, 401);
    assert_eq!(
        post(
            nini_auth::tiktok::webhook::sign(body.as_bytes(), secret, now - 3600),
            body.clone()
        )
        .await,
        401
    );
    assert_eq!(
        post(
            nini_auth::tiktok::webhook::sign(body.as_bytes(), "not-the-secret", now),
            body.clone()
        )
        .await,
        401
    );
    assert_eq!(api.echo(&env.url("/api/user"), &[]).await.status, 200);
    // Other events are acknowledged and ignored.
    let other = body.replace("authorization.removed", "video.publish.completed");
    assert_eq!(
        post(nini_auth::tiktok::webhook::sign(other.as_bytes(), secret, now), other).await,
        200
    );
    assert_eq!(api.echo(&env.url("/api/user"), &[]).await.status, 200);

    // The real thing: tokens gone, sessions over; a repeated delivery is still 200.
    assert_eq!(
        post(
            nini_auth::tiktok::webhook::sign(body.as_bytes(), secret, now),
            body.clone()
        )
        .await,
        200
    );
    assert_eq!(api.get(&env.url("/api/user")).await.status, 401);
    assert_eq!(api.get(&env.url("/api/auth/session")).await.body, "null");
    let conn = rusqlite::Connection::open(&env.raw_db).expect("db");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM users WHERE access_token IS NOT NULL", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(n, 0);
    assert_eq!(
        post(nini_auth::tiktok::webhook::sign(body.as_bytes(), secret, now), body).await,
        200
    );
}

/// The nginx example keeps connections to the sidecar open, and blanks every single identity
/// header name nini-auth strips (nginx cannot drop a family by prefix).
#[test]
fn the_nginx_example_blanks_every_identity_header_and_keeps_connections() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/nginx/nini-auth-forward-auth.conf"
    ))
    .expect("example config");
    let lower = example.to_ascii_lowercase();
    let set: Vec<String> = lower
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("proxy_set_header "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    for name in nini_auth::auth::headers::SPOOFABLE_NAMES {
        assert!(
            set.iter().any(|s| s == name),
            "{name} is not set or blanked by the example"
        );
    }
    assert!(lower.contains("keepalive "), "no keep-alive pool to the sidecar");
    assert_eq!(
        lower.matches("proxy_pass http://nini_auth").count(),
        2,
        "both sidecar locations use the pool"
    );
    assert!(lower.matches("proxy_http_version 1.1;").count() >= 2);
}
