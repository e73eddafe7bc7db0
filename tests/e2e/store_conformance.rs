//! One conformance suite for every `Store` backend: each check below runs against SQLite
//! (always) and PostgreSQL (a real server from `pg`; skipped with one line under plain
//! `cargo test` when there is none, mandatory under `scripts/test`). "Another replica" is a
//! second store opened on the same database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nini_auth::config::{self, StorageConfig};
use nini_auth::crypto::KeyRing;
use nini_auth::store::{
    self, Invalidation, InvalidationSink, LockPurpose, NewLogin, Profile, Record, RecordKind, RevokeScope, Store,
    StoredVideo, SyncedProfile, Tokens, VideoSet,
};

use crate::pg;

/// A database for one check, and how to open more stores on it.
pub struct Fixture {
    cfg: StorageConfig,
    pub keys: Vec<String>,
    _sqlite_dir: Option<tempfile::TempDir>,
    _pg_db: Option<pg::TestDb>,
}

impl Fixture {
    pub async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conformance.db");
        Fixture {
            cfg: config::storage_from_url("db", &path.display().to_string()).expect("config"),
            keys: vec![nini_auth::crypto::generate_key_base64().expect("key")],
            _sqlite_dir: Some(dir),
            _pg_db: None,
        }
    }

    pub async fn postgres(test: &str) -> Option<Fixture> {
        let server = pg::server_or_skip(test).await?;
        let db = server.create_db().await;
        Some(Fixture {
            cfg: config::storage_from_url("db", &db.url).expect("config"),
            keys: vec![nini_auth::crypto::generate_key_base64().expect("key")],
            _sqlite_dir: None,
            _pg_db: Some(db),
        })
    }

    pub fn url(&self) -> String {
        self.cfg.database.to_string()
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        self.open_with(&self.keys).await
    }

    pub async fn open_with(&self, keys: &[String]) -> Arc<dyn Store> {
        store::open(&self.cfg, KeyRing::from_base64(keys).expect("ring"))
            .await
            .expect("open store")
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Fixture::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let test = concat!("store_conformance::postgres::", stringify!($name));
                    let Some(f) = super::Fixture::postgres(test).await else { return };
                    super::$name(f).await;
                }
            )*
        }
    };
}

conformance!(
    login_upserts_by_open_id_and_replaces_the_old_session,
    sessions_expire_and_end_with_counts,
    sessions_end_by_id_only_for_their_owner_and_everywhere_keeps_one,
    devices_list_and_activity_only_moves_forward,
    a_busy_minute_of_activity_is_written_in_every_chunk,
    a_used_state_cannot_be_used_again,
    tokens_are_sealed_and_open_only_with_the_ring,
    token_changes_are_compare_and_swap,
    dead_grant_sessions_stay_ended_after_a_new_sign_in,
    authorization_removed_ends_every_session,
    user_locks_exclude_other_replicas_until_released,
    invalidations_reach_every_replica_within_a_second,
    rate_windows_are_counted,
    sync_results_replace_videos_and_page,
    due_users_are_the_stale_ones_with_tokens,
    operator_views_revoke_and_never_show_tokens,
    key_rotation_reseals_in_batches_and_reports_unreadable,
    purge_removes_what_expired,
    export_and_import_copy_everything_idempotently,
    readiness_answers_within_its_deadline,
);

fn tokens(tag: &str) -> Tokens {
    Tokens {
        access_token: format!("act.{tag}"),
        refresh_token: format!("rft.{tag}"),
        access_expires_at: 10_000,
        refresh_expires_at: 20_000,
        scope: "user.info.basic,video.list".into(),
        obtained_at: 100,
    }
}

fn profile(open_id: &str) -> Profile {
    Profile {
        open_id: open_id.into(),
        display_name: Some(format!("name {open_id}")),
        username: Some(format!("handle_{open_id}")),
        avatar: Some("https://cdn.example/a.jpg".into()),
        verified: Some(true),
    }
}

async fn login(s: &dyn Store, open_id: &str, session: &str, expires: i64, now: i64) -> nini_auth::store::Identity {
    s.complete_login(NewLogin {
        profile: &profile(open_id),
        tokens: &tokens(open_id),
        session_hash: session,
        session_expires: expires,
        replaces: None,
        device: Some("Chrome · Linux"),
        now,
    })
    .await
    .expect("login")
}

async fn login_login_replacing(s: &dyn Store, open_id: &str, session: &str, old: &str, t: &Tokens, now: i64) -> String {
    s.complete_login(NewLogin {
        profile: &profile(open_id),
        tokens: t,
        session_hash: session,
        session_expires: now + 1000,
        replaces: Some(old),
        device: None,
        now,
    })
    .await
    .expect("login")
    .user_id
}

async fn login_upserts_by_open_id_and_replaces_the_old_session(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "open-1", "h1", 500, 10).await;
    assert_eq!(a.open_id, "open-1");
    assert_eq!(a.display_name.as_deref(), Some("name open-1"));
    assert_eq!(a.username.as_deref(), Some("handle_open-1"));
    assert!(a.verified);
    assert_eq!(a.session_expires, 500);
    assert!(
        !a.session_id.is_empty() && a.session_id != "h1",
        "sessions have their own id"
    );
    let uid = login_login_replacing(&*s, "open-1", "h2", "h1", &tokens("second"), 20).await;
    assert_eq!(uid, a.user_id, "same TikTok account, same user");
    assert!(
        s.session_identity("h1", 30).await.expect("q").is_none(),
        "old session gone"
    );
    let b = s.session_identity("h2", 30).await.expect("q").expect("new session");
    assert_eq!(b.user_id, a.user_id);
    assert_ne!(b.session_id, a.session_id);
    assert_eq!(s.tokens(&uid).await.expect("tokens"), Some(tokens("second")));
    let other = login(&*s, "open-2", "h3", 500, 30).await;
    assert_ne!(other.user_id, a.user_id);
    // A later sign-in with fields missing keeps what is stored.
    let sparse = Profile {
        open_id: "open-2".into(),
        ..Default::default()
    };
    s.complete_login(NewLogin {
        profile: &sparse,
        tokens: &tokens("x"),
        session_hash: "h4",
        session_expires: 500,
        replaces: None,
        device: None,
        now: 40,
    })
    .await
    .expect("login");
    let kept = s.session_identity("h4", 41).await.expect("q").expect("session");
    assert_eq!(kept.display_name.as_deref(), Some("name open-2"));
    assert!(kept.verified);
}

async fn sessions_expire_and_end_with_counts(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "o", "h1", 500, 10).await;
    login(&*s, "o", "h2", 500, 11).await;
    assert!(s.session_identity("h1", 499).await.expect("q").is_some());
    assert!(
        s.session_identity("h1", 500).await.expect("q").is_none(),
        "expired at its time"
    );
    assert_eq!(s.count_sessions(100).await.expect("count"), 2);
    let ended = s.end_session("h1", 100).await.expect("end").expect("existed");
    assert_eq!((ended.user_id.as_str(), ended.remaining), (a.user_id.as_str(), 1));
    assert!(s.end_session("h1", 100).await.expect("end").is_none(), "only once");
    let ended = s.end_session("h2", 100).await.expect("end").expect("existed");
    assert_eq!(ended.remaining, 0, "the user's last session");
    assert!(s.end_session("nope", 100).await.expect("end").is_none());
}

async fn sessions_end_by_id_only_for_their_owner_and_everywhere_keeps_one(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "a", "ha1", 5000, 10).await;
    let a2 = login(&*s, "a", "ha2", 5000, 11).await;
    let b = login(&*s, "b", "hb1", 5000, 12).await;
    assert!(
        !s.end_session_by_id(&b.user_id, &a2.session_id, 20).await.expect("q"),
        "not b's session"
    );
    assert!(s.end_session_by_id(&a.user_id, &a2.session_id, 20).await.expect("q"));
    assert!(s.session_identity("ha2", 21).await.expect("q").is_none());
    login(&*s, "a", "ha3", 5000, 22).await;
    login(&*s, "a", "ha4", 5000, 23).await;
    assert_eq!(s.end_user_sessions(&a.user_id, Some("ha1"), 30).await.expect("q"), 2);
    assert!(s.session_identity("ha1", 31).await.expect("q").is_some(), "kept");
    assert!(
        s.session_identity("hb1", 31).await.expect("q").is_some(),
        "other users untouched"
    );
    assert_eq!(s.end_user_sessions(&a.user_id, None, 32).await.expect("q"), 1);
    assert_eq!(s.count_sessions(33).await.expect("count"), 1);
}

async fn devices_list_and_activity_only_moves_forward(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "a", "h1", 5000, 10).await;
    let second = login(&*s, "a", "h2", 5000, 20).await;
    login(&*s, "a", "h3", 15, 5).await;
    let list = s.user_sessions(&a.user_id, 16).await.expect("list");
    assert_eq!(
        list.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec![second.session_id.as_str(), a.session_id.as_str()],
        "live sessions, newest first"
    );
    assert_eq!(list[0].device.as_deref(), Some("Chrome · Linux"));
    assert_eq!(list[0].created_at, 20);
    s.touch_sessions(&[("h1".into(), 100), ("h2".into(), 90)])
        .await
        .expect("touch");
    s.touch_sessions(&[("h1".into(), 50)]).await.expect("touch older");
    let list = s.user_sessions(&a.user_id, 16).await.expect("list");
    let seen = |id: &str| list.iter().find(|d| d.id == id).and_then(|d| d.last_seen_at);
    assert_eq!(seen(&a.session_id), Some(100), "never moves back");
    assert_eq!(seen(&second.session_id), Some(90));
}

/// The flusher writes a minute's notes in several transactions (`Activity::write_to`, 5,000
/// rows each): the sessions in the first and in the last of them are both recorded.
async fn a_busy_minute_of_activity_is_written_in_every_chunk(f: Fixture) {
    use nini_auth::crypto::hex;
    let s = f.open().await;
    let (first, last) = ([0x10; 32], [0x30; 32]);
    let a = login(&*s, "a", &hex(&first), 5000, 10).await;
    let b = login(&*s, "b", &hex(&last), 5000, 10).await;
    let activity = nini_auth::store::cache::Activity::default();
    activity.note(last, &b.user_id, 300);
    // Sessions the store does not know (signed out meanwhile) sort between the two: three
    // transactions, `first` in the first and `last` in the third.
    for i in 0..11_000u32 {
        let mut key = [0x20; 32];
        key[1..5].copy_from_slice(&i.to_be_bytes());
        activity.note(key, &a.user_id, 200);
    }
    activity.note(first, &a.user_id, 100);
    activity.write_to(&*s).await.expect("written");
    let seen = |list: &[nini_auth::store::DeviceSession]| list.first().and_then(|d| d.last_seen_at);
    assert_eq!(seen(&s.user_sessions(&a.user_id, 20).await.expect("list")), Some(100));
    assert_eq!(seen(&s.user_sessions(&b.user_id, 20).await.expect("list")), Some(300));
    // The next minute's notes go through the same way.
    activity.note(first, &a.user_id, 400);
    activity.write_to(&*s).await.expect("written");
    assert_eq!(seen(&s.user_sessions(&a.user_id, 20).await.expect("list")), Some(400));
}

async fn a_used_state_cannot_be_used_again(f: Fixture) {
    let s = f.open().await;
    let other = f.open().await;
    assert!(s.consume_state("state-hash", 1000).await.expect("first"));
    assert!(!s.consume_state("state-hash", 1000).await.expect("again"));
    assert!(!other
        .consume_state("state-hash", 1000)
        .await
        .expect("on another replica"));
    assert!(other.consume_state("another", 1000).await.expect("another state"));
}

async fn tokens_are_sealed_and_open_only_with_the_ring(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "o", "h", 5000, 10).await;
    let exported = s.export(RecordKind::Users, "", 10).await.expect("export");
    let Some(Record::User(u)) = exported.first() else {
        panic!("one user: {exported:?}");
    };
    let (access, refresh) = (
        u.sealed_access_token.clone().expect("a"),
        u.sealed_refresh_token.clone().expect("r"),
    );
    assert!(access.starts_with("v2.") && !access.contains("act.o"), "{access}");
    assert!(refresh.starts_with("v2.") && !refresh.contains("rft.o"));
    let stranger = f
        .open_with(&[nini_auth::crypto::generate_key_base64().expect("key")])
        .await;
    let err = stranger.tokens(&a.user_id).await.expect_err("unknown key");
    assert!(err.to_string().contains("cannot be opened"), "{err}");
}

async fn token_changes_are_compare_and_swap(f: Fixture) {
    let s = f.open().await;
    let uid = login(&*s, "o", "h", 5000, 10).await.user_id;
    let mut next = tokens("next");
    next.obtained_at = 200;
    assert!(
        !s.save_refreshed(&uid, "rft.stale", &next, 200).await.expect("q"),
        "a rotated-out token cannot win"
    );
    assert_eq!(s.tokens(&uid).await.expect("q"), Some(tokens("o")));
    assert!(s.save_refreshed(&uid, "rft.o", &next, 200).await.expect("q"));
    assert_eq!(s.tokens(&uid).await.expect("q"), Some(next.clone()));
    assert!(
        !s.clear_tokens(&uid, "rft.o", 210).await.expect("q"),
        "read before the rotation"
    );
    assert!(
        !s.mark_grant_dead(&uid, Some("rft.o"), "RefreshAccessTokenError", 210)
            .await
            .expect("q"),
        "a newer grant survives"
    );
    assert!(
        !s.mark_grant_dead(&uid, None, "RefreshAccessTokenError", 210)
            .await
            .expect("q"),
        "None means: only when no tokens are stored"
    );
    assert!(s
        .session_identity("h", 211)
        .await
        .expect("q")
        .expect("s")
        .grant_error
        .is_none());
    assert!(s.clear_tokens(&uid, "rft.next", 220).await.expect("q"));
    assert_eq!(s.tokens(&uid).await.expect("q"), None);
    assert!(s
        .mark_grant_dead(&uid, None, "RefreshAccessTokenError", 230)
        .await
        .expect("q"));
    let id = s
        .session_identity("h", 231)
        .await
        .expect("q")
        .expect("session row remains");
    assert_eq!(id.grant_error.as_deref(), Some("RefreshAccessTokenError"));
    assert!(!s.save_refreshed("nobody", "x", &next, 240).await.expect("q"));
}

async fn dead_grant_sessions_stay_ended_after_a_new_sign_in(f: Fixture) {
    let s = f.open().await;
    let uid = login(&*s, "o", "old-device", 5000, 10).await.user_id;
    assert!(s
        .mark_grant_dead(&uid, Some("rft.o"), "RefreshAccessTokenError", 20)
        .await
        .expect("q"));
    login(&*s, "o", "new-device", 5000, 30).await;
    assert!(s.session_identity("old-device", 31).await.expect("q").is_none());
    let fresh = s.session_identity("new-device", 31).await.expect("q").expect("new");
    assert!(fresh.grant_error.is_none());
}

async fn authorization_removed_ends_every_session(f: Fixture) {
    let s = f.open().await;
    let uid = login(&*s, "o", "h1", 5000, 10).await.user_id;
    login(&*s, "o", "h2", 5000, 11).await;
    let keep = login(&*s, "other", "h3", 5000, 12).await;
    assert_eq!(
        s.authorization_removed("o", 20).await.expect("q"),
        Some((uid.clone(), 2))
    );
    assert_eq!(s.tokens(&uid).await.expect("q"), None);
    assert!(s.session_identity("h1", 21).await.expect("q").is_none());
    assert_eq!(s.authorization_removed("unknown", 20).await.expect("q"), None);
    assert!(s.tokens(&keep.user_id).await.expect("q").is_some());
}

async fn user_locks_exclude_other_replicas_until_released(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let ttl = Duration::from_secs(30);
    let held = a
        .try_lock_user(LockPurpose::Refresh, "u1", ttl, 100)
        .await
        .expect("q")
        .expect("free");
    assert!(b
        .try_lock_user(LockPurpose::Refresh, "u1", ttl, 100)
        .await
        .expect("q")
        .is_none());
    assert!(
        a.try_lock_user(LockPurpose::Refresh, "u1", ttl, 100)
            .await
            .expect("q")
            .is_none(),
        "not reentrant"
    );
    let other_user = b
        .try_lock_user(LockPurpose::Refresh, "u2", ttl, 100)
        .await
        .expect("q")
        .expect("free");
    let other_purpose = b
        .try_lock_user(LockPurpose::Sync, "u1", ttl, 100)
        .await
        .expect("q")
        .expect("free");
    held.release().await;
    let again = b
        .try_lock_user(LockPurpose::Refresh, "u1", ttl, 101)
        .await
        .expect("q")
        .expect("released");
    // A lock that is dropped without release is given up too.
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = a.try_lock_user(LockPurpose::Refresh, "u1", ttl, 102).await.expect("q") {
            l.release().await;
            break;
        }
        assert!(Instant::now() < deadline, "a dropped lock was never given up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other_user.release().await;
    other_purpose.release().await;
}

async fn invalidations_reach_every_replica_within_a_second(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let uid = login(&*a, "o", "h1", 5000, 10).await.user_id;
    let seen: Arc<Mutex<Vec<Invalidation>>> = Arc::default();
    let sink: InvalidationSink = {
        let seen = seen.clone();
        Arc::new(move |inv: &Invalidation| seen.lock().expect("lock").push(inv.clone()))
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = {
        let b = b.clone();
        tokio::spawn(async move { b.follow_invalidations(sink, stop_rx).await })
    };
    // The follower starts from "now": probe with a harmless change until it reports one,
    // so the measured change below is not made before the follower is listening.
    let ready = Instant::now() + Duration::from_secs(10);
    while seen.lock().expect("lock").is_empty() {
        assert!(Instant::now() < ready, "the follower never reported anything");
        a.save_sync(&uid, &SyncedProfile::default(), None, 15)
            .await
            .expect("probe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.lock().expect("lock").clear();

    let started = Instant::now();
    let revoked = a.revoke_sessions(RevokeScope::User(&uid), 30).await.expect("revoke");
    assert_eq!(revoked.sessions, 1);
    let wanted = Invalidation {
        user_id: Some(uid.clone()),
        session_hash: None,
    };
    while !seen.lock().expect("lock").contains(&wanted) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "revocation not seen by the other replica within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    login(&*a, "o", "h2", 5000, 40).await;
    a.end_session("h2", 41).await.expect("end");
    let wanted = Invalidation {
        user_id: None,
        session_hash: Some("h2".into()),
    };
    let started = Instant::now();
    while !seen.lock().expect("lock").contains(&wanted) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "sign-out not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Key rotation tells every replica to drop everything it cached.
    a.rotate_keys().await.expect("rotate");
    let started = Instant::now();
    while !seen.lock().expect("lock").contains(&Invalidation::EVERYTHING) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "key rotation not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower stops when told")
        .expect("join");
}

async fn rate_windows_are_counted(f: Fixture) {
    let s = f.open().await;
    for i in 1..=3 {
        let hit = s.rate_hit("k", 60, 120).await.expect("hit");
        assert_eq!(hit.count, i);
        assert_eq!(hit.resets_in, 60);
    }
    assert_eq!(s.rate_peek("k", 60, 150).await.expect("peek"), 3);
    let hit = s.rate_hit("k", 60, 179).await.expect("hit");
    assert_eq!((hit.count, hit.resets_in), (4, 1));
    assert_eq!(s.rate_hit("k", 60, 180).await.expect("hit").count, 1, "a new window");
    assert_eq!(s.rate_peek("other", 60, 180).await.expect("peek"), 0);
}

fn video(id: &str, t: i64) -> StoredVideo {
    StoredVideo {
        id: id.into(),
        create_time: t,
        title: Some(format!("v{id}")),
        view_count: Some(t * 10),
        synced_at: 1,
        ..Default::default()
    }
}

async fn sync_results_replace_videos_and_page(f: Fixture) {
    let s = f.open().await;
    let uid = login(&*s, "o", "h", 5000, 10).await.user_id;
    let p = SyncedProfile {
        bio: Some("hola".into()),
        follower_count: Some(7),
        ..Default::default()
    };
    let first = [video("a", 100), video("b", 100), video("c", 90), video("d", 300)];
    let got = s
        .save_sync(
            &uid,
            &p,
            Some(VideoSet {
                videos: &first,
                streak: 2,
            }),
            50,
        )
        .await
        .expect("save")
        .expect("user");
    assert_eq!(got.display_name.as_deref(), Some("name o"), "not asked for: kept");
    assert_eq!((got.videos, got.streak, got.last_synced_at), (4, 2, Some(50)));
    assert_eq!(got.follower_count, Some(7));
    assert_eq!(
        s.session_identity("h", 51).await.expect("q").expect("s").follower_count,
        Some(7)
    );
    let (p1, total) = s.user_videos(&uid, 2, None).await.expect("page");
    assert_eq!(total, 4);
    assert_eq!(p1.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec!["d", "b"]);
    assert_eq!(p1[0], video("d", 300));
    let last = &p1[1];
    let (p2, _) = s
        .user_videos(&uid, 2, Some((last.create_time, &last.id)))
        .await
        .expect("page");
    assert_eq!(p2.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec!["a", "c"]);
    let second = [video("e", 400)];
    let got = s
        .save_sync(
            &uid,
            &SyncedProfile::default(),
            Some(VideoSet {
                videos: &second,
                streak: 1,
            }),
            60,
        )
        .await
        .expect("save")
        .expect("user");
    assert_eq!((got.videos, got.streak, got.bio.as_deref()), (1, 1, Some("hola")));
    let got = s
        .save_sync(&uid, &SyncedProfile::default(), None, 70)
        .await
        .expect("save")
        .expect("user");
    assert_eq!((got.videos, got.last_synced_at), (1, Some(70)), "no video set: kept");
    assert_eq!(s.last_synced_at(&uid).await.expect("q"), Some(70));
    assert_eq!(s.user_profile(&uid).await.expect("q"), Some(got));
    assert!(s.save_sync("nobody", &p, None, 1).await.expect("save").is_none());
    // An id another account already has does not move over.
    let other = login(&*s, "o2", "h2", 5000, 10).await.user_id;
    let stolen = [video("e", 500)];
    let got = s
        .save_sync(
            &other,
            &SyncedProfile::default(),
            Some(VideoSet {
                videos: &stolen,
                streak: 0,
            }),
            80,
        )
        .await
        .expect("save")
        .expect("user");
    assert_eq!(got.videos, 0);
    assert_eq!(s.user_videos(&uid, 10, None).await.expect("q").1, 1);
}

async fn due_users_are_the_stale_ones_with_tokens(f: Fixture) {
    let s = f.open().await;
    let uid = login(&*s, "o", "h", 5000, 10).await.user_id;
    let cands = vec![uid.clone(), "ghost".to_string()];
    assert_eq!(s.due_for_sync(&cands, 100, 10).await.expect("due"), vec![uid.clone()]);
    s.save_sync(&uid, &SyncedProfile::default(), None, 150)
        .await
        .expect("save");
    assert!(s.due_for_sync(&cands, 100, 10).await.expect("due").is_empty());
    assert_eq!(s.due_for_sync(&cands, 200, 10).await.expect("due"), vec![uid.clone()]);
    assert!(s.clear_tokens(&uid, "rft.o", 160).await.expect("clear"));
    assert!(s.due_for_sync(&cands, 200, 10).await.expect("due").is_empty());
}

async fn operator_views_revoke_and_never_show_tokens(f: Fixture) {
    let s = f.open().await;
    let a = login(&*s, "a", "ha", 500, 10).await.user_id;
    login(&*s, "b", "hb", 500, 11).await;
    let users = s.admin_users(None, 20).await.expect("users");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].open_id, "b", "newest first");
    let dump = format!("{users:?}");
    assert!(!dump.contains("act.a") && !dump.contains("v2."), "{dump}");
    let ua = users.iter().find(|u| u.id == a).expect("a");
    assert_eq!(ua.sessions, 1);
    assert!(ua.tokens.present);
    assert_eq!(
        ua.tokens.key_ids,
        vec![nini_auth::crypto::KeyRing::from_base64(&f.keys)
            .expect("ring")
            .key_ids()[0]
            .clone()]
    );
    assert_eq!(ua.created_at, 10);
    assert_eq!(s.admin_users(Some(1), 20).await.expect("users").len(), 1);
    assert_eq!(s.admin_user("a", 20).await.expect("q").map(|u| u.id), Some(a.clone()));
    assert_eq!(
        s.admin_user(&a, 20).await.expect("q").map(|u| u.open_id),
        Some("a".into())
    );
    assert!(s.admin_user("zzz", 20).await.expect("q").is_none());
    let sess = s.admin_sessions(Some(&a), 20).await.expect("q");
    assert_eq!(sess.len(), 1);
    assert_eq!(sess[0].session, "ha", "a prefix of the stored hash");
    assert_eq!(s.admin_sessions(None, 20).await.expect("q").len(), 2);
    let r = s.revoke_sessions(RevokeScope::User(&a), 20).await.expect("revoke");
    assert_eq!((r.sessions, r.users), (1, 1));
    assert_eq!(s.revoke_sessions(RevokeScope::All, 20).await.expect("all").sessions, 1);
    assert!(s.admin_sessions(None, 20).await.expect("q").is_empty());
}

async fn key_rotation_reseals_in_batches_and_reports_unreadable(f: Fixture) {
    let old = f.keys[0].clone();
    let new = nini_auth::crypto::generate_key_base64().expect("key");
    let lost = nini_auth::crypto::generate_key_base64().expect("key");
    let with_old = f.open_with(std::slice::from_ref(&old)).await;
    let mut ids = Vec::new();
    // More than one batch (100).
    for i in 0..105 {
        ids.push(
            login(&*with_old, &format!("o{i}"), &format!("h{i}"), 5000, 10)
                .await
                .user_id,
        );
    }
    let current = login(
        &*f.open_with(std::slice::from_ref(&new)).await,
        "current",
        "hc",
        5000,
        10,
    )
    .await
    .user_id;
    let orphan = login(
        &*f.open_with(std::slice::from_ref(&lost)).await,
        "orphan",
        "ho",
        5000,
        10,
    )
    .await
    .user_id;
    let both = f.open_with(&[new.clone(), old.clone()]).await;
    let r = both.rotate_keys().await.expect("rotate");
    assert_eq!((r.reencrypted, r.current, r.unreadable), (105, 1, 1));
    assert_eq!(r.unreadable_user_ids, vec![orphan]);
    let only_new = f.open_with(std::slice::from_ref(&new)).await;
    assert_eq!(only_new.tokens(&ids[104]).await.expect("opens"), Some(tokens("o104")));
    assert_eq!(only_new.tokens(&current).await.expect("opens"), Some(tokens("current")));
    let again = both.rotate_keys().await.expect("rotate");
    assert_eq!((again.reencrypted, again.current, again.unreadable), (0, 106, 1));
}

async fn purge_removes_what_expired(f: Fixture) {
    let s = f.open().await;
    login(&*s, "o", "old", 50, 1).await;
    login(&*s, "o", "live", 5000, 2).await;
    assert!(s.consume_state("used-old", 40).await.expect("q"));
    assert!(s.consume_state("used-live", 4000).await.expect("q"));
    let p = s.purge_expired(60).await.expect("purge");
    assert_eq!((p.sessions, p.states), (1, 1));
    assert!(s.session_identity("live", 61).await.expect("q").is_some());
    assert!(
        !s.consume_state("used-live", 4000).await.expect("q"),
        "unexpired records stay"
    );
    assert!(
        s.consume_state("used-old", 4000).await.expect("q"),
        "an expired record is gone"
    );
}

async fn export_and_import_copy_everything_idempotently(f: Fixture) {
    let src = f.open().await;
    let a = login(&*src, "a", "ha", 5000, 10).await.user_id;
    login(&*src, "b", "hb", 5000, 11).await;
    let vids = [video("v1", 100), video("v2", 200)];
    src.save_sync(
        &a,
        &SyncedProfile::default(),
        Some(VideoSet {
            videos: &vids,
            streak: 3,
        }),
        20,
    )
    .await
    .expect("sync");
    // The target is another database of the same backend.
    let target_fixture = if f.url().starts_with("postgres") {
        Fixture::postgres("store_conformance::export_and_import")
            .await
            .expect("server")
    } else {
        Fixture::sqlite().await
    };
    let dst = target_fixture.open_with(&f.keys).await;
    for round in 0..2 {
        for (kind, want) in [
            (RecordKind::Users, 2),
            (RecordKind::Sessions, 2),
            (RecordKind::Videos, 2),
        ] {
            // Pages of one: the key order must carry across pages.
            let mut after = String::new();
            let mut n = 0;
            loop {
                let page = src.export(kind, &after, 1).await.expect("export");
                let Some(last) = page.last().map(Record::key) else {
                    break;
                };
                let c = dst.import(&page).await.expect("import");
                assert_eq!((c.written, c.skipped), (1, 0), "round {round} {kind:?}");
                n += 1;
                after = last;
            }
            assert_eq!(n, want, "{kind:?}");
        }
    }
    let id = dst
        .session_identity("ha", 30)
        .await
        .expect("q")
        .expect("session copied");
    assert_eq!(id.user_id, a);
    assert_eq!(id.streak, 3);
    assert_eq!(
        dst.tokens(&a).await.expect("sealed tokens open with the same keys"),
        Some(tokens("a"))
    );
    assert_eq!(dst.user_videos(&a, 10, None).await.expect("q").1, 2);
    assert_eq!(dst.count_sessions(30).await.expect("q"), 2);
    // A user changed at the target since (tokens rotated there) is not rolled back by a
    // later run.
    let mut rotated = tokens("rotated-at-target");
    rotated.obtained_at = 500;
    assert!(dst
        .save_refreshed(&a, "rft.a", &rotated, 500)
        .await
        .expect("refresh at target"));
    let users = src.export(RecordKind::Users, "", 10).await.expect("export");
    let c = dst.import(&users).await.expect("import");
    assert_eq!((c.written, c.skipped), (1, 1), "the newer row at the target is kept");
    assert_eq!(dst.tokens(&a).await.expect("q"), Some(rotated));
    // The same TikTok account under another id at the target is not merged.
    let clash = target_fixture.open_with(&f.keys).await;
    let other = src.export(RecordKind::Users, "", 10).await.expect("export");
    let mut renamed = other.clone();
    for r in &mut renamed {
        if let Record::User(u) = r {
            u.id = format!("{}-copy", u.id);
        }
    }
    let c = clash.import(&renamed).await.expect("import");
    assert_eq!((c.written, c.skipped), (0, 2));
}

async fn readiness_answers_within_its_deadline(f: Fixture) {
    let s = f.open().await;
    let started = Instant::now();
    s.ping(Duration::from_millis(500)).await.expect("ready");
    assert!(started.elapsed() < Duration::from_millis(500));
    s.close().await.expect("close");
}

/// The PostgreSQL schema is the NINI model as Prisma maps it: `prisma db pull` (the real
/// Prisma CLI, tests/prisma) on a database nini-auth migrated yields exactly the User and
/// Session models of tests/prisma/schema.prisma, and nothing of nini-auth's own tables.
#[tokio::test(flavor = "multi_thread")]
async fn prisma_db_pull_yields_the_nini_model() {
    if !crate::support::node_or_skip(
        "Prisma schema check",
        "tests/prisma",
        &["prisma", "@prisma/adapter-pg"],
        false,
    ) {
        return;
    }
    let Some(f) = Fixture::postgres("store_conformance::prisma_db_pull_yields_the_nini_model").await else {
        return;
    };
    let s = f.open().await;
    login(&*s, "o", "h", 5000, 10).await;
    let out = crate::support::node_output_with(
        "tests/prisma/pull-check.mjs",
        &["--strict"],
        &[("DATABASE_URL", f.url().as_str())],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(out.code, 0, "--- stdout\n{}\n--- stderr\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pull-check: ok"), "{}", out.stdout);
}

/// The NINI app's Prisma migration ran first: nini-auth adopts its `users` and `sessions`
/// (no error, no second table), and a TikTok sign-in of a user the app created updates that
/// user in place.
#[tokio::test(flavor = "multi_thread")]
async fn tables_prisma_created_first_are_adopted() {
    let Some(f) = Fixture::postgres("store_conformance::tables_prisma_created_first_are_adopted").await else {
        return;
    };
    let ddl = std::fs::read_to_string(crate::support::crate_root().join("tests/prisma/ddl.sql")).expect("ddl.sql");
    let ddl = ddl.replace("CREATE SCHEMA IF NOT EXISTS \"public\";", "");
    let client = pg::connect(&f.url()).await.expect("connect");
    client.batch_execute(&ddl).await.expect("Prisma's DDL");
    client
        .execute(
            "INSERT INTO users (id, tiktok_id, username, email, updated_at) VALUES ('cuid-app-1', 'o', 'ana', 'ana@example.com', now())",
            &[],
        )
        .await
        .expect("an app user");
    let s = f.open().await;
    let id = login(&*s, "o", "h", 5000, 10).await;
    assert_eq!(id.user_id, "cuid-app-1", "the app's user, updated in place");
    assert_eq!(id.username.as_deref(), Some("ana"), "the app's username is kept");
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1);
    let email: Option<String> = client
        .query_one("SELECT email FROM users WHERE id = 'cuid-app-1'", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(email.as_deref(), Some("ana@example.com"));
}
