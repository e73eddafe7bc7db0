//! Your devices: `GET /api/auth/sessions` lists the user's sessions (current one marked,
//! named from the User-Agent, last seen after activity is flushed), `POST
//! /api/auth/sessions/revoke` ends one, all others, or this one (a sign-out), never another
//! user's, with CSRF and POST only (an ended device's WebSocket closes too); `GET /api/auth/devices` is the page, es and en, whose forms
//! end devices. (Across replicas: tests/e2e/replicas.rs.)

use nini_auth::mock_tiktok::MockUser;
use serde_json::{json, Value};

use crate::support::*;

const ANDROID_CHROME: &str =
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";
const MAC_FIREFOX: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0";
const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

const SECOND_OPEN_ID: &str = "second-user-open-id";

/// Signs in the demo user from a browser that says it is `user_agent`; returns the browser
/// and its session cookie.
async fn device(env: &TestEnv, user_agent: &str) -> (Browser, String) {
    let b = Browser::with_user_agent(user_agent);
    let r = b.login(env, "/").await;
    assert_eq!(r.status, 302, "sign-in: {}", r.body);
    let session = b.cookie(session_cookie_name()).expect("session cookie");
    (b, session)
}

/// Signs in the mock's second user (`SECOND_OPEN_ID`) the way a scripted consent does.
async fn second_user(env: &TestEnv) -> String {
    sign_in_as(env, &Browser::with_user_agent(IPHONE_SAFARI), SECOND_OPEN_ID).await
}

async fn env_with_two_users() -> TestEnv {
    TestEnv::builder()
        .mock(|c| c.users.push(MockUser::with_videos(SECOND_OPEN_ID, "pepe", 0)))
        .start()
        .await
}

/// `GET /api/auth/sessions` as the holder of `session`: the list, newest first.
async fn list(env: &TestEnv, session: &str) -> Vec<Value> {
    let r = api_with(session).get(&env.url("/api/auth/sessions")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["sessions"].as_array().expect("sessions array").clone()
}

fn entry(list: &[Value], pred: impl Fn(&Value) -> bool) -> &Value {
    list.iter().find(|d| pred(d)).expect("device in list")
}

fn current_id(list: &[Value]) -> String {
    entry(list, |d| d["current"] == true)["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// `POST /api/auth/sessions/revoke` as a JSON client holding `session` (and a CSRF pair).
async fn revoke(env: &TestEnv, session: &str, body: Value) -> Resp {
    let api = api_with(session);
    let csrf = api.csrf(env).await;
    let mut body = body;
    body["csrfToken"] = json!(csrf);
    api.send(api.client.post(env.url("/api/auth/sessions/revoke")).json(&body))
        .await
}

/// The status a request through the proxy to a protected path gets with `session`.
async fn status_with(env: &TestEnv, session: &str) -> u16 {
    api_with(session).echo(&env.url("/api/user"), &[]).await.status
}

#[tokio::test]
async fn the_list_names_each_device_and_marks_the_current_one() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    // Sessions are listed newest first: make the laptop's the newer one for certain.
    env.sidecar().auth.clock.advance(5);
    let (_, laptop) = device(&env, MAC_FIREFOX).await;

    let r = api_with(&phone).get(&env.url("/api/auth/sessions")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("cache-control").is_some_and(|c| c.contains("no-store")),
        "{:?}",
        r.headers
    );
    let from_phone = r.json()["sessions"].as_array().expect("array").clone();
    assert_eq!(from_phone.len(), 2, "{from_phone:?}");
    let me = entry(&from_phone, |d| d["current"] == true);
    assert_eq!(me["device"], "Chrome · Android");
    let other = entry(&from_phone, |d| d["current"] == false);
    assert_eq!(other["device"], "Firefox · macOS");
    for d in &from_phone {
        for field in ["id", "createdAt", "lastSeenAt", "expires"] {
            assert!(d[field].is_string(), "{field} in {d}");
        }
    }
    // Newest first: the laptop signed in last.
    assert_eq!(from_phone[0]["device"], "Firefox · macOS");

    // The same sessions, seen from the laptop: only `current` moves.
    let from_laptop = list(&env, &laptop).await;
    assert_eq!(
        entry(&from_laptop, |d| d["current"] == true)["device"],
        "Firefox · macOS"
    );
    assert_eq!(current_id(&from_laptop), other["id"].as_str().expect("id"));

    // Never a credential: neither cookie value nor the hash of its token appears.
    for cookie in [&phone, &laptop] {
        assert!(!r.body.contains(cookie.as_str()));
        let key = env.sidecar().auth.session_key(cookie).expect("our cookie");
        assert!(!r.body.contains(&nini_auth::crypto::hex(&key)), "{}", r.body);
    }

    // Signed out: 401 JSON, for the list and the revoke alike.
    let anon = Browser::api();
    let r = anon.get(&env.url("/api/auth/sessions")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let csrf = anon.csrf(&env).await;
    let r = anon
        .send(
            anon.client
                .post(env.url("/api/auth/sessions/revoke"))
                .json(&json!({"csrfToken": csrf, "others": true})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn last_seen_moves_once_activity_is_flushed() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    let signed_in_at = env.sidecar().auth.clock.now();
    let laptop_seen = |l: &[Value]| {
        let at = entry(l, |d| d["device"] == "Firefox · macOS")["lastSeenAt"]
            .as_str()
            .expect("lastSeenAt")
            .to_string();
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
            .unix_timestamp()
    };
    let before = laptop_seen(&list(&env, &phone).await);
    assert!(before <= signed_in_at, "{before} > {signed_in_at}");

    // Ten minutes later the laptop is used once; the hot path only notes it in memory.
    env.sidecar().auth.clock.advance(600);
    let used_at = env.sidecar().auth.clock.now();
    assert_eq!(status_with(&env, &laptop).await, 200);
    let after = laptop_seen(&list(&env, &phone).await);
    assert!(
        after >= used_at && after <= used_at + 5,
        "last seen {after}, used at {used_at} (was {before})"
    );
    // Stored, not only shown: the store has it too.
    let sessions = env
        .sidecar()
        .auth
        .store
        .user_sessions(
            &env.sidecar()
                .auth
                .identity(&laptop)
                .await
                .expect("store")
                .expect("live")
                .user_id,
            env.sidecar().auth.clock.now(),
        )
        .await
        .expect("store");
    assert!(sessions.iter().any(|s| s.last_seen_at == Some(after)), "{sessions:?}");
}

#[tokio::test]
async fn ending_a_device_refuses_its_cookie_at_once() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    // Both sessions are cached by now: the revocation must reach the cache, not only the store.
    assert_eq!(status_with(&env, &laptop).await, 200);
    assert_eq!(status_with(&env, &phone).await, 200);
    let l = list(&env, &phone).await;
    let laptop_id = entry(&l, |d| d["current"] == false)["id"]
        .as_str()
        .expect("id")
        .to_string();

    let mut socket = crate::websockets::open_ws(&env.url(""), "/dashboard/ws", Some(&laptop)).await;
    assert!(crate::websockets::echoes(&mut socket, "before").await);

    let r = revoke(&env, &phone, json!({ "id": laptop_id })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ended"], 1);
    // Its WebSocket ends with it.
    crate::websockets::ended_within(&mut socket, std::time::Duration::from_secs(3), "device ended").await;
    assert!(
        r.set_cookie(session_cookie_name()).is_none(),
        "this device stays signed in"
    );
    assert_eq!(status_with(&env, &laptop).await, 401, "ended on this process at once");
    assert_eq!(status_with(&env, &phone).await, 200);
    let l = list(&env, &phone).await;
    assert_eq!(l.len(), 1, "{l:?}");

    // Ended already: 404, and nothing else happens.
    let r = revoke(&env, &phone, json!({ "id": laptop_id })).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(status_with(&env, &phone).await, 200);
    // The TikTok grant stays: this device is still signed in.
    assert!(env.mock.requests_to("/v2/oauth/revoke/").is_empty());
    assert!(env
        .sidecar()
        .auth
        .metrics
        .render()
        .contains("nini_auth_device_revocations_total{scope=\"one\"} 1"));
}

#[tokio::test]
async fn ending_all_other_devices_keeps_this_one_and_the_grant() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    let (_, ipad) = device(&env, IPHONE_SAFARI).await;
    for s in [&phone, &laptop, &ipad] {
        assert_eq!(status_with(&env, s).await, 200);
    }
    let r = revoke(&env, &laptop, json!({ "others": true })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ended"], 2);
    assert_eq!(status_with(&env, &phone).await, 401);
    assert_eq!(status_with(&env, &ipad).await, 401);
    assert_eq!(status_with(&env, &laptop).await, 200);
    let l = list(&env, &laptop).await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["current"], true);
    assert!(env.mock.requests_to("/v2/oauth/revoke/").is_empty());
    // Nothing left to end: 0, not an error.
    let r = revoke(&env, &laptop, json!({ "others": "true" })).await;
    assert_eq!((r.status, r.json()["ended"].clone()), (200, json!(0)));
}

#[tokio::test]
async fn another_users_session_cannot_be_ended_or_seen() {
    let env = env_with_two_users().await;
    let (_, mine) = device(&env, ANDROID_CHROME).await;
    let theirs = second_user(&env).await;
    assert_eq!(status_with(&env, &theirs).await, 200);
    let their_list = list(&env, &theirs).await;
    assert_eq!(their_list.len(), 1);
    let their_id = current_id(&their_list);
    let my_list = list(&env, &mine).await;
    assert_eq!(my_list.len(), 1, "only my own sessions: {my_list:?}");
    assert_ne!(current_id(&my_list), their_id);

    let r = revoke(&env, &mine, json!({ "id": their_id })).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(status_with(&env, &theirs).await, 200, "still signed in");
    assert_eq!(list(&env, &theirs).await.len(), 1);
    // Their "others" are not mine either.
    let r = revoke(&env, &mine, json!({ "others": true })).await;
    assert_eq!(r.json()["ended"], 0);
    assert_eq!(status_with(&env, &theirs).await, 200);
    // Junk ids are just unknown.
    for junk in ["x".repeat(500), "' OR 1=1 --".to_string()] {
        let r = revoke(&env, &mine, json!({ "id": junk })).await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
    assert_eq!(status_with(&env, &mine).await, 200);
}

#[tokio::test]
async fn revoking_needs_post_and_the_csrf_token() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    let laptop_id = current_id(&list(&env, &laptop).await);
    let api = api_with(&phone);
    let url = env.url("/api/auth/sessions/revoke");

    // No token, a made-up token, a token without its cookie: refused, nothing ended.
    let r = api.send(api.client.post(&url).json(&json!({ "id": laptop_id }))).await;
    assert_eq!((r.status, r.json()["error"].clone()), (403, json!("MissingCSRF")));
    let r = api
        .send(
            api.client
                .post(&url)
                .json(&json!({ "id": laptop_id, "csrfToken": "forged" })),
        )
        .await;
    assert_eq!(r.status, 403);
    let csrf = Browser::api().csrf(&env).await;
    let r = api
        .send(
            api.client
                .post(&url)
                .json(&json!({ "id": laptop_id, "csrfToken": csrf })),
        )
        .await;
    assert_eq!(r.status, 403, "a token from another browser");
    assert_eq!(status_with(&env, &laptop).await, 200);

    // Methods: every endpoint declares its own; HEAD changes nothing.
    let r = api.send(api.client.get(&url)).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    for path in ["/api/auth/sessions", "/api/auth/devices"] {
        let r = api.send(api.client.post(env.url(path))).await;
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{path}");
        let r = api.send(api.client.delete(env.url(path))).await;
        assert_eq!(r.status, 405, "{path}");
    }
    let r = api.send(api.client.head(env.url("/api/auth/sessions"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // Exactly one of id and others.
    let csrf = api.csrf(&env).await;
    for body in [
        json!({ "csrfToken": csrf }),
        json!({ "csrfToken": csrf, "id": laptop_id, "others": true }),
        json!({ "csrfToken": csrf, "id": "" }),
    ] {
        let r = api.send(api.client.post(&url).json(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    assert_eq!(status_with(&env, &laptop).await, 200);
}

#[tokio::test]
async fn ending_the_current_session_is_a_sign_out() {
    let env = TestEnv::start().await;
    let (_, phone) = device(&env, ANDROID_CHROME).await;
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    let phone_id = current_id(&list(&env, &phone).await);

    let r = revoke(&env, &phone, json!({ "id": phone_id })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "ended": 1, "signedOut": true }));
    let cleared = r.set_cookie(session_cookie_name()).expect("cookie cleared");
    assert!(cleared.to_ascii_lowercase().contains("max-age=0"), "{cleared}");
    assert_eq!(status_with(&env, &phone).await, 401);
    assert_eq!(status_with(&env, &laptop).await, 200);
    // Another device is still signed in: the TikTok grant stays, as with sign-out.
    assert!(env.mock.requests_to("/v2/oauth/revoke/").is_empty());

    // The last session: the grant is revoked, as sign-out does.
    let laptop_id = current_id(&list(&env, &laptop).await);
    let r = revoke(&env, &laptop, json!({ "id": laptop_id })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.mock.requests_to("/v2/oauth/revoke/").len(), 1);
    assert_eq!(status_with(&env, &laptop).await, 401);
}

#[tokio::test]
async fn the_page_lists_devices_in_both_languages_and_its_forms_end_them() {
    let env = TestEnv::start().await;
    // Not signed in: to the sign-in page, which comes back here.
    let anon = Browser::new();
    let r = anon.get(&env.url("/api/auth/devices?lang=en")).await;
    assert_eq!(r.status, 302);
    let to = r.location().expect("location");
    assert!(
        to.ends_with("/api/auth/signin?callbackUrl=%2Fapi%2Fauth%2Fdevices%3Flang%3Den"),
        "{to}"
    );
    let phone = Browser::with_user_agent(ANDROID_CHROME);
    let done = phone.login(&env, "/api/auth/devices").await;
    assert_eq!(done.status, 302);
    assert!(
        done.location().is_some_and(|l| l.ends_with("/api/auth/devices")),
        "{:?}",
        done.location()
    );
    let (_, laptop) = device(&env, MAC_FIREFOX).await;
    let laptop_id = current_id(&list(&env, &laptop).await);
    let phone_session = phone.cookie(session_cookie_name()).expect("session");
    let phone_id = current_id(&list(&env, &phone_session).await);

    let en = phone.get(&env.url("/api/auth/devices?lang=en")).await;
    assert_eq!(en.status, 200, "{}", en.body);
    for needle in [
        "<html lang=\"en\"",
        "Your devices",
        "This device",
        "Chrome · Android",
        "Firefox · macOS",
        "Active now",
        "Sign out on all other devices",
        "id=\"end-others\"",
    ] {
        assert!(en.body.contains(needle), "missing {needle}:\n{}", en.body);
    }
    assert!(en.body.contains(&format!("id=\"end-{laptop_id}\"")));
    assert!(
        !en.body.contains(&format!("id=\"end-{phone_id}\"")),
        "this device signs out instead"
    );
    assert!(en.body.contains(&format!("id=\"device-{phone_id}\"")));
    assert!(!en.body.contains("<script"), "no script needed");
    let csp = en.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("form-action 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(en.header("x-frame-options"), Some("DENY"));
    assert!(en.header("cache-control").is_some_and(|c| c.contains("no-store")));

    let es = phone
        .get_with(&env.url("/api/auth/devices"), &[("accept-language", "es-MX,es;q=0.9")])
        .await;
    assert_eq!(es.status, 200);
    for needle in [
        "<html lang=\"es\"",
        "Tus dispositivos",
        "Este dispositivo",
        "Cerrar esta sesión",
    ] {
        assert!(es.body.contains(needle), "missing {needle}");
    }

    // The page's own form, as a browser submits it: back to the page, the laptop is gone.
    let csrf = extract_value(&en.body, "csrfToken").expect("csrf field");
    let r = phone
        .post_form(
            &env.url("/api/auth/sessions/revoke"),
            &[("csrfToken", csrf.as_str()), ("lang", "en"), ("id", laptop_id.as_str())],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(
        r.location().is_some_and(|l| l.ends_with("/api/auth/devices?lang=en")),
        "{:?}",
        r.location()
    );
    assert_eq!(status_with(&env, &laptop).await, 401);
    let after = phone.get(&env.url("/api/auth/devices?lang=en")).await;
    assert!(!after.body.contains("Firefox · macOS"), "{}", after.body);
    assert!(after.body.contains("No other device is signed in."));
}
