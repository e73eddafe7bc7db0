//! Test harness: a mock TikTok, the demo upstream (JSON echo) and the sidecar, each a real
//! server on a loopback port, plus a cookie-keeping client that never follows redirects so
//! tests can assert every `Location` and `Set-Cookie`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nini_auth::config::{self, RawConfig, SecretsPolicy};
use nini_auth::mock_tiktok::{MockConfig, MockTikTok};
use nini_auth::ops::{free_port, Running};
use serde_json::Value;

/// The SQLite store at `db` with this key ring, as a sidecar holding it would open it.
pub async fn open_sqlite(db: &Path, keys: &[String]) -> std::sync::Arc<dyn nini_auth::store::Store> {
    let cfg = config::storage_from_url("db", &db.display().to_string()).expect("storage config");
    let ring = nini_auth::crypto::KeyRing::from_base64(keys).expect("ring");
    nini_auth::store::open(&cfg, ring).await.expect("open store")
}

pub struct TestEnv {
    pub mock: MockTikTok,
    pub upstream: SocketAddr,
    pub sidecar: Option<Running>,
    /// Holds the database directory alive for the test's duration.
    _dir: tempfile::TempDir,
    pub raw_db: PathBuf,
    pub keys: Vec<String>,
    upstream_task: tokio::task::JoinHandle<()>,
}

pub struct Builder {
    mock: Box<dyn FnOnce(&mut MockConfig)>,
    raw: Box<dyn FnOnce(&mut RawConfig)>,
    /// The demo upstream also serves `/static/*` from here (see `Builder::static_dir`).
    static_dir: Option<PathBuf>,
}

impl TestEnv {
    pub fn builder() -> Builder {
        Builder {
            mock: Box::new(|_| {}),
            raw: Box::new(|_| {}),
            static_dir: None,
        }
    }

    pub async fn start() -> TestEnv {
        TestEnv::builder().start().await
    }

    pub fn sidecar(&self) -> &Running {
        self.sidecar.as_ref().expect("sidecar running")
    }

    pub fn url(&self, path: &str) -> String {
        self.sidecar().url(path)
    }

    /// Stops the sidecar (its database stays) so a test can start another on the same file.
    pub fn stop_sidecar(&mut self) {
        if let Some(s) = self.sidecar.take() {
            s.stop();
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop_sidecar();
        self.mock.shutdown();
        self.upstream_task.abort();
    }
}

impl Builder {
    pub fn mock(mut self, f: impl FnOnce(&mut MockConfig) + 'static) -> Builder {
        self.mock = Box::new(f);
        self
    }

    pub fn raw(mut self, f: impl FnOnce(&mut RawConfig) + 'static) -> Builder {
        self.raw = Box::new(f);
        self
    }

    /// The demo upstream serves `GET /static/<file>` from `dir` (same origin as `/api/auth`).
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.static_dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = free_port().expect("free port");
        let redirect_uri = format!("http://{listen}{}", config::CALLBACK_PATH);
        let mut mcfg = MockConfig::demo(vec![redirect_uri]);
        (self.mock)(&mut mcfg);
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let mock = MockTikTok::start(ml, mcfg).await.expect("mock starts");
        let ul = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let (upstream, upstream_task) = nini_auth::cli::demo::serve_app_with_static(ul, self.static_dir)
            .await
            .expect("upstream starts");
        let raw_db = dir.path().join("nini-auth.db");
        let mut raw = nini_auth::cli::demo::raw_config(listen, &mock.base_url(), upstream, &raw_db);
        let keys = vec![nini_auth::crypto::generate_key_base64().expect("key")];
        raw.secrets.encryption_keys = keys.clone();
        (self.raw)(&mut raw);
        let env = std::collections::HashMap::<String, String>::new();
        let cfg = config::validate(raw, &env, SecretsPolicy::Required).expect("test config valid");
        let sidecar = tokio::task::spawn_blocking(move || Running::start(cfg))
            .await
            .expect("join")
            .expect("sidecar starts");
        TestEnv {
            mock,
            upstream,
            sidecar: Some(sidecar),
            _dir: dir,
            raw_db,
            keys,
            upstream_task,
        }
    }
}

impl TestEnv {
    /// Restarts only the sidecar, on the same database, mock and upstream, with `keys`.
    pub async fn restart_with_keys(&mut self, keys: Vec<String>) {
        let env = self;
        env.stop_sidecar();
        let listen = free_port().expect("free port");
        let mut raw = nini_auth::cli::demo::raw_config(listen, &env.mock.base_url(), env.upstream, &env.raw_db);
        raw.secrets.encryption_keys = keys;
        env.allow_redirect_uri(&format!("http://{listen}{}", config::CALLBACK_PATH));
        let cfg = config::validate(
            raw,
            &std::collections::HashMap::<String, String>::new(),
            SecretsPolicy::Required,
        )
        .expect("valid");
        let sidecar = tokio::task::spawn_blocking(move || Running::start(cfg))
            .await
            .expect("join")
            .expect("sidecar restarts");
        env.sidecar = Some(sidecar);
    }

    pub async fn restart(&mut self) {
        let keys = self.keys.clone();
        self.restart_with_keys(keys).await;
    }

    /// Registers `uri` as one more redirect URI of every mock TikTok client (for a sidecar
    /// on another port or behind a proxy).
    pub fn allow_redirect_uri(&self, uri: &str) {
        self.mock.update_config(|c| {
            for client in &mut c.clients {
                client.redirect_uris.push(uri.to_string());
            }
        });
    }
}

/// A client with a hand-kept cookie jar (so tests can see and tamper with cookies), no
/// automatic redirects.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Mutex<BTreeMap<String, String>>,
    pub accept_html: bool,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }

    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The first `Set-Cookie` whose cookie name starts with `prefix` (a pending sign-in's
    /// cookie is named after its state).
    pub fn set_cookie_prefixed(&self, prefix: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(prefix))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: Mutex::new(BTreeMap::new()),
            accept_html: true,
        }
    }

    /// A browser that says it is `user_agent` (the devices list names devices by it).
    pub fn with_user_agent(user_agent: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(user_agent.to_string())
                .build()
                .expect("client"),
            ..Browser::new()
        }
    }

    /// An API client: no `Accept: text/html`.
    pub fn api() -> Browser {
        Browser {
            accept_html: false,
            ..Browser::new()
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().expect("jar").insert(name.into(), value.into());
    }

    /// Every cookie whose name starts with `prefix`, as (name, value).
    pub fn cookies_prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        let jar = self.jar.lock().expect("jar");
        jar.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn cookie_header(&self) -> Option<String> {
        let jar = self.jar.lock().expect("jar");
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let mut req = req;
        if let Some(c) = self.cookie_header() {
            req = req.header("cookie", c);
        }
        if self.accept_html {
            req = req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let r = Resp { status, headers, body };
        for sc in r.set_cookies() {
            let kv = sc.split(';').next().unwrap_or("");
            if let Some((k, v)) = kv.split_once('=') {
                let mut jar = self.jar.lock().expect("jar");
                if sc.to_ascii_lowercase().contains("max-age=0") {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_string(), v.to_string());
                }
            }
        }
        r
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(self.client.get(url)).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.send(self.client.post(url).form(form)).await
    }

    /// A form POST the way next-auth v5 sends it (`X-Auth-Return-Redirect: 1`), which gets
    /// `200 {"url": ...}` instead of a redirect.
    pub async fn post_v5(&self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.send(self.client.post(url).header("X-Auth-Return-Redirect", "1").form(form))
            .await
    }

    pub async fn csrf(&self, env: &TestEnv) -> String {
        let r = self.get(&env.url("/api/auth/csrf")).await;
        r.json()["csrfToken"].as_str().expect("csrfToken").to_string()
    }

    /// Starts a sign-in and returns the authorize URL TikTok would be sent to.
    pub async fn start_signin(&self, env: &TestEnv, callback: &str) -> String {
        self.start_at(&env.url(""), callback).await
    }

    /// Starts a sign-in at the sidecar (or front proxy) `base` the way the sign-in page's
    /// form does: a CSRF token, then `POST /api/auth/signin/tiktok`. Returns the authorize
    /// URL TikTok would be sent to.
    pub async fn start_at(&self, base: &str, callback: &str) -> String {
        let r = self.start_response(base, callback).await;
        assert_eq!(r.status, 302, "sign-in start: {}", r.body);
        r.location().expect("location").to_string()
    }

    /// Like `start_at`, returning the start's response as it is.
    pub async fn start_response(&self, base: &str, callback: &str) -> Resp {
        let base = base.trim_end_matches('/');
        let csrf = self.get(&format!("{base}/api/auth/csrf")).await.json()["csrfToken"]
            .as_str()
            .expect("csrfToken")
            .to_string();
        self.post_form(
            &format!("{base}/api/auth/signin/tiktok"),
            &[("csrfToken", csrf.as_str()), ("callbackUrl", callback)],
        )
        .await
    }

    /// Submits the mock's consent page (as a person clicking) and returns the callback URL
    /// TikTok redirects to.
    /// The mock's scripted consent (`mock_auto`, `mock_user`, `mock_scopes`, … in `params`):
    /// decided without the page; returns the callback URL the mock redirects to.
    pub async fn scripted_consent(&self, authorize_url: &str, params: &str) -> String {
        let decided = self
            .client
            .get(format!("{authorize_url}&{params}"))
            .send()
            .await
            .expect("scripted consent");
        assert_eq!(decided.status().as_u16(), 302, "the mock redirects to the callback");
        decided
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("callback")
            .to_string()
    }

    pub async fn consent(&self, authorize_url: &str, action: &str) -> String {
        // The consent page is TikTok's, with its own cookies: use a plain request.
        let page = self.client.get(authorize_url).send().await.expect("consent page");
        assert_eq!(page.status().as_u16(), 200, "authorize page");
        let html = page.text().await.expect("html");
        let rid = extract_value(&html, "request_id").expect("request_id in consent form");
        let action_url = authorize_url.split('?').next().expect("base").to_string();
        // Like a browser: every checked, enabled scope checkbox is submitted.
        let mut form = vec![
            ("request_id".to_string(), rid),
            ("action".to_string(), action.to_string()),
        ];
        for input in html.split("<input").skip(1) {
            let tag = input.split('>').next().unwrap_or("");
            if tag.contains("name=\"scope\"") && tag.contains("checked") && !tag.contains("disabled") {
                if let Some(v) = extract_value(&format!("name=\"x\" {tag}"), "x") {
                    form.push(("scope".to_string(), v));
                }
            }
        }
        let resp = self
            .client
            .post(action_url)
            .form(&form)
            .send()
            .await
            .expect("consent post");
        assert_eq!(resp.status().as_u16(), 302, "consent decision");
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("callback location")
            .to_string()
    }

    /// The whole sign-in: start, consent, callback. Returns the callback response.
    pub async fn login(&self, env: &TestEnv, callback: &str) -> Resp {
        let authorize = self.start_signin(env, callback).await;
        let cb = self.consent(&authorize, "authorize").await;
        self.get(&cb).await
    }

    /// What the upstream received for a request through the sidecar (the demo app echoes).
    pub async fn echo(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = self.cookie_header() {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Resp { status, headers, body }
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Value of a hidden input in a page we generate (name="..." value="...").
pub fn extract_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(
        rest[v..v + end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

/// All values the upstream saw for a header (lowercase name), from the echo JSON.
pub fn upstream_header(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Header names the upstream saw.
pub fn upstream_header_names(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

pub fn session_cookie_name() -> &'static str {
    "nini-auth.session"
}

/// `../shared/<rel>` relative to the crate, if present.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join(rel);
    p.is_file().then_some(p)
}

/// Sends `head` (request line and headers, without the final blank line) byte for byte, so
/// paths reach the server exactly as written; returns (status, body).
pub async fn raw_request(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{head}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs the futures concurrently on this task and returns their outputs in order (no
/// `'static` needed, unlike spawned tasks).
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

// === Signed-in users ===

/// The demo user's display name (the mock TikTok's `MockConfig::demo`).
pub const DEMO_USER_NAME: &str = "María José 🌮";

/// Signs in a new browser through the mock's consent page; returns the browser, its session
/// cookie and the user id the upstream received.
/// Delivers TikTok's `authorization.removed` webhook for the demo user to `base` (a sidecar's
/// URL), signed at `at` (unix seconds, the sidecar's clock); returns the answer's status.
pub async fn deliver_deauthorization(base: &str, at: i64) -> u16 {
    let body = format!(
        r#"{{"client_key":"{}","event":"authorization.removed","create_time":1,"user_openid":"{}","content":"{{}}"}}"#,
        nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
        nini_auth::mock_tiktok::DEMO_OPEN_ID
    );
    let sig = nini_auth::tiktok::webhook::sign(body.as_bytes(), nini_auth::mock_tiktok::DEMO_CLIENT_SECRET, at);
    reqwest::Client::new()
        .post(format!("{}/api/auth/webhooks/tiktok", base.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("TikTok-Signature", sig)
        .body(body)
        .send()
        .await
        .expect("webhook")
        .status()
        .as_u16()
}

/// Signs `b` in as the mock user `open_id` (scripted consent); returns the session cookie.
pub async fn sign_in_as(env: &TestEnv, b: &Browser, open_id: &str) -> String {
    let authorize = b.start_signin(env, "/").await;
    let cb = b
        .scripted_consent(&authorize, &format!("mock_user={open_id}&mock_auto=authorize"))
        .await;
    assert_eq!(b.get(&cb).await.status, 302);
    b.cookie(session_cookie_name()).expect("session cookie")
}

pub async fn signed_in(env: &TestEnv) -> (Browser, String, String) {
    let b = Browser::new();
    assert_eq!(b.login(env, "/").await.status, 302);
    let session = b.cookie(session_cookie_name()).expect("session");
    let echo = api_with(&session).echo(&env.url("/api/user"), &[]).await;
    let uid = upstream_header(&echo.json(), "x-nini-user-id").pop().expect("user id");
    (b, session, uid)
}

/// An API client (`Browser::api`) carrying the session cookie `session`.
pub fn api_with(session: &str) -> Browser {
    let api = Browser::api();
    api.set_cookie(session_cookie_name(), session);
    api
}

/// Asserts that `url` (a JSON string) is the authorize URL the sidecar sends a browser to: the
/// mock's endpoint, the demo client, `response_type=code`, our callback and a state. `r` is
/// what the failure messages show.
pub fn assert_authorize_url(env: &TestEnv, url: &Value, r: &Value) {
    let consent = url::Url::parse(url.as_str().expect("authorize URL string")).expect("authorize URL");
    let expected = url::Url::parse(&env.mock.base_url()).expect("mock URL");
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
}

/// The id of the primary (first) key of the ring `keys` (base64), as sealed values and
/// identity tokens name it.
pub fn primary_key_id(keys: &[String]) -> String {
    nini_auth::crypto::KeyRing::from_base64(keys)
        .expect("keys")
        .primary_id()
        .expect("primary key")
        .to_string()
}

/// Seconds since the Unix epoch, by the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

// === Processes: the real binary, nginx, node scripts ===

/// The `nini-auth` binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_nini-auth");

/// Writes `text` to `dir/name`; returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// How a process that ran to its end went: exit code (-1 when a signal ended it), stdout and
/// stderr.
pub struct RunOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunOut {
    fn from_output(out: std::process::Output) -> RunOut {
        RunOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The whole of stdout as JSON; panics (showing both streams) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// The last stdout line that is a JSON object, parsed; panics (showing both streams) when
    /// there is none or it does not parse. `what` names the program in the message.
    pub fn json_line(&self, what: &str) -> Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| {
                panic!(
                    "no JSON line from {what}:\n{}\n--- stderr\n{}",
                    self.stdout, self.stderr
                )
            });
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from {what} ({e}): {line}"))
    }
}

/// `nini-auth` without the environment variables that configure it (`TIKTOK_CLIENT_KEY`,
/// `TIKTOK_CLIENT_SECRET`, `NINI_AUTH_SECRET`, `DATABASE_URL`, `NINI_AUTH_CONFIG`), so the
/// shell the tests run in cannot change what they see; the caller sets what it needs.
pub fn bin_command() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("TIKTOK_CLIENT_KEY")
        .env_remove("TIKTOK_CLIENT_SECRET")
        .env_remove("NINI_AUTH_SECRET")
        .env_remove("DATABASE_URL")
        .env_remove("NINI_AUTH_CONFIG");
    c
}

/// Runs `nini-auth ARGS…` (see `bin_command`) with `envs` to its end.
pub fn run_binary(args: &[&str], envs: &[(&str, &str)]) -> RunOut {
    let mut c = bin_command();
    c.args(args).envs(envs.iter().copied());
    RunOut::from_output(c.output().expect("run binary"))
}

/// A child process that is killed and reaped when dropped, so a failing test leaves nothing
/// running. Derefs to the `Child` (`id`, `wait`, its pipes).
pub struct Kill(pub Child);

impl std::ops::Deref for Kill {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kill {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nini-auth run` (see `bin_command`) on a free loopback port: `config(listen)` is
/// written to `dir/<name>.toml`, `envs` are set, stdout is discarded and stderr goes to
/// `stderr`. Returns once the port accepts connections (panics after 15 s).
pub fn spawn_binary(
    dir: &Path,
    name: &str,
    config: impl FnOnce(SocketAddr) -> String,
    envs: &[(&str, &str)],
    stderr: Stdio,
) -> (Kill, SocketAddr) {
    let listen = free_port().expect("free port");
    let cfg = write_file(dir, &format!("{name}.toml"), &config(listen));
    let child = bin_command()
        .args(["run", "--config", cfg.to_str().expect("path")])
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn nini-auth");
    let child = Kill(child);
    wait_for_port(listen, Duration::from_secs(15), &format!("nini-auth ({name})"));
    (child, listen)
}

/// Waits until something accepts TCP connections on `addr`; panics naming `what` when
/// nothing does within `within`.
pub fn wait_for_port(addr: SocketAddr, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` (`-TERM`, `-INT`, …) to `child` with kill(1); panics when that fails.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {}: {ok}", child.id());
}

/// All that `child` writes to its (piped) stderr until it closes it.
pub fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut text)
        .expect("read stderr");
    text
}

/// Reports that a test (or part of one) cannot run here: prints `msg` (which starts with
/// `skipping: `) and returns, so the caller can skip; under `NINI_AUTH_REQUIRE_BROWSER=1` (set
/// by `scripts/test`, hence CI), where nothing may be skipped, panics instead.
pub fn skip_or_fail(msg: &str) {
    if std::env::var("NINI_AUTH_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{msg} [NINI_AUTH_REQUIRE_BROWSER=1, so this is a failure]");
    }
    eprintln!("{msg}");
}

/// The crate's root directory: node scripts run there.
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing to run node scripts from `dir` (relative to the crate root) that use
/// `packages` from its node_modules, and Chromium when `chromium` is set, if anything.
fn node_missing(dir: &str, packages: &[&str], chromium: bool) -> Option<String> {
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Some("`node` is not on PATH (install Node.js >= 20)".into());
    }
    let modules = crate_root().join(dir).join("node_modules");
    for p in packages {
        if !modules.join(p).join("package.json").is_file() {
            return Some(format!(
                "{} is missing (run `npm ci` in {dir})",
                modules.join(p).display()
            ));
        }
    }
    if chromium {
        // Where playwright-core looks (the scripts read the same variable).
        let chromium = std::env::var_os("CHROMIUM_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.is_file() {
            return Some(format!(
                "Chromium is not at {} (install Debian's `chromium` package)",
                chromium.display()
            ));
        }
    }
    None
}

/// True when node scripts from `dir` (relative to the crate root, e.g. `tests/nextauth`) can
/// run: `node` on PATH, `packages` in `dir/node_modules` and, when `chromium` is set,
/// Chromium at `$CHROMIUM_PATH` (default /usr/bin/chromium). Otherwise reports
/// `skipping: the <what> cannot run: <why>` through `skip_or_fail` and returns false.
pub fn node_or_skip(what: &str, dir: &str, packages: &[&str], chromium: bool) -> bool {
    let Some(why) = node_missing(dir, packages, chromium) else {
        return true;
    };
    skip_or_fail(&format!(
        "skipping: the {what} cannot run: {why}; `scripts/setup` installs everything"
    ));
    false
}

/// Runs `node SCRIPT ARGS…` in the crate root and returns how it ended, whatever that was;
/// panics when node cannot start or the script does not finish within `limit` (it is killed).
pub async fn node_output(script: &str, args: &[impl AsRef<OsStr>], limit: Duration) -> RunOut {
    node_output_with(script, args, &[], limit).await
}

/// `node_output` with extra environment variables.
pub async fn node_output_with(
    script: &str,
    args: &[impl AsRef<OsStr>],
    envs: &[(&str, &str)],
    limit: Duration,
) -> RunOut {
    let run = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(crate_root())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) => RunOut::from_output(out),
        Ok(Err(e)) => panic!("cannot run node {script}: {e}"),
        Err(_) => panic!("node {script} did not finish within {limit:?}"),
    }
}

/// Runs `node SCRIPT ARGS…` like `node_output` and returns the last JSON line it printed;
/// panics with its stdout and stderr when it fails, times out or prints no JSON.
pub async fn run_node(script: &str, args: &[impl AsRef<OsStr>], limit: Duration) -> Value {
    let out = node_output(script, args, limit).await;
    assert!(
        out.code == 0,
        "node {script} failed (exit code {}):\n--- stdout\n{}\n--- stderr\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    out.json_line(script)
}

/// A running nginx; stopped (and its prefix directory removed) when dropped.
pub struct Nginx {
    _child: Kill,
    /// nginx's prefix directory (config, pid, temp files) lives as long as nginx does (fields
    /// drop in order: nginx is stopped first).
    _dir: tempfile::TempDir,
}

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Starts nginx in the foreground with `http_body` (server and upstream blocks) inside a
/// minimal `http {}`; returns once `listen` accepts connections. None (after a skip line)
/// when nginx is not installed, a failure under `scripts/test`.
pub fn start_nginx(listen: SocketAddr, http_body: &str) -> Option<Nginx> {
    let Some(bin) = nginx_bin() else {
        skip_or_fail("skipping: nginx is not installed (scripts/setup installs nginx-light)");
        return None;
    };
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{http_body}\n}}\n"
    );
    let path = write_file(dir.path(), "nginx.conf", &conf);
    let child = Command::new(bin)
        .args(["-p", &d.to_string(), "-c", path.to_str().expect("path")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nginx");
    let child = Kill(child);
    wait_for_port(listen, Duration::from_secs(10), "nginx");
    Some(Nginx {
        _child: child,
        _dir: dir,
    })
}
