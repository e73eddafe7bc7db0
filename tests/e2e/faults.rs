//! Faults: TikTok answering garbage, HTML, cut-off JSON or nothing at all; the sidecar
//! killed with -9 in the middle of many sign-ins; the disk filling up under SQLite. Each
//! ends in a bounded, clean error for the request that needed the broken part, and nothing
//! for everyone else.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{Endpoint, Fault};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_answering_garbage_or_nothing_gives_bounded_errors_and_spares_signed_in_users() {
    let env = TestEnv::builder()
        .raw(|r| {
            r.tiktok.timeout = "1s".into();
            r.upstream.forward_access_token = true;
        })
        .start()
        .await;
    let (_, session, _) = signed_in(&env).await;
    let signed = api_with(&session);
    for (endpoint, fault, what) in [
        (Endpoint::Token, Fault::Garbage, "token: not JSON"),
        (Endpoint::Token, Fault::Html200, "token: an HTML page"),
        (Endpoint::Token, Fault::TruncatedJson, "token: cut-off JSON"),
        (
            Endpoint::Token,
            Fault::Delay(Duration::from_secs(30)),
            "token: a 30 s stall",
        ),
        (Endpoint::UserInfo, Fault::Garbage, "user info: not JSON"),
        (Endpoint::UserInfo, Fault::TruncatedJson, "user info: cut-off JSON"),
        (
            Endpoint::UserInfo,
            Fault::Delay(Duration::from_secs(30)),
            "user info: a 30 s stall",
        ),
    ] {
        env.mock.inject_fault(endpoint, fault, 1);
        let b = Browser::new();
        let authorize = b.start_signin(&env, "/dashboard").await;
        let cb = b.consent(&authorize, "authorize").await;
        let started = Instant::now();
        let r = b.get(&cb).await;
        let took = started.elapsed();
        assert!(
            r.status == 502 || r.status == 504,
            "{what}: status {} {}",
            r.status,
            r.body
        );
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert!(r.body.contains("data-error="), "{what}: an error page: {}", r.body);
        let rid = r.header("x-request-id").expect("request id");
        assert!(r.body.contains(rid), "{what}: the page shows the request id");
        assert!(b.cookie(session_cookie_name()).is_none(), "{what}: no session");
        // Meanwhile the signed-in user is unaffected.
        assert_eq!(signed.echo(&env.url("/api/user"), &[]).await.status, 200, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_hundred_sign_ins_loses_no_session_a_browser_received() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("kill.db");
    fn config(db: std::path::PathBuf, env: &TestEnv) -> impl FnOnce(std::net::SocketAddr) -> String + '_ {
        let (mock, upstream) = (env.mock.base_url(), env.upstream);
        move |listen: std::net::SocketAddr| {
            env.allow_redirect_uri(&format!("http://{listen}{}", nini_auth::config::CALLBACK_PATH));
            format!(
                "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\n[admin]\nlisten = \"\"\n\
                 [upstream]\nurl = \"http://{upstream}\"\n\
                 [tiktok]\nclient_key = \"{}\"\nauthorize_url = \"{mock}/v2/auth/authorize/\"\napi_base_url = \"{mock}\"\n\
                 [storage]\ndatabase = \"{}\"\n[limits]\nsignin_starts_per_minute = 1000\n",
                nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
                db.display()
            )
        }
    }
    let secret = env.keys.join(",");
    let envs = [
        ("NINI_AUTH_SECRET", secret.as_str()),
        ("TIKTOK_CLIENT_SECRET", nini_auth::mock_tiktok::DEMO_CLIENT_SECRET),
        ("RUST_LOG", "warn"),
    ];
    let (mut child, addr) = spawn_binary(dir.path(), "a", config(db.clone(), &env), &envs, Stdio::null());
    let base = format!("http://{addr}");

    // A hundred browsers sign in at once; each keeps the session cookie if its callback
    // answer arrives.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (base, received, done) = (base.clone(), received.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let b = Browser::new();
            let Ok(r) = tokio::time::timeout(Duration::from_secs(20), async {
                let authorize = b.start_at(&base, "/").await;
                let cb = b.consent(&authorize, "authorize").await;
                b.get(&cb).await
            })
            .await
            else {
                return;
            };
            if r.status == 302 {
                if let Some(s) = b.cookie(session_cookie_name()) {
                    received.lock().expect("lock").push(s);
                }
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // Kill it once some, not all, have their session.
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().expect("lock").len() < 30 {
        assert!(Instant::now() < deadline, "sign-ins did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&child, "-KILL");
    let _ = child.wait();
    for t in tasks {
        // Requests to a dead process fail (the tasks catch it); none hang past the bound.
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let received = received.lock().expect("lock").clone();
    assert!(received.len() >= 30, "{}", received.len());
    eprintln!(
        "{} of 100 sign-ins had their session cookie when the process was killed",
        received.len()
    );

    // The same database, a new process: every session a browser received works.
    let (_child, addr) = spawn_binary(dir.path(), "b", config(db, &env), &envs, Stdio::null());
    for s in &received {
        let r = api_with(s).echo(&format!("http://{addr}/api/user"), &[]).await;
        assert_eq!(r.status, 200, "a session whose cookie reached the browser was lost");
    }
}

/// Mounts a small tmpfs (needs root, as in CI; otherwise skipped, or failed under
/// scripts/test), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("dir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip_or_fail("skipping: cannot mount a small tmpfs to fill up (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_gives_clear_errors_fails_readiness_and_recovers() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let env = TestEnv::start().await;
    let admin = nini_auth::ops::free_port().expect("port");
    let db = disk.dir.path().join("full.db");
    let (mock, upstream) = (env.mock.base_url(), env.upstream);
    let config = |listen: std::net::SocketAddr| {
        env.allow_redirect_uri(&format!("http://{listen}{}", nini_auth::config::CALLBACK_PATH));
        format!(
            "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\n[admin]\nlisten = \"{admin}\"\n\
             [upstream]\nurl = \"http://{upstream}\"\n\
             [tiktok]\nclient_key = \"{}\"\nauthorize_url = \"{mock}/v2/auth/authorize/\"\napi_base_url = \"{mock}\"\n\
             [storage]\ndatabase = \"{}\"\n",
            nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
            db.display()
        )
    };
    let secret = env.keys.join(",");
    let envs = [
        ("NINI_AUTH_SECRET", secret.as_str()),
        ("TIKTOK_CLIENT_SECRET", nini_auth::mock_tiktok::DEMO_CLIENT_SECRET),
        ("RUST_LOG", "warn"),
    ];
    let work = tempfile::tempdir().expect("dir");
    let (mut child, addr) = spawn_binary(work.path(), "full", config, &envs, Stdio::null());
    let base = format!("http://{addr}");
    let ready = format!("http://{admin}/readyz");
    let b = Browser::new();
    let authorize = b.start_at(&base, "/").await;
    let cb = b.consent(&authorize, "authorize").await;
    assert_eq!(b.get(&cb).await.status, 302);
    let session = b.cookie(session_cookie_name()).expect("session");
    assert_eq!(Browser::api().get(&ready).await.status, 200);

    // Fill the disk.
    let filler = disk.dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    // A sign-in needs a write: a clear error, not a crash.
    let b2 = Browser::new();
    let authorize = b2.start_at(&base, "/").await;
    let cb = b2.consent(&authorize, "authorize").await;
    let r = b2.get(&cb).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("data-error=\"Unavailable\""), "{}", r.body);
    assert!(r.body.contains(r.header("x-request-id").expect("request id")));
    // Readiness now says so; the signed-in user still gets through (reads work).
    assert_eq!(Browser::api().get(&ready).await.status, 503);
    assert_eq!(
        api_with(&session).echo(&format!("{base}/api/user"), &[]).await.status,
        200
    );
    assert!(child.try_wait().expect("wait").is_none(), "no crash");

    // Space again: readiness recovers and sign-ins work.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Browser::api().get(&ready).await.status != 200 {
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b3 = Browser::new();
    let authorize = b3.start_at(&base, "/").await;
    let cb = b3.consent(&authorize, "authorize").await;
    assert_eq!(b3.get(&cb).await.status, 302);
    drop(child);
}
