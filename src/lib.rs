//! nini-auth: a reverse-proxy authentication sidecar for TikTok Login Kit v2.
//!
//! Request flow (see `proxy::AuthProxy::request_filter`): every request gets a request id,
//! loses any client-sent identity header, and is judged on its canonical path (`paths`).
//! `/api/auth/*` is answered here (`authflow`); other requests carry a session cookie that
//! is resolved through an in-memory cache (`app`) backed by SQLite (`store`); protected
//! paths without a session are refused; everything else goes upstream with identity
//! headers (`headers`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod authflow;
pub mod cli;
pub mod config;
pub mod cookies;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod headers;
pub mod jwt;
pub mod metrics;
pub mod mock_tiktok;
pub mod pages;
pub mod paths;
pub mod proxy;
pub mod redirect;
pub mod server;
pub mod store;
pub mod sync;
pub mod tiktok;
pub mod tls;
pub mod tokens;
pub mod web;
pub mod webhook;
