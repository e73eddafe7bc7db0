//! A faithful mock of TikTok Login Kit v2 (OAuth) and Display API v2, served over real HTTP.
//!
//! Used by `nini-auth demo`, `nini-auth mock-tiktok --listen ADDR` and the project's tests. It
//! is deliberately strict: a client that passes against it should pass against TikTok, and
//! behaviours TikTok leaves undocumented are knobs in [`MockConfig`].
//!
//! Endpoints (exact paths, trailing slash included; anything else is a gateway-style 404):
//! - `GET  /v2/auth/authorize/`   validate, then a consent page (or an HTML error page, never a
//!   redirect); `mock_auto=authorize|cancel`, `mock_user=<open_id>` and `mock_scopes=<list>`
//!   decide at once for scripted clients
//! - `POST /v2/auth/authorize/`   the consent form's decision ⇒ 302 back to the app
//! - `POST /v2/oauth/token/`      authorization_code, refresh_token, client_credentials
//! - `POST /v2/oauth/revoke/`
//! - `GET  /v2/user/info/`, `POST /v2/video/list/`, `POST /v2/video/query/`
//! - `GET  /__mock/requests`, `POST /__mock/reset-log`, `GET /__mock/avatar/<open_id>.svg`,
//!   `GET /__mock/cover/<video_id>.svg` (helpers; never recorded)
//!
//! Every answer's `Date` is the mock's clock, so a test that advances it sees TikTok's clock
//! off, as a client would on a machine whose own clock is wrong.

mod api;
mod config;
mod ids;
mod oauth;
mod pages;
mod server;
mod state;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use config::{
    Lifetimes, MockClient, MockConfig, MockUser, MockVideo, PkceMode, Rotation, ScopeErrorCode, DEMO_CLIENT_KEY,
    DEMO_CLIENT_SECRET, DEMO_OPEN_ID, DEMO_TEAM_OPEN_ID, KNOWN_SCOPES,
};

use server::Inner;

/// The endpoints a fault can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Endpoint {
    /// `GET /v2/auth/authorize/` (the consent decision POST is not affected).
    Authorize,
    Token,
    Revoke,
    UserInfo,
    VideoList,
    VideoQuery,
}

impl Endpoint {
    /// The label used in [`RecordedRequest::endpoint`].
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Authorize => "authorize",
            Endpoint::Token => "token",
            Endpoint::Revoke => "revoke",
            Endpoint::UserInfo => "user_info",
            Endpoint::VideoList => "video_list",
            Endpoint::VideoQuery => "video_query",
        }
    }
}

/// A failure answered instead of the normal response by the next calls to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500: Display API `internal_error` envelope; OAuth `{"error":"server_error",…}`;
    /// an HTML page on authorize.
    InternalError,
    /// HTTP 429: Display API `rate_limit_exceeded`; OAuth `temporarily_unavailable`; an HTML
    /// page on authorize. `Retry-After` follows the `retry_after_header` knob.
    RateLimited,
    /// HTTP 502 with an HTML body, as a load balancer in front of TikTok would answer.
    NonJson502,
    /// Sleep, then answer normally (for client timeout tests).
    Delay(Duration),
    /// HTTP 200 with bytes that are not JSON at all.
    Garbage,
    /// HTTP 200 with an HTML page (a captive portal or a misrouted proxy).
    Html200,
    /// HTTP 200 with a JSON body cut off in the middle.
    TruncatedJson,
}

/// One request as the mock received it, and the status it answered with.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Arrival order; unique for the life of the server.
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub raw_query: String,
    /// Form-decoded query pairs, in order, duplicates kept.
    pub query: Vec<(String, String)>,
    /// Lower-case names; values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Form-decoded body pairs when the request was `application/x-www-form-urlencoded`.
    pub form: Vec<(String, String)>,
    /// `authorize`, `authorize_decision`, `token`, `revoke`, `user_info`, `video_list`,
    /// `video_query` or `not_found`.
    pub endpoint: String,
    /// 0 while the request is still being answered.
    pub status: u16,
    /// Mock clock, epoch seconds, at arrival.
    pub time: i64,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, &name.to_ascii_lowercase())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    pub fn form_param(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The fields of a successful user token response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub open_id: String,
    /// Comma-separated granted scopes.
    pub scope: String,
}

/// Handle to a running mock server; clones share the same server and state.
#[derive(Clone)]
pub struct MockTikTok {
    inner: Arc<Inner>,
}

impl MockTikTok {
    /// Starts serving on `listener` in a spawned tokio task until [`MockTikTok::shutdown`].
    pub async fn start(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<MockTikTok> {
        let inner = server::start(listener, config)?;
        Ok(MockTikTok { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash. The authorize URL is
    /// `base_url() + "/v2/auth/authorize/"`; the API base is `base_url()` itself.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Stops accepting connections; in-flight requests are allowed to finish.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once the server task has stopped (after [`MockTikTok::shutdown`]).
    pub async fn stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        // An error means the sender is gone, which also only happens once serving ended.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests()
    }

    /// Recorded requests whose path is exactly `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.inner.requests().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn clear_requests(&self) {
        self.inner.clear_requests();
    }

    /// The next `times` calls to `endpoint` get `fault`; queued after faults injected earlier.
    pub fn inject_fault(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        self.inner.state().push_fault(endpoint, fault, times);
    }

    /// Moves the mock's clock forward (or back, if negative); codes, access and refresh
    /// tokens, rate-limit windows and every answer's `Date` header all follow it.
    pub fn advance_clock(&self, secs: i64) {
        self.inner.advance_clock(secs);
    }

    /// The mock clock: real time plus every [`MockTikTok::advance_clock`], epoch seconds.
    pub fn now(&self) -> i64 {
        self.inner.now()
    }

    /// As if the user removed the app in TikTok: every grant of `open_id` dies.
    pub fn revoke_user_grants(&self, open_id: &str) {
        self.inner.state().revoke_user_grants(open_id);
    }

    /// Adds the user, or replaces the one with the same `open_id`.
    pub fn set_user(&self, user: MockUser) {
        let mut st = self.inner.state();
        match st.config.users.iter_mut().find(|u| u.open_id == user.open_id) {
            Some(existing) => *existing = user,
            None => st.config.users.push(user),
        }
    }

    /// Changes configuration at runtime; takes effect for the next request.
    pub fn update_config(&self, f: impl FnOnce(&mut MockConfig)) {
        f(&mut self.inner.state().config);
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> MockConfig {
        self.inner.state().config.clone()
    }

    /// Number of `grant_type=refresh_token` calls that passed client authentication.
    pub fn refresh_calls(&self) -> usize {
        self.inner.state().refresh_calls()
    }

    /// Highest number of refresh calls ever in flight at once for a single user.
    pub fn max_concurrent_refreshes(&self) -> usize {
        self.inner.state().max_concurrent_refreshes()
    }

    /// Grants of `open_id` that are neither revoked nor past their refresh expiry.
    pub fn live_grants(&self, open_id: &str) -> usize {
        let now = self.inner.now();
        self.inner.state().live_grants(now, open_id)
    }

    /// Creates a grant directly, skipping the browser flow.
    pub fn issue_tokens_for_test(&self, client_key: &str, open_id: &str, scopes: &[&str]) -> TokenSet {
        let now = self.inner.now();
        self.inner
            .state()
            .create_grant(&self.inner.rng, now, client_key, open_id, scopes)
    }
}
