//! The soak test behind `scripts/soak`: the release `nini-auth` binary in front of the demo
//! app, signing users in against the in-process mock TikTok, under a steady mixed load for a
//! bounded time, on loopback only. Every minute it records the sidecar's RSS and open file
//! descriptors (from /proc), request count, p50/p99 latency and unexpected answers; at the
//! end a JSON report. Exits 1 when anything unexpected happened.
//!
//!   soak --binary target/release/nini-auth [--minutes 10] [--workers 16] [--database URL]
//!        [--out DIR]

#[path = "common/mod.rs"]
mod common;
use common::{cookie_value, free_port};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{MockConfig, MockTikTok, MockUser, DEMO_CLIENT_KEY, DEMO_CLIENT_SECRET};

const USERS: usize = 50;
const MAX_SESSIONS: usize = 400;
/// Sign-ins per second at most: each costs TikTok calls, and (like TikTok) the mock allows
/// 600 per minute per endpoint.
const SIGNINS_PER_SECOND: u64 = 4;

struct Args {
    binary: PathBuf,
    minutes: u64,
    workers: usize,
    database: Option<String>,
    out: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        binary: PathBuf::from("target/release/nini-auth"),
        minutes: 10,
        workers: 16,
        database: None,
        out: PathBuf::from("target/soak"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => a.binary = PathBuf::from(value()?),
            "--minutes" => a.minutes = value()?.parse().map_err(|_| "--minutes: a whole number")?,
            "--workers" => a.workers = value()?.parse().map_err(|_| "--workers: a whole number")?,
            "--database" => a.database = Some(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.minutes == 0 || a.minutes > 24 * 60 || a.workers == 0 || a.workers > 256 {
        return Err("--minutes 1..1440, --workers 1..256".into());
    }
    Ok(a)
}

/// A signed-in browser: its cookies.
#[derive(Clone)]
struct Session {
    cookie: String,
}

#[derive(Default)]
struct Minute {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    error_samples: Vec<String>,
}

struct Shared {
    base: String,
    client: reqwest::Client,
    sessions: Mutex<VecDeque<Session>>,
    minute: Mutex<Minute>,
    total_errors: AtomicU64,
    rng: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the next sign-in allowed.
    next_signin_ms: AtomicU64,
}

impl Shared {
    fn random(&self, n: u64) -> u64 {
        // xorshift: the mix of actions needs no cryptographic randomness.
        let mut x = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    }

    fn record(&self, started: Instant, ok: Result<(), String>) {
        let mut m = self.minute.lock().unwrap_or_else(|p| p.into_inner());
        m.requests += 1;
        m.latencies_us.push(started.elapsed().as_micros() as u64);
        if let Err(e) = ok {
            m.errors += 1;
            self.total_errors.fetch_add(1, Ordering::Relaxed);
            if m.error_samples.len() < 5 {
                m.error_samples.push(e);
            }
        }
    }

    /// Whether a sign-in may start now (at most `SIGNINS_PER_SECOND`).
    fn signin_slot(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let next = self.next_signin_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_signin_ms
                .compare_exchange(
                    next,
                    now + 1000 / SIGNINS_PER_SECOND,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn session(&self) -> Option<Session> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_empty() {
            return None;
        }
        let i = self.random(s.len() as u64) as usize;
        s.get(i).cloned()
    }
}

fn expect(status: reqwest::StatusCode, allowed: &[u16], what: &str) -> Result<(), String> {
    if allowed.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("{what}: unexpected status {status}"))
    }
}

/// A whole sign-in: CSRF token, POST start, the mock approving at once, the callback.
async fn sign_in(s: &Shared) -> Result<Session, String> {
    let csrf_resp = s
        .client
        .get(format!("{}/api/auth/csrf", s.base))
        .send()
        .await
        .map_err(|e| format!("csrf: {e}"))?;
    let csrf_cookie = cookie_value(&csrf_resp, "nini-auth.csrf").ok_or("csrf: no cookie")?;
    let token = csrf_resp
        .json::<serde_json::Value>()
        .await
        .map_err(|e| format!("csrf: {e}"))?["csrfToken"]
        .as_str()
        .ok_or("csrf: no token")?
        .to_string();
    let start = s
        .client
        .post(format!("{}/api/auth/signin/tiktok", s.base))
        .header("cookie", format!("nini-auth.csrf={csrf_cookie}"))
        .form(&[("csrfToken", token.as_str()), ("callbackUrl", "/dashboard")])
        .send()
        .await
        .map_err(|e| format!("start: {e}"))?;
    expect(start.status(), &[302], "start")?;
    let state_cookie = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("nini-auth.state."))
        .and_then(|c| c.split(';').next())
        .ok_or("start: no state cookie")?
        .to_string();
    let authorize = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("start: no location")?
        .to_string();
    let user = format!("soak-user-{}", s.random(USERS as u64));
    let consent = s
        .client
        .get(format!("{authorize}&mock_auto=authorize&mock_user={user}"))
        .send()
        .await
        .map_err(|e| format!("consent: {e}"))?;
    expect(consent.status(), &[302], "consent")?;
    let callback = consent
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("consent: no location")?
        .to_string();
    let done = s
        .client
        .get(callback)
        .header("cookie", state_cookie)
        .send()
        .await
        .map_err(|e| format!("callback: {e}"))?;
    expect(done.status(), &[302], "callback")?;
    let session = cookie_value(&done, "nini-auth.session").ok_or("callback: no session cookie")?;
    Ok(Session {
        cookie: format!("nini-auth.session={session}; nini-auth.csrf={csrf_cookie}"),
    })
}

async fn get(s: &Shared, path: &str, cookie: Option<&str>, allowed: &[u16]) -> Result<(), String> {
    let mut req = s.client.get(format!("{}{path}", s.base));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
    let status = r.status();
    let _ = r.bytes().await;
    expect(status, allowed, &format!("GET {path}"))
}

async fn one_action(s: &Shared) -> Result<(), String> {
    let roll = s.random(100);
    let session = s.session();
    let may_sign_in = (roll <= 7 || session.is_none()) && s.signin_slot();
    let roll = if roll <= 7 && !may_sign_in {
        8 + s.random(50)
    } else {
        roll
    };
    if session.is_none() && !may_sign_in {
        return get(s, &format!("/public/{}", s.random(1000)), None, &[200]).await;
    }
    match (roll, session) {
        (0..=7, _) | (_, None) => {
            let new = sign_in(s).await?;
            let mut pool = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
            pool.push_back(new);
            while pool.len() > MAX_SESSIONS {
                pool.pop_front();
            }
            Ok(())
        }
        (8..=57, Some(me)) => get(s, "/dashboard", Some(&me.cookie), &[200, 401, 302]).await,
        (58..=72, Some(me)) => get(s, "/api/auth/session", Some(&me.cookie), &[200]).await,
        (73..=87, _) => get(s, &format!("/public/{}", s.random(1000)), None, &[200]).await,
        (88..=92, _) => get(s, "/api/auth/jwks.json", None, &[200]).await,
        (93..=95, Some(me)) => {
            let r = s
                .client
                .post(format!("{}/api/user/sync-tiktok", s.base))
                .header("cookie", &me.cookie)
                .send()
                .await
                .map_err(|e| format!("sync: {e}"))?;
            // 429: the user's cool-down; 401: signed out meanwhile by another worker.
            expect(r.status(), &[200, 429, 401], "sync")
        }
        (_, Some(me)) => {
            let csrf = me
                .cookie
                .split("nini-auth.csrf=")
                .nth(1)
                .and_then(|c| c.split('.').next())
                .unwrap_or("")
                .to_string();
            {
                let mut pool = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
                pool.retain(|x| x.cookie != me.cookie);
            }
            let r = s
                .client
                .post(format!("{}/api/auth/signout", s.base))
                .header("cookie", &me.cookie)
                .form(&[("csrfToken", csrf.as_str())])
                .send()
                .await
                .map_err(|e| format!("signout: {e}"))?;
            expect(r.status(), &[302], "signout")
        }
    }
}

/// (RSS in KiB, open file descriptors) of a process, from /proc.
fn process_stats(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn start_sidecar(a: &Args, dir: &Path, mock: &str, upstream: SocketAddr) -> Result<(Child, SocketAddr), String> {
    let listen = free_port()?;
    let admin = free_port()?;
    let database = a
        .database
        .clone()
        .unwrap_or_else(|| dir.join("soak.db").display().to_string());
    let config = format!(
        "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\nthreads = 2\n\
         [admin]\nlisten = \"{admin}\"\n[upstream]\nurl = \"http://{upstream}\"\n\
         [tiktok]\nclient_key = \"{DEMO_CLIENT_KEY}\"\n\
         scopes = [\"user.info.basic\", \"user.info.profile\", \"user.info.stats\", \"video.list\"]\n\
         authorize_url = \"{mock}/v2/auth/authorize/\"\napi_base_url = \"{mock}\"\n\
         [storage]\ndatabase = \"{database}\"\n[limits]\nsignin_starts_per_minute = 100000\n\
         [sync]\ncooldown = \"1m\"\n[log]\nformat = \"json\"\n"
    );
    let cfg = dir.join("soak.toml");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("sidecar.log")).map_err(|e| e.to_string())?;
    let key = nini_auth::crypto::generate_key_base64().map_err(|e| e.to_string())?;
    let child = Command::new(&a.binary)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NINI_AUTH_SECRET", key)
        .env("TIKTOK_CLIENT_SECRET", DEMO_CLIENT_SECRET)
        .env("RUST_LOG", "info,pingora=warn,pingora_core=warn,pingora_proxy=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", a.binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err("the sidecar did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, listen))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    match run(a).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: Args) -> Result<bool, String> {
    std::fs::create_dir_all(&a.out).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut mcfg = MockConfig::demo(Vec::new());
    for i in 0..USERS {
        let mut u = MockUser::demo();
        u.open_id = format!("soak-user-{i}");
        u.username = format!("soak{i}");
        mcfg.users.push(u);
    }
    let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mock = MockTikTok::start(ml, mcfg).await.map_err(|e| e.to_string())?;
    let ul = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let (upstream, _task) = nini_auth::cli::demo::serve_app_with_static(ul, None)
        .await
        .map_err(|e| e.to_string())?;
    let (mut child, addr) = start_sidecar(&a, dir.path(), &mock.base_url(), upstream)?;
    mock.update_config(|c| {
        for client in &mut c.clients {
            client
                .redirect_uris
                .push(format!("http://{addr}{}", nini_auth::config::CALLBACK_PATH));
        }
    });
    let pid = child.id();
    let shared = Arc::new(Shared {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?,
        sessions: Mutex::new(VecDeque::new()),
        minute: Mutex::new(Minute::default()),
        total_errors: AtomicU64::new(0),
        rng: AtomicU64::new(0x2545_F491_4F6C_DD1D),
        started: Instant::now(),
        next_signin_ms: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(a.minutes * 60);
    let mut workers = Vec::new();
    for _ in 0..a.workers {
        let s = shared.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = one_action(&s).await;
                s.record(started, result);
            }
        }));
    }
    println!(
        "soak: {} minute(s), {} workers, sidecar pid {pid} on {addr}",
        a.minutes, a.workers
    );
    println!("minute  requests  errors  p50_ms  p99_ms  rss_mib  fds");
    let mut minutes = Vec::new();
    for m in 1..=a.minutes {
        let wait = (Instant::now() + Duration::from_secs(60)).min(deadline);
        tokio::time::sleep_until(wait.into()).await;
        let mut stats = std::mem::take(&mut *shared.minute.lock().unwrap_or_else(|p| p.into_inner()));
        stats.latencies_us.sort_unstable();
        let (rss, fds) = process_stats(pid);
        let (p50, p99) = (
            percentile(&stats.latencies_us, 0.5) as f64 / 1000.0,
            percentile(&stats.latencies_us, 0.99) as f64 / 1000.0,
        );
        println!(
            "{m:>6}  {:>8}  {:>6}  {p50:>6.2}  {p99:>6.2}  {:>7.1}  {fds:>3}",
            stats.requests,
            stats.errors,
            rss as f64 / 1024.0
        );
        for e in &stats.error_samples {
            println!("        error: {e}");
        }
        minutes.push(serde_json::json!({
            "minute": m, "requests": stats.requests, "errors": stats.errors,
            "p50_ms": p50, "p99_ms": p99, "rss_kib": rss, "fds": fds, "error_samples": stats.error_samples,
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let alive = child.try_wait().map_err(|e| e.to_string())?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    mock.shutdown();
    let errors = shared.total_errors.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "minutes": a.minutes, "workers": a.workers, "database": a.database.as_deref().unwrap_or("sqlite"),
        "sidecar_survived": alive, "errors": errors, "per_minute": minutes,
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = a.out.join(format!("soak-{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| e.to_string())?;
    println!("soak: {errors} unexpected answer(s); report {}", path.display());
    Ok(errors == 0 && alive)
}
