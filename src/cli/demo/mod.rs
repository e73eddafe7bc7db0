//! `nini-auth demo`: the sidecar, the mock TikTok (two demo accounts with videos) and a demo
//! upstream app — a small NINI dashboard — wired together on localhost.
//!
//! The app (`app`) is what an app behind nini-auth sees: it renders HTML pages for browsers
//! (`pages`: the dashboard with the profile card, the TikTok sync and the videos; the signed
//! identity checked against the JWKS in `identity`; two pages behind `[[routes.rules]]`), and
//! answers every other request (and non-HTML requests) with a JSON echo of what it received,
//! so tests can assert exactly which headers reached the upstream. Started with a static
//! directory ([`serve_app_with_static`]), it also serves `GET /static/<file>` from it (the
//! next-auth/react test page, same-origin with `/api/auth`).

mod app;
mod identity;
mod pages;

use std::net::SocketAddr;

pub use app::{display_name, serve_app, serve_app_with_static};

use crate::config::RawRouteRule;

/// The demo's `[[routes.rules]]`: `/dashboard/creators` for verified creators (María José gets
/// in, Diego does not) and `/dashboard/team` for the NINI team (Diego's `open_id`: María José
/// gets the 403 page).
pub fn demo_rules() -> Vec<RawRouteRule> {
    vec![
        RawRouteRule {
            name: Some("creators".into()),
            prefix: Some(pages::CREATORS_PATH.into()),
            verified: Some(true),
            ..Default::default()
        },
        RawRouteRule {
            name: Some("team".into()),
            prefix: Some(pages::TEAM_PATH.into()),
            open_ids: Some(vec![crate::mock_tiktok::DEMO_TEAM_OPEN_ID.into()]),
            ..Default::default()
        },
    ]
}

/// The mock TikTok of `nini-auth demo`: the demo app registered for `redirect_uris`, and the
/// two demo accounts (`MockUser::demo_team`).
pub fn demo_mock(redirect_uris: Vec<String>) -> crate::mock_tiktok::MockConfig {
    let mut m = crate::mock_tiktok::MockConfig::demo(redirect_uris);
    m.users = crate::mock_tiktok::MockUser::demo_team();
    m
}

/// [`raw_config`] plus the demo's rules: what `nini-auth demo` runs.
pub fn demo_raw_config(
    listen: SocketAddr,
    mock_base: &str,
    upstream: SocketAddr,
    database: &std::path::Path,
) -> crate::config::RawConfig {
    let mut raw = raw_config(listen, mock_base, upstream, database);
    raw.routes.rules = demo_rules();
    raw
}

/// The raw config `demo` and the tests use: everything on loopback, secrets generated.
pub fn raw_config(
    listen: SocketAddr,
    mock_base: &str,
    upstream: SocketAddr,
    database: &std::path::Path,
) -> crate::config::RawConfig {
    let mut raw = crate::config::RawConfig::default();
    raw.server.listen = listen.to_string();
    raw.server.public_url = format!("http://{listen}");
    raw.server.shutdown_timeout = "2s".into();
    raw.upstream.url = format!("http://{upstream}");
    raw.tiktok.client_key = crate::mock_tiktok::DEMO_CLIENT_KEY.into();
    raw.tiktok.client_secret = crate::mock_tiktok::DEMO_CLIENT_SECRET.into();
    raw.tiktok.scopes = vec![
        "user.info.basic".into(),
        "user.info.profile".into(),
        "user.info.stats".into(),
        "video.list".into(),
    ];
    raw.tiktok.authorize_url = format!("{mock_base}/v2/auth/authorize/");
    raw.tiktok.api_base_url = mock_base.to_string();
    raw.tiktok.timeout = "5s".into();
    raw.storage.database = database.display().to_string();
    // Several sidecars run side by side in tests; the admin port is opt-in there.
    raw.admin.listen = String::new();
    raw
}

/// `nini-auth demo`: mock TikTok and demo app on ephemeral ports, the sidecar on `listen`,
/// a throw-away database. Blocks until SIGINT/SIGTERM.
pub fn run(listen: SocketAddr) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let public = format!("http://{listen}");
    let redirect_uri = format!("{public}{}", crate::config::CALLBACK_PATH);
    let (mock, app_addr) = rt.block_on(async {
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let mock = crate::mock_tiktok::MockTikTok::start(ml, demo_mock(vec![redirect_uri]))
            .await
            .map_err(|e| e.to_string())?;
        let al = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let (app_addr, _task) = serve_app(al).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((mock, app_addr))
    })?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let raw = demo_raw_config(listen, &mock.base_url(), app_addr, &dir.path().join("demo.db"));
    let env = std::collections::HashMap::<String, String>::new();
    let config = crate::config::validate(raw, &env, crate::config::SecretsPolicy::Generate)
        .map_err(|e| format!("demo config invalid:\n{}", e.report()))?;
    let (server, _app) = crate::ops::build(config, crate::ops::Mode::Embedded).map_err(|e| e.to_string())?;
    println!();
    println!("  nini-auth demo is running.");
    println!();
    println!("  Open            {public}/");
    println!("  Dashboard       {public}/dashboard   (redirects to sign-in; pick María José or Diego)");
    println!(
        "  Locked pages    {public}{}  (verified only)  {public}{}  (Diego only)",
        pages::CREATORS_PATH,
        pages::TEAM_PATH
    );
    println!("  Sign-in page    {public}/api/auth/signin");
    println!(
        "  Mock TikTok     {}   (consent page; no TikTok account needed)",
        mock.base_url()
    );
    println!("  Demo app        http://{app_addr}   (the upstream; it only reads identity headers)");
    println!(
        "  Database        {}   (deleted on exit)",
        dir.path().join("demo.db").display()
    );
    println!();
    println!("  Stop with Ctrl-C.");
    println!();
    crate::ops::run(server);
    mock.shutdown();
    drop(rt);
    Ok(())
}
