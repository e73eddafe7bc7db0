//! The admin listener, on its own address (never through the proxy port):
//! `GET /healthz` (the process is alive), `GET /readyz` (the database answers within
//! `READY_DEADLINE`; 503 otherwise) and `GET /metrics` (Prometheus text).

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::store::Store;

/// How long readiness waits for the database: a probe must answer fast even when the
/// database does not.
pub const READY_DEADLINE: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves the admin endpoints on a listener bound at start-up (so a bad address fails the
/// start, not later).
pub struct AdminService {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route("/readyz", axum::routing::get(move || readyz(store.clone())))
            .route("/metrics", axum::routing::get(move || render(metrics.clone())));
        serve_bound(&self.listener, router, shutdown, "admin listener").await;
    }
}

/// Serves `router` on a listener bound at start-up (taken from `slot`) until shutdown. Used
/// by the admin and the HTTP→HTTPS redirect listeners, which pingora does not run.
pub async fn serve_bound(
    slot: &std::sync::Mutex<Option<std::net::TcpListener>>,
    router: axum::Router,
    mut shutdown: ShutdownWatch,
    what: &str,
) {
    let Some(std_listener) = slot.lock().ok().and_then(|mut l| l.take()) else {
        return;
    };
    let listener = match std_listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
    {
        Ok(l) => l,
        Err(e) => {
            log::error!("{what} unusable: {e}");
            return;
        }
    };
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        log::error!("{what} stopped: {e}");
    }
}

async fn readyz(store: Arc<dyn Store>) -> impl IntoResponse {
    match store.ping(READY_DEADLINE).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            log::warn!("not ready: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
        }
    }
}

async fn render(metrics: Arc<Metrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}
