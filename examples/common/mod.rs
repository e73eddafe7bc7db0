//! What the benchmark and the soak driver (`examples/bench.rs`, `examples/soak.rs`) both need.

use std::net::SocketAddr;

/// A free loopback port for a sidecar that must know its address before it listens; the
/// library's choice (below the ephemeral range), with the error as text.
pub fn free_port() -> Result<SocketAddr, String> {
    nini_auth::ops::free_port().map_err(|e| e.to_string())
}

/// The value of cookie `name` from the answer's `Set-Cookie` headers.
pub fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(String::from)
}
