//! A real browser: headless Chromium, driven by playwright-core (`tests/browser/login.mjs`),
//! signs in through the sidecar and the mock TikTok consent page, and lands on the demo
//! dashboard showing the user's name.
//!
//! Needs `node`, `tests/browser/node_modules/playwright-core` (`npm ci` in tests/browser) and
//! Chromium at /usr/bin/chromium (or `$CHROMIUM_PATH`); `scripts/setup` installs all three.
//! Without them the test prints `skipping: ...` and passes, unless
//! `NINI_AUTH_REQUIRE_BROWSER=1` (set by `scripts/test`, hence CI), which makes it fail.
//! `NINI_AUTH_SAVE_SCREENSHOT=1` also copies the sign-in page screenshot to `docs/signin.png`.

use std::ffi::OsStr;
use std::time::Duration;

use crate::support::{
    assert_authorize_url, crate_root, node_or_skip, run_node, session_cookie_name, TestEnv, DEMO_USER_NAME,
};

/// The whole browser run (launch, three page loads, close); each step inside is bounded by 15 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_lands_on_dashboard_with_name() {
    if !node_or_skip("browser sign-in test", "tests/browser", &["playwright-core"], true) {
        return;
    }

    let env = TestEnv::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let shot = tmp.path().join("signin.png");
    let base = env.url("");

    let r = run_node(
        "tests/browser/login.mjs",
        &[OsStr::new(&base), shot.as_os_str()],
        BROWSER_TIMEOUT,
    )
    .await;

    // Signed out, /dashboard sends the browser to the sign-in page, remembering where to return.
    assert_eq!(
        r["signinUrl"],
        env.url("/api/auth/signin?callbackUrl=%2Fdashboard"),
        "{r}"
    );

    // "Continue with TikTok" leads to the (mock) TikTok consent page, with our client and callback.
    assert_authorize_url(&env, &r["consentUrl"], &r);

    // After "Authorize": back on the page first asked for, rendered with the user's name.
    assert_eq!(r["finalUrl"], env.url("/dashboard"), "{r}");
    assert_eq!(r["userName"], DEMO_USER_NAME, "{r}");

    // The session cookie as the browser stored it.
    let cookies = r["cookies"].as_array().expect("cookies array");
    let session = cookies
        .iter()
        .find(|c| c["name"] == session_cookie_name())
        .unwrap_or_else(|| panic!("no {} cookie in the browser: {r}", session_cookie_name()));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");

    // The sign-in page screenshot is a real PNG.
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(
        png.len() > 1000 && png.starts_with(PNG_MAGIC),
        "not a PNG: {} bytes",
        png.len()
    );
    if std::env::var_os("NINI_AUTH_SAVE_SCREENSHOT").is_some() {
        let docs = crate_root().join("docs");
        std::fs::create_dir_all(&docs).expect("create docs/");
        std::fs::copy(&shot, docs.join("signin.png")).expect("copy screenshot to docs/signin.png");
        eprintln!("saved {}", docs.join("signin.png").display());
    }
}
