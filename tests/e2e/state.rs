//! State and code: wrong, missing, expired, replayed, other browser; provider denial;
//! session fixation. Every failure shows an error page and issues no session.

use crate::support::*;

fn callback_parts(cb: &str) -> (String, String, String) {
    let u = url::Url::parse(cb).expect("callback url");
    let q: std::collections::BTreeMap<String, String> = u.query_pairs().into_owned().collect();
    let base = format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    (
        format!("{base}{}", u.path()),
        q.get("code").cloned().unwrap_or_default(),
        q.get("state").cloned().unwrap_or_default(),
    )
}

fn cb_url(base: &str, pairs: &[(&str, &str)]) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{base}?{q}")
}

async fn assert_refused(b: &Browser, env: &TestEnv, url: &str, what: &str) {
    let before = env.mock.requests_to("/v2/oauth/token/").len();
    let r = b.get(url).await;
    assert!(
        r.status == 400 || r.status == 403,
        "{what}: status {} {}",
        r.status,
        r.body
    );
    assert!(
        r.body.contains("data-error=\"OAuthCallbackError\"") || r.body.contains("data-error=\"AccessDenied\""),
        "{what}: {}",
        r.body
    );
    assert!(
        r.set_cookie(session_cookie_name()).is_none(),
        "{what}: no session cookie"
    );
    assert!(b.cookie(session_cookie_name()).is_none(), "{what}");
    assert_eq!(
        env.mock.requests_to("/v2/oauth/token/").len(),
        before,
        "{what}: nothing sent to TikTok"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_missing_duplicated_state_is_refused_before_tiktok() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let (base, code, state) = callback_parts(&cb);

    assert_refused(&b, &env, &cb_url(&base, &[("code", &code)]), "missing state").await;
    assert_refused(
        &b,
        &env,
        &cb_url(&base, &[("code", &code), ("state", "")]),
        "empty state",
    )
    .await;
    assert_refused(
        &b,
        &env,
        &cb_url(&base, &[("code", &code), ("state", "forged-state-value")]),
        "wrong state",
    )
    .await;
    assert_refused(
        &b,
        &env,
        &cb_url(&base, &[("code", &code), ("state", &state), ("state", &state)]),
        "duplicated state",
    )
    .await;
    // The forged/missing attempts did not consume the real state... but a duplicated
    // `code` with the real state does consume it (it is single use whatever happens).
    let r = b
        .get(&cb_url(&base, &[("code", &code), ("code", "x"), ("state", &state)]))
        .await;
    assert_eq!(r.status, 400);
    assert!(b.cookie(session_cookie_name()).is_none());
    assert_refused(&b, &env, &cb, "state already consumed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_callback_and_replayed_code_fail() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    // A copy of the pending sign-in's cookie, taken before the callback deletes it.
    let copied = b.cookies_prefixed("nini-auth.state.");
    assert_eq!(copied.len(), 1, "{copied:?}");
    let cb = b.consent(&authorize, "authorize").await;
    let ok = b.get(&cb).await;
    assert_eq!(ok.status, 302);
    let first_session = b.cookie(session_cookie_name()).expect("session");
    assert!(
        b.cookies_prefixed("nini-auth.state.").is_empty(),
        "the callback deletes it"
    );

    // Same callback again (state replay) from a fresh browser with a copy of the cookie:
    // the state is recorded as used.
    let replay = Browser::new();
    replay.set_cookie(&copied[0].0, &copied[0].1);
    assert_refused(&replay, &env, &cb, "replayed state").await;

    // A new state with an old (used) code: the state passes, TikTok refuses the code.
    let authorize2 = b.start_signin(&env, "/dashboard").await;
    let copied2 = b.cookies_prefixed("nini-auth.state.");
    let cb2 = b.consent(&authorize2, "authorize").await;
    let (base, code_used, _) = callback_parts(&cb);
    let (_, _, state2) = callback_parts(&cb2);
    let fresh = Browser::new();
    fresh.set_cookie(&copied2[0].0, &copied2[0].1);
    let r = fresh
        .get(&cb_url(&base, &[("code", &code_used), ("state", &state2)]))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("data-error=\"OAuthCallbackError\""));
    assert!(fresh.cookie(session_cookie_name()).is_none());
    assert_eq!(b.cookie(session_cookie_name()).as_deref(), Some(first_session.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_state_is_refused() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    env.sidecar().auth.clock.advance(601);
    assert_refused(&b, &env, &cb, "expired state").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_bound_to_the_browser_that_started() {
    let env = TestEnv::start().await;
    let victim = Browser::new();
    let attacker = Browser::new();
    // Login CSRF: the attacker starts a sign-in and feeds the callback to the victim. The
    // victim's browser has no pending sign-in for that state: refused, nothing consumed, no
    // request to TikTok.
    let authorize = attacker.start_signin(&env, "/dashboard").await;
    let cb = attacker.consent(&authorize, "authorize").await;
    assert_refused(&victim, &env, &cb, "callback in another browser").await;
    assert!(env.mock.requests_to("/v2/oauth/token/").is_empty());
    // The attacker's other pending sign-in, planted under this state's cookie name, does not
    // open: the sealed value is bound to its name.
    let (name, _) = attacker.cookies_prefixed("nini-auth.state.").remove(0);
    attacker.start_signin(&env, "/dashboard").await;
    let other = attacker
        .cookies_prefixed("nini-auth.state.")
        .into_iter()
        .find(|(n, _)| *n != name)
        .expect("a second pending sign-in");
    let other_victim = Browser::new();
    other_victim.set_cookie(&name, &other.1);
    assert_refused(&other_victim, &env, &cb, "another sign-in's value under this name").await;
    // Only the browser that started it signs in, as itself.
    let r = attacker.get(&cb).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(victim.cookie(session_cookie_name()).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_shows_error_page_without_session() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "cancel").await;
    assert!(cb.contains("error=access_denied"), "{cb}");
    let r = b.get(&cb).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("data-error=\"AccessDenied\""));
    assert!(r.header("x-request-id").is_some_and(|id| r.body.contains(id)));
    assert!(b.cookie(session_cookie_name()).is_none());
    assert!(env.mock.requests_to("/v2/oauth/token/").is_empty());
    // English when asked.
    let authorize = b.start_signin(&env, "/dashboard").await;
    let cb = b.consent(&authorize, "cancel").await;
    let r = b.get_with(&cb, &[("accept-language", "en-US,en;q=0.9")]).await;
    assert!(r.body.contains("You cancelled on TikTok"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_replaces_a_preexisting_session_cookie() {
    let env = TestEnv::start().await;
    let b = Browser::new();
    // A cookie planted before login (fixation attempt) with a well-formed value.
    let planted = "A".repeat(43);
    b.set_cookie(session_cookie_name(), &planted);
    let r = b.login(&env, "/dashboard").await;
    assert_eq!(r.status, 302);
    let issued = b.cookie(session_cookie_name()).expect("session");
    assert_ne!(issued, planted);

    // Logging in again, with a valid session, also issues a new id and kills the old one.
    let r = b.login(&env, "/dashboard").await;
    assert_eq!(r.status, 302);
    let second = b.cookie(session_cookie_name()).expect("session");
    assert_ne!(second, issued);
    let old = Browser::api();
    old.set_cookie(session_cookie_name(), &issued);
    assert_eq!(
        old.get(&env.url("/api/user")).await.status,
        401,
        "old session id is dead"
    );
    let new = Browser::api();
    new.set_cookie(session_cookie_name(), &second);
    assert_eq!(new.echo(&env.url("/api/user"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_starts_are_limited_per_address() {
    let limit = 20;
    let env = TestEnv::builder()
        .raw(move |r| {
            r.server.trusted_proxies = vec!["127.0.0.1/32".into()];
            r.limits.signin_starts_per_minute = limit;
        })
        .start()
        .await;
    let api = Browser::api();
    let csrf = api.csrf(&env).await;
    let url = env.url("/api/auth/signin/tiktok");
    let start = |from: String| {
        let (api, url, csrf) = (&api, &url, &csrf);
        async move {
            let req = api
                .client
                .post(url.as_str())
                .header("X-Forwarded-For", from)
                .form(&[("csrfToken", csrf.as_str())]);
            api.send(req).await
        }
    };
    // The client rotates what it writes into X-Forwarded-For itself; a proxy that appends
    // puts the real address last (sometimes with its port): that is what counts.
    for i in 0..limit {
        let r = start(format!("198.51.100.{i}, 203.0.113.7:{}", 40000 + i)).await;
        assert_eq!(r.status, 302, "start {i}: {}", r.body);
    }
    let r = start("6.6.6.6, 203.0.113.7".into()).await;
    assert_eq!(r.status, 429, "{}", r.body);
    // Until the current one-minute window ends.
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    // Another client is not affected, and the limit resets with the minute.
    assert_eq!(start("203.0.113.8".into()).await.status, 302);
    // An IPv6 client counts by its /64: other addresses in it share the budget.
    for i in 0..limit {
        assert_eq!(start(format!("[2001:db8:7:7::{i:x}]:443")).await.status, 302);
    }
    assert_eq!(start("2001:db8:7:7:ffff::1".into()).await.status, 429);
    assert_eq!(start("2001:db8:7:8::1".into()).await.status, 302, "another /64");
    env.sidecar().auth.clock.advance(60);
    assert_eq!(start("203.0.113.7".into()).await.status, 302);
}
