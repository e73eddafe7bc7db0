//! Everything that talks to TikTok: the API client (`client`), the token lifecycle with one
//! refresh per user across processes (`tokens`), the data sync (`sync`), the
//! deauthorization webhook (`webhook`) and `check --online`'s questions to TikTok
//! (`preflight`). Takes narrow handles (a store, the client, a clock, the session cache),
//! never the sidecar's whole state.

pub mod client;
pub mod preflight;
pub mod sync;
pub mod tokens;
pub mod webhook;

pub use client::*;
