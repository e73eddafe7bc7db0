//! Tests of the mock TikTok server over real HTTP: a server on 127.0.0.1:0 and reqwest without
//! redirect following, so every assertion is about what goes over the wire.

use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;

const CB: &str = "http://127.0.0.1:9/callback";
const ALL_SCOPES: &str = "user.info.basic,user.info.profile,user.info.stats,video.list";

/// Authorize query parameters, in order.
type Params = Vec<(String, String)>;

struct Env {
    mock: MockTikTok,
    http: reqwest::Client,
}

fn test_config() -> MockConfig {
    let mut cfg = MockConfig::demo(vec![
        CB.to_owned(),
        "http://127.0.0.1:9/cb?x=1".to_owned(),
        "http://127.0.0.1:9/cb#frag".to_owned(),
    ]);
    cfg.clients.push(MockClient {
        client_key: "limited-key".to_owned(),
        client_secret: "limited-secret".to_owned(),
        redirect_uris: vec![CB.to_owned()],
        approved_scopes: vec!["user.info.basic".to_owned()],
        ..MockClient::default()
    });
    cfg.clients.push(MockClient {
        client_key: "sandbox-key".to_owned(),
        client_secret: "sandbox-secret".to_owned(),
        redirect_uris: vec![CB.to_owned()],
        approved_scopes: vec!["user.info.basic".to_owned()],
        sandbox: true,
        target_users: vec!["someone-else".to_owned()],
    });
    cfg
}

async fn start_with(config: MockConfig) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mock = MockTikTok::start(listener, config).await.expect("start");
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");
    Env { mock, http }
}

async fn start() -> Env {
    start_with(test_config()).await
}

fn auth_params(scope: &str) -> Vec<(String, String)> {
    [
        ("client_key", DEMO_CLIENT_KEY),
        ("response_type", "code"),
        ("scope", scope),
        ("redirect_uri", CB),
        ("state", "st-123"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn set(params: &mut Vec<(String, String)>, key: &str, value: &str) {
    params.retain(|(k, _)| k != key);
    params.push((key.to_owned(), value.to_owned()));
}

fn remove(params: &mut Vec<(String, String)>, key: &str) {
    params.retain(|(k, _)| k != key);
}

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .expect("location is a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn assert_log_id(id: &str) {
    assert_eq!(id.len(), 34, "{id}");
    assert!(id[..14].bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert!(
        id[14..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        "{id}"
    );
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mock.base_url())
    }

    async fn authorize(&self, params: &[(String, String)]) -> reqwest::Response {
        let url = url::Url::parse_with_params(&self.url("/v2/auth/authorize/"), params).expect("authorize url");
        self.http.get(url).send().await.expect("authorize")
    }

    async fn authorize_raw(&self, query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}?{query}", self.url("/v2/auth/authorize/")))
            .send()
            .await
            .expect("authorize")
    }

    /// Scripted consent; returns the decoded code and the raw Location.
    async fn code_with(&self, mut params: Vec<(String, String)>) -> (String, String) {
        set(&mut params, "mock_auto", "authorize");
        let resp = self.authorize(&params).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location")
            .to_owned();
        let code = get(&query_of(&location), "code").expect("code").to_owned();
        (code, location)
    }

    async fn code(&self, scope: &str) -> String {
        self.code_with(auth_params(scope)).await.0
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let resp = self.http.post(self.url(path)).form(form).send().await.expect("post");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, body, headers)
    }

    async fn exchange(&self, code: &str) -> (StatusCode, Value) {
        let (s, b, _) = self
            .post_form(
                "/v2/oauth/token/",
                &[
                    ("client_key", DEMO_CLIENT_KEY),
                    ("client_secret", DEMO_CLIENT_SECRET),
                    ("code", code),
                    ("grant_type", "authorization_code"),
                    ("redirect_uri", CB),
                ],
            )
            .await;
        (s, b)
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        let (s, b, _) = self
            .post_form(
                "/v2/oauth/token/",
                &[
                    ("client_key", DEMO_CLIENT_KEY),
                    ("client_secret", DEMO_CLIENT_SECRET),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            )
            .await;
        (s, b)
    }

    async fn login(&self, scope: &str) -> Value {
        let code = self.code(scope).await;
        let (status, body) = self.exchange(&code).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn user_info(&self, token: &str, fields: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url("/v2/user/info/"))
            .query(&[("fields", fields)])
            .bearer_auth(token)
            .send()
            .await
            .expect("user info");
        (resp.status(), resp.json().await.expect("json"))
    }

    async fn video_list(&self, token: &str, fields: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url("/v2/video/list/"))
            .query(&[("fields", fields)])
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("video list");
        (resp.status(), resp.json().await.expect("json"))
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

// === authorize ===

#[tokio::test]
async fn authorize_validation_failures_render_error_pages() {
    let env = start().await;
    let base = auth_params(ALL_SCOPES);
    let mut cases: Vec<(&str, Params, &str)> = Vec::new();

    let mut p = base.clone();
    set(&mut p, "client_key", "nope");
    cases.push(("unknown client_key", p, "client_key"));
    let mut p = base.clone();
    remove(&mut p, "client_key");
    set(&mut p, "client_id", DEMO_CLIENT_KEY);
    cases.push(("client_id instead of client_key", p, "client_key"));
    let mut p = base.clone();
    set(&mut p, "response_type", "token");
    cases.push(("response_type", p, "response_type"));
    let mut p = base.clone();
    set(&mut p, "redirect_uri", "http://127.0.0.1:9/callback/");
    cases.push(("redirect_uri not byte-equal", p, "redirect_uri"));
    let mut p = base.clone();
    set(&mut p, "redirect_uri", "http://127.0.0.1:9/cb?x=1");
    cases.push(("redirect_uri with query", p, "redirect_uri"));
    let mut p = base.clone();
    set(&mut p, "redirect_uri", "http://127.0.0.1:9/cb#frag");
    cases.push(("redirect_uri with fragment", p, "redirect_uri"));
    let mut p = base.clone();
    set(&mut p, "scope", "");
    cases.push(("empty scope", p, "scope"));
    let mut p = base.clone();
    set(&mut p, "scope", "user.info.basic user.info.profile");
    cases.push(("space-separated scope", p, "scope"));
    let mut p = base.clone();
    set(&mut p, "scope", "user.info.basic,user.info.email");
    cases.push(("unknown scope", p, "scope"));
    let mut p = base.clone();
    set(&mut p, "client_key", "limited-key");
    set(&mut p, "scope", "user.info.basic,video.list");
    cases.push(("unapproved scope", p, "scope"));
    let mut p = base.clone();
    set(&mut p, "client_key", "sandbox-key");
    set(&mut p, "scope", "user.info.basic");
    set(&mut p, "mock_auto", "authorize");
    cases.push(("non sandbox target", p, "non_sandbox_target"));

    for (name, params, needle) in cases {
        let resp = env.authorize(&params).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name}");
        assert!(resp.headers().get("location").is_none(), "{name}");
        assert!(resp.headers().get("x-tt-logid").is_some(), "{name}");
        let ct = resp.headers()["content-type"].to_str().unwrap_or("").to_owned();
        assert!(ct.starts_with("text/html"), "{name}: {ct}");
        let page = resp.text().await.expect("page");
        assert!(page.contains("We couldn't log in with TikTok"), "{name}");
        assert!(page.contains(needle), "{name}: page lacks {needle}");
    }

    // A sandbox app shows the consent page, but a non-target account cannot approve it.
    let mut p = base.clone();
    set(&mut p, "client_key", "sandbox-key");
    set(&mut p, "scope", "user.info.basic");
    let page = env.authorize(&p).await.text().await.expect("page");
    let rid = hidden_request_id(&page);
    let resp = env
        .http
        .post(env.url("/v2/auth/authorize/"))
        .form(&[("request_id", rid.as_str()), ("action", "authorize")])
        .send()
        .await
        .expect("decision");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.expect("page").contains("non_sandbox_target"));

    env.mock.update_config(|c| c.require_https_redirect = true);
    let resp = env.authorize(&base).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.expect("page").contains("https"));
    env.mock.update_config(|c| c.require_https_redirect = false);

    for mode in [PkceMode::RequiredHex, PkceMode::RequiredBase64Url] {
        env.mock.update_config(|c| c.pkce_mode = mode);
        let resp = env.authorize(&base).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.text().await.expect("page").contains("code_challenge"));
        let mut p = base.clone();
        set(&mut p, "code_challenge", "abc");
        set(&mut p, "code_challenge_method", "plain");
        let resp = env.authorize(&p).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.text().await.expect("page").contains("code_challenge_method"));
    }

    let statuses: Vec<u16> = env
        .mock
        .requests_to("/v2/auth/authorize/")
        .iter()
        .map(|r| r.status)
        .collect();
    // Everything was refused except the one sandbox consent page shown above.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 400 || *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn raw_commas_and_encoded_commas_are_equivalent() {
    let env = start().await;
    let common = format!(
        "client_key={DEMO_CLIENT_KEY}&response_type=code&redirect_uri={}&state=s&disable_auto_auth=1",
        ids::encode_query_value(CB)
    );
    for scope in [
        "user.info.basic,video.list",
        "user.info.basic%2Cvideo.list",
        "user.info.basic%2cvideo.list",
    ] {
        let resp = env.authorize_raw(&format!("{common}&scope={scope}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{scope}");
        let page = resp.text().await.expect("page");
        assert!(page.contains("value=\"video.list\""), "{scope}");
    }
}

fn hidden_request_id(page: &str) -> String {
    let marker = "name=\"request_id\" value=\"";
    let start = page.find(marker).expect("request_id field") + marker.len();
    let end = page[start..].find('"').expect("end quote") + start;
    page[start..end].to_owned()
}

#[tokio::test]
async fn consent_page_authorize_redirects_with_code_and_granted_scopes() {
    let env = start().await;
    let mut params = auth_params(ALL_SCOPES);
    let state = "a b/c?&=é+*!";
    set(&mut params, "state", state);
    let resp = env.authorize(&params).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.expect("page");
    for needle in [
        "<form method=\"post\" action=\"/v2/auth/authorize/\"",
        "value=\"user.info.basic\" checked disabled",
        "value=\"video.list\" checked>",
        "<select name=\"open_id\"",
        "María José 🌮",
        "id=\"authorize\" name=\"action\" value=\"authorize\"",
        "id=\"cancel\" name=\"action\" value=\"cancel\"",
        "/__mock/avatar/",
    ] {
        assert!(page.contains(needle), "consent page lacks {needle}");
    }
    let rid = hidden_request_id(&page);
    // The user unticks user.info.stats and video.list; the disabled basic box is not sent.
    let decision = [
        ("request_id", rid.as_str()),
        ("open_id", DEMO_OPEN_ID),
        ("scope", "user.info.profile"),
        ("action", "authorize"),
    ];
    let resp = env
        .http
        .post(env.url("/v2/auth/authorize/"))
        .form(&decision)
        .send()
        .await
        .expect("decision");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().expect("ascii").to_owned();
    assert!(location.starts_with(&format!("{CB}?code=")), "{location}");
    assert!(location.contains("%2A0%21"), "{location}");
    assert!(
        location.contains("scopes=user.info.basic%2Cuser.info.profile"),
        "{location}"
    );
    let q = query_of(&location);
    assert_eq!(get(&q, "state"), Some(state));
    assert_eq!(get(&q, "scopes"), Some("user.info.basic,user.info.profile"));
    let code = get(&q, "code").expect("code");
    assert!(code.ends_with(".e1") && code.contains("*0!"), "{code}");
    assert!(code.len() > 120);

    // The pending request is single use.
    let again = env
        .http
        .post(env.url("/v2/auth/authorize/"))
        .form(&decision)
        .send()
        .await
        .expect("decision");
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(again.headers().get("location").is_none());

    let (status, tokens) = env.exchange(code).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["scope"], "user.info.basic,user.info.profile");
}

#[tokio::test]
async fn cancel_redirects_with_access_denied_and_state() {
    let env = start().await;
    let page = env
        .authorize(&auth_params("user.info.basic"))
        .await
        .text()
        .await
        .expect("page");
    let rid = hidden_request_id(&page);
    let resp = env
        .http
        .post(env.url("/v2/auth/authorize/"))
        .form(&[("request_id", rid.as_str()), ("action", "cancel")])
        .send()
        .await
        .expect("decision");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let q = query_of(resp.headers()["location"].to_str().expect("ascii"));
    assert_eq!(get(&q, "error"), Some("access_denied"));
    assert!(get(&q, "error_description").is_some_and(|d| !d.is_empty()));
    assert_eq!(get(&q, "state"), Some("st-123"));
    assert_eq!(get(&q, "code"), None);

    let mut p = auth_params("user.info.basic");
    set(&mut p, "mock_auto", "cancel");
    let resp = env.authorize(&p).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let q = query_of(resp.headers()["location"].to_str().expect("ascii"));
    assert_eq!(get(&q, "error"), Some("access_denied"));
}

// === token endpoint ===

#[tokio::test]
async fn code_exchange_returns_flat_token_json_and_code_is_single_use() {
    let env = start().await;
    let (code, location) = env.code_with(auth_params(ALL_SCOPES)).await;
    assert!(location.contains("%2A0%21"));
    let (status, body) = env.exchange(&code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().is_some_and(|t| t.starts_with("act.")));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.starts_with("rft.")));
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["refresh_expires_in"], 31_536_000);
    assert_eq!(body["open_id"], DEMO_OPEN_ID);
    assert_eq!(body["scope"], ALL_SCOPES);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("data").is_none() && body.get("error").is_none());

    let (status, body) = env.exchange(&code).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(env.mock.live_grants(DEMO_OPEN_ID), 1);
}

#[tokio::test]
async fn percent_encoded_code_is_unknown() {
    let env = start().await;
    let (code, _) = env.code_with(auth_params("user.info.basic")).await;
    let still_encoded = code.replace('*', "%2A").replace('!', "%21");
    let (_, body) = env.exchange(&still_encoded).await;
    assert_eq!(body["error"], "invalid_grant");
    // The failed attempt did not burn the real code.
    let (_, body) = env.exchange(&code).await;
    assert!(body["access_token"].is_string(), "{body}");
}

#[tokio::test]
async fn code_expires_with_the_mock_clock() {
    let env = start().await;
    let code = env.code("user.info.basic").await;
    env.mock.advance_clock(601);
    let (_, body) = env.exchange(&code).await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn redirect_uri_mismatch_at_exchange_is_invalid_request() {
    let env = start().await;
    let code = env.code("user.info.basic").await;
    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", DEMO_CLIENT_KEY),
                ("client_secret", DEMO_CLIENT_SECRET),
                ("code", code.as_str()),
                ("grant_type", "authorization_code"),
                ("redirect_uri", "http://127.0.0.1:9/other"),
            ],
        )
        .await;
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "Redirect_uri is not matched with the uri when requesting code."
    );
}

#[tokio::test]
async fn token_request_shape_errors() {
    let env = start().await;
    let code = env.code("user.info.basic").await;

    let resp = env
        .http
        .post(env.url("/v2/oauth/token/"))
        .json(&json!({
            "client_key": DEMO_CLIENT_KEY, "client_secret": DEMO_CLIENT_SECRET,
            "code": code, "grant_type": "authorization_code", "redirect_uri": CB,
        }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    let header_id = resp.headers()["x-tt-logid"].to_str().expect("ascii").to_owned();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "The request parameters are malformed.");
    assert_eq!(body["log_id"], header_id.as_str());
    assert_log_id(&header_id);

    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_id", DEMO_CLIENT_KEY),
                ("client_secret", DEMO_CLIENT_SECRET),
                ("code", code.as_str()),
                ("grant_type", "authorization_code"),
                ("redirect_uri", CB),
            ],
        )
        .await;
    assert_eq!(body["error"], "invalid_request");

    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", DEMO_CLIENT_KEY),
                ("client_secret", "wrong"),
                ("code", code.as_str()),
                ("grant_type", "authorization_code"),
                ("redirect_uri", CB),
            ],
        )
        .await;
    assert_eq!(body["error"], "invalid_client");

    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", DEMO_CLIENT_KEY),
                ("client_secret", DEMO_CLIENT_SECRET),
                ("grant_type", "password"),
            ],
        )
        .await;
    assert_eq!(body["error"], "unsupported_grant_type");

    // None of the failures above consumed the code.
    let (status, body) = env.exchange(&code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn oauth_error_status_knob() {
    let env = start().await;
    let bad = [
        ("client_key", DEMO_CLIENT_KEY),
        ("client_secret", "wrong"),
        ("grant_type", "refresh_token"),
        ("refresh_token", "x"),
    ];
    let (status, body, headers) = env.post_form("/v2/oauth/token/", &bad).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(headers["x-tt-logid"].to_str().ok(), body["log_id"].as_str());

    for code in [400u16, 401] {
        env.mock.update_config(|c| c.oauth_error_status = code);
        let (status, body, _) = env.post_form("/v2/oauth/token/", &bad).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(body["error"], "invalid_client");
    }
}

#[tokio::test]
async fn client_credentials_grant() {
    let env = start().await;
    let (status, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", DEMO_CLIENT_KEY),
                ("client_secret", DEMO_CLIENT_SECRET),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["access_token"].as_str().is_some_and(|t| t.starts_with("clt.")));
    assert_eq!(body["expires_in"], 7_200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
}

// === PKCE ===

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk0123456789";

async fn pkce_round(env: &Env, challenge: &str, verifier: &str) -> Value {
    let mut p = auth_params("user.info.basic");
    set(&mut p, "code_challenge", challenge);
    set(&mut p, "code_challenge_method", "S256");
    let (code, _) = env.code_with(p).await;
    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", DEMO_CLIENT_KEY),
                ("client_secret", DEMO_CLIENT_SECRET),
                ("code", code.as_str()),
                ("grant_type", "authorization_code"),
                ("redirect_uri", CB),
                ("code_verifier", verifier),
            ],
        )
        .await;
    body
}

#[tokio::test]
async fn pkce_hex_and_base64url() {
    let env = start().await;
    let digest = ids::sha256(VERIFIER.as_bytes());
    let hex = ids::lower_hex(&digest);
    let b64 = ids::base64url(&digest);
    let wrong = "x".repeat(50);

    env.mock.update_config(|c| c.pkce_mode = PkceMode::RequiredHex);
    assert!(pkce_round(&env, &hex, VERIFIER).await["access_token"].is_string());
    let body = pkce_round(&env, &hex, &wrong).await;
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "Code verifier or code challenge is invalid.");
    // RFC 7636 encoding where TikTok desktop wants hex.
    assert_eq!(pkce_round(&env, &b64, VERIFIER).await["error"], "invalid_request");

    env.mock.update_config(|c| c.pkce_mode = PkceMode::RequiredBase64Url);
    assert!(pkce_round(&env, &b64, VERIFIER).await["access_token"].is_string());
    assert_eq!(pkce_round(&env, &hex, VERIFIER).await["error"], "invalid_request");

    env.mock.update_config(|c| c.pkce_mode = PkceMode::VerifyIfPresent);
    assert!(pkce_round(&env, &hex, VERIFIER).await["access_token"].is_string());
    assert!(pkce_round(&env, &b64, VERIFIER).await["access_token"].is_string());
    assert_eq!(pkce_round(&env, &b64, &wrong).await["error"], "invalid_request");

    // A challenge was stored, so a missing verifier fails.
    let mut p = auth_params("user.info.basic");
    set(&mut p, "code_challenge", &b64);
    set(&mut p, "code_challenge_method", "S256");
    let (code, _) = env.code_with(p).await;
    let (_, body) = env.exchange(&code).await;
    assert_eq!(body["error"], "invalid_request");

    env.mock.update_config(|c| c.pkce_mode = PkceMode::Ignore);
    assert!(pkce_round(&env, "anything", &wrong).await["access_token"].is_string());
}

// === refresh, revoke ===

#[tokio::test]
async fn refresh_rotates_and_keeps_the_original_refresh_deadline() {
    let env = start().await;
    let first = env.login(ALL_SCOPES).await;
    let rt0 = first["refresh_token"].as_str().expect("rt").to_owned();
    env.mock.advance_clock(1_000);
    let (status, second) = env.refresh(&rt0).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let rt1 = second["refresh_token"].as_str().expect("rt").to_owned();
    assert_ne!(rt0, rt1);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(second["open_id"], DEMO_OPEN_ID);
    assert_eq!(second["scope"], ALL_SCOPES);
    assert_eq!(second["expires_in"], 86_400);
    let remaining = second["refresh_expires_in"].as_i64().expect("int");
    assert!(
        (31_536_000 - 1_002..=31_536_000 - 1_000).contains(&remaining),
        "{remaining}"
    );

    let (_, dead) = env.refresh(&rt0).await;
    assert_eq!(dead["error"], "invalid_grant");
    let (status, third) = env.refresh(&rt1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(third["refresh_expires_in"].as_i64().expect("int") <= remaining);

    // Default: the superseded access token still works until it expires.
    let (status, _) = env
        .user_info(first["access_token"].as_str().expect("at"), "open_id")
        .await;
    assert_eq!(status, StatusCode::OK);

    // Past the refresh deadline the grant is over.
    env.mock.advance_clock(31_536_000);
    let rt2 = third["refresh_token"].as_str().expect("rt");
    assert_eq!(env.refresh(rt2).await.1["error"], "invalid_grant");
    assert_eq!(env.mock.live_grants(DEMO_OPEN_ID), 0);
    assert_eq!(env.mock.refresh_calls(), 4);
}

#[tokio::test]
async fn refresh_variants_sometimes_same_and_drop_old_access() {
    let mut cfg = test_config();
    cfg.rotation = Rotation::SometimesSame;
    cfg.keep_old_access_token_after_refresh = false;
    cfg.set_lifetimes(Lifetimes::new_docs());
    let env = start_with(cfg).await;
    let first = env.login("user.info.basic").await;
    assert_eq!(first["expires_in"], 7_200);
    assert_eq!(first["refresh_expires_in"], 15_552_000);
    let rt0 = first["refresh_token"].as_str().expect("rt");
    let (_, second) = env.refresh(rt0).await;
    assert_eq!(second["refresh_token"], rt0);
    let (_, third) = env.refresh(rt0).await;
    assert_ne!(third["refresh_token"], rt0);
    assert_eq!(env.refresh(rt0).await.1["error"], "invalid_grant");

    let (status, body) = env
        .user_info(first["access_token"].as_str().expect("at"), "open_id")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "access_token_invalid");
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let env = start().await;
    let tokens = env.login("user.info.basic").await;
    let (_, body, _) = env
        .post_form(
            "/v2/oauth/token/",
            &[
                ("client_key", "limited-key"),
                ("client_secret", "limited-secret"),
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().expect("rt")),
            ],
        )
        .await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn concurrent_refreshes_are_counted_and_only_one_wins() {
    let mut cfg = test_config();
    cfg.refresh_delay_ms = 300;
    let env = start_with(cfg).await;
    let tokens = env.login("user.info.basic").await;
    let rt = tokens["refresh_token"].as_str().expect("rt");
    let (a, b) = tokio::join!(env.refresh(rt), env.refresh(rt));
    let wins = [&a.1, &b.1]
        .iter()
        .filter(|body| body["access_token"].is_string())
        .count();
    assert_eq!(wins, 1, "{} / {}", a.1, b.1);
    assert!([&a.1, &b.1].iter().any(|body| body["error"] == "invalid_grant"));
    assert_eq!(env.mock.refresh_calls(), 2);
    assert_eq!(env.mock.max_concurrent_refreshes(), 2);
}

#[tokio::test]
async fn revoke_kills_the_whole_grant() {
    let env = start().await;
    let tokens = env.login(ALL_SCOPES).await;
    let at = tokens["access_token"].as_str().expect("at");
    let rt = tokens["refresh_token"].as_str().expect("rt");
    let revoke = |token: &str| {
        [
            ("client_key", DEMO_CLIENT_KEY),
            ("client_secret", DEMO_CLIENT_SECRET),
            ("token", token),
        ]
        .map(|(k, v)| (k, v.to_owned()))
    };
    let form = revoke(at);
    let resp = env
        .http
        .post(env.url("/v2/oauth/revoke/"))
        .form(&form)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "{}");

    let (status, body) = env.user_info(at, "open_id").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "access_token_invalid");
    assert_eq!(
        body["error"]["message"],
        "Access token is invalid, please refresh token and retry"
    );
    assert_eq!(env.refresh(rt).await.1["error"], "invalid_grant");
    assert_eq!(env.mock.live_grants(DEMO_OPEN_ID), 0);

    // Revoking again: the token is already dead.
    let resp = env
        .http
        .post(env.url("/v2/oauth/revoke/"))
        .form(&form)
        .send()
        .await
        .expect("revoke");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");

    env.mock.update_config(|c| c.revoke_empty_body = true);
    let tokens = env.login("user.info.basic").await;
    let resp = env
        .http
        .post(env.url("/v2/oauth/revoke/"))
        .form(&revoke(tokens["access_token"].as_str().expect("at")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "");

    let (_, body, _) = env
        .post_form(
            "/v2/oauth/revoke/",
            &[("client_key", DEMO_CLIENT_KEY), ("client_secret", DEMO_CLIENT_SECRET)],
        )
        .await;
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn user_removing_the_app_kills_tokens() {
    let env = start().await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic"]);
    assert_eq!(env.user_info(&tokens.access_token, "open_id").await.0, StatusCode::OK);
    env.mock.revoke_user_grants(DEMO_OPEN_ID);
    assert_eq!(
        env.user_info(&tokens.access_token, "open_id").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(env.refresh(&tokens.refresh_token).await.1["error"], "invalid_grant");
}

// === Display API ===

#[tokio::test]
async fn user_info_fields_and_scopes() {
    let env = start().await;
    let basic = env.login("user.info.basic").await;
    let at = basic["access_token"].as_str().expect("at");

    let (status, body) = env.user_info(at, "open_id,display_name,avatar_url").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(error_code(&body), "ok");
    assert_eq!(body["error"]["message"], "");
    assert_log_id(body["error"]["log_id"].as_str().expect("log id"));
    let user = body["data"]["user"].as_object().expect("user");
    assert_eq!(user.len(), 3);
    assert_eq!(user["display_name"], "María José 🌮");
    assert_eq!(user["open_id"], DEMO_OPEN_ID);
    let avatar = user["avatar_url"].as_str().expect("avatar");
    let resp = env.http.get(avatar).send().await.expect("avatar");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert!(resp.text().await.expect("svg").contains(">MJ</text>"));

    let resp = env
        .http
        .get(env.url("/v2/user/info/"))
        .bearer_auth(at)
        .send()
        .await
        .expect("user info");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(error_code(&body), "invalid_params");
    assert!(body.get("data").is_none());

    let (status, body) = env.user_info(at, "open_id,email").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_params");

    let (status, body) = env.user_info(at, "open_id,username").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "scope_permission_missed");

    env.mock.update_config(|c| {
        c.scope_error_code_for_fields = ScopeErrorCode::ScopeNotAuthorized;
        c.error_includes_data = true;
    });
    let (status, body) = env.user_info(at, "follower_count").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "scope_not_authorized");
    assert_eq!(body["data"], json!({}));

    let full = env.login(ALL_SCOPES).await;
    let (status, body) = env
        .user_info(
            full["access_token"].as_str().expect("at"),
            "username,is_verified,follower_count,bio_description",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["user"]["username"], "mariajose");
    assert_eq!(body["data"]["user"]["is_verified"], true);

    for auth in ["Basic abc", "Bearer", "Bearer nope", ""] {
        let resp = env
            .http
            .get(env.url("/v2/user/info/"))
            .query(&[("fields", "open_id")])
            .header("authorization", auth)
            .send()
            .await
            .expect("user info");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    let resp = env
        .http
        .get(env.url("/v2/user/info/"))
        .query(&[("fields", "open_id")])
        .header("authorization", format!("bEaReR {at}"))
        .send()
        .await
        .expect("user info");
    assert_eq!(resp.status(), StatusCode::OK);

    // Access tokens expire on the mock clock.
    env.mock.advance_clock(86_400);
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn video_list_pages_through_45_public_videos() {
    let env = start().await;
    let mut user = MockUser::with_videos("pager-open-id", "pager", 45);
    for (i, v) in user.videos.iter_mut().enumerate() {
        v.create_time -= i as i64 * 17;
    }
    let mut hidden = MockVideo::generated("pager", 999, env.mock.now() - 10);
    hidden.is_public = false;
    user.videos.push(hidden.clone());
    env.mock.set_user(user);
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, "pager-open-id", &["user.info.basic", "video.list"]);
    let fields = "id,create_time,title,cover_image_url";

    let mut cursor: Option<i64> = None;
    let mut sizes = Vec::new();
    let mut seen: Vec<(String, i64)> = Vec::new();
    loop {
        let body = match cursor {
            Some(c) => json!({ "max_count": 20, "cursor": c }),
            None => json!({ "max_count": 20 }),
        };
        let (status, resp) = env.video_list(&tokens.access_token, fields, &body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(error_code(&resp), "ok");
        let videos = resp["data"]["videos"].as_array().expect("videos");
        sizes.push(videos.len());
        for v in videos {
            let id = v["id"].as_str().expect("string id");
            assert!(id.len() >= 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
            assert_eq!(v.as_object().expect("object").len(), 4);
            seen.push((id.to_owned(), v["create_time"].as_i64().expect("secs")));
        }
        let next = resp["data"]["cursor"].as_i64().expect("cursor");
        if let Some(last) = seen.last() {
            assert_eq!(next, last.1 * 1000);
        }
        if !resp["data"]["has_more"].as_bool().expect("has_more") {
            break;
        }
        cursor = Some(next);
        assert!(sizes.len() < 5, "paging does not terminate");
    }
    assert_eq!(sizes, vec![20, 20, 5]);
    assert!(seen.windows(2).all(|w| w[0].1 > w[1].1));
    assert!(!seen.iter().any(|(id, _)| *id == hidden.id));

    let (_, resp) = env.video_list(&tokens.access_token, "id", &json!({})).await;
    assert_eq!(resp["data"]["videos"].as_array().map(Vec::len), Some(10));

    let (_, resp) = env
        .video_list(&tokens.access_token, "id,cover_image_url", &json!({ "max_count": 1 }))
        .await;
    let cover = resp["data"]["videos"][0]["cover_image_url"]
        .as_str()
        .expect("cover")
        .to_owned();
    let expires: i64 = get(&query_of(&cover), "x-expires")
        .and_then(|v| v.parse().ok())
        .expect("x-expires");
    assert!((expires - env.mock.now() - 6 * 3_600).abs() <= 2);
    assert_eq!(
        env.http.get(&cover).send().await.expect("cover").status(),
        StatusCode::OK
    );
    env.mock.advance_clock(7 * 3_600);
    assert_eq!(
        env.http.get(&cover).send().await.expect("cover").status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn video_list_rejects_bad_requests() {
    let env = start().await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic", "video.list"]);
    let at = tokens.access_token.as_str();
    for bad in [
        json!({ "max_count": 21 }),
        json!({ "max_count": 0 }),
        json!({ "max_count": "5" }),
        json!({ "cursor": "x" }),
        json!([]),
    ] {
        let (status, body) = env.video_list(at, "id", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body), "invalid_params", "{bad}");
    }
    let (status, body) = env.video_list(at, "id,nope", &json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));

    let resp = env
        .http
        .post(env.url("/v2/video/list/"))
        .bearer_auth(at)
        .json(&json!({}))
        .send()
        .await
        .expect("no fields");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = env
        .http
        .post(env.url("/v2/video/list/?fields=id"))
        .bearer_auth(at)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("max_count=5")
        .send()
        .await
        .expect("form body");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = env
        .http
        .get(env.url("/v2/video/list/?fields=id"))
        .bearer_auth(at)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    env.mock.update_config(|c| c.clamp_max_count = true);
    let (status, body) = env.video_list(at, "id", &json!({ "max_count": 50 })).await;
    assert_eq!(status, StatusCode::OK);
    // The demo user has six public videos and one private one.
    assert_eq!(body["data"]["videos"].as_array().map(Vec::len), Some(6));
    assert_eq!(body["data"]["has_more"], false);

    let no_video = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic"]);
    let (status, body) = env.video_list(&no_video.access_token, "id", &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "scope_not_authorized");
}

#[tokio::test]
async fn demo_videos_are_on_consecutive_days() {
    let env = start().await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["video.list"]);
    let (_, body) = env
        .video_list(&tokens.access_token, "id,create_time", &json!({ "max_count": 20 }))
        .await;
    let times: Vec<i64> = body["data"]["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .filter_map(|v| v["create_time"].as_i64())
        .collect();
    assert_eq!(times.len(), 6);
    assert!(times.windows(2).all(|w| w[0] - w[1] == 86_400));
}

#[tokio::test]
async fn video_query_by_ids() {
    let env = start().await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["video.list"]);
    let user = env.mock.config().users[0].clone();
    let wanted = [user.videos[1].id.clone(), user.videos[3].id.clone()];
    let resp = env
        .http
        .post(env.url("/v2/video/query/?fields=id,title"))
        .bearer_auth(&tokens.access_token)
        .json(&json!({ "filters": { "video_ids": wanted } }))
        .send()
        .await
        .expect("query");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    let ids: Vec<&str> = body["data"]["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(ids, vec![wanted[0].as_str(), wanted[1].as_str()]);

    let too_many: Vec<String> = (0..21).map(|i| format!("{i}")).collect();
    let resp = env
        .http
        .post(env.url("/v2/video/query/?fields=id"))
        .bearer_auth(&tokens.access_token)
        .json(&json!({ "filters": { "video_ids": too_many } }))
        .send()
        .await
        .expect("query");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

// === cross-cutting ===

#[tokio::test]
async fn rate_limit_per_endpoint_per_client() {
    let mut cfg = test_config();
    cfg.rate_limit_per_min = 2;
    cfg.retry_after_header = true;
    let env = start_with(cfg).await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic", "video.list"]);
    let at = tokens.access_token.as_str();
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::OK);
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::OK);
    let resp = env
        .http
        .get(env.url("/v2/user/info/?fields=open_id"))
        .bearer_auth(at)
        .send()
        .await
        .expect("user info");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(error_code(&body), "rate_limit_exceeded");

    // Each endpoint has its own window.
    assert_eq!(env.video_list(at, "id", &json!({})).await.0, StatusCode::OK);

    env.mock.advance_clock(61);
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::OK);
}

#[tokio::test]
async fn injected_faults() {
    let env = start().await;
    let tokens = env
        .mock
        .issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic", "video.list"]);
    let at = tokens.access_token.as_str();

    env.mock.inject_fault(Endpoint::UserInfo, Fault::InternalError, 2);
    for _ in 0..2 {
        let (status, body) = env.user_info(at, "open_id").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error_code(&body), "internal_error");
    }
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::OK);

    env.mock.inject_fault(Endpoint::Token, Fault::InternalError, 1);
    let (status, body) = env.refresh(&tokens.refresh_token).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "server_error");

    env.mock.inject_fault(Endpoint::VideoList, Fault::RateLimited, 1);
    let (status, body) = env.video_list(at, "id", &json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&body), "rate_limit_exceeded");

    env.mock.inject_fault(Endpoint::Revoke, Fault::NonJson502, 1);
    let resp = env
        .http
        .post(env.url("/v2/oauth/revoke/"))
        .form(&[
            ("client_key", DEMO_CLIENT_KEY),
            ("client_secret", DEMO_CLIENT_SECRET),
            ("token", at),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err());

    env.mock.inject_fault(Endpoint::Authorize, Fault::InternalError, 1);
    let resp = env.authorize(&auth_params("user.info.basic")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp.headers().get("location").is_none());

    env.mock
        .inject_fault(Endpoint::UserInfo, Fault::Delay(Duration::from_millis(400)), 1);
    let err = env
        .http
        .get(env.url("/v2/user/info/?fields=open_id"))
        .bearer_auth(at)
        .timeout(Duration::from_millis(50))
        .send()
        .await
        .expect_err("must time out");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(env.user_info(at, "open_id").await.0, StatusCode::OK);
}

#[tokio::test]
async fn requests_are_recorded() {
    let env = start().await;
    let code = env.code("user.info.basic").await;
    env.mock.clear_requests();
    let (status, _) = env.exchange(&code).await;
    assert_eq!(status, StatusCode::OK);
    let log = env.mock.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v2/oauth/token/");
    assert_eq!(r.endpoint, Endpoint::Token.label());
    assert_eq!(r.status, 200);
    assert_eq!(r.form_param("code"), Some(code.as_str()));
    // Encoded exactly once: `!` escaped, no `%25` from a second round.
    assert!(r.body.contains("0%21") && !r.body.contains("%25"), "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/x-www-form-urlencoded"));
    assert!((r.time - env.mock.now()).abs() <= 1);

    let resp = env.http.get(env.url("/v2/user/info")).send().await.expect("404");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get("x-tt-logid").is_some());
    let body: Value = resp.json().await.expect("json");
    assert!(error_code(&body) != "ok");

    let via_http: Value = env
        .http
        .get(env.url("/__mock/requests"))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let entries = via_http.as_array().expect("array");
    assert_eq!(entries.len(), 2, "helpers are not recorded: {via_http}");
    assert_eq!(entries[1]["endpoint"], "not_found");
    assert_eq!(entries[1]["status"], 404);
    assert_eq!(env.mock.requests_to("/v2/oauth/token/").len(), 1);

    let resp = env.http.post(env.url("/__mock/reset-log")).send().await.expect("reset");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(env.mock.requests().is_empty());
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let env = start().await;
    let addr = env.mock.addr();
    assert_eq!(env.mock.base_url(), format!("http://127.0.0.1:{}", addr.port()));
    env.mock.shutdown();
    env.mock.stopped().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
