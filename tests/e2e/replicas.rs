//! Many replicas on one PostgreSQL database: real `nini-auth` processes sharing a database,
//! the mock TikTok and the demo upstream, all on loopback. Any replica finishes any sign-in;
//! a session made on one works on the others; sign-out, `sessions revoke`, a device ended
//! from the devices list and the deauthorization webhook reach every replica within a
//! second (measured); one refresh across replicas, even when its holder is killed; three
//! replicas migrate an empty database at once; the database going away and coming back;
//! `migrate-store` from a live SQLite deployment.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nini_auth::mock_tiktok::{MockConfig, MockTikTok, DEMO_CLIENT_KEY, DEMO_CLIENT_SECRET};
use nini_auth::ops::free_port;
use nini_auth::store::Store;

use crate::pg;
use crate::support::*;

/// The shared parts of a multi-replica deployment: one public URL (the address a front
/// proxy would have), one database, one mock TikTok, one upstream, one key ring.
pub struct Cluster {
    pub mock: MockTikTok,
    pub upstream: SocketAddr,
    upstream_task: tokio::task::JoinHandle<()>,
    /// What browsers see (nginx in front, or just a name when tests talk to replicas directly).
    pub public: SocketAddr,
    pub database: String,
    pub keys: Vec<String>,
    pub dir: tempfile::TempDir,
    _db: Option<pg::TestDb>,
}

/// One running replica.
pub struct Replica {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub process: Kill,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.mock.shutdown();
        self.upstream_task.abort();
    }
}

impl Cluster {
    /// A cluster on a fresh database of the shared test server; None (after one skip line)
    /// when there is no PostgreSQL.
    pub async fn start(test: &str, mock: impl FnOnce(&mut MockConfig)) -> Option<Cluster> {
        let server = pg::server_or_skip(test).await?;
        let db = server.create_db().await;
        let url = db.url.clone();
        Some(Cluster::on(url, Some(db), mock).await)
    }

    /// A cluster on `database` (any URL the sidecar accepts).
    pub async fn on(database: String, db: Option<pg::TestDb>, mock: impl FnOnce(&mut MockConfig)) -> Cluster {
        let public = free_port().expect("port");
        let mut mcfg = MockConfig::demo(vec![format!("http://{public}{}", nini_auth::config::CALLBACK_PATH)]);
        mock(&mut mcfg);
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let mock = MockTikTok::start(ml, mcfg).await.expect("mock");
        let ul = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let (upstream, upstream_task) = nini_auth::cli::demo::serve_app_with_static(ul, None)
            .await
            .expect("upstream");
        Cluster {
            mock,
            upstream,
            upstream_task,
            public,
            database,
            keys: vec![nini_auth::crypto::generate_key_base64().expect("key")],
            dir: tempfile::tempdir().expect("dir"),
            _db: db,
        }
    }

    fn config(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        format!(
            "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{}\"\nshutdown_timeout = \"2s\"\n\
             trusted_proxies = [\"127.0.0.1\"]\n\
             [admin]\nlisten = \"{admin}\"\n\
             [upstream]\nurl = \"http://{}\"\nforward_access_token = true\n\
             [tiktok]\nclient_key = \"{DEMO_CLIENT_KEY}\"\n\
             scopes = [\"user.info.basic\", \"user.info.profile\", \"user.info.stats\", \"video.list\"]\n\
             authorize_url = \"{}/v2/auth/authorize/\"\napi_base_url = \"{}\"\ntimeout = \"3s\"\n\
             [storage]\ndatabase = \"{}\"\nconnect_timeout = \"1s\"\nstatement_timeout = \"2s\"\n",
            self.public,
            self.upstream,
            self.mock.base_url(),
            self.mock.base_url(),
            self.database
        )
    }

    /// Starts a replica process (returns when its port accepts connections).
    pub fn replica(&self, name: &str) -> Replica {
        let admin = free_port().expect("port");
        let secret = self.keys.join(",");
        let envs = [
            ("NINI_AUTH_SECRET", secret.as_str()),
            ("TIKTOK_CLIENT_SECRET", DEMO_CLIENT_SECRET),
            ("RUST_LOG", "warn"),
        ];
        let (process, addr) = spawn_binary(self.dir.path(), name, |l| self.config(l, admin), &envs, Stdio::null());
        Replica { addr, admin, process }
    }

    /// A store on the cluster's database, as another replica would open it.
    pub async fn store(&self) -> Arc<dyn Store> {
        let cfg = nini_auth::config::storage_from_url("db", &self.database).expect("config");
        nini_auth::store::open(&cfg, nini_auth::crypto::KeyRing::from_base64(&self.keys).expect("ring"))
            .await
            .expect("open store")
    }

    /// Rewrites a URL of the public address to `replica` (as a front proxy would route it).
    pub fn via(&self, url: &str, replica: &Replica) -> String {
        url.replace(&format!("http://{}", self.public), &format!("http://{}", replica.addr))
    }
}

/// Signs in through `start_on` and finishes on `finish_on`; returns the browser and its
/// session cookie.
async fn sign_in_across(c: &Cluster, start_on: &Replica, finish_on: &Replica) -> (Browser, String) {
    let b = Browser::new();
    let authorize = b.start_at(&start_on.url(""), "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let done = b.get(&c.via(&cb, finish_on)).await;
    assert_eq!(done.status, 302, "callback on the other replica: {}", done.body);
    assert!(
        done.location().is_some_and(|l| l.ends_with("/dashboard")),
        "{:?}",
        done.location()
    );
    let session = b.cookie(session_cookie_name()).expect("session cookie");
    (b, session)
}

async fn user_on(replica: &Replica, session: &str) -> (u16, Option<String>) {
    let r = api_with(session).echo(&replica.url("/api/user"), &[]).await;
    let uid = (r.status == 200)
        .then(|| upstream_header(&r.json(), "x-nini-user-id").pop())
        .flatten();
    (r.status, uid)
}

/// Polls (bounded) until `replica` refuses `session`; returns how long that took.
async fn refused_within(replica: &Replica, session: &str, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = user_on(replica, session).await;
        if status == 401 {
            return started.elapsed();
        }
        assert_eq!(status, 200, "{what}");
        assert!(started.elapsed() < limit, "{what}: still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_replica_finishes_any_sign_in_and_serves_any_session() {
    let Some(c) = Cluster::start("replicas::any_replica_finishes_any_sign_in", |_| {}).await else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    let (_, on_b) = sign_in_across(&c, &a, &b).await;
    let (_, on_a) = sign_in_across(&c, &b, &a).await;
    for session in [&on_b, &on_a] {
        let (sa, ua) = user_on(&a, session).await;
        let (sb, ub) = user_on(&b, session).await;
        assert_eq!((sa, sb), (200, 200));
        assert_eq!(ua, ub, "the same user on both replicas");
        assert!(ua.is_some());
    }
    // The state of a sign-in is used once, whichever replica sees the replay.
    let br = Browser::new();
    let authorize = br.start_at(&a.url(""), "/").await;
    let copied = br.cookies_prefixed("nini-auth.state.");
    let cb = br.consent(&authorize, "authorize").await;
    assert_eq!(br.get(&c.via(&cb, &a)).await.status, 302);
    let replay = Browser::new();
    replay.set_cookie(&copied[0].0, &copied[0].1);
    assert_eq!(
        replay.get(&c.via(&cb, &b)).await.status,
        400,
        "replayed on the other replica"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_the_other_replica_within_a_second() {
    let Some(c) = Cluster::start("replicas::revocations_reach_the_other_replica", |_| {}).await else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    let limit = Duration::from_secs(1);

    // Sign-out on B, session cached on A.
    let (browser, session) = sign_in_across(&c, &a, &b).await;
    assert_eq!(user_on(&a, &session).await.0, 200);
    let page = browser.get(&b.url("/api/auth/signout")).await;
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");
    let r = browser
        .post_form(&b.url("/api/auth/signout"), &[("csrfToken", &csrf)])
        .await;
    assert_eq!(r.status, 302);
    let t = refused_within(&a, &session, limit, "sign-out on B").await;
    eprintln!("sign-out on B refused on A after {t:?}");

    // `nini-auth sessions revoke` against the database.
    let (_, session) = sign_in_across(&c, &a, &a).await;
    assert_eq!(user_on(&b, &session).await.0, 200);
    let cfg = write_file(
        c.dir.path(),
        "admin.toml",
        &format!(
            "[storage]\ndatabase = \"{}\"\n[tiktok]\nclient_key = \"k\"\n",
            c.database
        ),
    );
    let secret = c.keys.join(",");
    let out = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            run_binary(
                &[
                    "--config",
                    cfg.to_str().expect("path"),
                    "sessions",
                    "revoke",
                    "--all",
                    "--json",
                ],
                &[("NINI_AUTH_SECRET", secret.as_str()), ("TIKTOK_CLIENT_SECRET", "s")],
            )
        })
        .await
        .expect("join")
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = refused_within(&b, &session, limit, "sessions revoke").await;
    eprintln!("sessions revoke refused on B after {t:?}");

    // TikTok's deauthorization webhook, delivered to B.
    let (_, session) = sign_in_across(&c, &a, &a).await;
    assert_eq!(user_on(&a, &session).await.0, 200);
    assert_eq!(deliver_deauthorization(&b.url(""), unix_now()).await, 200);
    let t = refused_within(&a, &session, limit, "webhook on B").await;
    eprintln!("webhook on B refused on A after {t:?}");
}

/// A device ended from the devices list on one replica is refused by the other within a
/// second, while the device that ended it stays signed in on both.
#[tokio::test(flavor = "multi_thread")]
async fn ending_a_device_on_one_replica_reaches_the_other_within_a_second() {
    let Some(c) = Cluster::start("replicas::ending_a_device_reaches_the_other", |_| {}).await else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    let (phone, on_phone) = sign_in_across(&c, &a, &a).await;
    let (_, on_laptop) = sign_in_across(&c, &b, &b).await;
    // The laptop's session is cached on B before it is ended through A.
    assert_eq!(user_on(&b, &on_laptop).await.0, 200);
    // Both replicas list both devices: the sessions live in the shared database.
    for r in [&a, &b] {
        let l = api_with(&on_phone).get(&r.url("/api/auth/sessions")).await;
        assert_eq!(l.status, 200, "{}", l.body);
        assert_eq!(l.json()["sessions"].as_array().map(Vec::len), Some(2), "{}", l.body);
    }
    let l = api_with(&on_laptop).get(&b.url("/api/auth/sessions")).await.json();
    let laptop_id = l["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|d| d["current"] == true))
        .and_then(|d| d["id"].as_str())
        .expect("current id")
        .to_string();
    let page = phone.get(&a.url("/api/auth/devices")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");
    let r = phone
        .post_form(
            &a.url("/api/auth/sessions/revoke"),
            &[("csrfToken", csrf.as_str()), ("id", laptop_id.as_str())],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let t = refused_within(&b, &on_laptop, Duration::from_secs(1), "device ended on A").await;
    eprintln!("device ended on A refused on B after {t:?}");
    assert_eq!(user_on(&a, &on_phone).await.0, 200);
    assert_eq!(user_on(&b, &on_phone).await.0, 200);
}

/// Identity is checked at the upgrade only: a WebSocket on one replica must end when its
/// session ends through another replica, the admin CLI or TikTok's webhook.
#[tokio::test(flavor = "multi_thread")]
async fn websockets_close_on_every_replica() {
    use crate::websockets::{echoes, ended_within, open_ws};
    let Some(c) = Cluster::start("replicas::websockets_close_on_every_replica", |_| {}).await else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    let limit = Duration::from_secs(3);

    // Socket on A; sign-out on B.
    let (browser, session) = sign_in_across(&c, &a, &a).await;
    let mut ws = open_ws(&a.url(""), "/dashboard/ws", Some(&session)).await;
    let mut anon = open_ws(&a.url(""), "/ws", None).await;
    let page = browser.get(&b.url("/api/auth/signout")).await;
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");
    let r = browser
        .post_form(&b.url("/api/auth/signout"), &[("csrfToken", &csrf)])
        .await;
    assert_eq!(r.status, 302);
    let t = ended_within(&mut ws, limit, "sign-out on B").await;
    eprintln!("sign-out on B ended the WebSocket on A after {t:?}");
    assert!(echoes(&mut anon, "anonymous sockets stay").await);

    // Socket on B; `nini-auth sessions revoke --all` against the database.
    let (_, session) = sign_in_across(&c, &a, &b).await;
    let mut ws = open_ws(&b.url(""), "/dashboard/ws", Some(&session)).await;
    let cfg = write_file(
        c.dir.path(),
        "admin.toml",
        &format!(
            "[storage]\ndatabase = \"{}\"\n[tiktok]\nclient_key = \"k\"\n",
            c.database
        ),
    );
    let secret = c.keys.join(",");
    let out = tokio::task::spawn_blocking(move || {
        run_binary(
            &["--config", cfg.to_str().expect("path"), "sessions", "revoke", "--all"],
            &[("NINI_AUTH_SECRET", secret.as_str()), ("TIKTOK_CLIENT_SECRET", "s")],
        )
    })
    .await
    .expect("join");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = ended_within(&mut ws, limit, "sessions revoke").await;
    eprintln!("sessions revoke ended the WebSocket on B after {t:?}");

    // Socket on B; TikTok's deauthorization webhook delivered to A.
    let (_, session) = sign_in_across(&c, &b, &b).await;
    let mut ws = open_ws(&b.url(""), "/dashboard/ws", Some(&session)).await;
    assert_eq!(deliver_deauthorization(&a.url(""), unix_now()).await, 200);
    let t = ended_within(&mut ws, limit, "webhook on A").await;
    eprintln!("the webhook on A ended the WebSocket on B after {t:?}");
    assert!(echoes(&mut anon, "still open").await);
}

/// How many invalidations from other processes `replica` has applied (its metric).
async fn invalidations_applied(replica: &Replica) -> u64 {
    let text = Browser::api()
        .get(&format!("http://{}/metrics", replica.admin))
        .await
        .body;
    text.lines()
        .find_map(|l| l.strip_prefix("nini_auth_invalidations_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("nini_auth_invalidations_total")
}

/// Makes the user's stored access token due for refresh (still valid at TikTok): obtained
/// two hours ago with a minute left, so the refresh margin applies. Returns once every
/// replica has dropped what it had cached about the user.
async fn make_token_due(c: &Cluster, uid: &str, replicas: &[&Replica]) {
    let mut before = Vec::new();
    for r in replicas {
        before.push(invalidations_applied(r).await);
    }
    let store = c.store().await;
    let mut t = store.tokens(uid).await.expect("read").expect("tokens");
    let now = unix_now();
    t.access_expires_at = now + 60;
    t.obtained_at = now + 60 - 7200;
    let refresh = t.refresh_token.clone();
    assert!(store.save_refreshed(uid, &refresh, &t, now).await.expect("write"));
    let deadline = Instant::now() + Duration::from_secs(5);
    for (r, was) in replicas.iter().zip(before) {
        while invalidations_applied(r).await <= was {
            assert!(Instant::now() < deadline, "a replica never heard of the change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_across_replicas() {
    let Some(c) = Cluster::start("replicas::one_refresh_across_replicas", |m| {
        m.access_ttl_s = 7200;
        m.refresh_delay_ms = 300;
    })
    .await
    else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    let (_, session) = sign_in_across(&c, &a, &b).await;
    let uid = user_on(&a, &session).await.1.expect("uid");
    make_token_due(&c, &uid, &[&a, &b]).await;

    let api = api_with(&session);
    let urls: Vec<String> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                a.url(&format!("/api/user?i={i}"))
            } else {
                b.url(&format!("/api/user?i={i}"))
            }
        })
        .collect();
    let results = join_all(urls.iter().map(|u| api.echo(u, &[])).collect()).await;
    let mut tokens = std::collections::BTreeSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(upstream_header(&r.json(), "x-nini-access-token").pop().expect("token"));
    }
    assert_eq!(c.mock.refresh_calls(), 1, "one refresh across two replicas");
    assert_eq!(tokens.len(), 1, "both replicas forward the rotated token: {tokens:?}");
    let stored = c.store().await.tokens(&uid).await.expect("read").expect("tokens");
    assert!(tokens.contains(&stored.access_token));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_holder_killed_mid_refresh_does_not_block_the_others() {
    let Some(c) = Cluster::start("replicas::a_refresh_holder_killed", |m| m.access_ttl_s = 7200).await else {
        return;
    };
    let (mut a, b) = (c.replica("a"), c.replica("b"));
    let (_, session) = sign_in_across(&c, &a, &b).await;
    let uid = user_on(&a, &session).await.1.expect("uid");
    make_token_due(&c, &uid, &[&a, &b]).await;

    // A takes the refresh lock and hangs inside TikTok's token endpoint.
    c.mock.update_config(|m| m.refresh_delay_ms = 60_000);
    let stuck = {
        let api = api_with(&session);
        let url = a.url("/api/user");
        tokio::spawn(async move { api.echo(&url, &[]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.mock.refresh_calls() == 0 {
        assert!(Instant::now() < deadline, "A never called TikTok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9: no release, no goodbye; its database connections die with it.
    signal(&a.process, "-KILL");
    let _ = a.process.wait();
    stuck.abort();
    c.mock.update_config(|m| m.refresh_delay_ms = 0);

    let started = Instant::now();
    let r = api_with(&session).echo(&b.url("/api/user"), &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let forwarded = upstream_header(&r.json(), "x-nini-access-token").pop().expect("token");
    let stored = c.store().await.tokens(&uid).await.expect("read").expect("tokens");
    assert_eq!(forwarded, stored.access_token, "B refreshed and stored the result");
    assert!(took < Duration::from_secs(5), "B waited {took:?} for a dead holder");
    eprintln!("B refreshed {took:?} after A was killed holding the lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_migrate_an_empty_database_at_once() {
    let Some(c) = Cluster::start("replicas::three_replicas_migrate", |_| {}).await else {
        return;
    };
    // Started together: each runs its migrations on the empty database at start-up.
    let spawned: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let admin = free_port().expect("port");
            let listen = free_port().expect("port");
            let cfg = write_file(c.dir.path(), &format!("{n}.toml"), &c.config(listen, admin));
            let secret = c.keys.join(",");
            let child = bin_command()
                .args(["run", "--config", cfg.to_str().expect("path")])
                .envs([
                    ("NINI_AUTH_SECRET", secret.as_str()),
                    ("TIKTOK_CLIENT_SECRET", DEMO_CLIENT_SECRET),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            (Kill(child), listen, admin)
        })
        .collect();
    for (child, listen, admin) in &spawned {
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(listen, Duration::from_millis(200)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "a replica did not start");
            let mut probe = std::process::Command::new("kill");
            let alive = probe
                .args(["-0", &child.id().to_string()])
                .status()
                .map(|s| s.success());
            assert_eq!(alive.ok(), Some(true), "a replica exited during start-up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = Browser::api().get(&format!("http://{admin}/readyz")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let client = pg::connect(&c.database).await.expect("connect");
    let versions: Vec<i32> = client
        .query("SELECT version FROM nini_auth.schema_migrations ORDER BY version", &[])
        .await
        .expect("migrations table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want: Vec<i32> = (1..=versions.len() as i32).collect();
    want.dedup();
    assert!(!versions.is_empty());
    assert_eq!(versions, want, "each migration applied exactly once");
    // And they all work.
    let (a, b) = (c.replica("d"), c.replica("e"));
    let (_, session) = sign_in_across(&c, &a, &b).await;
    for (_, listen, _) in &spawned {
        let r = api_with(&session).echo(&format!("http://{listen}/api/user"), &[]).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_fails_fast_keeps_cached_sessions_and_recovers() {
    let Some(cluster) = pg::own_cluster_or_skip("replicas::database_down").await else {
        return;
    };
    let client = pg::connect(&cluster.admin_url()).await.expect("connect");
    client.batch_execute("CREATE DATABASE nini").await.expect("create db");
    drop(client);
    let c = Cluster::on(cluster.url("nini"), None, |_| {}).await;
    let a = c.replica("a");
    let (_, session) = sign_in_across(&c, &a, &a).await;
    assert_eq!(user_on(&a, &session).await.0, 200);
    let ready = format!("http://{}/readyz", a.admin);
    assert_eq!(Browser::api().get(&ready).await.status, 200);

    cluster.stop().await;
    // Readiness fails, fast.
    let started = Instant::now();
    let r = Browser::api().get(&ready).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "readyz took {:?}",
        started.elapsed()
    );
    // A cached session keeps working.
    assert_eq!(
        user_on(&a, &session).await.0,
        200,
        "cached session while the database is down"
    );
    // What needs the database answers 503 quickly, with the request id.
    let started = Instant::now();
    let r = Browser::api().start_response(&a.url(""), "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains(r.header("x-request-id").expect("request id")),
        "{}",
        r.body
    );
    // A session cookie this deployment could have issued (its MAC verifies) that is not in
    // the cache: only the database could say whether it is live.
    let ring = nini_auth::crypto::KeyRing::from_base64(&c.keys).expect("ring");
    let (unknown, _) = ring.new_session_token().expect("token");
    let stranger = api_with(&unknown).get(&a.url("/api/user")).await;
    assert_eq!(
        stranger.status, 503,
        "an unknown session cannot be checked: {}",
        stranger.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    cluster.start().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Browser::api().get(&ready).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, fresh) = sign_in_across(&c, &a, &a).await;
    assert_eq!(user_on(&a, &fresh).await.0, 200, "sign-in works again");
    assert_eq!(user_on(&a, &session).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_unreachable_at_start_is_reported_by_key_without_the_password() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port().expect("port");
    let cfg = write_file(
        dir.path(),
        "c.toml",
        &format!(
            "[tiktok]\nclient_key = \"k\"\n[admin]\nlisten = \"\"\n[storage]\n\
             database = \"postgres://nini:hunter2@127.0.0.1:{}/nini\"\nconnect_timeout = \"1s\"\n",
            port.port()
        ),
    );
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let out = tokio::task::spawn_blocking(move || {
        run_binary(
            &["run", "--config", cfg.to_str().expect("path")],
            &[("NINI_AUTH_SECRET", key.as_str()), ("TIKTOK_CLIENT_SECRET", "s")],
        )
    })
    .await
    .expect("join");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("storage.database"), "{}", out.stderr);
    assert!(out.stderr.contains("127.0.0.1"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_store_twice_from_a_live_sqlite_deployment() {
    let Some(server) = pg::server_or_skip("replicas::migrate_store_twice").await else {
        return;
    };
    let env = TestEnv::start().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(signed_in(&env).await.1);
    }
    let uid = signed_in(&env).await;
    sessions.push(uid.1.clone());
    let db = server.create_db().await;
    let migrate = |src: &Path, dst: &str| {
        let (src, dst) = (format!("sqlite:{}", src.display()), dst.to_string());
        tokio::task::spawn_blocking(move || run_binary(&["migrate-store", "--from", &src, "--to", &dst, "--json"], &[]))
    };
    let first = migrate(&env.raw_db, &db.url).await.expect("join");
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let r = first.json();
    assert_eq!(r["users"]["written"], 1, "{r}");
    assert_eq!(r["sessions"]["written"], 4, "{r}");
    // The deployment keeps serving: a new sign-in lands after the first copy.
    sessions.push(signed_in(&env).await.1);
    let second = migrate(&env.raw_db, &db.url).await.expect("join");
    assert_eq!(second.code, 0, "{}", second.stderr);
    let r = second.json();
    assert_eq!(
        (r["users"]["written"].clone(), r["sessions"]["written"].clone()),
        (1.into(), 5.into()),
        "{r}"
    );
    assert_eq!(r["users"]["skipped"], 0);
    // Every session works on a replica of the PostgreSQL deployment, with the same keys.
    let mut c = Cluster::on(db.url.clone(), None, |_| {}).await;
    c.keys = env.keys.clone();
    let replica = c.replica("pg");
    for s in &sessions {
        let (status, user) = user_on(&replica, s).await;
        assert_eq!(status, 200, "a migrated session");
        assert_eq!(user.as_deref(), Some(uid.2.as_str()));
    }
    // Bad arguments are usage errors.
    let out =
        tokio::task::spawn_blocking(|| run_binary(&["migrate-store", "--from", "mysql://x/y", "--to", "z.db"], &[]))
            .await
            .expect("join");
    assert_eq!(out.code, 64, "{}", out.stderr);
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_behind_nginx_round_robin_in_chromium() {
    if !node_or_skip(
        "multi-replica browser test",
        "tests/browser",
        &["playwright-core"],
        true,
    ) {
        return;
    }
    let Some(c) = Cluster::start("replicas::two_replicas_behind_nginx", |_| {}).await else {
        return;
    };
    let (a, b) = (c.replica("a"), c.replica("b"));
    // Round-robin over both replicas, every request; X-Upstream says who answered.
    let http = format!(
        " upstream nini {{ server {}; server {}; keepalive 16; }}\n\
          server {{\n  listen {};\n  location / {{\n    proxy_pass http://nini;\n    proxy_http_version 1.1;\n\
              proxy_set_header Connection \"\";\n    proxy_set_header Host $http_host;\n\
              add_header X-Upstream $upstream_addr always;\n  }}\n }}",
        a.addr, b.addr, c.public
    );
    let Some(_nginx) = start_nginx(c.public, &http) else {
        return;
    };
    let front = format!("http://{}", c.public);
    let r = run_node(
        "tests/browser/replicas.mjs",
        &[front.as_str(), "10"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(r["signedIn"], DEMO_USER_NAME, "{r}");
    let reloads = r["reloads"].as_array().expect("reloads");
    assert_eq!(reloads.len(), 10);
    let mut served_by = std::collections::BTreeSet::new();
    for reload in reloads {
        assert_eq!(reload["status"], 200, "{r}");
        assert_eq!(
            reload["userName"], DEMO_USER_NAME,
            "every reload shows the dashboard: {r}"
        );
        served_by.insert(reload["upstream"].as_str().expect("X-Upstream").to_string());
    }
    let want: std::collections::BTreeSet<String> = [a.addr.to_string(), b.addr.to_string()].into_iter().collect();
    assert_eq!(served_by, want, "both replicas served the signed-in dashboard: {r}");
    assert_eq!(
        r["afterSignout"], "/api/auth/signin",
        "signed out everywhere it matters: {r}"
    );
}
