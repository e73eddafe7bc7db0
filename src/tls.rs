//! TLS for the proxy listener (pingora's rustls), certificate reload, the optional
//! plain-HTTP → HTTPS redirect listener, and `nini-auth dev-cert`.
//! (Being written: for now the proxy listener is plain TCP.)

use pingora::proxy::HttpProxy;
use pingora::services::listening::Service;

use crate::app::StartError;
use crate::config::Config;
use crate::proxy::AuthProxy;

/// Adds the proxy's listener: TLS when `server.tls_cert`/`tls_key` are set, else plain TCP.
pub fn add_proxy_listener(proxy: &mut Service<HttpProxy<AuthProxy>>, cfg: &Config) -> Result<(), StartError> {
    proxy.add_tcp(&cfg.listen.to_string());
    Ok(())
}
