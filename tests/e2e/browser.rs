//! A real browser: headless Chromium, driven by playwright-core (`tests/browser/login.mjs`),
//! signs in through the sidecar and the mock TikTok consent page, and lands on the demo
//! dashboard showing the user's name.
//!
//! Needs `node`, `tests/browser/node_modules/playwright-core` (`npm ci` in tests/browser) and
//! Chromium at /usr/bin/chromium (or `$CHROMIUM_PATH`); `scripts/setup` installs all three.
//! Without them the test prints `skipping: ...` and passes, unless
//! `NINI_AUTH_REQUIRE_BROWSER=1` (set by `scripts/test`, hence CI), which makes it fail.
//! `NINI_AUTH_SAVE_SCREENSHOT=1` also copies the sign-in page screenshot to `docs/signin.png`
//! and the demo dashboard to `docs/img/demo-dashboard.png`. `browser_walks_the_demo` walks the
//! whole demo dashboard (`tests/browser/demo.mjs`), keeping its screenshots in
//! `target/e2e-artifacts/demo/`.

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

/// Where browser tests keep what a person may want to look at afterwards (screenshots):
/// `<target dir>/e2e-artifacts/<name>/`, next to the test binary's own target directory.
fn artifacts_dir(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/e2e-<hash>
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| crate_root().join("target"));
    let dir = target.join("e2e-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create artifacts dir");
    dir
}

/// `nini-auth demo`'s wiring (its two mock accounts, its `[[routes.rules]]`) walked in
/// headless Chromium by `tests/browser/demo.mjs`: sign in, the account dropdown, "Sync from
/// TikTok" and the videos, "Your devices", the signed identity verified against the JWKS, a
/// page a rule admits and one it refuses (403), sign-out. Screenshots stay in
/// `target/e2e-artifacts/demo/`; `NINI_AUTH_SAVE_SCREENSHOT=1` also copies the dashboard to
/// `docs/img/demo-dashboard.png`.
#[tokio::test(flavor = "multi_thread")]
async fn browser_walks_the_demo() {
    if !node_or_skip("browser demo walk", "tests/browser", &["playwright-core"], true) {
        return;
    }
    let env = TestEnv::builder()
        .mock(|m| m.users = nini_auth::mock_tiktok::MockUser::demo_team())
        .raw(|r| r.routes.rules = nini_auth::cli::demo::demo_rules())
        .start()
        .await;
    let dir = artifacts_dir("demo");
    let r = run_node(
        "tests/browser/demo.mjs",
        &[OsStr::new(&env.url("")), dir.as_os_str()],
        BROWSER_TIMEOUT,
    )
    .await;

    // Signed in as the consent page's first account, with her verified badge.
    assert_eq!(r["userName"], DEMO_USER_NAME, "{r}");
    assert_eq!(r["verifiedBadge"], true, "{r}");
    // The dropdown opens on click, with profile, devices and sign-out.
    assert_eq!(r["menuHiddenBefore"], true, "{r}");
    assert_eq!(
        r["menuItems"],
        serde_json::json!(["menu-profile", "menu-devices", "menu-signout"]),
        "{r}"
    );
    // The sync brought her six public videos (never the private one), with covers and views,
    // her username, follower count and streak.
    let videos = r["videos"].as_array().expect("videos");
    assert_eq!(videos.len(), 6, "{r}");
    assert!(videos.iter().all(|v| v["cover"] == true), "every cover loaded: {r}");
    assert_eq!(
        videos[0]["title"], "Tacos al pastor en 60 segundos 🌮",
        "newest first: {r}"
    );
    assert!(
        videos
            .iter()
            .all(|v| v["views"].as_str().is_some_and(|s| s.ends_with("vistas"))),
        "{r}"
    );
    assert!(
        !r.to_string().contains("Borrador"),
        "the private video is never shown: {r}"
    );
    assert_eq!(r["username"], "@mariajose", "{r}");
    assert_eq!(r["followers"], "15.230", "es-ES number format: {r}");
    assert_eq!(r["streak"], "6 días seguidos publicando", "{r}");
    // Devices, from the dropdown: this one.
    assert_eq!(r["devicesTitle"], "Tus dispositivos", "{r}");
    assert_eq!(r["devices"], 1, "{r}");
    // The app verified X-Nini-Identity against /api/auth/jwks.json.
    assert_eq!(r["jwtOk"], "true", "{r}");
    assert_eq!(r["claims"]["open_id"], nini_auth::mock_tiktok::DEMO_OPEN_ID, "{r}");
    assert_eq!(r["claims"]["iss"], env.url("").trim_end_matches('/'), "{r}");
    assert_eq!(r["claims"]["name"], DEMO_USER_NAME, "{r}");
    // Verified creators get in; the team page is Diego's: 403 with the request id.
    assert_eq!(r["creatorsStatus"], 200, "{r}");
    assert_eq!(r["creatorsLocked"], 1, "{r}");
    assert_eq!(r["teamStatus"], 403, "{r}");
    assert_eq!(r["teamTitle"], "No tienes acceso a esta página", "{r}");
    assert_eq!(r["teamRequestId"], r["teamRequestIdHeader"], "{r}");
    assert!(
        r["teamSwitchHref"]
            .as_str()
            .is_some_and(|h| h.contains("/api/auth/signout?callbackUrl=")),
        "{r}"
    );
    // Signed out from the dropdown: the dashboard asks to sign in again.
    assert_eq!(r["afterSignout"], "/api/auth/signin", "{r}");
    // Nothing failed to load: the team page's 403 is the only error answer.
    assert_eq!(r["errorResponses"], serde_json::json!(["403 /dashboard/team"]), "{r}");

    let shots = r["screenshots"].as_array().expect("screenshots");
    assert_eq!(shots.len(), 6, "{r}");
    for s in shots {
        let png = std::fs::read(s.as_str().expect("path")).expect("screenshot");
        assert!(png.len() > 1000 && png.starts_with(PNG_MAGIC), "{s}");
    }
    eprintln!("demo screenshots: {}", dir.display());
    if std::env::var_os("NINI_AUTH_SAVE_SCREENSHOT").is_some() {
        let img = crate_root().join("docs").join("img");
        std::fs::create_dir_all(&img).expect("create docs/img");
        std::fs::copy(dir.join("03-dashboard.png"), img.join("demo-dashboard.png")).expect("copy screenshot");
        eprintln!("saved {}", img.join("demo-dashboard.png").display());
    }
}
