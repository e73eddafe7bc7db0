//! Client connections around pingora's HTTP/1 handling: a deadline and a size cap on every
//! request head while it arrives, an idle timeout between keep-alive requests, a bound on
//! connections per client address, and `Control`, through which the proxy marks request
//! boundaries and ends an upgraded tunnel from outside.
//!
//! Why here and not in pingora: pingora re-parses the whole buffered head on every read and
//! only times out single reads, so a client trickling a large unfinished head keeps a core
//! busy for as long as it likes. `GuardedStream` holds an incomplete head back and hands it
//! to pingora in one piece once its empty line arrived: pingora parses each head about once,
//! and a head that is too large or too slow is answered (431, 408) before pingora sees a byte.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Cidr;
use crate::metrics::Metrics;

/// Largest request head (request line and header fields) accepted. A head that grows past it
/// is answered 431 while it is still arriving.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The connection settings from `[server]` and `[limits]`.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    /// None: no keep-alive (one request per connection).
    pub keepalive_timeout: Option<Duration>,
    /// 0: no bound.
    pub per_client: u32,
    /// Peers exempt from `per_client` (they carry many clients).
    pub trusted: Vec<Cidr>,
}

/// Finds the end of a request head (the empty line) across reads, the way httparse does:
/// lines end in `\r\n` or `\n`, and empty lines before the request line are skipped.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    started: bool,
    /// 0: inside a line; 1: just after `\n`; 2: after `\n\r`.
    state: u8,
}

impl HeadScanner {
    /// Feeds the next bytes of a head; when its end is among them, returns how many of these
    /// bytes belong to the head.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.started {
                // A leading "\n\n" must not count as the end of a head that has not begun.
                if b != b'\r' && b != b'\n' {
                    self.started = true;
                    self.state = 0;
                }
                continue;
            }
            self.state = match (self.state, b) {
                (1 | 2, b'\n') => return Some(i + 1),
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

const NO_SIGNAL: u8 = 0;
const STARTED: u8 = 1;
const DONE: u8 = 2;

/// Shared between a connection's stream and whoever must act on it: the proxy signals where
/// requests start and end (which decides what the stream times and caps), and `kill` ends
/// the connection from anywhere (an upgraded tunnel whose session ended).
#[derive(Debug, Default)]
pub struct Control {
    signal: AtomicU8,
    killed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Control {
    /// pingora parsed a request head and the proxy is handling it.
    pub fn request_started(&self) {
        self.signal.store(STARTED, Ordering::Release);
    }

    /// The request is answered; what the client sends next is a new head.
    pub fn request_done(&self) {
        self.signal.store(DONE, Ordering::Release);
    }

    /// Ends the connection: its next read (or the one it is waiting in) sees end of stream.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Resolves once the connection is killed. For the task that also reads the connection
    /// (one waker slot: both register the same task's waker).
    pub async fn killed(&self) {
        std::future::poll_fn(|cx| if self.park(cx) { Poll::Ready(()) } else { Poll::Pending }).await
    }

    /// Remembers who to wake on `kill`; true if the connection was killed meanwhile. The
    /// waker is stored before `killed` is read, so a `kill` in between is never missed.
    fn park(&self, cx: &Context<'_>) -> bool {
        {
            let mut w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        self.is_killed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between keep-alive requests, nothing of the next head yet.
    Idle,
    /// Reading a head (held back in `staged` until complete). `got` is false on a new
    /// connection that has not sent a byte.
    Head { got: bool },
    /// The head was handed to pingora; its request has not started (still timed).
    Released,
    /// A request is being handled (body, response, or an upgraded tunnel): reads pass through.
    Request,
    /// Answered by us; reading (and discarding) what the client still sends for a moment, so
    /// that closing with unread input does not reset the connection before our answer is read.
    Draining,
    /// End of stream from now on.
    Closed,
}

/// How long, and how much, a refused client's remaining input is read and discarded.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// The client connection as pingora sees it (see the module docs).
pub struct GuardedStream {
    inner: Stream,
    control: Arc<Control>,
    limits: Arc<ConnLimits>,
    metrics: Arc<Metrics>,
    phase: Phase,
    scanner: HeadScanner,
    /// Head bytes held back, then handed out after the head completed.
    staged: BytesMut,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    drained: usize,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

const TIMEOUT_REPLY: &str = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"error\":\"request_timeout\"}";
const TOO_LARGE_REPLY: &str = "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n{\"error\":\"headers_too_large\"}";
const TOO_MANY_REPLY: &str = "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 32\r\n\r\n{\"error\":\"too_many_connections\"}";

impl GuardedStream {
    pub fn new(inner: Stream, limits: Arc<ConnLimits>, metrics: Arc<Metrics>) -> GuardedStream {
        let deadline = Some(Instant::now() + limits.header_timeout);
        GuardedStream {
            inner,
            control: Arc::new(Control::default()),
            limits,
            metrics,
            phase: Phase::Head { got: false },
            scanner: HeadScanner::default(),
            staged: BytesMut::new(),
            deadline,
            sleep: None,
            drained: 0,
        }
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    fn take_signal(&mut self) {
        match self.control.signal.swap(NO_SIGNAL, Ordering::Acquire) {
            STARTED if self.phase != Phase::Closed && self.phase != Phase::Draining => {
                self.phase = Phase::Request;
                self.deadline = None;
            }
            DONE if self.phase != Phase::Closed && self.phase != Phase::Draining => {
                self.phase = Phase::Idle;
                self.scanner = HeadScanner::default();
                self.staged.clear();
                self.deadline = self.limits.keepalive_timeout.map(|k| Instant::now() + k);
            }
            _ => {}
        }
    }

    /// Waits for the phase's deadline; when it passed, ends the connection the way the
    /// phase calls for.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.phase {
            Phase::Idle => {
                self.metrics.connections_closed.idle_timeout.inc();
                self.close(cx, None)
            }
            Phase::Head { got } => {
                self.metrics.connections_closed.header_timeout.inc();
                if got {
                    log::info!(
                        "closed a connection: no complete request head within {:?} ({} bytes)",
                        self.limits.header_timeout,
                        self.staged.len()
                    );
                }
                self.close(cx, got.then_some(TIMEOUT_REPLY))
            }
            Phase::Released => {
                // pingora holds part of a head it could not finish: only an error stops it.
                self.metrics.connections_closed.header_timeout.inc();
                self.phase = Phase::Closed;
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head deadline")))
            }
            Phase::Draining => {
                self.phase = Phase::Closed;
                Poll::Ready(Ok(()))
            }
            Phase::Request | Phase::Closed => Poll::Pending,
        }
    }

    /// Ends the connection: with `reply`, answers if the socket takes it at once (a courtesy;
    /// a client that does not read gets none), then lingers (`Draining`); without, at once.
    fn close(&mut self, cx: &mut Context<'_>, reply: Option<&'static str>) -> Poll<io::Result<()>> {
        self.staged = BytesMut::new();
        let Some(r) = reply else {
            self.phase = Phase::Closed;
            return Poll::Ready(Ok(()));
        };
        let mut inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(n)) = inner.as_mut().poll_write(cx, r.as_bytes()) {
            if n == r.len() {
                let _ = inner.as_mut().poll_flush(cx);
            }
        }
        let _ = inner.poll_shutdown(cx);
        self.phase = Phase::Draining;
        self.deadline = Some(Instant::now() + LINGER);
        self.drained = 0;
        self.poll_drain(cx)
    }

    /// Discards input until the client closes, `LINGER_BYTES` or the linger deadline.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 8192];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() && self.drained < LINGER_BYTES => {
                    self.drained += rb.filled().len();
                }
                Poll::Ready(_) => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return self.poll_deadline(cx),
            }
        }
    }

    /// Reads the next piece of a head (phases `Idle` and `Head`).
    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Pending => return self.poll_deadline(cx),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let fresh = &buf.filled()[before..];
            if fresh.is_empty() {
                // End of stream; whatever was held back was never a whole head.
                self.phase = Phase::Closed;
                return Poll::Ready(Ok(()));
            }
            match self.phase {
                Phase::Idle => {
                    self.phase = Phase::Head { got: true };
                    self.deadline = Some(Instant::now() + self.limits.header_timeout);
                }
                Phase::Head { got: false } => self.phase = Phase::Head { got: true },
                _ => {}
            }
            let complete = self.scanner.feed(fresh).is_some();
            if complete && self.staged.is_empty() {
                // The usual case: the whole head in one read, handed over untouched.
                self.phase = Phase::Released;
                return Poll::Ready(Ok(()));
            }
            self.staged.extend_from_slice(fresh);
            buf.set_filled(before);
            if complete {
                self.phase = Phase::Released;
                self.hand_out(buf);
                return Poll::Ready(Ok(()));
            }
            if self.staged.len() > MAX_HEAD_BYTES {
                self.metrics.connections_closed.header_too_large.inc();
                log::info!("refused a request head larger than {MAX_HEAD_BYTES} bytes while it arrived");
                return self.close(cx, Some(TOO_LARGE_REPLY));
            }
        }
    }

    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.staged.len());
        buf.put_slice(&self.staged[..n]);
        self.staged.advance(n);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_signal();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match this.phase {
            Phase::Closed => Poll::Ready(Ok(())),
            Phase::Draining => this.poll_drain(cx),
            Phase::Idle | Phase::Head { .. } => this.poll_head(cx, buf),
            Phase::Released => {
                if !this.staged.is_empty() {
                    this.hand_out(buf);
                    return Poll::Ready(Ok(()));
                }
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Pending => this.poll_deadline(cx),
                    ready => ready,
                }
            }
            Phase::Request => {
                if this.control.is_killed() {
                    this.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Pending => {
                        if this.control.park(cx) {
                            this.phase = Phase::Closed;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Pending
                    }
                    ready => ready,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The `Control` of the connection a request arrived on, if it came through `Guarded`.
pub fn control_of(stream: Option<&Stream>) -> Option<Arc<Control>> {
    let stream: &Stream = stream?;
    let any = (**stream).as_any();
    any.downcast_ref::<GuardedStream>().map(|g| g.control.clone())
}

/// Open connections per client: an IPv4 address, or the /64 of an IPv6 address (one
/// subscriber usually holds a whole /64).
#[derive(Debug)]
pub struct ClientSlots {
    max: u32,
    open: Mutex<HashMap<u128, u32>>,
}

/// One open connection of a client; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ClientSlots>,
    key: u128,
}

impl ClientSlots {
    pub fn new(max: u32) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `ip`, or None when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections `ip`'s client holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
    }
}

/// Wraps pingora's HTTP app: bounds connections per client, and gives the app every
/// connection as a `GuardedStream`.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Arc<ConnLimits>,
    slots: Arc<ClientSlots>,
    metrics: Arc<Metrics>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: ConnLimits, metrics: Arc<Metrics>) -> Guarded<A> {
        let slots = ClientSlots::new(limits.per_client);
        Guarded {
            inner: Arc::new(inner),
            limits: Arc::new(limits),
            slots,
            metrics,
        }
    }
}

/// Answers 429 and lingers briefly (see `Phase::Draining`).
async fn refuse(stream: &mut Stream) {
    use tokio::io::AsyncReadExt;
    if stream.write_all(TOO_MANY_REPLY.as_bytes()).await.is_err() {
        return;
    }
    let _ = AsyncWriteExt::shutdown(stream).await;
    let mut scratch = [0u8; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Counts an open connection for as long as it lives.
struct OpenConn(Arc<Metrics>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let bounded =
            self.limits.per_client > 0 && ip.is_some_and(|ip| !self.limits.trusted.iter().any(|c| c.contains(ip)));
        let _slot = match ip {
            Some(ip) if bounded => match self.slots.acquire(ip) {
                Some(slot) => Some(slot),
                None => {
                    self.metrics.connections_closed.per_client_limit.inc();
                    log::info!(
                        "refused a connection: {ip} already holds {} (limits.connections_per_client)",
                        self.limits.per_client
                    );
                    let _ = tokio::time::timeout(LINGER, refuse(&mut stream)).await;
                    return None;
                }
            },
            _ => None,
        };
        self.metrics.connections_open.inc();
        let _open = OpenConn(self.metrics.clone());
        let guarded = GuardedStream::new(stream, self.limits.clone(), self.metrics.clone());
        // pingora's HTTP apps serve keep-alive requests themselves and hand nothing back; a
        // connection handed back would come back guarded, never bare.
        self.inner.process_new(Box::new(guarded), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(chunks: &[&[u8]]) -> Option<(usize, usize)> {
        let mut s = HeadScanner::default();
        for (i, c) in chunks.iter().enumerate() {
            if let Some(n) = s.feed(c) {
                return Some((i, n));
            }
        }
        None
    }

    #[test]
    fn head_ends_where_httparse_ends_it() {
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]), Some((0, 27)));
        assert_eq!(end(&[b"GET / HTTP/1.1\nHost: a\n\nbody"]), Some((0, 24)));
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: a\n\r\n"]), Some((0, 26)));
        // Split anywhere, even inside the final CRLF CRLF.
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\nrest"]), Some((2, 1)));
        assert_eq!(end(&[b"GET / HTTP/1.1\r\n", b"\r\n"]), Some((1, 2)));
        // Empty lines before the request line are not an end.
        assert_eq!(end(&[b"\r\n\r\n\n\n", b"GET / HTTP/1.1\r\n\r\n"]), Some((1, 18)));
        // Not yet.
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nX: \r\r\n"]), None);
    }

    #[test]
    fn every_split_of_a_head_finds_the_same_end() {
        let head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
        let want = head.len() - 2;
        for cut in 0..head.len() {
            let mut s = HeadScanner::default();
            let found = match s.feed(&head[..cut]) {
                Some(n) => n,
                None => cut + s.feed(&head[cut..]).expect("end found"),
            };
            assert_eq!(found, want, "cut at {cut}");
        }
    }

    #[test]
    fn client_slots_bound_per_address_and_v6_slash_64() {
        let slots = ClientSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let s1 = slots.acquire(a).expect("first");
        let _s2 = slots.acquire(a).expect("second");
        assert!(slots.acquire(a).is_none(), "third refused");
        assert!(slots.acquire(b).is_some(), "another client is not affected");
        drop(s1);
        let _s3 = slots.acquire(a).expect("a freed slot is reusable");
        // One /64 is one client; the IPv4-mapped form is the IPv4 client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let _x = slots.acquire(v6a).expect("first");
        let _y = slots.acquire(v6b).expect("second");
        assert!(slots.acquire("2001:db8:1:2::77".parse().expect("ip")).is_none());
        assert!(slots.acquire("2001:db8:1:3::1".parse().expect("ip")).is_some());
        assert_eq!(slots.held("::ffff:192.0.2.2".parse().expect("ip")), 0);
        assert_eq!(slots.held("::ffff:192.0.2.1".parse().expect("ip")), 2);
    }

    #[test]
    fn kill_wakes_a_parked_reader_and_is_never_missed() {
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let cx = Context::from_waker(&waker);
        let c = Control::default();
        assert!(!c.park(&cx));
        c.kill();
        assert!(flag.0.load(Ordering::SeqCst), "the parked reader was woken");
        assert!(c.park(&cx), "a reader parking after the kill sees it");
    }
}
