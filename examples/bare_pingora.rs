//! Bare pingora for `scripts/bench`: the framework nini-auth is built on, with no logic of
//! ours, so the benchmark can say what the sidecar costs on top of it. Same pingora version,
//! features, allocator and server settings as nini-auth (threads, no work stealing,
//! keep-alive pool, HTTP/1.1).
//!
//!   bare_pingora --listen 127.0.0.1:PORT --mode pass --upstream 127.0.0.1:PORT [--threads 2]
//!   bare_pingora --listen 127.0.0.1:PORT --mode answer [--threads 2]
//!
//! `pass` forwards every request unchanged; `answer` writes a fixed small JSON answer from
//! `request_filter` (what the sidecar does for its own endpoints).

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

// The same allocator and server settings as nini-auth (src/main.rs, src/ops/server.rs), so
// the comparison measures our logic, not a different setup.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &str = r#"{"user":null,"expires":null}"#;

struct Bare {
    answer: bool,
    peer: Option<HttpPeer>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if !self.answer {
            return Ok(false);
        }
        let mut h = ResponseHeader::build(200, Some(2))?;
        h.insert_header("Content-Type", "application/json")?;
        h.insert_header("Content-Length", ANSWER.len().to_string())?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(ANSWER.as_bytes())), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        match &self.peer {
            Some(p) => Ok(Box::new(p.clone())),
            None => Error::e_explain(ErrorType::ConnectNoRoute, "answer mode has no upstream"),
        }
    }
}

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut upstream: Option<SocketAddr> = None;
    let mut mode = String::from("pass");
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next();
        match (a.as_str(), value) {
            ("--listen", Some(v)) => listen = v.parse().ok(),
            ("--upstream", Some(v)) => upstream = v.parse().ok(),
            ("--mode", Some(v)) => mode = v,
            ("--threads", Some(v)) => threads = v.parse().unwrap_or(2),
            (other, _) => {
                eprintln!("unknown or incomplete argument {other}");
                std::process::exit(64);
            }
        }
    }
    let Some(listen) = listen else {
        eprintln!("--listen IP:PORT is required");
        std::process::exit(64);
    };
    let answer = match mode.as_str() {
        "pass" => false,
        "answer" => true,
        _ => {
            eprintln!("--mode must be pass or answer");
            std::process::exit(64);
        }
    };
    if !answer && upstream.is_none() {
        eprintln!("--upstream IP:PORT is required with --mode pass");
        std::process::exit(64);
    }
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: false,
        pid_file: std::env::temp_dir()
            .join(format!("bare-pingora-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("bare-pingora-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let bare = Bare {
        answer,
        peer: upstream.map(|u| HttpPeer::new(u, false, String::new())),
    };
    let mut svc = http_proxy_service(&server.configuration, bare);
    svc.add_tcp(&listen.to_string());
    server.add_service(svc);
    server.run_forever();
}
