//! The real `next-auth/react` client (npm `next-auth` 5.0.0-beta.32, pinned in
//! `tests/nextauth/package.json`) against the sidecar: a frontend written for Auth.js works
//! unchanged behind nini-auth.
//!
//! - From Node (`tests/nextauth/node-client.mjs`): `getCsrfToken`, `getProviders`, `getSession`,
//!   `signIn("tiktok", {redirect:false})` (also its MissingCSRF error path), the mock's consent,
//!   the callback, `getSession` with the user, `signOut`, `getSession` null again.
//! - In headless Chromium (`tests/nextauth/browser.mjs`): a page bundled with the real client
//!   (`page.jsx`, `SessionProvider` + `useSession`, built by `build.mjs` into a temporary directory
//!   the demo upstream serves under `/static/`) signs in through the mock consent page, calls
//!   `update()`, and signs out.
//!
//! Needs `node` and `tests/nextauth/node_modules` (`npm ci` there); the browser test also needs
//! Chromium at /usr/bin/chromium (or `$CHROMIUM_PATH`). `scripts/setup` installs all of them.
//! Without them each test prints `skipping: ...` and passes, unless `NINI_AUTH_REQUIRE_BROWSER=1`
//! (set by `scripts/test`, hence CI), which makes it fail.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    assert_authorize_url, node_or_skip, raw_request, run_node, session_cookie_name, TestEnv, DEMO_USER_NAME,
};

/// The whole Node client run; each request inside is bounded by 10 s.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bundling the page with esbuild.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole browser run (launch, sign-in, update, sign-out); each step inside is bounded by 15 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

const PAGE_PATH: &str = "/static/index.html";
/// Where the scripts and their node_modules are, relative to the crate root.
const SUITE_DIR: &str = "tests/nextauth";
/// What the Node client needs; the browser test also bundles the page and drives Chromium.
const NODE_PACKAGES: &[&str] = &["next-auth", "react"];
const BROWSER_PACKAGES: &[&str] = &["next-auth", "react", "react-dom", "esbuild", "playwright-core"];

/// The `(method, path)` pairs of a logged request list, path without its query.
fn calls(requests: &Value) -> Vec<(String, String)> {
    requests
        .as_array()
        .expect("requests array")
        .iter()
        .map(|q| {
            let path = q["path"].as_str().unwrap_or("");
            (
                q["method"].as_str().unwrap_or("").to_string(),
                path.split('?').next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn node_client_signs_in_and_out() {
    if !node_or_skip("next-auth/react Node client test", SUITE_DIR, NODE_PACKAGES, false) {
        return;
    }
    let env = TestEnv::start().await;
    let base = env.url("");
    let r = run_node("tests/nextauth/node-client.mjs", &[&base], NODE_TIMEOUT).await;
    assert_eq!(r["ok"], true, "{r}");

    // getCsrfToken / getProviders / getSession as the real client returned them.
    assert!(r["csrfTokenLength"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(
        r["providers"]["tiktok"]["signinUrl"],
        env.url("/api/auth/signin/tiktok"),
        "{r}"
    );
    assert_eq!(
        r["providers"]["tiktok"]["callbackUrl"],
        env.url("/api/auth/callback/tiktok"),
        "{r}"
    );
    assert_eq!(r["sessionBefore"], Value::Null, "{r}");

    // The error contract: the client parsed ?error= from the sidecar's 200 {url}.
    assert_eq!(r["signInWithoutCsrfCookie"]["error"], "MissingCSRF", "{r}");
    assert_eq!(r["signInWithoutCsrfCookie"]["url"], Value::Null, "{r}");

    // signIn -> the mock's authorize URL; consent -> callback -> redirectTo.
    assert_eq!(r["signIn"]["ok"], true, "{r}");
    assert_authorize_url(&env, &r["signIn"]["url"], &r);
    assert_eq!(r["landing"], env.url("/dashboard"), "{r}");

    // The session the client sees.
    let user = &r["session"]["user"];
    assert_eq!(user["name"], DEMO_USER_NAME, "{r}");
    assert_eq!(user["tiktokId"], nini_auth::mock_tiktok::DEMO_OPEN_ID, "{r}");

    // signOut -> {url: redirectTo}; then null again.
    assert_eq!(r["signOut"]["url"], env.url("/"), "{r}");
    assert_eq!(r["sessionAfter"], Value::Null, "{r}");

    // The wire calls the client made, in order (the mock's authorize is on another origin).
    let seen = calls(&r["requests"]);
    let sidecar: Vec<(&str, &str)> = seen
        .iter()
        .filter(|(_, p)| p.starts_with("/api/auth/"))
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .collect();
    let signin = [
        ("GET", "/api/auth/providers"),
        ("GET", "/api/auth/csrf"),
        ("POST", "/api/auth/signin/tiktok"),
    ];
    let expected: Vec<(&str, &str)> = [
        ("GET", "/api/auth/csrf"),
        ("GET", "/api/auth/csrf"),
        ("GET", "/api/auth/providers"),
        ("GET", "/api/auth/session"),
    ]
    .into_iter()
    .chain(signin)
    .chain(signin)
    .chain([
        ("GET", "/api/auth/callback/tiktok"),
        ("GET", "/api/auth/session"),
        ("GET", "/api/auth/csrf"),
        ("POST", "/api/auth/signout"),
        ("GET", "/api/auth/session"),
    ])
    .collect();
    assert_eq!(sidecar, expected, "{r}");
    for q in r["requests"].as_array().expect("requests") {
        if q["method"] == "POST" {
            assert_eq!(q["returnRedirect"], "1", "v5 POSTs carry X-Auth-Return-Redirect: {q}");
        }
        assert!(q["status"].as_u64().is_some_and(|s| s < 400), "no 4xx/5xx: {q}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_session_provider_signs_in_updates_and_signs_out() {
    if !node_or_skip("next-auth/react browser test", SUITE_DIR, BROWSER_PACKAGES, true) {
        return;
    }
    let dist = tempfile::tempdir().expect("tempdir");
    run_node("tests/nextauth/build.mjs", &[dist.path()], BUILD_TIMEOUT).await;
    assert!(dist.path().join("bundle.js").is_file() && dist.path().join("index.html").is_file());

    let env = TestEnv::builder().static_dir(dist.path()).start().await;
    let base = env.url("");
    let page = env.url(PAGE_PATH);
    let r = run_node("tests/nextauth/browser.mjs", &[&base, &page], BROWSER_TIMEOUT).await;
    assert_eq!(r["ok"], true, "{r}");

    // useSession(): unauthenticated -> authenticated (after the consent page) -> still
    // authenticated after update() -> unauthenticated after sign-out.
    assert_eq!(
        r["statuses"],
        serde_json::json!(["unauthenticated", "authenticated", "authenticated", "unauthenticated"]),
        "{r}"
    );
    assert_authorize_url(&env, &r["consentUrl"], &r);
    assert_eq!(r["returnUrl"], page, "signIn's callbackUrl: {r}");
    assert_eq!(r["userName"], DEMO_USER_NAME, "{r}");
    assert_eq!(r["tiktokId"], nini_auth::mock_tiktok::DEMO_OPEN_ID, "{r}");
    assert_eq!(r["session"]["user"]["name"], DEMO_USER_NAME, "{r}");

    // update(data) got the server's session back: client data does not rename the user.
    assert_eq!(r["updated"]["user"]["name"], DEMO_USER_NAME, "{r}");
    assert_eq!(r["userNameAfterUpdate"], DEMO_USER_NAME, "{r}");

    // signOut({callbackUrl}) -> {url: absolute callbackUrl}, then the page again, no session cookie.
    assert_eq!(r["signOutAnswer"]["url"], page, "{r}");
    assert_eq!(r["finalUrl"], page, "{r}");
    let cookies = r["cookiesAfterSignout"].as_array().expect("cookies");
    assert!(
        !cookies.iter().any(|c| c == session_cookie_name()),
        "session cookie still in the browser: {r}"
    );

    // What the client sent: the v5 shapes the contract describes.
    let reqs = r["authRequests"].as_array().expect("authRequests");
    let find = |method: &str, path: &str| {
        reqs.iter()
            .find(|q| q["method"] == method && q["path"].as_str().is_some_and(|p| p.split('?').next() == Some(path)))
            .unwrap_or_else(|| panic!("no {method} {path} from the client: {r}"))
    };
    let signin = find("POST", "/api/auth/signin/tiktok");
    assert_eq!(signin["returnRedirect"], "1", "{signin}");
    assert_eq!(signin["status"], 200, "{signin}");
    assert!(
        signin["body"]
            .as_str()
            .is_some_and(|b| b.contains("callbackUrl=%2Fstatic%2Findex.html")),
        "{signin}"
    );
    let update = find("POST", "/api/auth/session");
    assert_eq!(update["status"], 200, "{update}");
    assert!(
        update["contentType"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/json")),
        "{update}"
    );
    let signout = find("POST", "/api/auth/signout");
    assert_eq!(signout["returnRedirect"], "1", "{signout}");
    assert_eq!(signout["status"], 200, "{signout}");
    for q in reqs {
        assert!(q["status"].as_u64().is_some_and(|s| s < 400), "no 4xx/5xx: {q}");
    }
    // Console errors from the test page itself (not the mock's consent page) fail the run.
    let origin = url::Url::parse(&base).expect("base URL").origin();
    for e in r["consoleErrors"].as_array().expect("consoleErrors") {
        let at = e["url"].as_str().and_then(|u| url::Url::parse(u).ok());
        assert!(
            at.is_some_and(|u| u.origin() != origin),
            "console error on the test page: {e}"
        );
    }
}

/// The demo upstream's `/static/` (what the browser test's page is served from): files from the
/// directory only, nothing outside it, and the echo app everywhere else.
#[tokio::test(flavor = "multi_thread")]
async fn demo_upstream_serves_static_dir_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "<!doctype html><p>hi</p>").expect("write");
    std::fs::write(site.join("bundle.js"), "console.log(1)").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    let env = TestEnv::builder().static_dir(&site).start().await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://{}{path}", env.upstream);
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.expect("request");
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (r.status().as_u16(), ctype, r.text().await.unwrap_or_default())
        }
    };
    let (status, ctype, body) = get("/static/index.html").await;
    assert_eq!((status, body.as_str()), (200, "<!doctype html><p>hi</p>"));
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let (status, ctype, _) = get("/static/bundle.js").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/javascript"), "{ctype}");
    // Raw request lines, so no client normalises the dot segments away.
    for path in [
        "/static/missing.js",
        "/static/",
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2Fsecret.txt",
        "/static/%2Fetc%2Fpasswd",
        "/static//etc/passwd",
    ] {
        let (status, body) = raw_request(env.upstream, &format!("GET {path} HTTP/1.1\r\nHost: localhost")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("outside") && !body.contains("root:"), "{path}: {body}");
    }
    // Through the sidecar, same origin as /api/auth.
    let (status, _, body) = get("/api/echo").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"path\":\"/api/echo\""), "{body}");
    let through = client
        .get(env.url(PAGE_PATH))
        .send()
        .await
        .expect("through the sidecar");
    assert_eq!(through.status().as_u16(), 200);
}
