//! Assembling and running the sidecar: the pingora server with its listeners and
//! background services (`server`), TLS and certificate reload (`tls`), and the admin
//! listener with health, readiness and metrics (`admin`), and logging through a bounded
//! queue (`logging`).

pub mod admin;
pub mod logging;
pub mod server;
pub mod tls;

pub use server::{block_on_fresh, build, free_port, run, Mode, Running, StartError};
