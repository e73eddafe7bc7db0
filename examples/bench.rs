//! The benchmark behind `scripts/bench`: nini-auth measured side by side with nginx
//! `proxy_pass` and bare pingora (`examples/bare_pingora.rs`), all in front of the same nginx
//! upstream (a fixed 100-byte answer), on loopback, in one run. Targets are interleaved within
//! each round; every number reported is the median of the rounds. Per scenario: req/s, p50 and
//! p99 latency, and the CPU the process under test used per request (from /proc).
//!
//! Scenarios: passthrough; a signed-in protected path; `/api/auth/session` against bare
//! pingora answering itself; a random forged session cookie per request; one million sessions
//! in the store with random access over 300,000 of them; completed logins per second against
//! the mock TikTok in this process; WebSocket echo. Writes `report.md`, `report.json` and
//! `ratios.svg` to `--out`. Needs `nginx` and `wrk` on PATH (the script installs them).
//!
//!   bench --binary target/release/nini-auth --bare target/release/examples/bare_pingora
//!         [--duration 10] [--warmup 2] [--rounds 3] [--connections 64] [--out target/bench]

#[path = "common/mod.rs"]
mod common;
use common::{cookie_value, free_port};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{MockConfig, MockTikTok, DEMO_CLIENT_KEY, DEMO_CLIENT_SECRET};

/// The upstream's answer: 100 bytes.
const BODY: &str =
    "{\"ok\":true,\"service\":\"nini-bench-upstream\",\"padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";
const MILLION: usize = 1_000_000;
const WORKING_SET: usize = 300_000;

struct Args {
    binary: PathBuf,
    bare: PathBuf,
    duration: u64,
    warmup: u64,
    rounds: usize,
    connections: usize,
    out: PathBuf,
    sessions: usize,
    working_set: usize,
    /// Set up everything, print where it runs, keep it running this long, and stop (for
    /// profiling by hand: `perf record -p <pid>` while driving it with wrk).
    hold: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        binary: PathBuf::from("target/release/nini-auth"),
        bare: PathBuf::from("target/release/examples/bare_pingora"),
        duration: 10,
        warmup: 2,
        rounds: 3,
        connections: 64,
        out: PathBuf::from("target/bench"),
        sessions: MILLION,
        working_set: WORKING_SET,
        hold: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: a whole number"));
        match flag.as_str() {
            "--binary" => a.binary = PathBuf::from(value()?),
            "--bare" => a.bare = PathBuf::from(value()?),
            "--duration" => a.duration = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)? as usize,
            "--connections" => a.connections = number(value()?)? as usize,
            "--sessions" => a.sessions = number(value()?)? as usize,
            "--working-set" => a.working_set = number(value()?)? as usize,
            "--out" => a.out = PathBuf::from(value()?),
            "--hold" => a.hold = Some(number(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(1..=120).contains(&a.duration) || a.rounds == 0 || a.rounds > 9 || a.connections == 0 {
        return Err("--duration 1..120, --rounds 1..9, --connections ≥ 1".into());
    }
    a.working_set = a.working_set.min(a.sessions).max(1);
    Ok(a)
}

/// Child processes that are stopped when this is dropped, whatever happened.
#[derive(Default)]
struct Procs(Vec<Child>);

/// Every process a run started, for `main`'s signal handler (which cannot reach `Procs`).
static STARTED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

impl Procs {
    fn add(&mut self, c: Child) -> u32 {
        let pid = c.id();
        if let Ok(mut started) = STARTED.lock() {
            started.push(pid);
        }
        self.0.push(c);
        pid
    }
}

impl Drop for Procs {
    /// SIGTERM first: killing nginx's master outright would leave its workers running.
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        let until = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(addr: SocketAddr, what: &str) -> Result<Duration, String> {
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("{what} did not start listening on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(started.elapsed())
}

/// The process and its children (nginx workers), by scanning /proc for the parent pid.
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(String::from))
                })
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) used so far by the processes.
fn cpu_seconds(pids: &[u32], hz: f64) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / hz
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn nginx(dir: &Path, name: &str, workers: usize, http: &str, procs: &mut Procs) -> Result<u32, String> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
    let conf = format!(
        "worker_processes {workers};\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n\
         keepalive_requests 1000000;\n{http}\n}}\n",
        p = prefix.display()
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx (is it installed?): {e}"))?;
    Ok(procs.add(child))
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Run {
    rps: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    cpu_us_per_req: f64,
}

fn parse_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Some(x) = v.strip_suffix("us") {
        return x.parse::<f64>().ok().map(|x| x / 1000.0);
    }
    if let Some(x) = v.strip_suffix("ms") {
        return x.parse().ok();
    }
    if let Some(x) = v.strip_suffix('s') {
        return x.parse::<f64>().ok().map(|x| x * 1000.0);
    }
    None
}

/// Runs wrk against `url` and measures the CPU of `pids` meanwhile.
fn wrk(a: &Args, url: &str, headers: &[String], script: Option<&Path>, pids: &[u32], hz: f64) -> Result<Run, String> {
    let mut warm = Command::new("wrk");
    warm.args([
        "-t2",
        &format!("-c{}", a.connections),
        &format!("-d{}s", a.warmup.max(1)),
    ]);
    for h in headers {
        warm.args(["-H", h]);
    }
    if let Some(s) = script {
        warm.arg("-s").arg(s);
    }
    warm.arg(url).stdout(Stdio::null()).stderr(Stdio::null());
    if a.warmup > 0 {
        warm.status()
            .map_err(|e| format!("cannot run wrk (is it installed?): {e}"))?;
    }
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", a.connections),
        &format!("-d{}s", a.duration),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    let before = cpu_seconds(pids, hz);
    let out = cmd.output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let used = cpu_seconds(pids, hz) - before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut r = Run::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v).unwrap_or(0.0);
        } else if t.contains("requests in") {
            r.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()))
                .sum::<u64>();
        }
    }
    if r.requests == 0 {
        return Err(format!(
            "wrk reported nothing for {url}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    r.cpu_us_per_req = used * 1e6 / r.requests as f64;
    Ok(r)
}

/// A wrk script sending a session cookie picked at random from `file` per request (one line
/// per value), or a fresh random 64-character value per request when `file` is None. The
/// cookie name is `name`, so the same script cost can be measured with a name nini-auth
/// ignores.
fn cookie_script(
    dir: &Path,
    file_name: &str,
    path: &str,
    name: &str,
    values: Option<&Path>,
) -> Result<PathBuf, String> {
    let pick = match values {
        Some(f) => format!(
            "local values = {{}}\nfor line in io.lines(\"{}\") do values[#values + 1] = line end\n\
             local function value() return values[math.random(1, #values)] end\n",
            f.display()
        ),
        None => "local chars = \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_\"\n\
                 local function value()\n  local t = {}\n  for i = 1, 64 do local r = math.random(1, 64); t[i] = chars:sub(r, r) end\n  return table.concat(t)\nend\n"
            .to_string(),
    };
    let script = format!(
        "{pick}\nmath.randomseed(os.time() + math.floor(os.clock() * 1000000))\n\
         request = function()\n  return wrk.format(\"GET\", \"{path}\", {{[\"Cookie\"] = \"{name}=\" .. value()}})\nend\n"
    );
    let p = dir.join(file_name);
    std::fs::write(&p, script).map_err(|e| e.to_string())?;
    Ok(p)
}

struct Sidecar {
    pid: u32,
    addr: SocketAddr,
    ready_ms: f64,
}

/// Where a sidecar under test points: the mock TikTok, the upstream, its database and key.
struct Wiring<'a> {
    mock: &'a str,
    upstream: SocketAddr,
    key: &'a str,
}

fn start_sidecar(
    a: &Args,
    dir: &Path,
    name: &str,
    wiring: &Wiring<'_>,
    database: &Path,
    extra: &str,
    procs: &mut Procs,
) -> Result<Sidecar, String> {
    let Wiring { mock, upstream, key } = *wiring;
    let addr = free_port()?;
    let config = format!(
        "[server]\nlisten = \"{addr}\"\npublic_url = \"http://{addr}\"\nthreads = 2\n\
         [admin]\nlisten = \"\"\n[upstream]\nurl = \"http://{upstream}\"\n\
         [tiktok]\nclient_key = \"{DEMO_CLIENT_KEY}\"\n\
         scopes = [\"user.info.basic\", \"user.info.profile\", \"user.info.stats\", \"video.list\"]\n\
         authorize_url = \"{mock}/v2/auth/authorize/\"\napi_base_url = \"{mock}\"\n\
         [storage]\ndatabase = \"{}\"\n{extra}\n[limits]\nsignin_starts_per_minute = 100000\nconnections_per_client = 0\n",
        database.display()
    );
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let started = Instant::now();
    // The access log at info, as shipped: the measured build behaves like the real one.
    let child = Command::new(&a.binary)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NINI_AUTH_SECRET", key)
        .env("TIKTOK_CLIENT_SECRET", DEMO_CLIENT_SECRET)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", a.binary.display()))?;
    let pid = procs.add(child);
    wait_port(addr, name)?;
    // Ready: answering its own endpoint.
    loop {
        let ok = http_get(addr, "/api/auth/providers").is_some_and(|r| r.starts_with("HTTP/1.1 200"));
        if ok {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("{name} did not become ready"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Sidecar {
        pid,
        addr,
        ready_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// A tiny blocking HTTP/1.1 GET (Connection: close) for readiness checks.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// One whole sign-in through the sidecar and the mock (approving at once); the session
/// cookie value.
async fn sign_in(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let csrf = client
        .get(format!("{base}/api/auth/csrf"))
        .send()
        .await
        .map_err(|e| format!("csrf: {e}"))?;
    let csrf_cookie = cookie_value(&csrf, "nini-auth.csrf").ok_or("csrf: no cookie")?;
    let token = csrf.json::<serde_json::Value>().await.map_err(|e| e.to_string())?["csrfToken"]
        .as_str()
        .ok_or("csrf: no token")?
        .to_string();
    let start = client
        .post(format!("{base}/api/auth/signin/tiktok"))
        .header("cookie", format!("nini-auth.csrf={csrf_cookie}"))
        .form(&[("csrfToken", token.as_str()), ("callbackUrl", "/dashboard")])
        .send()
        .await
        .map_err(|e| format!("start: {e}"))?;
    let state = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("nini-auth.state."))
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| format!("start: {} without a state cookie", start.status()))?
        .to_string();
    let authorize = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("start: no location")?
        .to_string();
    let consent = client
        .get(format!("{authorize}&mock_auto=authorize"))
        .send()
        .await
        .map_err(|e| format!("consent: {e}"))?;
    let callback = consent
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("consent: {}", consent.status()))?
        .to_string();
    let done = client
        .get(callback)
        .header("cookie", state)
        .send()
        .await
        .map_err(|e| format!("callback: {e}"))?;
    cookie_value(&done, "nini-auth.session").ok_or_else(|| format!("callback: {} without a session", done.status()))
}

/// Completed sign-ins per second over `secs` with `workers` browsers signing in in a loop.
async fn login_rate(base: &str, workers: usize, secs: u64, pids: &[u32], hz: f64) -> Result<Run, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(workers)
        .build()
        .map_err(|e| e.to_string())?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let before = cpu_seconds(pids, hz);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, base, done, failed) = (client.clone(), base.to_string(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                match sign_in(&client, &base).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed().as_secs_f64();
    let used = cpu_seconds(pids, hz) - before;
    let n = done.load(Ordering::Relaxed);
    Ok(Run {
        rps: n as f64 / took,
        requests: n,
        errors: failed.load(Ordering::Relaxed),
        cpu_us_per_req: if n > 0 { used * 1e6 / n as f64 } else { 0.0 },
        ..Run::default()
    })
}

/// WebSocket round trips per second: `conns` sockets each sending a message and waiting for
/// its echo, for `secs`.
async fn ws_rate(
    url: &str,
    cookie: Option<&str>,
    conns: usize,
    secs: u64,
    pids: &[u32],
    hz: f64,
) -> Result<Run, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("cookie", c.parse().map_err(|_| "cookie header".to_string())?);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| format!("WebSocket {url}: {e}"))?;
        // The greeting.
        let _ = ws.next().await;
        sockets.push(ws);
    }
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let before = cpu_seconds(pids, hz);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                if ws.send(Message::Text("ping".into())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => break,
                }
            }
            let _ = ws.close(None).await;
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let took = started.elapsed().as_secs_f64();
    let used = cpu_seconds(pids, hz) - before;
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    let n = count.load(Ordering::Relaxed);
    Ok(Run {
        rps: n as f64 / took,
        requests: n,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors: 0,
        cpu_us_per_req: if n > 0 { used * 1e6 / n as f64 } else { 0.0 },
    })
}

/// Requests `/dashboard/x` once with every session in `cookies` (one value per line),
/// `parallel` at a time, the i-th not before `i * over / n` from now; returns how many were not
/// answered 200.
async fn warm_cache(
    client: &reqwest::Client,
    addr: SocketAddr,
    cookies: &Path,
    parallel: usize,
    over: Duration,
) -> Result<usize, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let values: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(cookies)
            .map_err(|e| e.to_string())?
            .lines()
            .map(String::from)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{addr}/dashboard/x");
    let start = tokio::time::Instant::now();
    let step = over
        .checked_div(u32::try_from(values.len().max(1)).unwrap_or(u32::MAX))
        .unwrap_or_default();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (values, next, failed, client, url) = (
            values.clone(),
            next.clone(),
            failed.clone(),
            client.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(v) = values.get(i) else { return };
                tokio::time::sleep_until(start + step * u32::try_from(i).unwrap_or(u32::MAX)).await;
                let ok = client
                    .get(&url)
                    .header("cookie", format!("nini-auth.session={v}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    Ok(failed.load(Ordering::Relaxed))
}

/// Writes `n` sessions (over n/2 users, two devices each) straight into a migrated SQLite
/// database, in one transaction, and the cookie values of the first `working_set` to
/// `cookies`. Returns one of them.
fn seed_sessions(db: &Path, key: &str, n: usize, working_set: usize, cookies: &Path) -> Result<String, String> {
    use std::io::Write;
    let ring = nini_auth::crypto::KeyRing::from_base64(&[key.to_string()]).map_err(|e| e.to_string())?;
    let mut c = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
        .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tx = c.transaction().map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(cookies).map_err(|e| e.to_string())?);
    let mut first = String::new();
    {
        let mut user = tx
            .prepare(
                "INSERT INTO users (id, username, tiktok_id, tiktok_username, avatar, display_name, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?6)",
            )
            .map_err(|e| e.to_string())?;
        let mut session = tx
            .prepare(
                "INSERT INTO sessions (session_token, user_id, expires, created_at, id, last_seen_at, device)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4, 'Chrome · Android')",
            )
            .map_err(|e| e.to_string())?;
        for i in 0..n {
            let uid = format!("bench-user-{:07}", i / 2);
            if i % 2 == 0 {
                let name = format!("creator{:07}", i / 2);
                let avatar = format!(
                    "https://p16-sign.tiktokcdn-us.com/tos-useast5-avt-0068-tx/{:032x}~c5_168x168.jpeg",
                    i
                );
                user.execute(rusqlite::params![
                    uid,
                    name,
                    format!("open-{i:07}"),
                    avatar,
                    format!("Creator {}", i / 2),
                    now
                ])
                .map_err(|e| e.to_string())?;
            }
            let (cookie, hash) = ring.new_session_token().map_err(|e| e.to_string())?;
            session
                .execute(rusqlite::params![
                    nini_auth::crypto::hex(&hash),
                    uid,
                    now + 30 * 86_400,
                    now,
                    format!("{i:032x}")
                ])
                .map_err(|e| e.to_string())?;
            if i < working_set {
                writeln!(out, "{cookie}").map_err(|e| e.to_string())?;
            }
            if i == 0 {
                first = cookie;
            }
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(first)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

#[derive(serde::Serialize)]
struct Row {
    scenario: String,
    rps: f64,
    runs: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
    errors: u64,
}

fn summarise(name: &str, runs: &[Run]) -> Row {
    Row {
        scenario: name.to_string(),
        rps: median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>()),
        runs: runs.iter().map(|r| r.rps).collect(),
        p50_ms: median(&runs.iter().map(|r| r.p50_ms).collect::<Vec<_>>()),
        p99_ms: median(&runs.iter().map(|r| r.p99_ms).collect::<Vec<_>>()),
        cpu_us_per_req: median(&runs.iter().map(|r| r.cpu_us_per_req).collect::<Vec<_>>()),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

#[derive(serde::Serialize)]
struct Ratio {
    measure: String,
    value: f64,
    target: f64,
    /// Lower is better (resources) rather than higher (throughput ratios).
    at_most: bool,
    unit: String,
}

impl Ratio {
    fn met(&self) -> bool {
        if self.at_most {
            self.value <= self.target
        } else {
            self.value >= self.target
        }
    }
}

/// A horizontal bar per ratio, with its target marked.
fn svg(ratios: &[Ratio]) -> String {
    let bars: Vec<&Ratio> = ratios.iter().filter(|r| r.unit == "×").collect();
    let (w, row, left) = (760.0, 34.0, 330.0);
    let h = 60.0 + row * bars.len() as f64;
    let scale = |x: f64| left + (w - left - 40.0) * (x / 1.2).min(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">nini-auth: measured ratio (bar) and target (line)</text>\n"
    );
    for x in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"34\" x2=\"{0}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\" fill=\"#666\">{x:.1}×</text>",
            scale(x),
            h - 18.0,
            h - 4.0
        );
    }
    for (i, r) in bars.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let color = if r.met() { "#2e9d5b" } else { "#d9822b" };
        let _ = write!(
            s,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>\n\
             <rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"20\" fill=\"{color}\"/>\n\
             <text x=\"{vx:.1}\" y=\"{ty}\">{v:.2}×</text>\n\
             <line x1=\"{tx:.1}\" y1=\"{y0}\" x2=\"{tx:.1}\" y2=\"{y1}\" stroke=\"black\" stroke-width=\"2\"/>\n",
            lx = left - 8.0,
            ty = y + 15.0,
            name = r.measure.replace('&', "&amp;").replace('<', "&lt;"),
            bw = scale(r.value) - left,
            vx = scale(r.value) + 4.0,
            v = r.value,
            tx = scale(r.target),
            y0 = y - 3.0,
            y1 = y + 23.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    // Stopped by SIGTERM or Ctrl-C (scripts/profile stops a `--hold` run so), it stops every
    // process it started first: they would outlive it. A task of its own, so a blocking wrk
    // run in the main task does not delay it.
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let pids = STARTED.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in &pids {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        eprintln!("bench: interrupted; stopped the {} processes it started", pids.len());
        std::process::exit(130);
    });
    match run(a).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let hz = clock_ticks();
    std::fs::create_dir_all(&a.out).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let mut procs = Procs::default();

    // The demo app, for WebSockets only (nginx cannot echo them).
    let ul = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let (demo, _demo_task) = nini_auth::cli::demo::serve_app_with_static(ul, None)
        .await
        .map_err(|e| e.to_string())?;

    // The shared upstream: nginx, one worker, a fixed 100-byte answer (and /…/ws to the demo).
    let up = free_port()?;
    let ws_proxy = |target: SocketAddr| {
        format!(
            "location ~ /ws$ {{ proxy_pass http://{target}; proxy_http_version 1.1; \
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; \
             proxy_read_timeout 3600s; }}"
        )
    };
    nginx(
        d,
        "upstream",
        1,
        &format!(
            "server {{ listen {up}; {ws} location / {{ default_type application/json; return 200 '{}'; }} }}",
            BODY,
            ws = ws_proxy(demo)
        ),
        &mut procs,
    )?;
    wait_port(up, "nginx upstream")?;

    // The baseline: nginx proxy_pass with upstream keep-alive, two workers (as nini-auth's threads).
    let np = free_port()?;
    let nginx_pid = nginx(
        d,
        "proxy",
        2,
        &format!(
            "upstream app {{ server {up}; keepalive 128; }}\n\
             server {{ listen {np}; {ws} location / {{ proxy_pass http://app; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }} }}",
            ws = ws_proxy(up)
        ),
        &mut procs,
    )?;
    wait_port(np, "nginx proxy")?;
    let nginx_pids = family(nginx_pid);

    // Bare pingora, passthrough and answering itself.
    let bp = free_port()?;
    let bp_pid = procs.add(
        Command::new(&a.bare)
            .args([
                "--listen",
                &bp.to_string(),
                "--mode",
                "pass",
                "--upstream",
                &up.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", a.bare.display()))?,
    );
    let ba = free_port()?;
    let ba_pid = procs.add(
        Command::new(&a.bare)
            .args(["--listen", &ba.to_string(), "--mode", "answer"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", a.bare.display()))?,
    );
    wait_port(bp, "bare pingora (pass)")?;
    wait_port(ba, "bare pingora (answer)")?;

    // The mock TikTok, in this process; no rate limit, so logins are bounded by the sidecar.
    let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut mcfg = MockConfig::demo(Vec::new());
    mcfg.rate_limit_per_min = u32::MAX;
    let mock = MockTikTok::start(ml, mcfg).await.map_err(|e| e.to_string())?;
    let mock_url = mock.base_url();

    // nini-auth, as shipped (identity JWT on, access log at info), on SQLite.
    let key = nini_auth::crypto::generate_key_base64().map_err(|e| e.to_string())?;
    let main_db = d.join("main.db");
    let wiring = Wiring {
        mock: &mock_url,
        upstream: up,
        key: &key,
    };
    let nini = start_sidecar(&a, d, "nini-auth", &wiring, &main_db, "", &mut procs)?;
    let redirect = format!("http://{}{}", nini.addr, nini_auth::config::CALLBACK_PATH);
    mock.update_config(|c| c.clients[0].redirect_uris.push(redirect));
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_mib = rss_kib(nini.pid) as f64 / 1024.0;
    let base = format!("http://{}", nini.addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let session = sign_in(&client, &base).await?;
    let cookie = format!("Cookie: nini-auth.session={session}");

    // One million sessions in a second sidecar's store, seeded in bulk through SQL.
    let big_db = d.join("million.db");
    {
        // Opening the store creates (migrates) the database.
        let cfg = nini_auth::config::storage_from_url("bench", &big_db.display().to_string())
            .map_err(|e| format!("{e:?}"))?;
        let ring = nini_auth::crypto::KeyRing::from_base64(std::slice::from_ref(&key)).map_err(|e| e.to_string())?;
        let store = nini_auth::store::open(&cfg, ring).await.map_err(|e| e.to_string())?;
        drop(store);
    }
    eprintln!("seeding {} sessions ...", a.sessions);
    let cookies_file = d.join("cookies.txt");
    let seeded = Instant::now();
    let one = seed_sessions(&big_db, &key, a.sessions, a.working_set, &cookies_file)?;
    eprintln!("seeded in {:?}", seeded.elapsed());
    // The working set fits the session cache (`storage.cache_capacity`): sized by the operator.
    // Warmed all at once, every entry would also expire at once after `storage.cache_ttl`
    // (5 minutes, shorter than this benchmark): the rounds after that would measure a
    // database re-read per request, not the cache. One hour keeps every round inside one
    // cache lifetime, as almost every minute of a deployment is (docs/performance.md gives
    // the re-read's cost separately).
    let million = start_sidecar(
        &a,
        d,
        "million",
        &wiring,
        &big_db,
        &format!(
            "cache_capacity = {}\ncache_ttl = \"1h\"",
            (a.working_set as f64 * 1.1) as usize
        ),
        &mut procs,
    )?;

    std::thread::sleep(Duration::from_secs(1));
    let million_cold_rss_mib = rss_kib(million.pid) as f64 / 1024.0;
    // Steady state: every session of the working set has been used once (cached), as in a
    // deployment that has run for a while. Random sampling would take millions of requests
    // to touch them all; this walks the list once, 64 at a time, paced over one identity-token
    // half-life (tokens are re-signed when half their `identity.ttl`, 5 minutes, is left):
    // walked at full speed, all 300,000 tokens would be signed within a minute and fall due
    // together 150 s later, and a round landing in that wave would sign on nearly every
    // request. Spread like this, renewals come at the steady rate of a running deployment
    // (working set / 150 s per second), which is part of what is measured. A small store, as
    // `scripts/profile` uses, renews too few tokens to matter: no pacing.
    let pace = if a.working_set >= 10_000 {
        Duration::from_secs(150)
    } else {
        Duration::ZERO
    };
    let warm = || async {
        let warmed = Instant::now();
        let failures = warm_cache(&client, million.addr, &cookies_file, 64, pace).await?;
        eprintln!(
            "warmed {} sessions in {:?} ({failures} failed)",
            a.working_set,
            warmed.elapsed()
        );
        let rss = rss_kib(million.pid) as f64 / 1024.0;
        Ok::<_, String>((
            rss,
            (rss - million_cold_rss_mib) * 1024.0 * 1024.0 / a.working_set as f64,
        ))
    };

    // Scripts with equal client-side cost for the compared pairs.
    let forged = cookie_script(d, "forged.lua", "/public/x", "nini-auth.session", None)?;
    let forged_control = cookie_script(d, "forged-control.lua", "/public/x", "x-other", None)?;
    let random_file = cookie_script(
        d,
        "random.lua",
        "/dashboard/x",
        "nini-auth.session",
        Some(&cookies_file),
    )?;
    let one_file = d.join("one.txt");
    std::fs::write(&one_file, format!("{one}\n")).map_err(|e| e.to_string())?;
    let single = cookie_script(d, "single.lua", "/dashboard/x", "nini-auth.session", Some(&one_file))?;

    if let Some(secs) = a.hold {
        let (million_warm_rss_mib, bytes_per_cached) = warm().await?;
        println!(
            "{}",
            serde_json::json!({
                "nginx_proxy": np.to_string(), "nginx_pids": nginx_pids,
                "bare_pass": bp.to_string(), "bare_pass_pid": bp_pid,
                "bare_answer": ba.to_string(), "bare_answer_pid": ba_pid,
                "nini": nini.addr.to_string(), "nini_pid": nini.pid,
                "million": million.addr.to_string(), "million_pid": million.pid,
                "session_cookie": format!("nini-auth.session={session}"),
                "cookies_file": cookies_file.display().to_string(),
                "random_script": random_file.display().to_string(),
                "upstream": up.to_string(),
                "million_rss_mib": { "before_caching": million_cold_rss_mib, "cached": million_warm_rss_mib },
                "bytes_per_cached_session": bytes_per_cached,
            })
        );
        // Until the time is up or a signal stops it (see `main`).
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return Ok(());
    }

    struct Case {
        name: &'static str,
        url: String,
        headers: Vec<String>,
        script: Option<PathBuf>,
        pids: Vec<u32>,
        phase: Phase,
    }
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Phase {
        /// In the interleaved rounds.
        Interleaved,
        /// The million-session store before its working set is cached.
        Alone,
        /// The million-session store right after its working set is cached.
        Warmed,
    }
    let (mut million_warm_rss_mib, mut bytes_per_cached) = (0.0, 0.0);
    let nini_url = |p: &str| format!("http://{}{p}", nini.addr);
    let million_url = format!("http://{}/dashboard/x", million.addr);
    let cases = vec![
        Case {
            name: "nginx proxy_pass",
            url: format!("http://{np}/public/x"),
            headers: vec![],
            script: None,
            pids: nginx_pids.clone(),
            phase: Phase::Interleaved,
        },
        Case {
            name: "bare pingora passthrough",
            url: format!("http://{bp}/public/x"),
            headers: vec![],
            script: None,
            pids: vec![bp_pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth passthrough (public, no cookie)",
            url: nini_url("/public/x"),
            headers: vec![],
            script: None,
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth signed-in protected path",
            url: nini_url("/dashboard/x"),
            headers: vec![cookie.clone()],
            script: None,
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "bare pingora answering itself",
            url: format!("http://{ba}/"),
            headers: vec![],
            script: None,
            pids: vec![ba_pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth GET /api/auth/session (anonymous)",
            url: nini_url("/api/auth/session"),
            headers: vec![],
            script: None,
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth GET /api/auth/session (signed in)",
            url: nini_url("/api/auth/session"),
            headers: vec![cookie.clone()],
            script: None,
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth random forged cookie per request",
            url: nini_url("/public/x"),
            headers: vec![],
            script: Some(forged),
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "nini-auth random other cookie per request (control)",
            url: nini_url("/public/x"),
            headers: vec![],
            script: Some(forged_control),
            pids: vec![nini.pid],
            phase: Phase::Interleaved,
        },
        Case {
            name: "1M sessions: one session",
            url: million_url.clone(),
            headers: vec![],
            script: Some(single),
            pids: vec![million.pid],
            phase: Phase::Alone,
        },
        Case {
            name: "1M sessions: random over the working set",
            url: million_url.clone(),
            headers: vec![],
            script: Some(random_file),
            pids: vec![million.pid],
            phase: Phase::Warmed,
        },
    ];
    let mut results: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    let mut logins = Vec::new();
    let mut ws_nginx = Vec::new();
    let mut ws_nini = Vec::new();
    let ws_secs = a.duration.min(10);
    let run = |round: usize, c: &Case, results: &mut BTreeMap<&'static str, Vec<Run>>| -> Result<(), String> {
        eprintln!("round {round}: {}", c.name);
        let r = wrk(&a, &c.url, &c.headers, c.script.as_deref(), &c.pids, hz)?;
        eprintln!(
            "  {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req",
            r.rps, r.p99_ms, r.cpu_us_per_req
        );
        results.entry(c.name).or_default().push(r);
        Ok(())
    };
    // The million-session pair first. One session while it is the only one cached and the
    // process has nothing else to do; then the working set is warmed and random access runs
    // right after, back to back: a running deployment's sessions are used continuously, so
    // their identity tokens are renewed at a steady rate and their activity is written every
    // minute, and that work is charged to the random case alone. Left idle through the other
    // scenarios' minutes, every token would be due at the next round and the round would
    // measure a burst of signatures no running deployment has.
    for phase in [Phase::Alone, Phase::Warmed] {
        if phase == Phase::Warmed {
            (million_warm_rss_mib, bytes_per_cached) = warm().await?;
        }
        for round in 1..=a.rounds {
            for c in cases.iter().filter(|c| c.phase == phase) {
                run(round, c, &mut results)?;
            }
        }
    }
    for round in 1..=a.rounds {
        for c in cases.iter().filter(|c| c.phase == Phase::Interleaved) {
            run(round, c, &mut results)?;
        }
        eprintln!("round {round}: logins");
        logins.push(login_rate(&base, 32, a.duration, &[nini.pid], hz).await?);
        eprintln!(
            "  {:.0} logins/s ({} failed)",
            logins[logins.len() - 1].rps,
            logins[logins.len() - 1].errors
        );
        eprintln!("round {round}: WebSocket echo");
        ws_nginx.push(ws_rate(&format!("ws://{np}/dashboard/ws"), None, 32, ws_secs, &nginx_pids, hz).await?);
        ws_nini.push(
            ws_rate(
                &format!("ws://{}/dashboard/ws", nini.addr),
                Some(&format!("nini-auth.session={session}")),
                32,
                ws_secs,
                &[nini.pid],
                hz,
            )
            .await?,
        );
    }
    let million_rss_mib = rss_kib(million.pid) as f64 / 1024.0;
    eprintln!(
        "1M sessions: RSS {million_cold_rss_mib:.1} MiB before the working set was cached, \
         {million_warm_rss_mib:.1} MiB after ({bytes_per_cached:.0} bytes per cached session), \
         {million_rss_mib:.1} MiB at the end"
    );

    let mut rows: Vec<Row> = cases.iter().map(|c| summarise(c.name, &results[c.name])).collect();
    rows.push(summarise(
        "nini-auth completed logins (start → mock consent → callback)",
        &logins,
    ));
    rows.push(summarise("WebSocket echo via nginx", &ws_nginx));
    rows.push(summarise("WebSocket echo via nini-auth (signed in)", &ws_nini));
    let rps = |name: &str| rows.iter().find(|r| r.scenario == name).map(|r| r.rps).unwrap_or(0.0);
    let x = |measure: &str, value: f64, target: f64| Ratio {
        measure: measure.to_string(),
        value,
        target,
        at_most: false,
        unit: "×".into(),
    };
    let ratios = vec![
        x(
            "passthrough / bare pingora passthrough",
            rps("nini-auth passthrough (public, no cookie)") / rps("bare pingora passthrough"),
            0.95,
        ),
        x(
            "signed-in protected / passthrough",
            rps("nini-auth signed-in protected path") / rps("nini-auth passthrough (public, no cookie)"),
            0.95,
        ),
        x(
            "/api/auth/session (anonymous) / bare self-answer",
            rps("nini-auth GET /api/auth/session (anonymous)") / rps("bare pingora answering itself"),
            0.9,
        ),
        x(
            "/api/auth/session (signed in) / bare self-answer",
            rps("nini-auth GET /api/auth/session (signed in)") / rps("bare pingora answering itself"),
            0.9,
        ),
        x(
            "forged-cookie flood / same script, other cookie",
            rps("nini-auth random forged cookie per request")
                / rps("nini-auth random other cookie per request (control)"),
            0.9,
        ),
        x(
            "1M sessions: random over working set / one session",
            rps("1M sessions: random over the working set") / rps("1M sessions: one session"),
            0.95,
        ),
        x(
            "WebSocket echo: nini-auth / nginx",
            rps("WebSocket echo via nini-auth (signed in)") / rps("WebSocket echo via nginx"),
            0.9,
        ),
        x(
            "passthrough / nginx proxy_pass",
            rps("nini-auth passthrough (public, no cookie)") / rps("nginx proxy_pass"),
            0.0,
        ),
        Ratio {
            measure: "completed logins per second".into(),
            value: rps("nini-auth completed logins (start → mock consent → callback)"),
            target: 1000.0,
            at_most: false,
            unit: "/s".into(),
        },
        Ratio {
            measure: "RSS with 1M sessions, working set cached (MiB)".into(),
            value: million_rss_mib,
            target: 150.0,
            at_most: true,
            unit: "MiB".into(),
        },
        Ratio {
            measure: "RSS with 1M sessions before caching (MiB)".into(),
            value: million_cold_rss_mib,
            target: 0.0,
            at_most: true,
            unit: "MiB".into(),
        },
        Ratio {
            measure: "memory per cached session (bytes)".into(),
            value: bytes_per_cached,
            target: 0.0,
            at_most: true,
            unit: "B".into(),
        },
        Ratio {
            measure: "RSS idle after start (MiB)".into(),
            value: idle_rss_mib,
            target: 40.0,
            at_most: true,
            unit: "MiB".into(),
        },
        Ratio {
            measure: "ready after start (ms)".into(),
            value: nini.ready_ms,
            target: 100.0,
            at_most: true,
            unit: "ms".into(),
        },
    ];

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Loopback, `wrk -t2 -c{}`, {} s per run after {} s warm-up, {} interleaved round(s), medians. \
         Upstream: nginx (1 worker) answering {} bytes. nginx proxy: 2 workers, upstream keep-alive. \
         pingora and nini-auth: 2 threads. Working set: {} of {} sessions.\n",
        a.connections,
        a.duration,
        a.warmup,
        a.rounds,
        BODY.len(),
        a.working_set,
        a.sessions
    );
    let base_rps = rps("nginx proxy_pass");
    md.push_str("| scenario | req/s | runs | vs nginx proxy_pass | p50 ms | p99 ms | CPU µs/req | errors |\n|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        let runs: Vec<String> = r.runs.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {:.2}× | {:.2} | {:.2} | {:.1} | {} |",
            r.scenario,
            r.rps,
            runs.join(", "),
            if base_rps > 0.0 { r.rps / base_rps } else { 0.0 },
            r.p50_ms,
            r.p99_ms,
            r.cpu_us_per_req,
            r.errors
        );
    }
    md.push_str("\n| measure | value | target | met |\n|---|---|---|---|\n");
    for r in &ratios {
        let target = if r.target == 0.0 {
            "—".to_string()
        } else {
            format!("{} {:.2}{}", if r.at_most { "≤" } else { "≥" }, r.target, r.unit)
        };
        let met = if r.target == 0.0 {
            "—"
        } else if r.met() {
            "yes"
        } else {
            "**no**"
        };
        let _ = writeln!(md, "| {} | {:.2}{} | {target} | {met} |", r.measure, r.value, r.unit);
    }
    std::fs::write(a.out.join("report.md"), &md).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "rows": rows, "ratios": ratios });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(a.out.join("ratios.svg"), svg(&ratios)).map_err(|e| e.to_string())?;
    println!("{md}");
    println!("written: {}/report.md, report.json, ratios.svg", a.out.display());
    Ok(())
}
