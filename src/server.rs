//! Assembles the pingora server from our `Config` (pingora never sees argv or YAML), runs it
//! until SIGINT/SIGTERM, and runs it in a thread for tests and `demo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;

use crate::app::{App, StartError};
use crate::config::Config;
use crate::proxy::AuthProxy;

/// How the server will be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The `nini-auth` process: on SIGTERM/SIGINT stop accepting, wait for in-flight
    /// requests (at most `shutdown_timeout`), then exit the process.
    Process,
    /// Inside another program (tests, `demo`): stop at once when told, never exit.
    Embedded,
}

/// Builds the server and the shared app state. Nothing listens until `run`.
pub fn build(config: Config, mode: Mode) -> Result<(Server, Arc<App>), StartError> {
    let app = Arc::new(App::new(config)?);
    let cfg = &app.config;
    // pingora counts whole seconds: round up so "1500ms" means 2 s, never less.
    let drain_secs = cfg.shutdown_timeout.as_millis().div_ceil(1000).max(1) as u64;
    let mut conf = ServerConf {
        threads: cfg.threads,
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
    let mut proxy = http_proxy_service(&server.configuration, AuthProxy::new(app.clone()));
    let certs = crate::tls::add_proxy_listener(&mut proxy, cfg)?;
    server.add_service(proxy);
    // TLS certificate reload (file changes, SIGHUP) and the optional HTTP -> HTTPS redirect listener.
    server.add_services(crate::tls::services(cfg, mode, certs)?);
    if let Some(listener) = admin {
        server.add_service(background_service(
            "admin",
            crate::admin::AdminService {
                app: app.clone(),
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
        Invalidations {
            app: app.clone(),
            every: Duration::from_millis(500),
        },
    ));
    server.add_service(background_service(
        "tiktok data sync",
        crate::sync::BackgroundSync { app: app.clone() },
    ));
    Ok((server, app))
}

/// Follows the store's invalidation log, so a sign-out, a dead grant or a token refresh in
/// another process sharing the database reaches this process's caches within a second. A
/// read every half second, off the request path.
struct Invalidations {
    app: Arc<App>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Invalidations {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = match self.app.store.run(|s| s.invalidation_head()).await {
            Ok(h) => h,
            Err(e) => {
                log::warn!("cannot read the invalidation log: {e}");
                0
            }
        };
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => seen = self.app.apply_invalidations(seen).await,
            }
        }
    }
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
    app: Arc<App>,
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
        // Every change is already committed (WAL, synchronous=FULL); fold the WAL back into
        // the main file so a backup of the .db alone is complete.
        if let Err(e) = self.app.store.run(|s| s.checkpoint()).await {
            log::warn!("shutdown: WAL checkpoint failed: {e}");
        }
        log::info!("nini-auth stopped");
        log::logger().flush();
        std::process::exit(0);
    }
}

/// Deletes expired sessions and login states once a minute.
struct Purger {
    app: Arc<App>,
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
                    match self.app.store.run(move |s| s.purge_expired(now)).await {
                        Ok(0) => {}
                        Ok(n) => log::debug!("purged {n} expired session/login rows"),
                        Err(e) => log::warn!("purge failed: {e}"),
                    }
                    if let Ok(n) = self.app.store.run(move |s| s.count_sessions(now)).await {
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
    pub app: Arc<App>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts the sidecar and waits (bounded) until its port accepts connections.
    pub fn start(config: Config) -> Result<Running, String> {
        let addr = config.listen;
        let (server, app) = build(config, Mode::Embedded).map_err(|e| e.to_string())?;
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
            app,
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

/// A free loopback port: bind :0, read it, release it. pingora binds inside its own runtime
/// and cannot report an ephemeral port, so this small race is the price.
pub fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}
