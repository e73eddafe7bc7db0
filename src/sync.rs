//! TikTok data sync: profile and all public videos into the store, derived counts and
//! streak, the sync endpoint, the read endpoints and the background refresher.
//! (Being written; the hooks below are wired into the proxy and the auth router.)

use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::store::Identity;
use crate::web::{Reply, Request};

/// `POST <sync.path>`: sync the signed-in user's TikTok data now.
pub async fn sync_endpoint(_app: &App, identity: Option<Arc<Identity>>, _request_id: &str) -> Reply {
    match identity {
        None => Reply::json(401, &json!({ "error": "unauthorized" })),
        Some(_) => Reply::json(501, &json!({ "error": "not_implemented" })),
    }
}

/// `GET /api/auth/tiktok/profile`.
pub async fn profile(_app: &App, _req: &Request, identity: Option<Arc<Identity>>) -> Reply {
    match identity {
        None => Reply::json(401, &json!({ "error": "unauthorized" })),
        Some(_) => Reply::json(501, &json!({ "error": "not_implemented" })),
    }
}

/// `GET /api/auth/tiktok/videos`.
pub async fn videos(_app: &App, _req: &Request, identity: Option<Arc<Identity>>) -> Reply {
    match identity {
        None => Reply::json(401, &json!({ "error": "unauthorized" })),
        Some(_) => Reply::json(501, &json!({ "error": "not_implemented" })),
    }
}
