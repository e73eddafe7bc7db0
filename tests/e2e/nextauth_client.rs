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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{raw_request, session_cookie_name, TestEnv};

/// The whole Node client run; each request inside is bounded by 10 s.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bundling the page with esbuild.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole browser run (launch, sign-in, update, sign-out); each step inside is bounded by 15 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

const USER_NAME: &str = "María José 🌮";
const PAGE_PATH: &str = "/static/index.html";

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn suite_dir() -> PathBuf {
    crate_root().join("tests/nextauth")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run the suite, if anything (`browser`: also esbuild, playwright-core and
/// Chromium).
fn missing_prerequisite(browser: bool) -> Option<String> {
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Some("`node` is not on PATH (install Node.js >= 20)".into());
    }
    let modules = suite_dir().join("node_modules");
    let mut packages = vec!["next-auth", "react"];
    if browser {
        packages.extend(["react-dom", "esbuild", "playwright-core"]);
    }
    for p in packages {
        if !modules.join(p).join("package.json").is_file() {
            return Some(format!(
                "{} is missing (run `npm ci` in tests/nextauth)",
                modules.join(p).display()
            ));
        }
    }
    if browser {
        let chromium = chromium_path();
        if !chromium.is_file() {
            return Some(format!(
                "Chromium is not at {} (install Debian's `chromium` package)",
                chromium.display()
            ));
        }
    }
    None
}

/// True when the test should go on; otherwise prints why it skips (or panics under
/// `NINI_AUTH_REQUIRE_BROWSER=1`).
fn prerequisites_or_skip(what: &str, browser: bool) -> bool {
    let Some(why) = missing_prerequisite(browser) else {
        return true;
    };
    let msg = format!("skipping: the {what} cannot run: {why}; `scripts/setup` installs everything");
    if std::env::var("NINI_AUTH_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{msg} [NINI_AUTH_REQUIRE_BROWSER=1, so this is a failure]");
    }
    eprintln!("{msg}");
    false
}

/// Runs `node <args>` in the crate root within `limit`; returns the last JSON line it printed.
/// Panics with stdout and stderr when it fails, times out or prints no JSON.
async fn run_node(args: &[&std::ffi::OsStr], limit: Duration) -> Value {
    let script = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = tokio::process::Command::new("node")
        .args(args)
        .current_dir(crate_root())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run node {script}: {e}"),
        Err(_) => panic!("node {script} did not finish within {limit:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node {script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from {script}:\n{stdout}\n--- stderr\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from {script} ({e}): {line}"))
}

/// The authorize URL the sidecar handed the client: the mock's endpoint, our client and callback.
fn assert_authorize_url(env: &TestEnv, url: &Value, r: &Value) {
    let consent = url::Url::parse(url.as_str().expect("authorize URL string")).expect("authorize URL");
    let expected = url::Url::parse(&env.mock.base_url()).expect("mock URL");
    assert_eq!(consent.origin(), expected.origin(), "{r}");
    assert_eq!(consent.path(), "/v2/auth/authorize/", "{r}");
    let q: std::collections::HashMap<String, String> = consent.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("client_key").map(String::as_str),
        Some(nini_auth::mock_tiktok::DEMO_CLIENT_KEY),
        "{r}"
    );
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"), "{r}");
    assert_eq!(
        q.get("redirect_uri").cloned(),
        Some(env.url(nini_auth::config::CALLBACK_PATH)),
        "{r}"
    );
    assert!(q.get("state").is_some_and(|s| !s.is_empty()), "{r}");
}

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
    if !prerequisites_or_skip("next-auth/react Node client test", false) {
        return;
    }
    let env = TestEnv::start().await;
    let base = env.url("");
    let script = Path::new("tests/nextauth/node-client.mjs");
    let r = run_node(&[script.as_os_str(), base.as_ref()], NODE_TIMEOUT).await;
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
    assert_eq!(user["name"], USER_NAME, "{r}");
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
    if !prerequisites_or_skip("next-auth/react browser test", true) {
        return;
    }
    let dist = tempfile::tempdir().expect("tempdir");
    let build = Path::new("tests/nextauth/build.mjs");
    run_node(&[build.as_os_str(), dist.path().as_os_str()], BUILD_TIMEOUT).await;
    assert!(dist.path().join("bundle.js").is_file() && dist.path().join("index.html").is_file());

    let env = TestEnv::builder().static_dir(dist.path()).start().await;
    let base = env.url("");
    let page = env.url(PAGE_PATH);
    let script = Path::new("tests/nextauth/browser.mjs");
    let r = run_node(&[script.as_os_str(), base.as_ref(), page.as_ref()], BROWSER_TIMEOUT).await;
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
    assert_eq!(r["userName"], USER_NAME, "{r}");
    assert_eq!(r["tiktokId"], nini_auth::mock_tiktok::DEMO_OPEN_ID, "{r}");
    assert_eq!(r["session"]["user"]["name"], USER_NAME, "{r}");

    // update(data) got the server's session back: client data does not rename the user.
    assert_eq!(r["updated"]["user"]["name"], USER_NAME, "{r}");
    assert_eq!(r["userNameAfterUpdate"], USER_NAME, "{r}");

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
