//! The domain types the `Store` trait speaks: what a signed-in user looks like to the proxy,
//! tokens, profiles, synced videos, the operator's views, and the rows `migrate-store`
//! copies. No backend type appears here.

use serde::Serialize;

/// What the proxy needs to know about a signed-in user; cached in memory per session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub user_id: String,
    /// The session's own id (`sessions.id`): not a credential, safe to show and to put in
    /// the identity JWT's `sid` claim.
    pub session_id: String,
    pub open_id: String,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub verified: bool,
    pub videos: i64,
    pub streak: i64,
    pub nini_score: i64,
    pub follower_count: Option<i64>,
    /// When the session ends (unix seconds).
    pub session_expires: i64,
    /// Set when the TikTok grant died (refresh token expired or revoked): the session no
    /// longer authenticates and `/api/auth/session` reports this next-auth error.
    pub grant_error: Option<String>,
    /// What the layers above derive from this identity (the proxy's header values), made
    /// once per cached copy instead of once per request.
    pub derived: Derived,
}

/// A slot for one value derived from an `Identity` by a layer above the store (which does not
/// know its type). Not part of the identity: compares equal, starts empty in clones.
#[derive(Default)]
pub struct Derived(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl Derived {
    /// The derived value, made by `make` the first time.
    pub fn get_or_init<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> std::sync::Arc<T> {
        if let Some(v) = self.0.get().and_then(|v| v.clone().downcast::<T>().ok()) {
            return v;
        }
        let v = std::sync::Arc::new(make());
        // Another thread may have set it meanwhile: either value is the same derivation.
        let _ = self.0.set(v.clone());
        v
    }
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

/// Profile fields read from TikTok at login.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub open_id: String,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub verified: Option<bool>,
}

/// Plaintext TikTok tokens with absolute expiry times (unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub scope: String,
    /// When TikTok issued this access token: with `access_expires_at`, its lifetime.
    pub obtained_at: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A completed sign-in, written in one transaction by `Store::complete_login`.
#[derive(Debug, Clone, Copy)]
pub struct NewLogin<'a> {
    pub profile: &'a Profile,
    pub tokens: &'a Tokens,
    /// SHA-256 (hex) of the new session cookie's token.
    pub session_hash: &'a str,
    pub session_expires: i64,
    /// The session the browser had before, deleted in the same transaction (fixation).
    pub replaces: Option<&'a str>,
    /// A short description of the device (from the User-Agent), for the devices list.
    pub device: Option<&'a str>,
    pub now: i64,
}

/// A session that `end_session` deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub user_id: String,
    /// Live sessions the user still has after this one ended.
    pub remaining: i64,
}

/// What a per-user lock serialises, across tasks and processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockPurpose {
    /// Redeeming the refresh token: exactly one at a time, or a rotation is lost.
    Refresh,
    /// The background sync of one user: one replica at a time.
    Sync,
}

impl LockPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LockPurpose::Refresh => "refresh",
            LockPurpose::Sync => "sync",
        }
    }
}

/// Something a process recorded that makes cached sessions or tokens stale. With neither
/// field set it means "everything" (after key rotation, or when a follower may have missed
/// some): caches empty themselves and reload from the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Invalidation {
    /// Every cached session and token of this user.
    pub user_id: Option<String>,
    /// One session, by the SHA-256 (hex) of its token.
    pub session_hash: Option<String>,
}

impl Invalidation {
    /// Every cached session and token, of every user.
    pub const EVERYTHING: Invalidation = Invalidation {
        user_id: None,
        session_hash: None,
    };

    pub fn is_everything(&self) -> bool {
        self.user_id.is_none() && self.session_hash.is_none()
    }
}

/// Profile fields as TikTok returned them. `None` means "not asked for or not returned" and
/// never overwrites what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedProfile {
    pub display_name: Option<String>,
    pub avatar: Option<String>,
    /// The TikTok handle (`username` field).
    pub username: Option<String>,
    pub verified: Option<bool>,
    pub bio: Option<String>,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub likes_count: Option<i64>,
    /// TikTok's own count (`video_count`), which may include posts the API does not list.
    pub video_count: Option<i64>,
}

/// One stored video of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredVideo {
    pub id: String,
    /// UTC epoch seconds.
    pub create_time: i64,
    pub title: Option<String>,
    pub description: Option<String>,
    /// A signed CDN link that expires a few hours after `synced_at`.
    pub cover_image_url: Option<String>,
    pub share_url: Option<String>,
    pub duration: Option<i64>,
    pub view_count: Option<i64>,
    pub like_count: Option<i64>,
    pub comment_count: Option<i64>,
    pub share_count: Option<i64>,
    pub synced_at: i64,
}

/// The user's videos as a sync read them (all of them, or as many as the page cap allowed)
/// and the streak derived from them.
#[derive(Debug, Clone, Copy)]
pub struct VideoSet<'a> {
    pub videos: &'a [StoredVideo],
    pub streak: i64,
}

/// A user's stored profile, synced data and derived counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: String,
    pub open_id: String,
    pub username: Option<String>,
    pub tiktok_username: Option<String>,
    pub display_name: Option<String>,
    pub avatar: Option<String>,
    pub verified: bool,
    pub bio: Option<String>,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub likes_count: Option<i64>,
    pub tiktok_video_count: Option<i64>,
    /// Public videos stored for the user.
    pub videos: i64,
    pub streak: i64,
    pub nini_score: i64,
    pub last_synced_at: Option<i64>,
}

/// One live session of a user, as the devices list shows it (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSession {
    pub id: String,
    pub created_at: i64,
    /// Within a minute or so: sidecars record activity in batches, never per request.
    pub last_seen_at: Option<i64>,
    pub device: Option<String>,
    pub expires: i64,
}

// === operator views ===

/// How many hex characters of a session's hash the CLI shows: enough to tell sessions apart,
/// and a prefix of a hash is no credential anyway.
pub const SESSION_PREFIX_LEN: usize = 12;

/// Whether a user has TikTok tokens stored, and under which key ids (never the tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub present: bool,
    /// Distinct key ids of the stored sealed values, access token's first. Two ids mean the
    /// row is mid-rotation; `"?"` stands for a value that does not parse.
    pub key_ids: Vec<String>,
    pub access_expires_at: Option<i64>,
    pub refresh_expires_at: Option<i64>,
    pub scope: Option<String>,
}

impl TokenInfo {
    /// Reads only the key ids out of the sealed values: listing users never decrypts a token.
    pub fn from_sealed(
        access: Option<&str>,
        refresh: Option<&str>,
        access_expires_at: Option<i64>,
        refresh_expires_at: Option<i64>,
        scope: Option<String>,
    ) -> TokenInfo {
        let mut key_ids: Vec<String> = Vec::new();
        for sealed in [access, refresh].into_iter().flatten() {
            let id = crate::crypto::KeyRing::sealed_key_id(sealed).unwrap_or("?").to_string();
            if !key_ids.contains(&id) {
                key_ids.push(id);
            }
        }
        TokenInfo {
            present: access.is_some() || refresh.is_some(),
            key_ids,
            access_expires_at,
            refresh_expires_at,
            scope,
        }
    }
}

/// One user as the operator sees them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminUser {
    pub id: String,
    pub open_id: String,
    pub username: Option<String>,
    pub tiktok_username: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub avatar: Option<String>,
    pub bio: Option<String>,
    pub verified: bool,
    pub videos: i64,
    pub streak: i64,
    pub nini_score: i64,
    pub earnings: f64,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub likes_count: Option<i64>,
    pub tiktok_video_count: Option<i64>,
    /// Unexpired sessions.
    pub sessions: i64,
    pub tokens: TokenInfo,
    pub grant_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_synced_at: Option<i64>,
}

/// One live session; only a prefix of its hash leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminSession {
    pub session: String,
    pub user_id: String,
    pub open_id: String,
    pub display_name: Option<String>,
    pub created_at: i64,
    pub expires: i64,
}

impl AdminSession {
    /// The shown prefix of a stored session hash.
    pub fn prefix(hash: &str) -> String {
        hash.chars().take(SESSION_PREFIX_LEN).collect()
    }
}

/// Which sessions `revoke_sessions` ends.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope<'a> {
    User(&'a str),
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// Session rows deleted.
    pub sessions: usize,
    /// Users whose cached sessions running sidecars were told to drop.
    pub users: usize,
}

/// Outcome of re-sealing every stored token under the primary key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    pub primary_key_id: String,
    pub reencrypted: usize,
    pub current: usize,
    pub unreadable: usize,
    /// Users whose tokens no key in the ring opens; their rows were left as they are.
    pub unreadable_user_ids: Vec<String>,
}

/// What `purge_expired` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub sessions: usize,
    /// Records of used sign-in states past their expiry.
    pub states: usize,
}

// === migrate-store ===

/// Which table `export` reads; `migrate-store` copies them in this order (users first, for
/// the foreign keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Users,
    Sessions,
    Videos,
}

/// A user row with everything a backend keeps about it; tokens stay sealed (their AAD names
/// the user id, which is copied unchanged, so no key is needed to copy them).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub open_id: String,
    pub tiktok_username: Option<String>,
    pub avatar: Option<String>,
    pub display_name: Option<String>,
    pub sealed_access_token: Option<String>,
    pub sealed_refresh_token: Option<String>,
    pub token_expires_at: Option<i64>,
    pub refresh_expires_at: Option<i64>,
    pub token_scope: Option<String>,
    pub token_obtained_at: Option<i64>,
    pub grant_error: Option<String>,
    pub videos: i64,
    pub streak: i64,
    pub earnings: f64,
    pub nini_score: i64,
    pub verified: bool,
    pub bio: Option<String>,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub likes_count: Option<i64>,
    pub tiktok_video_count: Option<i64>,
    pub last_synced_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub session_hash: String,
    pub user_id: String,
    pub expires: i64,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoRecord {
    pub user_id: String,
    pub video: StoredVideo,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    User(Box<UserRecord>),
    Session(SessionRecord),
    Video(VideoRecord),
}

impl Record {
    /// The key `export` pages by (ids are unique per table).
    pub fn key(&self) -> String {
        match self {
            Record::User(u) => u.id.clone(),
            Record::Session(s) => s.id.clone(),
            Record::Video(v) => v.video.id.clone(),
        }
    }
}

/// What `import` did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    pub written: usize,
    /// Rows that could not be written because they conflict with different data already at
    /// the target (a user with the same TikTok account under another id, a session whose
    /// user is missing).
    pub skipped: usize,
}
