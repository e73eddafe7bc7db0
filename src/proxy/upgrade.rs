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

use std::time::Instant;

use pingora::connectors::http::v1::Connector;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::proxy::{ProxyHttp, Session};

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

/// Whether we relay this request ourselves: an HTTP/1.1 request asking for an upgrade.
pub fn is_upgrade(session: &Session) -> bool {
    session.req_header().version == http::Version::HTTP_11 && session.is_upgrade_req()
}

impl AuthProxy {
    /// Proxies an upgrade request: `Ok(true)` once answered (whatever the upstream said);
    /// an error before anything was written goes to `fail_to_proxy` like any proxy failure.
    pub(super) async fn relay_upgrade(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let mut request = session.req_header().clone();
        self.upstream_request_filter(session, &mut request, ctx).await?;
        let (mut upstream, _) = self.upgrades.connector.get_http_session(&self.peer).await?;
        upstream
            .write_request_header(Box::new(request))
            .await
            .map_err(|e| e.into_up())?;
        let mut response = read_final_head(&mut upstream).await?;
        self.upstream_response_filter(session, &mut response, ctx).await?;
        self.response_filter(session, &mut response, ctx).await?;
        let upgraded = upstream.was_upgraded();
        session.write_response_header(Box::new(response), false).await?;

        if !upgraded {
            // The upstream refused the upgrade: an ordinary answer, body as framed.
            while let Some(chunk) = upstream.read_body_bytes().await.map_err(|e| e.into_up())? {
                session.write_response_body(Some(chunk), false).await?;
            }
            session.write_response_body(None, true).await?;
            return Ok(true);
        }

        let started = Instant::now();
        let end = tunnel(session, &mut upstream).await;
        log::debug!(
            "WebSocket ended after {:?}: {end} request_id={}",
            started.elapsed(),
            ctx.request_id
        );
        upstream.shutdown().await;
        // Ends the downstream side (an upgraded connection is never reused).
        let _ = session.write_response_body(None, true).await;
        Ok(true)
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

/// Copies bytes both ways until either side ends or fails; says which.
async fn tunnel(session: &mut Session, upstream: &mut UpstreamSession) -> &'static str {
    // An idle WebSocket is normal: only the session's end or the lifetime cap closes one
    // (`proxy::tunnels`), not a read timeout.
    upstream.read_timeout = None;
    upstream.maybe_upgrade_body_writer();
    loop {
        // Both reads are cancel-safe (pingora's own loop selects over them the same way);
        // each write happens after its read completed.
        tokio::select! {
            from_upstream = upstream.read_body_bytes() => match from_upstream {
                Ok(Some(bytes)) => {
                    if session.write_response_body(Some(bytes), false).await.is_err() {
                        return "client write failed";
                    }
                }
                Ok(None) => return "upstream closed",
                Err(_) => return "upstream read failed",
            },
            from_client = session.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if upstream.write_body(&bytes).await.is_err() {
                        return "upstream write failed";
                    }
                }
                Ok(None) => return "client closed",
                Err(_) => return "client read failed",
            },
        }
    }
}
