//! Assembling and running the sidecar: the pingora server with its listeners and
//! background services (`server`), TLS and certificate reload (`tls`), and the admin
//! listener with health, readiness and metrics (`admin`).

pub mod admin;
pub mod server;
pub mod tls;

pub use server::{block_on_fresh, build, free_port, run, Mode, Running, StartError};
