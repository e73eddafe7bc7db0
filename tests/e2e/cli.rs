//! The real binary: config errors name their keys and exit 64, `check` prints the
//! effective config with secrets redacted and the redirect URI, `keygen`, and prompt exit on
//! SIGTERM and SIGINT.

use std::process::Stdio;

use crate::support::{read_stderr, run_binary, signal, spawn_binary, write_file, RunOut};

#[test]
fn bad_config_lists_every_problem_with_its_key_and_exits_64() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = write_file(
        dir.path(),
        "bad.toml",
        r#"
[server]
listen = "nowhere"
public_url = "ftp://x"
[upstream]
url = "http://127.0.0.1:3000/app"
[tiktok]
scopes = ["user.info.basic", "user.info.everything"]
pkce = "plain"
[session]
lifetime = "forever"
[routes]
protected = ["dashboard"]
"#,
    );
    let RunOut { code, stderr: err, .. } = run_binary(&["check", "--config", cfg.to_str().expect("path")], &[]);
    assert_eq!(code, 64, "{err}");
    for key in [
        "server.listen",
        "server.public_url",
        "upstream.url",
        "tiktok.client_key",
        "tiktok.client_secret",
        "tiktok.scopes",
        "tiktok.pkce",
        "session.lifetime",
        "secrets.encryption_keys",
        "routes.protected",
    ] {
        assert!(err.contains(&format!("- {key}:")), "missing {key} in:\n{err}");
    }
    assert!(
        err.contains("TIKTOK_CLIENT_SECRET") && err.contains("NINI_AUTH_SECRET"),
        "names the env vars: {err}"
    );

    // Unknown keys are errors too, naming the key.
    let typo = write_file(
        dir.path(),
        "typo.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n",
    );
    let RunOut { code, stderr: err, .. } = run_binary(&["check", "--config", typo.to_str().expect("path")], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("server.listn") && err.contains("unknown field"), "{err}");
    let section = write_file(dir.path(), "section.toml", "[sever]\nlisten = \"x\"\n");
    let RunOut { code, stderr: err, .. } = run_binary(&["check", "--config", section.to_str().expect("path")], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("sever"), "{err}");
    // Missing file.
    let RunOut { code, stderr: err, .. } = run_binary(&["run", "--config", "/nonexistent/nini.toml"], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/nini.toml"));
}

#[test]
fn check_redacts_secrets_and_prints_redirect_uri() {
    let dir = tempfile::tempdir().expect("dir");
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let secret_file = write_file(dir.path(), "secret", "file-secret-value\n");
    let cfg = write_file(
        dir.path(),
        "ok.toml",
        &format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[tiktok]\nclient_key = \"ck-123\"\nclient_secret_file = \"{}\"\n",
            secret_file.display()
        ),
    );
    let RunOut {
        code,
        stdout: out,
        stderr: err,
    } = run_binary(
        &["check", "--config", cfg.to_str().expect("path")],
        &[
            ("NINI_AUTH_SECRET", &key),
            ("DATABASE_URL", &format!("sqlite://{}/auth.db", dir.path().display())),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("https://app.example.com/api/auth/callback/tiktok"),
        "{out}"
    );
    assert!(out.contains("ck-123"));
    assert!(
        !out.contains("file-secret-value") && !out.contains(&key),
        "secrets leaked:\n{out}"
    );
    assert!(
        out.contains(&format!("{}/auth.db", dir.path().display())),
        "DATABASE_URL overrides: {out}"
    );
    // Env overrides the file's client key.
    let RunOut { code, stdout: out, .. } = run_binary(
        &["check", "--config", cfg.to_str().expect("path")],
        &[("NINI_AUTH_SECRET", &key), ("TIKTOK_CLIENT_KEY", "from-env")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("from-env") && !out.contains("ck-123"));
    // The shipped config.toml is valid once secrets are provided.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let RunOut {
        code,
        stdout: out,
        stderr: err,
    } = run_binary(
        &["check", "--config", shipped],
        &[
            ("NINI_AUTH_SECRET", &key),
            ("TIKTOK_CLIENT_KEY", "k"),
            ("TIKTOK_CLIENT_SECRET", "s"),
        ],
    );
    assert_eq!(code, 0, "shipped config.toml: {err}");
    assert!(out.contains("http://localhost:4180/api/auth/callback/tiktok"));
}

#[test]
fn keygen_prints_a_32_byte_key() {
    use base64::Engine;
    let RunOut { code, stdout: out, .. } = run_binary(&["keygen"], &[]);
    assert_eq!(code, 0);
    let k = base64::engine::general_purpose::STANDARD
        .decode(out.trim())
        .expect("base64");
    assert_eq!(k.len(), 32);
    let RunOut { stdout: out2, .. } = run_binary(&["keygen"], &[]);
    assert_ne!(out, out2);
}

/// The binary on a free port with a minimal config (upstream left at its default), logging at
/// info to a piped stderr.
fn start_binary(dir: &std::path::Path) -> (crate::support::Kill, std::net::SocketAddr) {
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let config = |listen: std::net::SocketAddr| {
        format!(
            "[admin]\nlisten = \"\"\n[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\nshutdown_timeout = \"3s\"\n[storage]\ndatabase = \"{}\"\n[tiktok]\nclient_key = \"k\"\n",
            dir.join("run.db").display()
        )
    };
    let envs = [
        ("NINI_AUTH_SECRET", key.as_str()),
        ("TIKTOK_CLIENT_SECRET", "s"),
        ("RUST_LOG", "info"),
    ];
    spawn_binary(dir, "run", config, &envs, Stdio::piped())
}

fn wait_exit(child: &mut std::process::Child, within: std::time::Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_promptly_and_logs_say_where() {
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().expect("dir");
        let (mut child, listen) = start_binary(dir.path());
        let started = std::time::Instant::now();
        signal(&child, sig);
        let st = wait_exit(&mut child, std::time::Duration::from_secs(10));
        assert!(st.success(), "{sig}: exit {st:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{sig} took {:?}",
            started.elapsed()
        );
        let err = read_stderr(&mut child);
        assert!(err.contains(&format!("listening on {listen}")), "{err}");
        assert!(err.contains("forwarding to http://127.0.0.1:3000/"), "{err}");
        assert!(dir.path().join("run.db").exists());
    }
}

#[test]
fn a_taken_port_is_a_clear_start_error() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let cfg = write_file(
        dir.path(),
        "taken.toml",
        &format!(
            "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"\"\n[storage]\ndatabase = \"{}\"\n",
            dir.path().join("t.db").display()
        ),
    );
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let RunOut { code, stderr: err, .. } = run_binary(
        &["run", "--config", cfg.to_str().expect("path")],
        &[
            ("NINI_AUTH_SECRET", &key),
            ("TIKTOK_CLIENT_KEY", "k"),
            ("TIKTOK_CLIENT_SECRET", "s"),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mock_tiktok_command_serves_the_oauth_api() {
    let addr = nini_auth::ops::free_port().expect("port");
    let child = crate::support::bin_command()
        .args([
            "mock-tiktok",
            "--listen",
            &addr.to_string(),
            "--redirect-uri",
            "http://localhost:9999/cb",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mock-tiktok");
    let _guard = crate::support::Kill(child);
    crate::support::wait_for_port(addr, std::time::Duration::from_secs(15), "mock-tiktok");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("http://{addr}");
    // The consent page for the registered redirect URI; an unregistered one is refused there.
    let ok = c
        .get(format!(
            "{base}/v2/auth/authorize/?client_key=mock-client-key&response_type=code&scope=user.info.basic&redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcb&state=s"
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.expect("html").contains("id=\"authorize\""));
    let bad = c
        .get(format!(
            "{base}/v2/auth/authorize/?client_key=mock-client-key&response_type=code&scope=user.info.basic&redirect_uri=http%3A%2F%2Fevil%2Fcb&state=s"
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(bad.status(), 400);
    // TikTok-style OAuth error body from the token endpoint.
    let t = c
        .post(format!("{base}/v2/oauth/token/"))
        .form(&[("client_key", "x")])
        .send()
        .await
        .expect("token");
    let body: serde_json::Value = t.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
}
