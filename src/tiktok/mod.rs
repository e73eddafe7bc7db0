//! Everything that talks to TikTok: the API client (`client`), the token lifecycle with one
//! refresh per user across processes (`tokens`), the data sync (`sync`) and the
//! deauthorization webhook (`webhook`). Takes narrow handles (a store, the client, a clock,
//! the session cache), never the sidecar's whole state.

pub mod client;
pub mod sync;
pub mod tokens;
pub mod webhook;

pub use client::*;
