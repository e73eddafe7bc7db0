//! HTTP/1 upgrades (WebSockets): the handshake with the upstream and the byte relay after a
//! `101`, done here instead of in pingora's proxy loop.
//!
//! Why not pingora's: in pingora 0.9 an upgrade whose `101` is read before the request's own
//! (empty) body has been handed to the upstream side ends the tunnel right after the `101`
//! (cloudflare/pingora#946): a fast upstream, such as an app in the same pod, loses a
//! WebSocket now and then. Its loop also applies the upstream read timeout to an upgraded
//! connection, so an idle socket was cut after `upstream.read_timeout`. Here the request goes
//! through the same `upstream_request_filter` and the answer through the same response
//! filters as every proxied request; only the relay is ours.

use std::time::Duration;

use pingora::connectors::http::v1::Connector;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::proxy::{ProxyHttp, Session};

use super::conn::Control;
use super::{AuthProxy, Ctx};

/// Upstream connections for upgrades (never pooled: an upgraded connection is not reusable).
pub struct Upgrades {
    connector: Connector,
}

impl Upgrades {
    pub fn new() -> Upgrades {
        Upgrades {
            connector: Connector::new(None),
        }
    }
}

impl Default for Upgrades {
    fn default() -> Self {
        Upgrades::new()
    }
}

/// How long the upstream may go on sending after the client ended its side (its close frame
/// in answer to the client's, usually).
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Whether we relay this request ourselves: an HTTP/1.1 `GET` without a body whose
/// `Connection` asks for the upgrade (a WebSocket handshake, RFC 6455 4.1). Anything else
/// with an `Upgrade` header is an ordinary request to pingora's loop.
pub fn is_upgrade(session: &Session) -> bool {
    let req = session.req_header();
    let no_body = !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes().iter().all(|b| *b == b'0'));
    req.version == http::Version::HTTP_11
        && req.method == http::Method::GET
        && no_body
        && req.headers.contains_key(http::header::UPGRADE)
        && req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

impl AuthProxy {
    /// Proxies an upgrade request: `Ok(true)` once answered (whatever the upstream said);
    /// an error before anything was written goes to `fail_to_proxy` like any proxy failure.
    pub(super) async fn relay_upgrade(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let mut request = session.req_header().clone();
        self.upstream_request_filter(session, &mut request, ctx).await?;
        let (mut upstream, _) = self
            .upgrades
            .connector
            .get_http_session(&self.peer)
            .await
            .map_err(|e| e.into_up())?;
        // The handshake is an ordinary exchange: the upstream's timeouts apply until the 101.
        upstream.read_timeout = self.peer.options.read_timeout;
        upstream.write_timeout = self.peer.options.write_timeout;
        upstream
            .write_request_header(Box::new(request))
            .await
            .map_err(|e| e.into_up())?;
        let mut response = read_final_head(&mut upstream).await?;
        self.upstream_response_filter(session, &mut response, ctx).await?;
        self.response_filter(session, &mut response, ctx).await?;
        let upgraded = upstream.was_upgraded();
        session.write_response_header(Box::new(response), false).await?;

        // From here an error cannot become an error page: the answer has begun.
        let end = if upgraded {
            tunnel(session, &mut upstream, ctx.conn.as_deref()).await
        } else {
            // The upstream refused the upgrade: an ordinary answer, body as framed.
            pass_body(session, &mut upstream).await
        };
        log::debug!("upgrade request ended: {end} request_id={}", ctx.request_id);
        upstream.shutdown().await;
        if matches!(end, End::Done) {
            let _ = session.write_response_body(None, true).await;
        } else {
            session.set_keepalive(None);
        }
        Ok(true)
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The refused upgrade's answer was passed on whole.
    Done,
    UpstreamClosed,
    ClientClosed,
    /// The sidecar ended the tunnel (its session ended, or its lifetime).
    Killed,
    Failed(&'static str),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Done => f.write_str("answered"),
            End::UpstreamClosed => f.write_str("upstream closed"),
            End::ClientClosed => f.write_str("client closed"),
            End::Killed => f.write_str("ended by the sidecar"),
            End::Failed(what) => f.write_str(what),
        }
    }
}

/// The upstream's answer head, past any `1xx` other than `101`.
async fn read_final_head(upstream: &mut UpstreamSession) -> Result<ResponseHeader> {
    loop {
        let head = upstream.read_resp_header_parts().await.map_err(|e| e.into_up())?;
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS || !head.status.is_informational() {
            return Ok(*head);
        }
    }
}

/// A refused upgrade's body, as the upstream frames it (its read timeout applies).
async fn pass_body(session: &mut Session, upstream: &mut UpstreamSession) -> End {
    loop {
        match upstream.read_body_bytes().await {
            Ok(Some(chunk)) => {
                if session.write_response_body(Some(chunk), false).await.is_err() {
                    return End::Failed("client write failed");
                }
            }
            Ok(None) => return End::Done,
            Err(_) => return End::Failed("upstream read failed"),
        }
    }
}

/// Resolves when the sidecar kills the connection; never without a `Control`.
async fn killed(control: Option<&Control>) {
    match control {
        Some(c) => c.killed().await,
        None => std::future::pending().await,
    }
}

/// Copies bytes both ways until either side ends, fails, or the sidecar kills the connection
/// (also while a write waits on a peer that does not read).
async fn tunnel(session: &mut Session, upstream: &mut UpstreamSession, control: Option<&Control>) -> End {
    // An idle WebSocket is normal: only the session's end or the lifetime cap closes one
    // (`proxy::tunnels`), not a read timeout.
    upstream.read_timeout = None;
    upstream.maybe_upgrade_body_writer();
    loop {
        // Both reads are cancel-safe (pingora's own loop selects over them the same way);
        // each write happens after its read completed, raced against a kill.
        tokio::select! {
            _ = killed(control) => return End::Killed,
            from_upstream = upstream.read_body_bytes() => match from_upstream {
                Ok(Some(bytes)) => tokio::select! {
                    _ = killed(control) => return End::Killed,
                    written = session.write_response_body(Some(bytes), false) => {
                        if written.is_err() {
                            return End::Failed("client write failed");
                        }
                    }
                },
                Ok(None) => return End::UpstreamClosed,
                Err(_) => return End::Failed("upstream read failed"),
            },
            from_client = session.read_request_body() => match from_client {
                Ok(Some(bytes)) => tokio::select! {
                    _ = killed(control) => return End::Killed,
                    written = upstream.write_body(&bytes) => {
                        if written.is_err() {
                            return End::Failed("upstream write failed");
                        }
                    }
                },
                Ok(None) if control.is_some_and(Control::is_killed) => return End::Killed,
                Ok(None) => {
                    drain_upstream(session, upstream, control).await;
                    return End::ClientClosed;
                }
                Err(_) => return End::Failed("client read failed"),
            },
        }
    }
}

/// After the client ended its side: what the upstream still sends (its close frame) reaches
/// the client, for a moment.
async fn drain_upstream(session: &mut Session, upstream: &mut UpstreamSession, control: Option<&Control>) {
    let drain = async {
        while let Ok(Some(bytes)) = upstream.read_body_bytes().await {
            if session.write_response_body(Some(bytes), false).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = killed(control) => {}
        _ = tokio::time::sleep(HALF_CLOSE_GRACE) => {}
    }
}
