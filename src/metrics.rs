//! Every Prometheus metric the sidecar exports, defined once, with small recording helpers.
//! All names start with `nini_auth_`; docs/operations.md lists them with the questions they
//! answer. Nothing else in the crate creates metrics.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Log lines dropped because the log queue was full, since the process started (counted by
/// `ops::logging`, which runs before any `Metrics` exists).
pub static LOG_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The route classes the proxy counts requests under (`nini_auth_requests_total{route}`).
const ROUTES: &[&str] = &["auth", "sync", "protected", "public", "rejected"];
/// Status codes 100..=599 get a prebuilt handle each.
const STATUSES: usize = 500;

/// Seconds; from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    /// Requests by route class (`auth`, `protected`, `public`, `sync`, `rejected`) and status.
    pub requests: IntCounterVec,
    /// Time from the upstream request to its response header, by status class.
    pub upstream_latency: HistogramVec,
    /// The OAuth funnel: `started`, `callback`, `completed`, `failed` (by reason).
    pub oauth: IntCounterVec,
    /// Token refreshes by outcome: `ok`, `failed`, `grant_dead`, `waited`.
    pub refreshes: IntCounterVec,
    /// TikTok API calls by endpoint and `error.code` (`ok` on success, `transport`, `timeout`, ...).
    pub tiktok_calls: IntCounterVec,
    pub tiktok_latency: HistogramVec,
    /// Sync jobs by trigger (`endpoint`, `background`) and outcome.
    pub syncs: IntCounterVec,
    /// Unexpired sessions in the store (sampled by the purge job).
    pub active_sessions: IntGauge,
    /// Requests being handled right now (what a graceful shutdown waits for).
    pub in_flight: IntGauge,
    /// Unix time the process started, for uptime.
    pub start_time: IntGaugeVec,
    /// How session cookies were resolved (see `SessionLookups`).
    pub session_lookups: SessionLookups,
    /// Invalidations from other processes applied to this one's caches.
    pub invalidations: prometheus::IntCounter,
    /// Log lines dropped because stderr did not keep up (mirrors `LOG_DROPPED`).
    log_dropped: prometheus::IntCounter,
    in_flight_count: AtomicI64,
    /// `requests` handles by route and status, made on first use: counting a request is one
    /// atomic add, with no label formatting or lookup.
    request_handles: Vec<Vec<std::sync::OnceLock<prometheus::IntCounter>>>,
    /// `upstream_latency` handles by status class (1xx..5xx, then anything else).
    upstream_handles: Vec<prometheus::Histogram>,
    /// Client connections open now (`proxy::conn`).
    pub connections_open: IntGauge,
    /// Client connections the sidecar closed or refused itself, by reason (see `ConnClosed`).
    pub connections_closed: ConnClosed,
    /// Upgraded (WebSocket) tunnels open now.
    pub tunnels_open: IntGauge,
    /// Tunnels the sidecar ended, by reason: `session_ended`, `lifetime`.
    pub tunnels_closed: IntCounterVec,
    /// Sessions users ended from their devices list, by scope: `one`, `others`, `current`.
    pub device_revocations: IntCounterVec,
    /// Signed-in requests a `[[routes.rules]]` rule refused (403), by rule name.
    pub route_denials: IntCounterVec,
}

/// `nini_auth_connections_closed_total{reason}`, prebuilt per reason.
pub struct ConnClosed {
    /// No complete request head within `server.header_timeout`.
    pub header_timeout: prometheus::IntCounter,
    /// A request head that grew past the limit while arriving.
    pub header_too_large: prometheus::IntCounter,
    /// Keep-alive connection idle for `server.keepalive_timeout`.
    pub idle_timeout: prometheus::IntCounter,
    /// Refused: the client already had `limits.connections_per_client` open.
    pub per_client_limit: prometheus::IntCounter,
}

/// `nini_auth_session_lookups_total{outcome}`, one prebuilt handle per outcome: counted on
/// the hot path, so no label lookup per request.
pub struct SessionLookups {
    /// Answered from memory.
    pub cached: prometheus::IntCounter,
    /// Read from the store: a live session.
    pub found: prometheus::IntCounter,
    /// Read from the store: no such (live) session.
    pub unknown: prometheus::IntCounter,
    /// A recently unknown session, refused from memory.
    pub known_unknown: prometheus::IntCounter,
    /// Not a cookie this deployment issued (its MAC does not verify): refused in memory.
    pub forged: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(h.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            h
        };
        // Metric definitions are constants of this file; a failure here is a programming
        // error caught by the unit test below, never an operator's input.
        let requests = counter(
            "nini_auth_requests_total",
            "Requests handled, by route class and HTTP status.",
            &["route", "status"],
        );
        let upstream_latency = histogram(
            "nini_auth_upstream_latency_seconds",
            "Upstream response time (to response headers), by status class.",
            &["status_class"],
        );
        let oauth = counter(
            "nini_auth_oauth_total",
            "OAuth funnel: sign-ins started, callbacks received, completed, failed by reason.",
            &["stage", "reason"],
        );
        let refreshes = counter(
            "nini_auth_token_refreshes_total",
            "TikTok token refreshes by outcome (ok, failed, grant_dead, waited).",
            &["outcome"],
        );
        let tiktok_calls = counter(
            "nini_auth_tiktok_requests_total",
            "Calls to TikTok's API by endpoint and error code (ok on success).",
            &["endpoint", "code"],
        );
        let tiktok_latency = histogram(
            "nini_auth_tiktok_latency_seconds",
            "TikTok API call latency by endpoint.",
            &["endpoint"],
        );
        let syncs = counter(
            "nini_auth_sync_jobs_total",
            "TikTok data syncs by trigger and outcome.",
            &["trigger", "outcome"],
        );
        let lookups = counter(
            "nini_auth_session_lookups_total",
            "Session cookies resolved, by outcome: cached, found and unknown (read from the store), \
             known_unknown (refused from memory), forged (MAC did not verify).",
            &["outcome"],
        );
        let session_lookups = SessionLookups {
            cached: lookups.with_label_values(&["cached"]),
            found: lookups.with_label_values(&["found"]),
            unknown: lookups.with_label_values(&["unknown"]),
            known_unknown: lookups.with_label_values(&["known_unknown"]),
            forged: lookups.with_label_values(&["forged"]),
        };
        let invalidations = prometheus::IntCounter::new(
            "nini_auth_invalidations_total",
            "Invalidations recorded by other processes (sign-outs, revocations, refreshes, syncs) applied to this one's caches.",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(invalidations.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let log_dropped = prometheus::IntCounter::new(
            "nini_auth_log_dropped_total",
            "Log lines dropped because stderr did not keep up (the log queue was full).",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(log_dropped.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let closed = counter(
            "nini_auth_connections_closed_total",
            "Client connections closed or refused by the sidecar itself, by reason: header_timeout, \
             header_too_large, idle_timeout, per_client_limit.",
            &["reason"],
        );
        let connections_closed = ConnClosed {
            header_timeout: closed.with_label_values(&["header_timeout"]),
            header_too_large: closed.with_label_values(&["header_too_large"]),
            idle_timeout: closed.with_label_values(&["idle_timeout"]),
            per_client_limit: closed.with_label_values(&["per_client_limit"]),
        };
        let tunnels_closed = counter(
            "nini_auth_websockets_closed_total",
            "Upgraded (WebSocket) connections ended by the sidecar, by reason: session_ended \
             (sign-out, revocation, dead grant), lifetime (session expiry or server.websocket_max_lifetime).",
            &["reason"],
        );
        for reason in ["session_ended", "lifetime"] {
            tunnels_closed.with_label_values(&[reason]);
        }
        let device_revocations = counter(
            "nini_auth_device_revocations_total",
            "Sessions users ended from their devices list (POST /api/auth/sessions/revoke), by scope: \
             one (another device), others (every other device), current (this device, a sign-out).",
            &["scope"],
        );
        for scope in ["one", "others", "current"] {
            device_revocations.with_label_values(&[scope]);
        }
        let route_denials = counter(
            "nini_auth_route_denials_total",
            "Signed-in requests refused with 403 by a [[routes.rules]] rule (proxy and /api/auth/verify), by rule name.",
            &["rule"],
        );
        let connections_open = IntGauge::new("nini_auth_connections_open", "Client connections open now.")
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let tunnels_open = IntGauge::new(
            "nini_auth_websockets_open",
            "Upgraded (WebSocket) connections open now.",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        let active_sessions = IntGauge::new("nini_auth_active_sessions", "Unexpired sessions in the store.")
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let in_flight = IntGauge::new("nini_auth_in_flight_requests", "Requests being handled now.")
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let start_time = IntGaugeVec::new(
            Opts::new(
                "nini_auth_build_info",
                "Start time (unix seconds) with the version as a label.",
            ),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        for g in [&active_sessions, &in_flight, &connections_open, &tunnels_open] {
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("metric: {e}"));
        }
        registry
            .register(Box::new(start_time.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        start_time.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(now);
        // Pre-create the funnel so a dashboard shows zeros, not gaps, before the first login.
        for stage in ["started", "callback", "completed"] {
            oauth.with_label_values(&[stage, ""]);
        }
        for outcome in ["ok", "failed", "grant_dead", "waited"] {
            refreshes.with_label_values(&[outcome]);
        }
        let upstream_handles = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
            .iter()
            .map(|c| upstream_latency.with_label_values(&[c]))
            .collect();
        Metrics {
            registry,
            requests,
            upstream_latency,
            oauth,
            refreshes,
            tiktok_calls,
            tiktok_latency,
            syncs,
            active_sessions,
            in_flight,
            start_time,
            session_lookups,
            invalidations,
            log_dropped,
            in_flight_count: AtomicI64::new(0),
            request_handles: ROUTES
                .iter()
                .map(|_| (0..STATUSES).map(|_| std::sync::OnceLock::new()).collect())
                .collect(),
            upstream_handles,
            connections_open,
            connections_closed,
            tunnels_open,
            tunnels_closed,
            device_revocations,
            route_denials,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let dropped = LOG_DROPPED.load(Ordering::Relaxed);
        let seen = self.log_dropped.get();
        if dropped > seen {
            self.log_dropped.inc_by(dropped - seen);
        }
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub fn request_started(&self) {
        let n = self.in_flight_count.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight.set(n);
    }

    pub fn request_finished(&self, route: &str, status: u16) {
        let n = self.in_flight_count.fetch_sub(1, Ordering::SeqCst) - 1;
        self.in_flight.set(n);
        let r = ROUTES.iter().position(|x| *x == route);
        match (r, usize::from(status).checked_sub(100)) {
            (Some(r), Some(s)) if s < STATUSES => self.request_handles[r][s]
                .get_or_init(|| self.requests.with_label_values(&[route, &status.to_string()]))
                .inc(),
            _ => self.requests.with_label_values(&[route, &status.to_string()]).inc(),
        }
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight_count.load(Ordering::SeqCst)
    }

    pub fn oauth(&self, stage: &str, reason: &str) {
        self.oauth.with_label_values(&[stage, reason]).inc();
    }

    pub fn refresh(&self, outcome: &str) {
        self.refreshes.with_label_values(&[outcome]).inc();
    }

    pub fn tiktok(&self, endpoint: &str, code: &str, seconds: f64) {
        self.tiktok_calls.with_label_values(&[endpoint, code]).inc();
        self.tiktok_latency.with_label_values(&[endpoint]).observe(seconds);
    }

    pub fn sync(&self, trigger: &str, outcome: &str) {
        self.syncs.with_label_values(&[trigger, outcome]).inc();
    }

    pub fn upstream(&self, status: u16, seconds: f64) {
        let i = match status / 100 {
            c @ 1..=5 => usize::from(c) - 1,
            _ => 5,
        };
        self.upstream_handles[i].observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_render() {
        let m = Metrics::new();
        m.request_started();
        m.request_finished("protected", 302);
        m.oauth("failed", "state");
        m.tiktok("token", "ok", 0.01);
        m.upstream(200, 0.002);
        let text = m.render();
        for needle in [
            "nini_auth_requests_total{route=\"protected\",status=\"302\"} 1",
            "nini_auth_oauth_total{reason=\"state\",stage=\"failed\"} 1",
            "nini_auth_oauth_total{reason=\"\",stage=\"started\"} 0",
            "nini_auth_tiktok_requests_total{code=\"ok\",endpoint=\"token\"} 1",
            "nini_auth_upstream_latency_seconds_bucket{status_class=\"2xx\",le=\"0.0025\"} 1",
            "nini_auth_in_flight_requests 0",
            "nini_auth_device_revocations_total{scope=\"others\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(text
            .lines()
            .filter(|l| l.starts_with("# TYPE"))
            .all(|l| l.contains("nini_auth_")));
    }
}
