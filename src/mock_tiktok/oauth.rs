//! Login Kit side of the mock: authorize validation, the consent page and its decision,
//! `POST /v2/oauth/token/` and `POST /v2/oauth/revoke/`.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::config::{MockConfig, PkceMode, KNOWN_SCOPES};
use super::ids;
use super::pages::{self, ConsentView, PickerUser};
use super::server::{form_pairs, oauth_error, Inner, Reply, Req};
use super::state::{Challenge, OAuthError, PendingAuth, State};
use super::TokenSet;

const FORM: &str = "application/x-www-form-urlencoded";
const BASIC_SCOPE: &str = "user.info.basic";
const CLIENT_TOKEN_TTL_S: i64 = 7_200;

/// A pre-consent failure: rendered as TikTok's error page, never redirected to the app.
struct PageError {
    param: &'static str,
    detail: String,
}

impl PageError {
    fn new(param: &'static str, detail: impl Into<String>) -> Self {
        Self {
            param,
            detail: detail.into(),
        }
    }

    fn reply(&self) -> Reply {
        Reply::html(StatusCode::BAD_REQUEST, pages::error_page(self.param, &self.detail))
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// Checks run in the order TikTok's page would report them; the first failure wins.
fn validate_authorize(config: &MockConfig, req: &Req) -> Result<PendingAuth, PageError> {
    let q = |name: &str| non_empty(req.query_first(name));
    let Some(client_key) = q("client_key") else {
        let detail = if q("client_id").is_some() {
            "client_key is missing (TikTok does not accept client_id)"
        } else {
            "client_key is missing"
        };
        return Err(PageError::new("client_key", detail));
    };
    let client = config
        .client(client_key)
        .ok_or_else(|| PageError::new("client_key", "Unknown client_key"))?;
    if q("response_type") != Some("code") {
        return Err(PageError::new("response_type", "response_type must be code"));
    }
    let redirect_uri = q("redirect_uri").ok_or_else(|| PageError::new("redirect_uri", "redirect_uri is missing"))?;
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(PageError::new(
            "redirect_uri",
            "redirect_uri does not match any redirect URI registered for this app",
        ));
    }
    if config.require_https_redirect && !redirect_uri.starts_with("https://") {
        return Err(PageError::new("redirect_uri", "redirect_uri must use https"));
    }
    if redirect_uri.contains('?') || redirect_uri.contains('#') {
        return Err(PageError::new(
            "redirect_uri",
            "redirect_uri must not contain a query string or fragment",
        ));
    }
    let scope = q("scope").ok_or_else(|| PageError::new("scope", "scope is missing"))?;
    let mut scopes: Vec<String> = Vec::new();
    for name in scope.split(',') {
        if !KNOWN_SCOPES.contains(&name) {
            return Err(PageError::new(
                "scope",
                format!("\"{name}\" is not a valid scope (scopes are comma-separated)"),
            ));
        }
        if !client.approved_scopes.iter().any(|s| s == name) {
            return Err(PageError::new(
                "scope",
                format!("scope {name} is not approved for this app"),
            ));
        }
        if !scopes.iter().any(|s| s == name) {
            scopes.push(name.to_owned());
        }
    }
    let challenge = validate_pkce(config.pkce_mode, q("code_challenge"), q("code_challenge_method"))?;
    Ok(PendingAuth {
        client_key: client.client_key.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state: req.query_first("state").map(str::to_owned),
        challenge,
        created_at: 0,
    })
}

fn validate_pkce(
    mode: PkceMode,
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<Option<Challenge>, PageError> {
    let required = matches!(mode, PkceMode::RequiredHex | PkceMode::RequiredBase64Url);
    let challenge = match (mode, challenge) {
        (PkceMode::Ignore, _) => return Ok(None),
        (_, None) if required => return Err(PageError::new("code_challenge", "code_challenge is required")),
        (_, None) => return Ok(None),
        (_, Some(c)) => c,
    };
    if method != Some("S256") {
        return Err(PageError::new(
            "code_challenge_method",
            "code_challenge_method must be S256 when code_challenge is sent",
        ));
    }
    Ok(Some(Challenge {
        value: challenge.to_owned(),
        mode,
    }))
}

pub(crate) fn authorize_page(inner: &Inner, req: &Req) -> Reply {
    let now = inner.now();
    let mut st = inner.state();
    let mut pending = match validate_authorize(&st.config, req) {
        Ok(p) => p,
        Err(e) => return e.reply(),
    };
    pending.created_at = now;
    let mock_user = non_empty(req.query_first("mock_user"));
    if let Some(open_id) = mock_user {
        if st.config.user(open_id).is_none() {
            return PageError::new("mock_user", "mock_user is not a configured user").reply();
        }
        if let Err(e) = check_target_user(&st.config, &pending.client_key, open_id) {
            return e.reply();
        }
    }
    match req.query_first("mock_auto") {
        None => {}
        Some(action @ ("authorize" | "cancel")) => {
            let granted = req
                .query_first("mock_scopes")
                .map(|list| split_scopes(std::iter::once(list)));
            return decide(inner, &mut st, now, &pending, action == "authorize", mock_user, granted);
        }
        Some(_) => {
            return PageError::new("mock_auto", "mock_auto must be authorize or cancel").reply();
        }
    }
    let users: Vec<PickerUser> = st
        .config
        .users
        .iter()
        .map(|u| PickerUser {
            open_id: u.open_id.clone(),
            display_name: u.display_name.clone(),
            username: u.username.clone(),
            avatar_url: u.avatar_url.clone().unwrap_or_else(|| inner.avatar_url(&u.open_id)),
        })
        .collect();
    let Some(selected) = mock_user.or_else(|| users.first().map(|u| u.open_id.as_str())) else {
        return PageError::new("user", "the mock has no users configured").reply();
    };
    let selected = selected.to_owned();
    let request_id = st.add_pending(&inner.rng, now, pending.clone());
    drop(st);
    Reply::html(
        StatusCode::OK,
        pages::consent_page(&ConsentView {
            request_id: &request_id,
            client_key: &pending.client_key,
            redirect_uri: &pending.redirect_uri,
            scopes: &pending.scopes,
            users: &users,
            selected_open_id: &selected,
        }),
    )
}

pub(crate) fn authorize_decision(inner: &Inner, req: &Req) -> Reply {
    if !req.content_type_is(FORM) {
        return PageError::new("request", "the consent form must be form-encoded").reply();
    }
    let form = form_pairs(&req.body);
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let approve = match get("action") {
        Some("authorize") => true,
        Some("cancel") => false,
        _ => return PageError::new("action", "action must be authorize or cancel").reply(),
    };
    let Some(request_id) = get("request_id") else {
        return PageError::new("request_id", "request_id is missing").reply();
    };
    let now = inner.now();
    let mut st = inner.state();
    let Some(pending) = st.take_pending(now, request_id) else {
        return PageError::new(
            "request_id",
            "this authorization request has expired or was already answered",
        )
        .reply();
    };
    let submitted = split_scopes(form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
    decide(inner, &mut st, now, &pending, approve, get("open_id"), Some(submitted))
}

/// Accepts both repeated `scope` fields and comma-joined lists.
fn split_scopes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_target_user(config: &MockConfig, client_key: &str, open_id: &str) -> Result<(), PageError> {
    match config.client(client_key) {
        Some(c) if c.sandbox && !c.target_users.iter().any(|t| t == open_id) => Err(PageError::new(
            "non_sandbox_target",
            "non_sandbox_target: this account is not a target user of the sandbox app",
        )),
        Some(_) => Ok(()),
        None => Err(PageError::new("client_key", "Unknown client_key")),
    }
}

/// `submitted`: scopes the user left ticked; `None` grants everything requested.
fn decide(
    inner: &Inner,
    st: &mut State,
    now: i64,
    pending: &PendingAuth,
    approve: bool,
    open_id: Option<&str>,
    submitted: Option<Vec<String>>,
) -> Reply {
    let user = match open_id {
        Some(id) => st.config.user(id),
        None => st.config.users.first(),
    };
    let Some(open_id) = user.map(|u| u.open_id.clone()) else {
        return PageError::new("open_id", "no such user").reply();
    };
    if let Err(e) = check_target_user(&st.config, &pending.client_key, &open_id) {
        return e.reply();
    }
    let state = pending.state.as_deref();
    let location = if approve {
        let granted: Vec<String> = pending
            .scopes
            .iter()
            .filter(|s| *s == BASIC_SCOPE || submitted.as_ref().is_none_or(|sub| sub.iter().any(|x| x == *s)))
            .cloned()
            .collect();
        let scopes = granted.join(",");
        let code = st.issue_code(&inner.rng, now, pending, &open_id, granted);
        let mut pairs = vec![("code", code.as_str()), ("scopes", scopes.as_str())];
        pairs.extend(state.map(|s| ("state", s)));
        ids::append_query(&pending.redirect_uri, &pairs)
    } else {
        let mut pairs = vec![
            ("error", "access_denied"),
            ("error_description", "The user denied the authorization request."),
        ];
        pairs.extend(state.map(|s| ("state", s)));
        ids::append_query(&pending.redirect_uri, &pairs)
    };
    Reply::redirect(location)
}

/// The parsed body of a token or revoke request.
struct Form(Vec<(String, String)>);

impl Form {
    /// First occurrence; an empty value counts as missing.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Step 1 of §9.3: JSON bodies and other content types are "malformed".
fn oauth_form(req: &Req) -> Result<Form, OAuthError> {
    if !req.content_type_is(FORM) || std::str::from_utf8(&req.body).is_err() {
        return Err(OAuthError::malformed());
    }
    Ok(Form(form_pairs(&req.body)))
}

/// Steps 2–3 of §9.3; only body credentials count, an `Authorization` header is ignored.
fn authenticate_client<'a>(inner: &Inner, form: &'a Form, extra_required: &[&str]) -> Result<&'a str, OAuthError> {
    let (Some(key), Some(secret)) = (form.get("client_key"), form.get("client_secret")) else {
        return Err(OAuthError::malformed());
    };
    if extra_required.iter().any(|name| form.get(name).is_none()) {
        return Err(OAuthError::malformed());
    }
    let st = inner.state();
    match st.config.client(key) {
        Some(c) if c.client_secret == secret => Ok(key),
        _ => Err(OAuthError::new(
            "invalid_client",
            "Client key or client secret is invalid.",
        )),
    }
}

pub(crate) async fn token(inner: &Inner, req: &Req) -> Reply {
    match token_result(inner, req).await {
        Ok(body) => Reply::json(StatusCode::OK, &body),
        Err(e) => oauth_error(inner, req, &e),
    }
}

async fn token_result(inner: &Inner, req: &Req) -> Result<serde_json::Value, OAuthError> {
    let form = oauth_form(req)?;
    let client_key = authenticate_client(inner, &form, &["grant_type"])?;
    match form.get("grant_type").unwrap_or_default() {
        "authorization_code" => {
            let code = form.get("code").ok_or_else(OAuthError::malformed)?;
            let now = inner.now();
            let tokens = inner.state().exchange_code(
                &inner.rng,
                now,
                client_key,
                code,
                form.get("redirect_uri"),
                form.get("code_verifier"),
            )?;
            Ok(user_token_json(&tokens))
        }
        "refresh_token" => {
            let refresh_token = form.get("refresh_token").ok_or_else(OAuthError::malformed)?;
            let tokens = refresh(inner, client_key, refresh_token).await?;
            Ok(user_token_json(&tokens))
        }
        "client_credentials" => Ok(json!({
            "access_token": ids::token(&inner.rng, "clt"),
            "expires_in": CLIENT_TOKEN_TTL_S,
            "token_type": "Bearer",
        })),
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "The grant type is not supported.",
        )),
    }
}

fn user_token_json(tokens: &TokenSet) -> serde_json::Value {
    json!({
        "access_token": tokens.access_token,
        "expires_in": tokens.expires_in,
        "open_id": tokens.open_id,
        "refresh_expires_in": tokens.refresh_expires_in,
        "refresh_token": tokens.refresh_token,
        "scope": tokens.scope,
        "token_type": "Bearer",
    })
}

/// Keeps the per-user in-flight count right even when the client disconnects mid-delay and
/// the handler future is dropped.
struct RefreshGuard<'a> {
    inner: &'a Inner,
    open_id: String,
}

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.inner.state().exit_refresh(&self.open_id);
    }
}

async fn refresh(inner: &Inner, client_key: &str, refresh_token: &str) -> Result<TokenSet, OAuthError> {
    let (open_id, delay_ms) = {
        let mut st = inner.state();
        let open_id = st.refresh_owner(refresh_token).unwrap_or_default();
        st.enter_refresh(&open_id);
        (open_id, st.config.refresh_delay_ms)
    };
    let guard = RefreshGuard { inner, open_id };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let now = inner.now();
    let result = inner.state().refresh(&inner.rng, now, client_key, refresh_token);
    // Explicit order: the state lock above must be released before the guard takes it again.
    drop(guard);
    result
}

pub(crate) async fn revoke(inner: &Inner, req: &Req) -> Reply {
    let delay_ms = inner.state().config.revoke_delay_ms;
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let result = oauth_form(req).and_then(|form| {
        let client_key = authenticate_client(inner, &form, &[])?;
        let token = form.get("token").ok_or_else(OAuthError::malformed)?;
        let now = inner.now();
        inner.state().revoke(now, client_key, token)
    });
    match result {
        Ok(()) => {
            if inner.state().config.revoke_empty_body {
                Reply::bytes(StatusCode::OK, None, Vec::new())
            } else {
                Reply::json(StatusCode::OK, &json!({}))
            }
        }
        Err(e) => oauth_error(inner, req, &e),
    }
}
