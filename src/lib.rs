//! nini-auth: a reverse-proxy authentication sidecar for TikTok Login Kit v2.
//!
//! Request flow (see `proxy::AuthProxy::request_filter`): every request gets a request id,
//! loses any client-sent identity header, and is judged on its canonical path
//! (`proxy::paths`). `/api/auth/*` is answered here (`auth`); other requests carry a session
//! cookie that is resolved through an in-memory cache backed by the store (`store`: SQLite
//! or PostgreSQL); protected paths without a session are refused; everything else goes
//! upstream with identity headers.
//!
//! Layers, each using only those below it: `cli` → `ops` → `proxy` → `auth` → `tiktok` →
//! `store` → `config`, `crypto`, `clock`, `metrics`, `web`. `mock_tiktok` (feature `demo`)
//! is a test and demo peer that the production path never touches.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod metrics;
#[cfg(feature = "demo")]
pub mod mock_tiktok;
pub mod ops;
pub mod proxy;
pub mod store;
pub mod tiktok;
pub mod web;
