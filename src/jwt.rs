//! The signed identity for zero-trust upstreams: a short-lived EdDSA (Ed25519) JWT in
//! `X-Nini-Identity` on every forwarded request of a signed-in user, and the public keys at
//! `/api/auth/jwks.json`. (Being written; the hooks below are wired into the proxy and router.)

use crate::config::Config;
use crate::store::Identity;

pub struct IdentitySigner {}

impl IdentitySigner {
    pub fn new(_config: &Config) -> IdentitySigner {
        IdentitySigner {}
    }

    /// The `X-Nini-Identity` value for this user at `now` (None when disabled).
    pub fn header_value(&self, _id: &Identity, _now: i64) -> Option<String> {
        None
    }

    /// The JWKS document (`{"keys":[...]}`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [] })
    }
}
