//! A real browser: headless Chromium, driven by playwright-core (`tests/browser/login.mjs`),
//! signs in through the sidecar and the mock TikTok consent page, and lands on the demo
//! dashboard showing the user's name.
//!
//! Needs `node`, `tests/browser/node_modules/playwright-core` (`npm ci` in tests/browser) and
//! Chromium at /usr/bin/chromium (or `$CHROMIUM_PATH`); `scripts/setup` installs all three.
//! Without them the test prints `skipping: ...` and passes, unless
//! `NINI_AUTH_REQUIRE_BROWSER=1` (set by `scripts/test`, hence CI), which makes it fail.
//! `NINI_AUTH_SAVE_SCREENSHOT=1` also copies the sign-in page screenshot to `docs/signin.png`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{session_cookie_name, TestEnv};

/// The whole browser run (launch, three page loads, close); each step inside is bounded by 15 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run the browser test, if anything.
fn missing_prerequisite(root: &Path) -> Option<String> {
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Some("`node` is not on PATH (install Node.js >= 20)".into());
    }
    let pw = root.join("tests/browser/node_modules/playwright-core/package.json");
    if !pw.is_file() {
        return Some(format!(
            "{} is missing (run `npm ci` in tests/browser)",
            pw.parent().expect("parent").display()
        ));
    }
    let chromium = chromium_path();
    if !chromium.is_file() {
        return Some(format!(
            "Chromium is not at {} (install Debian's `chromium` package)",
            chromium.display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_lands_on_dashboard_with_name() {
    let root = crate_root();
    if let Some(why) = missing_prerequisite(&root) {
        let msg = format!("skipping: the browser sign-in test cannot run: {why}; `scripts/setup` installs everything");
        if std::env::var("NINI_AUTH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{msg} [NINI_AUTH_REQUIRE_BROWSER=1, so this is a failure]");
        }
        eprintln!("{msg}");
        return;
    }

    let env = TestEnv::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let shot = tmp.path().join("signin.png");
    let base = env.url("");

    let run = tokio::process::Command::new("node")
        .arg("tests/browser/login.mjs")
        .arg(&base)
        .arg(&shot)
        .current_dir(&root)
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(BROWSER_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run node tests/browser/login.mjs: {e}"),
        Err(_) => panic!("tests/browser/login.mjs did not finish within {BROWSER_TIMEOUT:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "login.mjs failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from login.mjs:\n{stdout}\n--- stderr\n{stderr}"));
    let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"));

    // Signed out, /dashboard sends the browser to the sign-in page, remembering where to return.
    assert_eq!(
        r["signinUrl"],
        env.url("/api/auth/signin?callbackUrl=%2Fdashboard"),
        "{r}"
    );

    // "Continue with TikTok" leads to the (mock) TikTok consent page, with our client and callback.
    let consent = url::Url::parse(r["consentUrl"].as_str().expect("consentUrl")).expect("consent URL");
    let expected = url::Url::parse(&format!("{}/v2/auth/authorize/", env.mock.base_url())).expect("mock URL");
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

    // After "Authorize": back on the page first asked for, rendered with the user's name.
    assert_eq!(r["finalUrl"], env.url("/dashboard"), "{r}");
    assert_eq!(r["userName"], "María José 🌮", "{r}");

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
        let docs = root.join("docs");
        std::fs::create_dir_all(&docs).expect("create docs/");
        std::fs::copy(&shot, docs.join("signin.png")).expect("copy screenshot to docs/signin.png");
        eprintln!("saved {}", docs.join("signin.png").display());
    }
}
