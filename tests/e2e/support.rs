//! Test harness: a mock TikTok, the demo upstream (JSON echo) and the sidecar, each a real
//! server on a loopback port, plus a cookie-keeping client that never follows redirects so
//! tests can assert every `Location` and `Set-Cookie`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use nini_auth::config::{self, RawConfig, SecretsPolicy};
use nini_auth::mock_tiktok::{MockConfig, MockTikTok};
use nini_auth::server::{free_port, Running};
use serde_json::Value;

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
        let (upstream, upstream_task) = nini_auth::demo::serve_app_with_static(ul, self.static_dir)
            .await
            .expect("upstream starts");
        let raw_db = dir.path().join("nini-auth.db");
        let mut raw = nini_auth::demo::raw_config(listen, &mock.base_url(), upstream, &raw_db);
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
        let mut raw = nini_auth::demo::raw_config(listen, &env.mock.base_url(), env.upstream, &env.raw_db);
        raw.secrets.encryption_keys = keys;
        let redirect = format!("http://{listen}{}", config::CALLBACK_PATH);
        env.mock.update_config(|c| {
            for client in &mut c.clients {
                client.redirect_uris.push(redirect.clone());
            }
        });
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

    pub async fn csrf(&self, env: &TestEnv) -> String {
        let r = self.get(&env.url("/api/auth/csrf")).await;
        r.json()["csrfToken"].as_str().expect("csrfToken").to_string()
    }

    /// Starts a sign-in and returns the authorize URL TikTok would be sent to.
    pub async fn start_signin(&self, env: &TestEnv, callback: &str) -> String {
        let url = format!(
            "{}?callbackUrl={}",
            env.url("/api/auth/signin/tiktok"),
            urlencode(callback)
        );
        let r = self.get(&url).await;
        assert_eq!(r.status, 302, "sign-in start: {}", r.body);
        r.location().expect("location").to_string()
    }

    /// Submits the mock's consent page (as a person clicking) and returns the callback URL
    /// TikTok redirects to.
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
