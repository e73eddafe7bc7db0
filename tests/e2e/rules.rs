//! Per-route authorization (`[[routes.rules]]`): a user a rule admits reaches the upstream,
//! one it refuses gets a 403 page (es/en, request id, "sign in with another account", home)
//! or 403 JSON, never the upstream; anonymous requests still go to sign-in (or 401); first
//! match wins on the canonical path; `/api/auth/verify` answers 403 on the original path;
//! denials are counted by rule; bad rules are reported by key, by `check` too (exit 64).

use nini_auth::config::RawRouteRule;
use nini_auth::mock_tiktok::{MockUser, DEMO_OPEN_ID};

use crate::support::*;

const OTHER_OPEN_ID: &str = "rules-other-open-id";

fn rule(name: &str, prefix: &str) -> RawRouteRule {
    RawRouteRule {
        name: Some(name.into()),
        prefix: Some(prefix.into()),
        ..Default::default()
    }
}

/// The rules these tests run with: `/admin/help` for anyone signed in, then `/admin` for the
/// demo user only, `/creators` for verified users, `/pro` for 10 000 followers or more.
fn rules() -> Vec<RawRouteRule> {
    vec![
        RawRouteRule {
            signed_in: Some(true),
            ..rule("admin-help", "/admin/help")
        },
        RawRouteRule {
            open_ids: Some(vec![DEMO_OPEN_ID.into()]),
            ..rule("team", "/admin")
        },
        RawRouteRule {
            verified: Some(true),
            ..rule("creators", "/creators")
        },
        RawRouteRule {
            min_followers: Some(10_000),
            ..rule("pro", "/pro")
        },
    ]
}

/// The demo user (verified, 15 230 followers on the mock) and a second, unverified user with
/// no followers; the admin listener on its own port for `/metrics`.
async fn env() -> (TestEnv, std::net::SocketAddr) {
    let admin = nini_auth::ops::free_port().expect("admin port");
    let env = TestEnv::builder()
        .mock(|c| c.users.push(MockUser::with_videos(OTHER_OPEN_ID, "pepe", 0)))
        .raw(move |r| {
            r.routes.rules = rules();
            r.admin.listen = admin.to_string();
            r.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .start()
        .await;
    (env, admin)
}

/// Signs in the mock user `open_id` (scripted consent); returns the session cookie.
async fn login_as(env: &TestEnv, open_id: &str) -> String {
    sign_in_as(env, &Browser::new(), open_id).await
}

/// A browser navigation carrying `session`, in `lang`.
async fn navigate(env: &TestEnv, session: &str, path: &str, lang: &str) -> Resp {
    let b = Browser::new();
    b.set_cookie(session_cookie_name(), session);
    b.get_with(
        &env.url(path),
        &[("accept-language", lang), ("sec-fetch-mode", "navigate")],
    )
    .await
}

fn reached_upstream(r: &Resp) -> bool {
    r.status == 200 && r.body.contains("\"headers\"")
}

async fn denials(admin: std::net::SocketAddr, rule: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!("nini_auth_route_denials_total{{rule=\"{rule}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in:\n{text}"))
        .trim()
        .parse()
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_admit_or_refuse_signed_in_users() {
    let (env, admin) = env().await;
    let demo = login_as(&env, DEMO_OPEN_ID).await;
    let other = login_as(&env, OTHER_OPEN_ID).await;

    // Admitted: the request reaches the upstream with the identity headers.
    let r = api_with(&demo).echo(&env.url("/admin/users?page=2"), &[]).await;
    assert!(reached_upstream(&r), "{}", r.body);
    assert_eq!(upstream_header(&r.json(), "x-nini-tiktok-open-id"), vec![DEMO_OPEN_ID]);
    assert!(reached_upstream(
        &api_with(&demo).echo(&env.url("/creators"), &[]).await
    ));

    // Refused, in a browser: a 403 page in the negotiated language, with the request id, a way
    // to sign in with another account (sign-out, then sign-in back to the page) and home.
    let en = navigate(&env, &other, "/admin/users", "en-US,en;q=0.9").await;
    assert_eq!(en.status, 403, "{}", en.body);
    assert!(!en.body.contains("\"headers\""), "the upstream answered: {}", en.body);
    let rid = en.header("x-request-id").expect("request id").to_string();
    assert!(
        en.body.contains(&format!("<span id=\"request-id\">{rid}</span>")),
        "{}",
        en.body
    );
    assert!(
        en.body.contains("You can't open this page") && en.body.contains("@pepe"),
        "{}",
        en.body
    );
    let switch = extract_href(&en.body, "switch-account");
    assert_eq!(
        switch,
        env.url("/api/auth/signout?callbackUrl=%2Fapi%2Fauth%2Fsignin%3FcallbackUrl%3D%252Fadmin%252Fusers")
    );
    assert_eq!(extract_href(&en.body, "home"), env.url("/"));
    assert_eq!(en.header("cache-control"), Some("private, no-cache, no-store"));
    let es = navigate(&env, &other, "/admin/users", "es-MX,es;q=0.9").await;
    assert_eq!(es.status, 403);
    assert!(es.body.contains("No tienes acceso a esta página") && es.body.contains("Iniciar sesión con otra cuenta"));
    assert!(es.body.contains("<html lang=\"es\">"), "{}", es.body);

    // The "another account" link leads to the sign-out page, whose form returns to sign-in
    // for the refused page.
    let b = Browser::new();
    b.set_cookie(session_cookie_name(), &other);
    let signout = b.get(&switch).await;
    assert_eq!(signout.status, 200);
    assert_eq!(
        extract_value(&signout.body, "callbackUrl").as_deref(),
        Some(env.url("/api/auth/signin?callbackUrl=%2Fadmin%2Fusers").as_str())
    );

    // Refused, as an API client: 403 JSON with the request id.
    let api = api_with(&other).get(&env.url("/admin")).await;
    assert_eq!(api.status, 403);
    let j = api.json();
    assert_eq!(j["error"], "forbidden");
    assert_eq!(j["requestId"].as_str(), api.header("x-request-id"));
    assert_eq!(api_with(&other).get(&env.url("/creators/lounge")).await.status, 403);

    // Canonical path variants of a ruled prefix are ruled too.
    for p in ["/ADMIN", "/Admin;x=1", "/public/../admin", "/%61dmin/x", "//admin"] {
        let r = api_with(&other).get(&env.url(p)).await;
        assert_eq!(r.status, 403, "{p}: {}", r.body);
    }

    // First match wins: /admin/help comes before /admin and lets any signed-in user in.
    assert!(reached_upstream(
        &api_with(&other).echo(&env.url("/admin/help/faq"), &[]).await
    ));
    // Paths no rule matches are as before.
    assert!(reached_upstream(
        &api_with(&other).echo(&env.url("/dashboard"), &[]).await
    ));

    // Denials are counted by rule: 2 page views + 1 API call + 5 variants on "team", 1 on "creators".
    assert_eq!(denials(admin, "team").await, 8);
    assert_eq!(denials(admin, "creators").await, 1);
    assert_eq!(denials(admin, "pro").await, 0);
    assert_eq!(denials(admin, "admin-help").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_requests_to_ruled_paths_go_to_sign_in() {
    let (env, _) = env().await;
    // /admin is not in routes.protected: the rule alone makes it need a session.
    let r = Browser::new()
        .get_with(&env.url("/admin/x?y=1"), &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location(),
        Some(env.url("/api/auth/signin?callbackUrl=%2Fadmin%2Fx%3Fy%3D1").as_str())
    );
    let api = Browser::api().get(&env.url("/admin")).await;
    assert_eq!(api.status, 401);
    assert_eq!(api.json()["error"], "unauthorized");
    // Even the "anyone signed in" rule needs a session.
    assert_eq!(Browser::api().get(&env.url("/admin/help")).await.status, 401);
    // Unruled, unprotected paths stay public.
    assert!(reached_upstream(&Browser::api().echo(&env.url("/public"), &[]).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn follower_rules_read_the_synced_count() {
    let (env, admin) = env().await;
    let demo = login_as(&env, DEMO_OPEN_ID).await;
    // Not synced yet: the follower count is unknown, which is too few.
    assert_eq!(api_with(&demo).get(&env.url("/pro")).await.status, 403);
    let sync = api_with(&demo)
        .send(api_with(&demo).client.post(env.url("/api/user/sync-tiktok")))
        .await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert_eq!(sync.json()["user"]["followerCount"], 15_230);
    // The sync refreshed the cached identity: 15 230 ≥ 10 000.
    assert!(reached_upstream(
        &api_with(&demo).echo(&env.url("/pro/stats"), &[]).await
    ));
    assert_eq!(denials(admin, "pro").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_answers_403_on_the_original_path() {
    let (env, admin) = env().await;
    let demo = api_with(&login_as(&env, DEMO_OPEN_ID).await);
    let other = api_with(&login_as(&env, OTHER_OPEN_ID).await);
    let verify = env.url("/api/auth/verify");
    for (who, uri, status) in [
        (&demo, "/admin/users?x=1", 202),
        (&other, "/admin/users?x=1", 403),
        (&other, "/ADMIN/%2e%2e/admin", 403),
        (&other, "/admin/help", 202),
        (&other, "/public", 202),
        (&other, "/creators", 403),
    ] {
        for header in ["X-Original-URI", "X-Forwarded-Uri"] {
            let r = who.get_with(&verify, &[(header, uri)]).await;
            assert_eq!(r.status, status, "{header}: {uri}: {}", r.body);
            if status == 403 {
                assert_eq!(r.json()["error"], "forbidden");
                assert!(r.header("x-nini-user-id").is_none(), "a refusal carries no identity");
                assert!(r.location().is_none());
            }
        }
    }
    // Envoy's path-suffix form: the suffix is the original path.
    assert_eq!(other.get(&env.url("/api/auth/verify/admin/x")).await.status, 403);
    assert_eq!(other.get(&env.url("/api/auth/verify/public")).await.status, 200);
    assert_eq!(demo.get(&env.url("/api/auth/verify/admin/x")).await.status, 200);
    // No original path: a user must meet every rule (the demo user is verified, on the team,
    // but has no synced follower count, so "pro" refuses).
    assert_eq!(other.get(&verify).await.status, 403);
    assert_eq!(demo.get(&verify).await.status, 403);
    // A front that sets one header and passes the client's copy of the other: values that
    // disagree are not believed, so a client cannot name a path it may enter.
    for (original, forwarded) in [("/public", "/admin/users"), ("/admin/users", "/public")] {
        let r = other
            .get_with(&verify, &[("X-Original-URI", original), ("X-Forwarded-Uri", forwarded)])
            .await;
        assert_eq!(r.status, 403, "{original} / {forwarded}: {}", r.body);
    }
    let agree = other
        .get_with(
            &verify,
            &[("X-Original-URI", "/public"), ("X-Forwarded-Uri", "/public")],
        )
        .await;
    assert_eq!(agree.status, 202);
    // Anonymous: still 401.
    let anon = Browser::api().get_with(&verify, &[("X-Original-URI", "/admin")]).await;
    assert_eq!(anon.status, 401);
    // Refusals on "team"/"creators" above (the two disagreeing pairs count on the first rule
    // the user fails, "team"), counted like the proxy's.
    assert_eq!(denials(admin, "team").await, 2 * 2 + 1 + 1 + 2);
    assert_eq!(denials(admin, "creators").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_from_an_untrusted_front_needs_every_rule() {
    // Without trusted_proxies the original URI is not believed: the path is unknown.
    let env = TestEnv::builder()
        .raw(|r| {
            r.routes.rules = vec![RawRouteRule {
                open_ids: Some(vec!["someone-else".into()]),
                ..rule("team", "/admin")
            }];
        })
        .start()
        .await;
    let demo = api_with(&login_as(&env, DEMO_OPEN_ID).await);
    let r = demo
        .get_with(&env.url("/api/auth/verify"), &[("X-Original-URI", "/public")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn check_reports_bad_rules_by_key_and_exits_64() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = write_file(
        dir.path(),
        "rules.toml",
        r#"
[tiktok]
client_key = "ck"
client_secret = "cs"
scopes = ["user.info.basic", "video.list"]

[[routes.rules]]
prefix = "/admin"
open_ids = []

[[routes.rules]]
prefix = "/admin/users"
verified = true

[[routes.rules]]
prefix = "/stats"
min_followers = 100
open_id = ["x"]

[[routes.rules]]
prefix = "/nothing"
"#,
    );
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let out = run_binary(
        &["check", "--config", cfg.to_str().expect("path")],
        &[("NINI_AUTH_SECRET", key.as_str())],
    );
    // Unknown keys are found while parsing, before validation: that run names only them.
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("- routes.rules[2].open_id: unknown field"),
        "{}",
        out.stderr
    );

    let fixed = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("open_id = [\"x\"]\n", "");
    std::fs::write(&cfg, fixed).expect("write");
    let out = run_binary(
        &["check", "--config", cfg.to_str().expect("path")],
        &[("NINI_AUTH_SECRET", key.as_str())],
    );
    assert_eq!(out.code, 64, "{}", out.stderr);
    for key in [
        "routes.rules[0].open_ids",
        "routes.rules[1].prefix",
        "routes.rules[1].verified",
        "routes.rules[2].min_followers",
        "routes.rules[3]",
    ] {
        assert!(
            out.stderr.contains(&format!("- {key}:")),
            "missing {key} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("user.info.stats"),
        "names the scope: {}",
        out.stderr
    );

    // A valid set: `check` prints the rules in order, and that output loads again.
    let good = write_file(
        dir.path(),
        "good.toml",
        r#"
[tiktok]
client_key = "ck"
client_secret = "cs"
scopes = ["user.info.basic", "user.info.profile"]

[[routes.rules]]
name = "team"
prefix = "/admin"
open_ids = ["oid-1"]
usernames = ["@Nini"]

[[routes.rules]]
prefix = "/creators"
verified = true
"#,
    );
    let out = run_binary(
        &["check", "--config", good.to_str().expect("path")],
        &[("NINI_AUTH_SECRET", key.as_str())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let team = out.stdout.find("name = \"team\"").expect("team rule printed");
    let creators = out
        .stdout
        .find("prefix = \"/creators\"")
        .expect("creators rule printed");
    assert!(team < creators, "in order:\n{}", out.stdout);
    assert!(out.stdout.contains("usernames = [\"nini\"]"), "{}", out.stdout);
    let body: String = out
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("# Register"))
        .collect::<Vec<_>>()
        .join("\n");
    let again = write_file(dir.path(), "again.toml", &body);
    let out = run_binary(
        &["check", "--config", again.to_str().expect("path")],
        &[("NINI_AUTH_SECRET", key.as_str()), ("TIKTOK_CLIENT_SECRET", "cs")],
    );
    assert_eq!(out.code, 0, "the printed config loads again: {}\n{body}", out.stderr);
}

/// The `href` of the element with `id` in a page we generate.
fn extract_href(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let tag_start = html[..at].rfind('<').expect("tag");
    let tag = &html[tag_start..];
    let h = tag.find("href=\"").expect("href") + 6;
    let end = tag[h..].find('"').expect("end");
    tag[h..h + end].replace("&amp;", "&")
}
