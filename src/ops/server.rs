//! Assembles the pingora server from our `Config` (pingora never sees argv or YAML): opens
//! the store, builds the auth state and the proxy, adds the listeners and background
//! services; runs it until SIGINT/SIGTERM, or in a thread for tests and `demo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::conn::{ConnLimits, Guarded};
use crate::proxy::AuthProxy;
use crate::store::{Invalidation, InvalidationSink, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the TikTok HTTP client")]
    TikTok(#[from] crate::tiktok::TikTokError),
}

/// Runs a future to completion on a runtime of its own, on a thread of its own, so it works
/// whether or not the caller is inside a runtime (start-up, tests, the CLI).
pub fn block_on_fresh<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Building a current-thread runtime fails only when the OS refuses threads or fds.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(f)
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// How the server will be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The `nini-auth` process: on SIGTERM/SIGINT stop accepting, wait for in-flight
    /// requests (at most `shutdown_timeout`), then exit the process.
    Process,
    /// Inside another program (tests, `demo`): stop at once when told, never exit.
    Embedded,
}

/// Builds the server and the shared auth state. Nothing listens until `run`.
pub fn build(config: Config, mode: Mode) -> Result<(Server, Arc<Auth>), StartError> {
    let config = Arc::new(config);
    let store = block_on_fresh(crate::store::open(&config.storage, config.keys.clone()))?;
    log::info!("store: {} ({})", store.backend(), config.storage.database);
    let metrics = Arc::new(Metrics::new());
    let app = Arc::new(Auth::new(config, store, metrics)?);
    let cfg = &app.config;
    // pingora counts whole seconds: round up so "1500ms" means 2 s, never less.
    let drain_secs = cfg.shutdown_timeout.as_millis().div_ceil(1000).max(1) as u64;
    let mut conf = ServerConf {
        threads: cfg.threads,
        // The binary runs one single-threaded runtime per thread (no work stealing): on the
        // loopback benchmark this served ~15% more requests per second, see docs/performance.md.
        // Embedded servers (tests, `demo`) keep the stealing runtime: pingora's per-thread
        // runtimes start lazily and an in-process server sharing a busy test binary's CPUs
        // intermittently missed its listen deadline with them.
        work_stealing: mode != Mode::Process,
        // On shutdown pingora stops the listeners, then sleeps the grace period, then stops
        // its runtimes (cancelling whatever still runs). The grace period is our drain; the
        // Drain service below ends the process as soon as nothing is in flight, so an idle
        // sidecar still stops at once. (pingora's default grace period is 300 s.)
        grace_period_seconds: Some(if mode == Mode::Process { drain_secs } else { 0 }),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    // Two instances on one host must not share pingora's default /tmp paths.
    conf.pid_file = std::env::temp_dir()
        .join(format!("nini-auth-{}.pid", std::process::id()))
        .display()
        .to_string();
    conf.upgrade_sock = std::env::temp_dir()
        .join(format!("nini-auth-{}-upgrade.sock", std::process::id()))
        .display()
        .to_string();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // pingora retries a taken port forever in the background; an operator wants an error.
    // Probe it first (tiny race with whoever takes it next, which pingora then reports).
    std::net::TcpListener::bind(cfg.listen).map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    // Bind the admin port first: a taken port must fail the start, with its address.
    let admin = match cfg.ops.admin_listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?),
        None => None,
    };
    let mut http = HttpProxy::new(AuthProxy::new(app.clone()), server.configuration.clone());
    http.handle_init_modules();
    let limits = ConnLimits {
        header_timeout: cfg.ops.header_timeout,
        keepalive_timeout: (!cfg.ops.keepalive_timeout.is_zero()).then_some(cfg.ops.keepalive_timeout),
        per_client: cfg.limits.connections_per_client,
        trusted: cfg.ops.trusted_proxies.clone(),
    };
    let mut proxy = Service::new(
        "nini-auth proxy".to_string(),
        Guarded::new(http, limits, app.metrics.clone()),
    );
    let certs = super::tls::add_proxy_listener(&mut proxy, cfg)?;
    server.add_service(proxy);
    // TLS certificate reload (file changes, SIGHUP) and the optional HTTP -> HTTPS redirect listener.
    server.add_services(super::tls::services(cfg, mode, certs)?);
    if let Some(listener) = admin {
        server.add_service(background_service(
            "admin",
            super::admin::AdminService {
                store: app.store.clone(),
                metrics: app.metrics.clone(),
                listener: std::sync::Mutex::new(Some(listener)),
            },
        ));
    }
    if mode == Mode::Process {
        server.add_service(background_service("drain", Drain { app: app.clone() }));
        if cfg.ops.tls.is_none() {
            // SIGHUP's default action ends the process; operators send it to reload (with TLS
            // it reloads certificates, see tls.rs). Without TLS there is nothing to reload.
            server.add_service(background_service("sighup", IgnoreSighup));
        }
    }
    server.add_service(background_service(
        "purge expired sessions",
        Purger {
            app: app.clone(),
            every: Duration::from_secs(60),
        },
    ));
    server.add_service(background_service(
        "cache invalidations",
        Invalidations { app: app.clone() },
    ));
    server.add_service(background_service(
        "session activity",
        ActivityFlusher { app: app.clone() },
    ));
    server.add_service(background_service(
        "tiktok data sync",
        BackgroundSync { app: app.clone() },
    ));
    Ok((server, app))
}

/// Runs the TikTok data sync's background job (see `SyncService::run_background`).
struct BackgroundSync {
    app: Arc<Auth>,
}

#[async_trait]
impl BackgroundService for BackgroundSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.app.sync.run_background(shutdown).await;
    }
}

/// Writes the sessions' last activity (noted at most once a minute per session on the hot
/// path) to the store in one batch a minute, so the hot path itself never writes.
struct ActivityFlusher {
    app: Arc<Auth>,
}

#[async_trait]
impl BackgroundService for ActivityFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = shutdown.changed() => true,
                _ = tick.tick() => false,
            };
            // On shutdown too: the last minute's activity is written before the process goes.
            if let Err(e) = self.app.activity.write_to(self.app.store.as_ref()).await {
                log::warn!("recording session activity failed (kept for the next try): {e}");
            }
            if stopping {
                break;
            }
        }
    }
}

/// Follows the invalidations every process records (`Store::follow_invalidations`) and
/// drops what this process cached: a sign-out, revocation, dead grant or token refresh on
/// any replica reaches this one's caches within a second.
struct Invalidations {
    app: Arc<Auth>,
}

#[async_trait]
impl BackgroundService for Invalidations {
    async fn start(&self, shutdown: ShutdownWatch) {
        let app = self.app.clone();
        let sink: InvalidationSink = Arc::new(move |inv: &Invalidation| {
            app.metrics.invalidations.inc();
            if inv.is_everything() {
                app.sessions.clear();
                app.tokens.forget_all();
                return;
            }
            if let Some(u) = &inv.user_id {
                app.sessions.remove_user(u);
                app.tokens.forget(u);
            }
            if let Some(key) = inv.session_hash.as_deref().and_then(hex32) {
                app.sessions.remove(&key);
            }
        });
        self.app.store.follow_invalidations(sink, shutdown).await;
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

struct IgnoreSighup;

#[async_trait]
impl BackgroundService for IgnoreSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            log::warn!("cannot listen for SIGHUP; it would end the process");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = hup.recv() => log::info!("SIGHUP received: nothing to reload (no TLS configured)"),
            }
        }
    }
}

/// After shutdown starts (listeners already closed), waits until no request is in flight,
/// bounded by pingora's grace period, then exits: pingora would otherwise sleep the whole
/// grace period even when idle.
struct Drain {
    app: Arc<Auth>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.app.config.shutdown_timeout;
        loop {
            let n = self.app.metrics.in_flight_now();
            if n <= 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                log::warn!("shutdown: {n} request(s) still in flight after the drain timeout");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every change is already committed; the store tidies up (SQLite folds its WAL back
        // so a backup of the .db alone is complete, PostgreSQL closes its pool).
        if let Err(e) = self.app.store.close().await {
            log::warn!("shutdown: closing the store failed: {e}");
        }
        log::info!("nini-auth stopped");
        super::logging::drain();
        std::process::exit(0);
    }
}

/// Deletes expired sessions and used-state records once a minute.
struct Purger {
    app: Arc<Auth>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Purger {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let now = self.app.clock.now();
                    match self.app.store.purge_expired(now).await {
                        Ok(p) if p.sessions + p.states == 0 => {}
                        Ok(p) => log::debug!("purged {} expired sessions, {} used states", p.sessions, p.states),
                        Err(e) => log::warn!("purge failed: {e}"),
                    }
                    if let Ok(n) = self.app.store.count_sessions(now).await {
                        self.app.metrics.active_sessions.set(n);
                    }
                }
            }
        }
    }
}

/// SIGINT and SIGTERM both mean "stop accepting, finish what is in flight, exit".
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => log::info!("SIGINT received, shutting down"),
                    _ = term.recv() => log::info!("SIGTERM received, shutting down"),
                }
            }
            _ => {
                log::error!("cannot install signal handlers; stopping");
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs until a signal; returns when the server has stopped.
pub fn run(server: Server) {
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
}

struct NotifyShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}

/// A sidecar running in a background thread (tests, `demo`).
pub struct Running {
    pub addr: SocketAddr,
    pub auth: Arc<Auth>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts the sidecar and waits (bounded) until its port accepts connections.
    pub fn start(config: Config) -> Result<Running, String> {
        let addr = config.listen;
        let (server, auth) = build(config, Mode::Embedded).map_err(|e| crate::auth::error::chain(&e))?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop2 = stop.clone();
        // RunArgs is not Send, so it is made inside the thread; pingora builds its own
        // runtimes, so this must be a plain OS thread, not a tokio task.
        let thread = std::thread::Builder::new()
            .name("nini-auth-server".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(NotifyShutdown(stop2)),
                })
            })
            .map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if std::time::Instant::now() > deadline || thread.is_finished() {
                return Err(format!("sidecar did not start listening on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Running {
            addr,
            auth,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A free loopback port for a server that must know its address before it listens (pingora
/// binds inside its own runtime and cannot report an ephemeral port).
///
/// Taken below the kernel's ephemeral range when there is room: a port from `:0` is also
/// what an outgoing connection may be given as its local port in the moment between release
/// and listen, and a busy test process makes many. Tried from a per-process moving start so
/// that servers started together do not try the same ports.
pub fn free_port() -> std::io::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    // Room for 8192 ports just below the range, above the well-known and common ones.
    if low >= 8192 + 10_000 {
        let span = 8192;
        let base = low - span;
        let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..64 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = base + (seed + n.wrapping_mul(97)) % span;
            let Ok(port) = u16::try_from(port) else { continue };
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr();
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}
