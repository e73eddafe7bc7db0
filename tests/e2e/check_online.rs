//! `nini-auth check --online`, the real binary against the mock TikTok (a real HTTP server):
//! a well-configured app passes with exit 0; each failure an operator meets is injected and
//! named with its fix, exit 1: wrong client key, wrong secret, redirect URI not registered,
//! scope not approved, PKCE asked for, clock off, TikTok unreachable or too slow (bounded by
//! `tiktok.timeout`). The client secret is never printed; an invalid config still exits 64.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{Endpoint, Fault, MockConfig, MockTikTok, PkceMode, DEMO_CLIENT_KEY, DEMO_CLIENT_SECRET};
use nini_auth::tiktok::preflight::DUMMY_CODE;

use crate::support::*;

/// The public URL the mock has the redirect URI of (nothing listens there: `check` binds nothing).
const PUBLIC: &str = "http://127.0.0.1:4180";
const SCOPES: &str = r#"["user.info.basic", "user.info.profile", "user.info.stats", "video.list"]"#;

struct Setup {
    mock: MockTikTok,
    dir: tempfile::TempDir,
    key: String,
}

async fn setup(f: impl FnOnce(&mut MockConfig)) -> Setup {
    let mut cfg = MockConfig::demo(vec![format!("{PUBLIC}{}", nini_auth::config::CALLBACK_PATH)]);
    f(&mut cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Setup {
        mock: MockTikTok::start(listener, cfg).await.expect("mock"),
        dir: tempfile::tempdir().expect("dir"),
        key: nini_auth::crypto::generate_key_base64().expect("key"),
    }
}

impl Setup {
    /// A config file for the mock; `tiktok_base` replaces the mock's URL (an unreachable
    /// TikTok), `extra` goes into `[tiktok]`.
    fn config(&self, public_url: &str, tiktok_base: Option<&str>, extra: &str) -> PathBuf {
        let base = tiktok_base.map_or_else(|| self.mock.base_url(), str::to_string);
        write_file(
            self.dir.path(),
            "check.toml",
            &format!(
                "[server]\npublic_url = \"{public_url}\"\n\
                 [tiktok]\nclient_key = \"{DEMO_CLIENT_KEY}\"\nscopes = {SCOPES}\n\
                 authorize_url = \"{base}/v2/auth/authorize/\"\napi_base_url = \"{base}\"\n{extra}\n\
                 [storage]\ndatabase = \"{}/auth.db\"\n",
                self.dir.path().display()
            ),
        )
    }

    /// Runs `nini-auth check --online` (off the runtime, so the mock keeps serving).
    async fn check(&self, cfg: PathBuf, env: &[(&str, &str)]) -> (RunOut, Duration) {
        let mut envs: Vec<(String, String)> = vec![
            ("NINI_AUTH_SECRET".into(), self.key.clone()),
            ("TIKTOK_CLIENT_SECRET".into(), DEMO_CLIENT_SECRET.into()),
        ];
        for (k, v) in env {
            envs.retain(|(n, _)| n != k);
            envs.push((k.to_string(), v.to_string()));
        }
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = run_binary(&["check", "--online", "--config", cfg.to_str().expect("path")], &envs);
            (out, started.elapsed())
        })
        .await
        .expect("join")
    }
}

/// The report's line for `topic` with the given outcome label (`ok`, `note`, `FINDING`).
fn line<'a>(out: &'a RunOut, label: &str, topic: &str) -> Option<&'a str> {
    let head = format!("{label:<8} {topic:<15} ");
    out.stdout.lines().find(|l| l.starts_with(&head))
}

fn finding_count(out: &RunOut) -> usize {
    out.stdout.lines().filter(|l| l.starts_with("FINDING")).count()
}

/// What every run must hold: the secret never printed, whatever happened.
fn no_secret(out: &RunOut, secret: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "secret printed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
}

#[tokio::test]
async fn a_well_configured_app_passes() {
    let s = setup(|_| {}).await;
    let (out, _) = s.check(s.config(PUBLIC, None, ""), &[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // The offline checks ran first, as plain `check` prints them.
    assert!(
        out.stdout.contains("is valid. Effective configuration"),
        "{}",
        out.stdout
    );
    for (label, topic) in [("ok", "authorize page"), ("ok", "client secret"), ("ok", "clock")] {
        assert!(
            line(&out, label, topic).is_some(),
            "no {label} {topic}:\n{}",
            out.stdout
        );
    }
    assert_eq!(finding_count(&out), 0);
    assert!(out.stdout.contains("No findings"));
    no_secret(&out, DEMO_CLIENT_SECRET);

    // TikTok was asked the way a sign-in asks: the authorize URL with key, redirect URI and
    // scopes, then the code exchange with the configured redirect URI.
    let redirect_uri = format!("{PUBLIC}{}", nini_auth::config::CALLBACK_PATH);
    let authorize = s.mock.requests_to("/v2/auth/authorize/");
    assert_eq!(authorize.len(), 1);
    assert_eq!(authorize[0].query_param("client_key"), Some(DEMO_CLIENT_KEY));
    assert_eq!(authorize[0].query_param("redirect_uri"), Some(redirect_uri.as_str()));
    assert_eq!(
        authorize[0].query_param("scope"),
        Some("user.info.basic,user.info.profile,user.info.stats,video.list")
    );
    let token = s.mock.requests_to("/v2/oauth/token/");
    assert_eq!(token.len(), 1);
    assert_eq!(token[0].form_param("grant_type"), Some("authorization_code"));
    assert_eq!(token[0].form_param("code"), Some(DUMMY_CODE));
    assert_eq!(token[0].form_param("redirect_uri"), Some(redirect_uri.as_str()));
    assert_eq!(token[0].form_param("client_secret"), Some(DEMO_CLIENT_SECRET));
    // The URL to open in a browser is printed, and carries no secret.
    assert!(out.stdout.contains("/v2/auth/authorize/?client_key=mock-client-key"));
}

#[tokio::test]
async fn a_wrong_client_key_is_named_with_its_fix() {
    let s = setup(|_| {}).await;
    let (out, _) = s
        .check(s.config(PUBLIC, None, ""), &[("TIKTOK_CLIENT_KEY", "aw-not-our-key")])
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "client key").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(l.contains("aw-not-our-key"), "{l}");
    assert!(
        out.stdout.contains("TIKTOK_CLIENT_KEY"),
        "names the variable:\n{}",
        out.stdout
    );
    // One cause, reported once: the secret is not blamed for it.
    assert_eq!(finding_count(&out), 1, "{}", out.stdout);
    assert!(line(&out, "FINDING", "client secret").is_none());
    no_secret(&out, DEMO_CLIENT_SECRET);
}

#[tokio::test]
async fn a_wrong_client_secret_is_named_and_never_printed() {
    let s = setup(|_| {}).await;
    let wrong = "wrong-secret-0123456789abcdef";
    let (out, _) = s
        .check(s.config(PUBLIC, None, ""), &[("TIKTOK_CLIENT_SECRET", wrong)])
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "client secret").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(l.contains("invalid_client"), "{l}");
    assert!(out.stdout.contains("TIKTOK_CLIENT_SECRET") && out.stdout.contains("Client secret"));
    assert!(line(&out, "ok", "authorize page").is_some(), "the key itself is fine");
    assert_eq!(finding_count(&out), 1);
    no_secret(&out, wrong);
    // It did reach TikTok: the token endpoint is where a secret is checked.
    assert_eq!(
        s.mock.requests_to("/v2/oauth/token/")[0].form_param("client_secret"),
        Some(wrong)
    );
}

#[tokio::test]
async fn a_redirect_uri_not_registered_is_named_with_the_exact_uri() {
    let s = setup(|_| {}).await;
    let (out, _) = s.check(s.config("http://127.0.0.1:4999", None, ""), &[]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "redirect URI").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(l.contains("http://127.0.0.1:4999/api/auth/callback/tiktok"), "{l}");
    assert!(
        out.stdout.contains("Login Kit > Web > Redirect URI") && out.stdout.contains("server.public_url"),
        "{}",
        out.stdout
    );
    assert_eq!(finding_count(&out), 1, "{}", out.stdout);
}

#[tokio::test]
async fn a_scope_not_approved_is_named() {
    let s = setup(|c| {
        c.clients[0].approved_scopes = vec!["user.info.basic".into(), "user.info.profile".into()];
    })
    .await;
    let (out, _) = s.check(s.config(PUBLIC, None, ""), &[]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "scopes").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        l.contains("user.info.stats, video.list"),
        "both refused ones, only them: {l}"
    );
    assert!(
        !l.contains("user.info.profile,") && !l.contains("scope user.info.profile"),
        "{l}"
    );
    assert!(out.stdout.contains("tiktok.scopes"), "{}", out.stdout);
    assert_eq!(finding_count(&out), 1);
}

#[tokio::test]
async fn pkce_asked_for_by_tiktok_is_named_and_then_passes() {
    let s = setup(|c| c.pkce_mode = PkceMode::RequiredHex).await;
    let (out, _) = s.check(s.config(PUBLIC, None, ""), &[]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(line(&out, "FINDING", "PKCE").is_some(), "{}", out.stdout);
    assert!(out.stdout.contains("tiktok.pkce = \"s256\""));
    // Configured as the fix says, the check sends a challenge like a sign-in and passes.
    let (out, _) = s.check(s.config(PUBLIC, None, "pkce = \"s256_hex\""), &[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let last = s.mock.requests_to("/v2/auth/authorize/").pop().expect("authorize");
    assert_eq!(last.query_param("code_challenge").map(str::len), Some(64));
    assert!(s
        .mock
        .requests_to("/v2/oauth/token/")
        .pop()
        .expect("token")
        .form_param("code_verifier")
        .is_some());
}

#[tokio::test]
async fn a_clock_off_by_ten_minutes_is_named() {
    let s = setup(|_| {}).await;
    // TikTok's clock (the mock's Date header) is ten minutes ahead of this machine's.
    s.mock.advance_clock(600);
    let (out, _) = s.check(s.config(PUBLIC, None, ""), &[]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "clock").unwrap_or_else(|| panic!("{}", out.stdout));
    let secs: i64 = l
        .split_whitespace()
        .find_map(|w| w.strip_suffix("s").and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("{l}"));
    assert!((598..=602).contains(&secs) && l.contains("behind"), "{l}");
    assert!(out.stdout.contains("NTP"));
    assert_eq!(finding_count(&out), 1, "{}", out.stdout);

    // Within a minute passes.
    s.mock.advance_clock(-570);
    let (out, _) = s.check(s.config(PUBLIC, None, ""), &[]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(line(&out, "ok", "clock").is_some());
}

#[tokio::test]
async fn tiktok_unreachable_or_too_slow_is_a_finding_within_the_timeout() {
    let s = setup(|_| {}).await;
    // Nothing listens on this port any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (out, took) = s
        .check(
            s.config(PUBLIC, Some(&format!("http://{closed}")), "timeout = \"2s\""),
            &[],
        )
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "token endpoint").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(l.contains("cannot reach"), "{l}");
    assert!(out.stdout.contains(&format!("{closed}")), "names where: {}", out.stdout);
    assert!(
        line(&out, "note", "authorize page").is_some(),
        "browsers load it, not the sidecar"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // TikTok answers, but only after 10 s: both requests give up at tiktok.timeout (1 s).
    s.mock
        .inject_fault(Endpoint::Authorize, Fault::Delay(Duration::from_secs(10)), 1);
    s.mock
        .inject_fault(Endpoint::Token, Fault::Delay(Duration::from_secs(10)), 1);
    let (out, took) = s.check(s.config(PUBLIC, None, "timeout = \"1s\""), &[]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(&out, "FINDING", "token endpoint").unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(l.contains("did not answer within tiktok.timeout (1s)"), "{l}");
    assert!(took < Duration::from_secs(8), "bounded: {took:?}");
    no_secret(&out, DEMO_CLIENT_SECRET);
}

#[tokio::test]
async fn an_invalid_config_exits_64_before_asking_tiktok() {
    let s = setup(|_| {}).await;
    let cfg = s.config(PUBLIC, None, "");
    let out = tokio::task::spawn_blocking(move || {
        run_binary(&["check", "--online", "--config", cfg.to_str().expect("path")], &[])
    })
    .await
    .expect("join");
    assert_eq!(out.code, 64, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("tiktok.client_secret"), "{}", out.stderr);
    assert!(s.mock.requests().is_empty(), "TikTok was asked nothing");
}
