//! TLS for the proxy listener (pingora's rustls), certificate reload, the optional
//! plain-HTTP → HTTPS redirect listener, and `nini-auth dev-cert`.
//!
//! Reload: pingora 0.9's rustls listener takes a `ResolvesServerCert` (`TlsSettings::
//! set_cert_resolver`) that rustls asks on every handshake. Ours hands out the current
//! `CertifiedKey` from behind a lock, so swapping it changes what new connections get while
//! the listening socket and open connections stay as they are. A background service re-reads
//! the PEM files when their metadata changes (polled) or on SIGHUP; a pair that does not load
//! is logged and the previous one kept.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ALPN;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::server::{Mode, StartError};
use crate::config::{Config, CALLBACK_PATH};
use crate::proxy::conn::Guarded;
use crate::proxy::AuthProxy;

/// How often the certificate files' metadata is checked. A stat of two files is cheap, and
/// a renewed certificate is usually days ahead of the old one's expiry, so seconds are plenty.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The certificate holder the TLS listener serves from; `services` watches it for reloads.
pub type Certificates = Arc<CertReloader>;

/// Adds the proxy's listener: TLS when `server.tls_cert`/`tls_key` are set (returning the
/// certificate holder for `services`), else plain TCP. The pair is loaded and checked here, so
/// a bad file fails the start naming the file.
pub fn add_proxy_listener(
    proxy: &mut Service<Guarded<HttpProxy<AuthProxy>>>,
    cfg: &Config,
) -> Result<Option<Certificates>, StartError> {
    let addr = cfg.listen.to_string();
    let Some((cert, key)) = &cfg.ops.tls else {
        proxy.add_tcp(&addr);
        return Ok(None);
    };
    let certs = Arc::new(CertReloader::new(cert.clone(), key.clone()).map_err(StartError::Tls)?);
    log::info!(
        "TLS on {addr}: certificate {} (sha256 {})",
        cert.display(),
        certs.fingerprint()
    );
    // pingora ignores the paths once a resolver is set; they are passed for its logs only.
    let mut settings = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    settings.set_cert_resolver(certs.clone());
    // The proxy speaks HTTP/1.1 to browsers (pingora's default); say so in ALPN rather than
    // leave clients to assume it.
    settings.set_alpn(ALPN::H1);
    proxy.add_tls_with_settings(&addr, None, settings);
    Ok(Some(certs))
}

/// The background services TLS needs: the certificate reload watcher (with TLS; SIGHUP only
/// for the `nini-auth` process, never inside a host program) and the HTTP → HTTPS redirect
/// listener (bound here, so a taken port fails the start with its address).
pub fn services(
    cfg: &Config,
    mode: Mode,
    certs: Option<Certificates>,
) -> Result<Vec<Box<dyn ServiceWithDependents>>, StartError> {
    let mut out: Vec<Box<dyn ServiceWithDependents>> = Vec::new();
    if let Some(certs) = certs {
        out.push(Box::new(background_service(
            "tls certificate reload",
            ReloadWatcher {
                certs,
                every: POLL_EVERY,
                sighup: mode == Mode::Process,
            },
        )));
    }
    if let Some(addr) = cfg.ops.http_redirect_listen {
        let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        if cfg.public_url.scheme() != "https" {
            log::warn!(
                "server.http_redirect_listen sends clients to {}, which is not https",
                cfg.origin()
            );
        }
        out.push(Box::new(background_service(
            "http to https redirect",
            RedirectListener {
                origin: cfg.origin(),
                addr,
                listener: Mutex::new(Some(listener)),
            },
        )));
    }
    Ok(out)
}

// === certificates ===

/// The certificate and key in use, with where they came from. rustls asks `resolve` on every
/// handshake; `reload` swaps in a new pair only once it has loaded and its key matches.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' metadata when last read (good or bad), so a bad pair is reported once per
    /// change rather than on every poll.
    seen: Mutex<Stamp>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Polled, and the files have not changed since they were last read.
    Unchanged,
    /// The new pair is in use; the new certificate's SHA-256 fingerprint.
    Reloaded(String),
    /// The files did not load; the previous pair is still in use.
    Failed(String),
}

/// Size, mtime and inode of both files: together they catch in-place rewrites, renames over
/// the file (certbot, `dev-cert`) and Kubernetes' symlink swaps of mounted Secrets.
type Stamp = [Option<(Option<SystemTime>, u64, u64, u64)>; 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    [cert, key].map(|p| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len(), m.ino(), m.dev()))
    })
}

impl CertReloader {
    /// Loads the pair; the error names the file at fault.
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<CertReloader, String> {
        let seen = stamp(&cert_path, &key_path);
        let key = load_pair(&cert_path, &key_path)?;
        Ok(CertReloader {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate chain now served (leaf first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SHA-256 of the leaf certificate now served, hex with colons (as browsers show it).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current())
    }

    /// Re-reads the files when their metadata changed since the last read, or always when
    /// `force` (SIGHUP). Blocking file I/O: call it off the async workers.
    pub fn reload(&self, force: bool) -> Reload {
        let now = stamp(&self.cert_path, &self.key_path);
        {
            // Recorded before reading: a write landing while we read changes the stamp again,
            // so the next poll reads once more instead of keeping a half-written pair's error.
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(key) => {
                let fp = fingerprint(&key);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                Reload::Reloaded(fp)
            }
            Err(e) => Reload::Failed(e),
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate for every name: SNI does not choose (clients reaching us by IP send none).
        Some(self.current())
    }
}

fn fingerprint(key: &CertifiedKey) -> String {
    let Some(leaf) = key.cert.first() else {
        return String::new();
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1)
/// and checks that the key belongs to the leaf. Errors name the file and what is wrong.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain ({e})", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no \"BEGIN CERTIFICATE\" block (a PEM certificate chain is expected)",
            cert_path.display()
        ));
    }
    let key_pem = std::fs::read(key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no \"BEGIN PRIVATE KEY\" block (a PEM private key is expected)",
            key_path.display()
        ),
        e => format!("{}: not a PEM private key ({e})", key_path.display()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in {} does not belong to the certificate in {}",
            key_path.display(),
            cert_path.display()
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!("{}: the certificate does not parse ({e})", cert_path.display())
        }
        e => format!("{}: unusable private key ({e})", key_path.display()),
    })
}

/// Polls the certificate files and listens for SIGHUP; reloads off the async workers.
struct ReloadWatcher {
    certs: Arc<CertReloader>,
    every: Duration,
    sighup: bool,
}

#[async_trait]
impl BackgroundService for ReloadWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = if self.sighup {
            match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!("cannot listen for SIGHUP ({e}); TLS certificates reload on file changes only");
                    None
                }
            }
        } else {
            None
        };
        // Said once the SIGHUP handler is in place: before that, SIGHUP would end the process.
        log::info!(
            "TLS: reloading {} and {} when they change (checked every {}s){}",
            self.certs.cert_path.display(),
            self.certs.key_path.display(),
            self.every.as_secs(),
            if hup.is_some() { " or on SIGHUP" } else { "" }
        );
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let certs = self.certs.clone();
            let why = if force { "SIGHUP" } else { "files changed" };
            match tokio::task::spawn_blocking(move || certs.reload(force)).await {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Reloaded(fp)) => log::info!(
                    "TLS certificate reloaded from {} ({why}): sha256 {fp}",
                    self.certs.cert_path.display()
                ),
                Ok(Reload::Failed(e)) => {
                    log::warn!("TLS certificate not reloaded ({why}): {e}; still serving the previous one")
                }
                Err(e) => log::warn!("TLS certificate reload did not run: {e}"),
            }
        }
    }
}

// === HTTP → HTTPS redirect listener ===

/// Answers every request on the plain port with 308 to the public origin plus the request's
/// path and query. The target host is always ours: taking it from `Host` would make this an
/// open redirect.
struct RedirectListener {
    origin: String,
    addr: SocketAddr,
    listener: Mutex<Option<std::net::TcpListener>>,
}

#[async_trait]
impl BackgroundService for RedirectListener {
    async fn start(&self, shutdown: ShutdownWatch) {
        log::info!("redirecting http://{} to {}", self.addr, self.origin);
        let origin: Arc<str> = self.origin.as_str().into();
        // Requests hyper cannot parse never get here: it answers those with 400 itself.
        let router = axum::Router::new().fallback(move |uri: Uri| {
            let origin = origin.clone();
            async move { redirect(&origin, &uri) }
        });
        let what = format!("redirect listener on {}", self.addr);
        super::admin::serve_bound(&self.listener, router, shutdown, &what).await;
    }
}

/// `origin` + path and query of an origin-form (or absolute-form, whose host is ignored)
/// request target; None for `*` and authority-form (CONNECT) targets.
pub fn redirect_target(origin: &str, uri: &Uri) -> Option<String> {
    let pq = uri.path_and_query()?.as_str();
    if !pq.starts_with('/') {
        return None;
    }
    Some(format!("{origin}{pq}"))
}

fn redirect(origin: &str, uri: &Uri) -> Response {
    match redirect_target(origin, uri).and_then(|t| HeaderValue::from_str(&t).ok()) {
        Some(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
            "This site is served over https.\n",
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, "Bad request\n").into_response(),
    }
}

// === nini-auth dev-cert ===

/// Validity of a development certificate: long enough not to get in the way, short enough
/// that a copied key does not stay trusted for years.
pub const DEV_CERT_DAYS: i64 = 90;

/// What `write_dev_cert` wrote.
#[derive(Debug, Clone)]
pub struct DevCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub hosts: Vec<String>,
    pub not_after: time::OffsetDateTime,
    /// The certificate, PEM.
    pub cert_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Something the operator typed (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Generating or writing failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// `host` as it goes into the certificate: an IP address (brackets allowed) or a DNS name
/// (lowercased; `*.` allowed as the first label).
fn dev_cert_host(host: &str) -> Result<String, String> {
    let h = host.trim();
    let bare = h.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(h);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = h.to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    let ok = !labels.is_empty()
        && name.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(name)
    } else {
        Err(format!("{host:?} is not a host name or IP address"))
    }
}

/// Writes a fresh self-signed certificate for `hosts` (`cert.pem`) and its key (`key.pem`,
/// mode 0600) into `out`, creating it. Existing files are replaced by rename, so a sidecar
/// serving them reloads a whole file, never a half-written one.
pub fn write_dev_cert(out: &Path, hosts: &[String]) -> Result<DevCert, DevCertError> {
    let mut names: Vec<String> = Vec::new();
    for h in hosts.iter().filter(|h| !h.trim().is_empty()) {
        let h = dev_cert_host(h).map_err(DevCertError::Usage)?;
        if !names.contains(&h) {
            names.push(h);
        }
    }
    if names.is_empty() {
        return Err(DevCertError::Usage("--hosts names no host".into()));
    }
    let failed = |what: &str, e: &dyn std::fmt::Display| DevCertError::Failed(format!("{what}: {e}"));
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(|e| DevCertError::Usage(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "nini-auth dev-cert");
    dn.push(
        rcgen::DnType::CommonName,
        format!("nini-auth development ({})", names[0]),
    );
    params.distinguished_name = dn;
    // A leaf, not a CA: trusting it lets it vouch for these names only. No keyUsage
    // extension: OpenSSL refuses a self-signed certificate whose keyUsage lacks certSign.
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind ours.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(DEV_CERT_DAYS);
    // A random serial: a regenerated certificate must not look like the one a browser cached.
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| DevCertError::Failed("no system randomness".into()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate().map_err(|e| failed("generating a key", &e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed("signing the certificate", &e))?;
    std::fs::create_dir_all(out).map_err(|e| failed(&format!("cannot create {}", out.display()), &e))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    let cert_pem = cert.pem();
    write_replacing(&key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| failed(&format!("cannot write {}", key_path.display()), &e))?;
    write_replacing(&cert_path, cert_pem.as_bytes(), 0o644)
        .map_err(|e| failed(&format!("cannot write {}", cert_path.display()), &e))?;
    Ok(DevCert {
        cert: cert_path,
        key: key_path,
        hosts: names,
        not_after: params.not_after,
        cert_pem,
    })
}

/// Writes a sibling temporary file created with `mode` (the key is never readable by
/// others, not even for a moment), then renames it over `path`.
fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `nini-auth dev-cert`: writes the pair and prints how to configure and trust it.
pub fn dev_cert_command(out: &Path, hosts: &[String]) -> ExitCode {
    let dc = match write_dev_cert(out, hosts) {
        Ok(dc) => dc,
        Err(e @ DevCertError::Usage(_)) => {
            eprintln!("dev-cert: {e}");
            return ExitCode::from(crate::config::EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("dev-cert: {e}");
            return ExitCode::FAILURE;
        }
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert, key) = (abs(&dc.cert), abs(&dc.key));
    let host = match dc.hosts[0].parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => dc.hosts[0].replace("*.", "app."),
    };
    let not_after = dc
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "Wrote a self-signed certificate for {} (valid until {not_after}):",
        dc.hosts.join(", ")
    );
    println!("  certificate: {}", cert.display());
    println!(
        "  private key: {} (mode 0600; keep it out of version control)",
        key.display()
    );
    println!();
    println!("# config.toml");
    println!("[server]");
    println!("listen = \"127.0.0.1:4180\"");
    println!("public_url = \"https://{host}:4180\"");
    println!("tls_cert = {:?}", cert.display().to_string());
    println!("tls_key = {:?}", key.display().to_string());
    println!();
    println!("# Redirect URI for the TikTok developer portal (or `mock-tiktok --redirect-uri`):");
    println!("#   https://{host}:4180{CALLBACK_PATH}");
    println!();
    println!("# Trust it (it is self-signed: only where you develop, and remove it when done):");
    println!(
        "#   curl:     curl --cacert {} https://{host}:4180/api/auth/session",
        cert.display()
    );
    println!(
        "#   Node:     NODE_EXTRA_CA_CERTS={} (for server-side fetches to the sidecar)",
        cert.display()
    );
    println!(
        "#   Chromium/Chrome on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t \"P,,\" -n nini-auth-dev -i {}",
        cert.display()
    );
    println!("#             (certutil is in libnss3-tools; restart the browser; remove with -D -n nini-auth-dev)");
    println!("#   Firefox:  Settings > Privacy & Security > Certificates > View Certificates > Servers > Import");
    println!(
        "#   Debian/Ubuntu system store: sudo cp {} /usr/local/share/ca-certificates/nini-auth-dev.crt && sudo update-ca-certificates",
        cert.display()
    );
    println!(
        "#   macOS:    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {}",
        cert.display()
    );
    println!("#   Windows:  certutil -user -addstore Root {}", cert.display());
    println!(
        "# It expires in {DEV_CERT_DAYS} days: run dev-cert again; a running nini-auth picks up the new files by itself."
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, sub: &str) -> DevCert {
        write_dev_cert(&dir.join(sub), &["localhost".into(), "127.0.0.1".into()]).expect("dev cert")
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("dir");
        let good = pair(dir.path(), "a");
        let other = pair(dir.path(), "b");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a pem file\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
        let bad_der = dir.path().join("bad-der.pem");
        std::fs::write(
            &bad_der,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (cert, key, names, says) in [
            (&garbage, &good.key, &garbage, "no \"BEGIN CERTIFICATE\""),
            (&good.cert, &garbage, &garbage, "no \"BEGIN PRIVATE KEY\""),
            (&missing, &good.key, &missing, "cannot read"),
            (&good.cert, &missing, &missing, "cannot read"),
            (&broken, &good.key, &broken, "not a PEM certificate chain"),
            (&bad_der, &good.key, &bad_der, "does not parse"),
            // The key file holds a certificate, not a key.
            (&good.cert, &good.cert, &good.cert, "no \"BEGIN PRIVATE KEY\""),
            (&good.cert, &other.key, &other.key, "does not belong"),
        ] {
            let e = load_pair(cert, key).expect_err("must fail");
            assert!(e.contains(&names.display().to_string()), "{e}");
            assert!(e.contains(says), "{e}");
        }
        assert!(load_pair(&good.cert, &good.key).is_ok());
    }

    #[test]
    fn reload_swaps_good_pairs_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().expect("dir");
        let first = pair(dir.path(), "live");
        let r = CertReloader::new(first.cert.clone(), first.key.clone()).expect("loads");
        let fp1 = r.fingerprint();
        assert_eq!(r.reload(false), Reload::Unchanged);
        // A forced reload of the same files is fine and changes nothing.
        assert_eq!(r.reload(true), Reload::Reloaded(fp1.clone()));

        // A certificate whose key has not been replaced yet: refused, old pair kept.
        let next = pair(dir.path(), "next");
        std::fs::copy(&next.cert, &first.cert).expect("copy");
        assert!(matches!(r.reload(false), Reload::Failed(e) if e.contains("does not belong")));
        assert_eq!(r.fingerprint(), fp1);
        // Reported once per change, not on every poll.
        assert_eq!(r.reload(false), Reload::Unchanged);
        // Then the key arrives.
        std::fs::copy(&next.key, &first.key).expect("copy");
        let Reload::Reloaded(fp2) = r.reload(false) else {
            panic!("should reload")
        };
        assert_ne!(fp1, fp2);
        assert_eq!(r.fingerprint(), fp2);
        assert_eq!(
            r.current().cert[0].as_ref(),
            CertificateDer::from_pem_slice(next.cert_pem.as_bytes())
                .expect("pem")
                .as_ref()
        );

        // Garbage and deletion leave the served pair alone.
        std::fs::write(&first.cert, "garbage").expect("write");
        assert!(matches!(r.reload(false), Reload::Failed(_)));
        std::fs::copy(&next.cert, &first.cert).expect("copy");
        std::fs::remove_file(&first.key).expect("rm");
        assert!(matches!(r.reload(false), Reload::Failed(e) if e.contains("cannot read")));
        assert_eq!(r.fingerprint(), fp2);
    }

    #[test]
    fn dev_cert_hosts_are_checked() {
        assert_eq!(dev_cert_host("LocalHost").as_deref(), Ok("localhost"));
        assert_eq!(dev_cert_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(dev_cert_host("*.dev.test").as_deref(), Ok("*.dev.test"));
        for bad in ["", "a b", "http://x", "-x.test", "x..test", "*.", "ex_ample.test"] {
            assert!(dev_cert_host(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("dir");
        assert!(matches!(
            write_dev_cert(dir.path(), &["a b".into()]),
            Err(DevCertError::Usage(_))
        ));
        assert!(matches!(write_dev_cert(dir.path(), &[]), Err(DevCertError::Usage(_))));
    }

    #[test]
    fn dev_cert_key_is_private_and_files_are_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let a = pair(dir.path(), "x");
        let mode = std::fs::metadata(&a.key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = pair(dir.path(), "x");
        assert_eq!(a.cert, b.cert);
        assert_ne!(a.cert_pem, b.cert_pem);
        assert!(load_pair(&b.cert, &b.key).is_ok());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("x")).expect("ls").collect();
        assert_eq!(left.len(), 2, "no temporary files left behind");
    }

    #[test]
    fn redirect_targets_keep_path_and_query_and_never_the_host() {
        let o = "https://app.example.com";
        let t = |s: &str| redirect_target(o, &s.parse::<Uri>().expect("uri"));
        assert_eq!(t("/a/b?c=d&e").as_deref(), Some("https://app.example.com/a/b?c=d&e"));
        assert_eq!(t("/").as_deref(), Some("https://app.example.com/"));
        assert_eq!(
            t("//evil.test/x").as_deref(),
            Some("https://app.example.com//evil.test/x")
        );
        assert_eq!(
            t("http://evil.test/x?y").as_deref(),
            Some("https://app.example.com/x?y")
        );
        assert_eq!(t("*"), None);
        assert_eq!(t("evil.test:443"), None);
    }
}
