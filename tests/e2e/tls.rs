//! TLS end to end, with certificates from `dev-cert`: a client trusting only that certificate
//! signs in over https (secure `__Host-` cookie, HSTS) while other clients are refused; the
//! certificate is swapped without a restart (file change in-process, SIGHUP in the binary,
//! a bad pair keeps the old one); the HTTP → HTTPS redirect listener; bad PEM stops the start.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nini_auth::config::CALLBACK_PATH;
use nini_auth::ops::free_port;
use nini_auth::ops::tls::{write_dev_cert, DevCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_nini-auth");

fn dev_cert(dir: &Path) -> DevCert {
    write_dev_cert(dir, &["localhost".into(), "127.0.0.1".into()]).expect("dev cert")
}

fn der(c: &DevCert) -> Vec<u8> {
    CertificateDer::from_pem_slice(c.cert_pem.as_bytes())
        .expect("pem")
        .to_vec()
}

/// SHA-256 as the sidecar logs it: uppercase hex pairs joined by colons.
fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A client whose only trust anchors are `certs`; a fresh client opens fresh connections, so
/// each one sees the certificate served at that moment.
fn client_trusting(certs: &[&DevCert]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .tls_info(true);
    for c in certs {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(c.cert_pem.as_bytes()).expect("cert"));
    }
    b.build().expect("client")
}

/// The leaf certificate the server presented for a request to `url`.
async fn served_cert(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, reqwest::Error> {
    let r = client.get(url).send().await?;
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("tls info");
    Ok(info.peer_certificate().expect("peer certificate").to_vec())
}

/// Waits (bounded) until new connections to `url` get `want`.
async fn wait_for_cert(certs: &[&DevCert], url: &str, want: &DevCert) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if served_cert(&client_trusting(certs), url).await.ok() == Some(der(want)) {
            return;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct TlsEnv {
    env: TestEnv,
    /// `https://127.0.0.1:port`
    base: String,
    cert: DevCert,
    cert_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TestEnv whose sidecar serves https with a fresh dev certificate; TikTok (the mock) knows
/// the https callback.
async fn start_tls(redirect_listen: Option<SocketAddr>) -> TlsEnv {
    let dir = tempfile::tempdir().expect("dir");
    let cert_dir = dir.path().join("certs");
    let cert = dev_cert(&cert_dir);
    let (c, k) = (cert.cert.clone(), cert.key.clone());
    let env = TestEnv::builder()
        .raw(move |r| {
            r.server.public_url = format!("https://{}", r.server.listen);
            r.server.tls_cert = Some(c);
            r.server.tls_key = Some(k);
            r.server.http_redirect_listen = redirect_listen.map(|a| a.to_string());
        })
        .start()
        .await;
    let base = format!("https://{}", env.sidecar().addr);
    let callback = format!("{base}{CALLBACK_PATH}");
    env.mock.update_config(|m| {
        for client in &mut m.clients {
            client.redirect_uris.push(callback.clone());
        }
    });
    TlsEnv {
        env,
        base,
        cert,
        cert_dir,
        _dir: dir,
    }
}

fn hsts(r: &Resp) -> &str {
    r.header("strict-transport-security").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn login_over_https_with_a_dev_certificate() {
    let t = start_tls(None).await;
    let b = Browser {
        client: client_trusting(&[&t.cert]),
        jar: Default::default(),
        accept_html: true,
    };

    // The served certificate is the configured one.
    let url = format!("{}/api/auth/csrf", t.base);
    assert_eq!(served_cert(&b.client, &url).await.expect("https"), der(&t.cert));

    let r = b.get(&format!("{}/dashboard", t.base)).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location(),
        Some(format!("{}/api/auth/signin?callbackUrl=%2Fdashboard", t.base).as_str())
    );
    assert_eq!(hsts(&r), "max-age=31536000; includeSubDomains");

    let start = b.start_response(&t.base, &format!("{}/dashboard", t.base)).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = url::Url::parse(start.location().expect("location")).expect("url");
    let q: std::collections::BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("redirect_uri"),
        Some(&format!("{}{CALLBACK_PATH}", t.base)),
        "TikTok is given the https callback"
    );
    assert!(
        start.set_cookie_prefixed("__Host-nini-auth.state.").is_some(),
        "{:?}",
        start.set_cookies()
    );

    // The mock TikTok is plain http on loopback; it sends the browser back to our https callback.
    let cb = b.consent(authorize.as_str(), "authorize").await;
    assert!(cb.starts_with(&format!("{}{CALLBACK_PATH}?", t.base)), "{cb}");
    let done = b.get(&cb).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(done.location(), Some(format!("{}/dashboard", t.base).as_str()));
    assert!(!hsts(&done).is_empty());
    let sc = done
        .set_cookie("__Host-nini-auth.session")
        .expect("secure session cookie");
    for attr in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(sc.contains(attr), "{sc} lacks {attr}");
    }
    assert!(!sc.contains("Domain"), "{sc}");

    // Signed in: the upstream sees the user, and that the browser came over https.
    let echo = b.echo(&format!("{}/dashboard/data", t.base), &[]).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    let e = echo.json();
    assert_eq!(upstream_header(&e, "x-nini-user-id").len(), 1);
    assert_eq!(upstream_header(&e, "x-forwarded-proto"), vec!["https".to_string()]);
    assert!(!hsts(&echo).is_empty());

    // Clients that do not trust this certificate are refused at the handshake: the public
    // roots, and a different self-signed certificate for the same names.
    let public_roots = reqwest::Client::builder().build().expect("client");
    assert!(public_roots.get(&url).send().await.is_err());
    let stranger = dev_cert(&t._dir.path().join("stranger"));
    assert!(client_trusting(&[&stranger]).get(&url).send().await.is_err());
    // Plain http on the TLS port gets no answer.
    assert!(reqwest::Client::new()
        .get(format!("http://{}/api/auth/csrf", t.env.sidecar().addr))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let t = start_tls(None).await;
    let url = format!("{}/api/auth/csrf", t.base);
    // One client kept across the swap: its pooled connection is not dropped by a reload.
    let kept = client_trusting(&[&t.cert]);
    assert_eq!(served_cert(&kept, &url).await.expect("https"), der(&t.cert));

    // `dev-cert` again into the same directory: new key, new serial, files renamed over.
    let next = dev_cert(&t.cert_dir);
    assert_ne!(der(&next), der(&t.cert));
    wait_for_cert(&[&t.cert, &next], &url, &next).await;
    assert!(
        client_trusting(&[&t.cert]).get(&url).send().await.is_err(),
        "new connections no longer get the old certificate"
    );
    // The connection opened before the swap was not dropped: the kept client reuses it (it
    // trusts only the old certificate, so a new connection would fail).
    let r = kept.get(&url).send().await.expect("the open connection still works");
    assert_eq!(r.status(), 200);
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("tls info");
    assert_eq!(info.peer_certificate(), Some(der(&t.cert).as_slice()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_listener_redirects_to_the_public_https_origin() {
    let redirect = free_port().expect("port");
    let t = start_tls(Some(redirect)).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // Path and query are kept; the Host header is never used for the target.
    let r = plain
        .get(format!("http://{redirect}/dashboard?tab=videos&x=%2F%3F"))
        .header("host", "evil.test")
        .send()
        .await
        .expect("redirect");
    assert_eq!(r.status().as_u16(), 308);
    let want = format!("{}/dashboard?tab=videos&x=%2F%3F", t.base);
    assert_eq!(r.headers()["location"].to_str().expect("ascii"), want);
    // 308 keeps the method and body: a form POST is redirected as a POST.
    let r = plain
        .post(format!("http://{redirect}/api/auth/signout"))
        .form(&[("csrfToken", "x")])
        .send()
        .await
        .expect("redirect");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().expect("ascii"),
        format!("{}/api/auth/signout", t.base)
    );

    // Raw request targets: absolute-form keeps only the path; `//host` stays a path on our
    // origin; `*`, CONNECT and garbage get 400.
    for (head, status, location) in [
        (
            "GET http://evil.test/x?y=1 HTTP/1.1\r\nHost: evil.test",
            308,
            Some("/x?y=1"),
        ),
        (
            "GET //evil.test/x HTTP/1.1\r\nHost: evil.test",
            308,
            Some("//evil.test/x"),
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: a", 400, None),
        ("CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443", 400, None),
        ("NOT AN HTTP REQUEST", 400, None),
        ("GET /a\x01b HTTP/1.1\r\nHost: a", 400, None),
    ] {
        let (got, headers) = raw_head(redirect, head).await;
        assert_eq!(got, status, "{head:?}: {headers}");
        if let Some(path) = location {
            let want = format!("location: {}{path}\r\n", t.base);
            assert!(headers.to_ascii_lowercase().contains(&want), "{head:?}: {headers}");
        }
    }

    // Following the redirect lands on the https sidecar (a browser: sent on to sign in).
    let r = client_trusting(&[&t.cert])
        .get(&want)
        .header("accept", "text/html")
        .send()
        .await
        .expect("https");
    assert_eq!(r.status().as_u16(), 302);
    assert!(r.headers().contains_key("strict-transport-security"));
}

/// Sends `head` byte for byte; returns the status and the response head.
async fn raw_head(addr: SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string() + "\r\n";
    (status, head)
}

#[test]
fn bad_certificate_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let good = dev_cert(&dir.path().join("good"));
    let other = dev_cert(&dir.path().join("other"));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("write");
    for (cert, key, named) in [
        (&garbage, &good.key, &garbage),
        (&good.cert, &garbage, &garbage),
        (&good.cert, &other.key, &other.key),
    ] {
        let cfg = write_config(dir.path(), free_port().expect("port"), cert, key, "");
        let (code, err) = run_to_exit(&cfg);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("cannot start: TLS:"), "{err}");
        assert!(err.contains(&named.display().to_string()), "{err}");
    }
    // A taken redirect port fails the start too, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let extra = format!("http_redirect_listen = \"{addr}\"");
    let cfg = write_config(dir.path(), free_port().expect("port"), &good.cert, &good.key, &extra);
    let (code, err) = run_to_exit(&cfg);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// Runs the binary with `cfg` until it exits; (exit code, stderr).
fn run_to_exit(cfg: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().expect("path")])
        .env(
            "NINI_AUTH_SECRET",
            nini_auth::crypto::generate_key_base64().expect("key"),
        )
        .env("TIKTOK_CLIENT_SECRET", "s")
        .output()
        .expect("run");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A config for the binary serving https on `listen`; `extra` goes into `[server]`.
fn write_config(dir: &Path, listen: SocketAddr, cert: &Path, key: &Path, extra: &str) -> PathBuf {
    let p = dir.join("tls.toml");
    std::fs::write(
        &p,
        format!(
            "[admin]\nlisten = \"\"\n[server]\nlisten = \"{listen}\"\npublic_url = \"https://{listen}\"\n\
             tls_cert = {:?}\ntls_key = {:?}\nshutdown_timeout = \"3s\"\n{extra}\n[storage]\ndatabase = {:?}\n\
             [tiktok]\nclient_key = \"k\"\n",
            cert.display().to_string(),
            key.display().to_string(),
            dir.join("tls.db").display().to_string()
        ),
    )
    .expect("write config");
    p
}

/// The binary's stderr, collected line by line by a thread.
struct Logs(Arc<Mutex<String>>);

impl Logs {
    fn follow(child: &mut Child) -> Logs {
        let text = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let t = text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = t.lock().expect("logs");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Logs(text)
    }

    /// Waits (bounded) until the log holds `needle` at or after byte `from`; returns the
    /// offset just past it.
    fn wait_for(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            {
                let s = self.0.lock().expect("logs");
                if let Some(at) = s.get(from..).and_then(|rest| rest.find(needle)) {
                    return from + at + needle.len();
                }
                assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("dir");
    let cert_dir = dir.path().join("certs");
    let first = dev_cert(&cert_dir);
    let listen = free_port().expect("port");
    let cfg = write_config(dir.path(), listen, &first.cert, &first.key, "");
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().expect("path")])
        .env(
            "NINI_AUTH_SECRET",
            nini_auth::crypto::generate_key_base64().expect("key"),
        )
        .env("TIKTOK_CLIENT_SECRET", "s")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let logs = Logs::follow(&mut child);
    // SIGHUP before the handler is installed would end the process: wait for it to say so.
    let mut at = logs.wait_for("or on SIGHUP", 0);
    let url = format!("https://{listen}/api/auth/csrf");
    assert_eq!(
        served_cert(&client_trusting(&[&first]), &url).await.expect("https"),
        der(&first)
    );

    // A broken certificate file: refused, logged, the old pair still served.
    std::fs::write(&first.cert, "garbage\n").expect("write");
    signal(&child, "-HUP");
    at = logs.wait_for("TLS certificate not reloaded (SIGHUP)", at);
    assert_eq!(
        served_cert(&client_trusting(&[&first]), &url)
            .await
            .expect("still served"),
        der(&first)
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP must not stop the process"
    );

    // A good new pair: served after SIGHUP, by the same process.
    let next = dev_cert(&cert_dir);
    signal(&child, "-HUP");
    // The forced SIGHUP reload logs the new fingerprint even when a poll got there first.
    logs.wait_for(&format!("(SIGHUP): sha256 {}", fingerprint(&der(&next))), at);
    assert_eq!(
        served_cert(&client_trusting(&[&next]), &url)
            .await
            .expect("new certificate"),
        der(&next)
    );
    assert!(child.try_wait().expect("wait").is_none());

    signal(&child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn dev_cert_command_writes_a_private_key_and_prints_how_to_use_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .args([
            "dev-cert",
            "--out",
            out_dir.to_str().expect("path"),
            "--hosts",
            "localhost,127.0.0.1,::1",
        ])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cert = out_dir.join("cert.pem");
    let key = out_dir.join("key.pem");
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    for want in [
        format!("tls_cert = {:?}", cert.display().to_string()),
        format!("tls_key = {:?}", key.display().to_string()),
        "public_url = \"https://localhost:4180\"".to_string(),
        format!("curl --cacert {}", cert.display()),
        "certutil".to_string(),
        format!("https://localhost:4180{CALLBACK_PATH}"),
    ] {
        assert!(stdout.contains(&want), "no {want:?} in:\n{stdout}");
    }
    nini_auth::ops::tls::load_pair(&cert, &key).expect("a usable pair");

    let bad = Command::new(BIN)
        .args([
            "dev-cert",
            "--out",
            out_dir.to_str().expect("path"),
            "--hosts",
            "not a host",
        ])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a host"));
}
