//! Configuration of the mock TikTok server: registered clients, users, videos and behaviour knobs.
//!
//! Knobs exist wherever real TikTok's behaviour is undocumented or varies between doc
//! generations, so the project's tests can run against every plausible variant.

use std::time::{SystemTime, UNIX_EPOCH};

/// Client key of the app registered by [`MockConfig::demo`].
pub const DEMO_CLIENT_KEY: &str = "mock-client-key";
/// Client secret of the app registered by [`MockConfig::demo`].
pub const DEMO_CLIENT_SECRET: &str = "mock-client-secret";
/// `open_id` of the single user configured by [`MockConfig::demo`].
pub const DEMO_OPEN_ID: &str = "7c1f3a52-9d4e-4b8a-a6f0-3e2d5c8b9a14";
/// `open_id` of the second user of [`MockUser::demo_team`] (Diego, on the NINI team).
pub const DEMO_TEAM_OPEN_ID: &str = "0b7d4e2a-5c1f-4a9e-8d3b-6f2e1c9a7b54";

/// Scope names the authorize endpoint recognises at all (approved or not).
pub const KNOWN_SCOPES: &[&str] = &[
    "user.info.basic",
    "user.info.profile",
    "user.info.stats",
    "video.list",
    "video.upload",
    "video.publish",
    "artist.certification.read",
    "artist.certification.update",
    "user.account.type",
    "user.insights",
    "comment.list",
    "comment.list.manage",
    "research.data.basic",
    "research.adlib.basic",
];

/// An app registered in the (mock) developer portal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockClient {
    pub client_key: String,
    pub client_secret: String,
    /// Compared byte for byte with the `redirect_uri` of authorize requests.
    pub redirect_uris: Vec<String>,
    pub approved_scopes: Vec<String>,
    /// Sandbox apps can only be authorized by `target_users`.
    pub sandbox: bool,
    /// `open_id`s allowed to authorize a sandbox app.
    pub target_users: Vec<String>,
}

/// A TikTok account that can log in through the mock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockUser {
    pub open_id: String,
    pub union_id: String,
    pub display_name: String,
    pub username: String,
    /// `None`: the mock serves a generated SVG at `/__mock/avatar/<open_id>.svg`, so pages
    /// render without internet access.
    pub avatar_url: Option<String>,
    pub bio_description: String,
    pub is_verified: bool,
    pub profile_deep_link: String,
    pub follower_count: i64,
    pub following_count: i64,
    pub likes_count: i64,
    pub video_count: i64,
    pub videos: Vec<MockVideo>,
}

/// One posted video of a [`MockUser`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockVideo {
    /// Numeric-looking string; real ids exceed 2^53, so keep them ≥ 19 digits.
    pub id: String,
    /// UTC epoch seconds.
    pub create_time: i64,
    pub title: String,
    pub video_description: String,
    pub duration: i64,
    /// `None`: a mock-served URL carrying `x-expires` about 6 h ahead, like TikTok's signed CDN links.
    pub cover_image_url: Option<String>,
    pub share_url: String,
    pub embed_link: String,
    pub like_count: i64,
    pub comment_count: i64,
    pub share_count: i64,
    pub view_count: i64,
    /// Private videos are never returned by the Display API.
    pub is_public: bool,
}

/// Token lifetimes; the two TikTok doc generations disagree, so both are available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_ttl_s: i64,
    pub refresh_ttl_s: i64,
}

impl Lifetimes {
    /// Older docs: 24 h access, 365 d refresh.
    pub fn legacy() -> Self {
        Self {
            access_ttl_s: 86_400,
            refresh_ttl_s: 31_536_000,
        }
    }

    /// Newer docs: 2 h access, 180 d refresh.
    pub fn new_docs() -> Self {
        Self {
            access_ttl_s: 7_200,
            refresh_ttl_s: 15_552_000,
        }
    }
}

/// Refresh-token rotation behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rotation {
    /// Every refresh issues a new refresh token and the previous one dies at once (newer docs).
    #[default]
    Always,
    /// Older docs' "may be different": odd-numbered refreshes of a grant (1st, 3rd, …) return
    /// the same refresh token, even-numbered ones rotate it.
    SometimesSame,
}

/// How the mock treats PKCE parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PkceMode {
    /// Documented Web behaviour: challenge and verifier are ignored.
    #[default]
    Ignore,
    /// A challenge sent at authorize is verified at token time (hex or base64url accepted).
    VerifyIfPresent,
    /// Desktop style: challenge required, `lowercase_hex(SHA256(verifier))`.
    RequiredHex,
    /// RFC 7636 style: challenge required, `base64url(SHA256(verifier))`.
    RequiredBase64Url,
}

/// Display API error used when `fields` asks for a field whose scope was not granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScopeErrorCode {
    /// HTTP 400 `scope_permission_missed`.
    #[default]
    ScopePermissionMissed,
    /// HTTP 401 `scope_not_authorized`.
    ScopeNotAuthorized,
}

/// Everything the mock knows and every behaviour switch; change it at runtime with
/// [`super::MockTikTok::update_config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockConfig {
    pub clients: Vec<MockClient>,
    pub users: Vec<MockUser>,
    pub access_ttl_s: i64,
    pub refresh_ttl_s: i64,
    pub rotation: Rotation,
    /// HTTP status of OAuth error bodies; field reports show 200, other clients assume 4xx.
    pub oauth_error_status: u16,
    pub pkce_mode: PkceMode,
    pub code_ttl_s: i64,
    /// Per Display API endpoint per client_key, sliding 60 s window.
    pub rate_limit_per_min: u32,
    /// Add `Retry-After: 1` to 429 answers.
    pub retry_after_header: bool,
    /// Real TikTok only accepts https redirect URIs for Web apps.
    pub require_https_redirect: bool,
    pub scope_error_code_for_fields: ScopeErrorCode,
    /// Revoke success body: empty instead of `{}`.
    pub revoke_empty_body: bool,
    /// Display API error bodies carry `"data":{}`.
    pub error_includes_data: bool,
    /// After a refresh the previous access token stays valid until its own expiry.
    pub keep_old_access_token_after_refresh: bool,
    /// Each refresh_token grant is held open this long, so race tests can overlap calls.
    pub refresh_delay_ms: u64,
    /// Each revoke is held open this long before it takes effect (sign-out race tests).
    pub revoke_delay_ms: u64,
    /// Clamp video list `max_count` into 1..=20 instead of answering `invalid_params`.
    pub clamp_max_count: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        let lifetimes = Lifetimes::legacy();
        Self {
            clients: Vec::new(),
            users: Vec::new(),
            access_ttl_s: lifetimes.access_ttl_s,
            refresh_ttl_s: lifetimes.refresh_ttl_s,
            rotation: Rotation::Always,
            oauth_error_status: 200,
            pkce_mode: PkceMode::Ignore,
            code_ttl_s: 600,
            rate_limit_per_min: 600,
            retry_after_header: false,
            require_https_redirect: true,
            scope_error_code_for_fields: ScopeErrorCode::ScopePermissionMissed,
            revoke_empty_body: false,
            error_includes_data: false,
            keep_old_access_token_after_refresh: true,
            refresh_delay_ms: 0,
            revoke_delay_ms: 0,
            clamp_max_count: false,
        }
    }
}

impl MockConfig {
    /// One app ([`DEMO_CLIENT_KEY`]) with the four Login Kit / Display scopes approved, plain
    /// http redirect URIs allowed, and one verified user whose name is deliberately non-ASCII.
    pub fn demo(redirect_uris: Vec<String>) -> Self {
        Self {
            clients: vec![MockClient {
                client_key: DEMO_CLIENT_KEY.to_owned(),
                client_secret: DEMO_CLIENT_SECRET.to_owned(),
                redirect_uris,
                approved_scopes: ["user.info.basic", "user.info.profile", "user.info.stats", "video.list"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                sandbox: false,
                target_users: Vec::new(),
            }],
            users: vec![MockUser::demo()],
            require_https_redirect: false,
            ..Self::default()
        }
    }

    /// Sets both token lifetimes from a profile.
    pub fn set_lifetimes(&mut self, lifetimes: Lifetimes) {
        self.access_ttl_s = lifetimes.access_ttl_s;
        self.refresh_ttl_s = lifetimes.refresh_ttl_s;
    }

    pub fn client(&self, client_key: &str) -> Option<&MockClient> {
        self.clients.iter().find(|c| c.client_key == client_key)
    }

    pub fn user(&self, open_id: &str) -> Option<&MockUser> {
        self.users.iter().find(|u| u.open_id == open_id)
    }
}

impl MockUser {
    /// The demo user: "María José 🌮" (@mariajose), verified, with six public videos on the
    /// six days before now and one private video that the API must never return.
    pub fn demo() -> Self {
        let now = real_now();
        let mut videos: Vec<MockVideo> = (0..6)
            .map(|day| MockVideo::generated("mariajose", day, now - (day as i64 + 1) * 86_400))
            .collect();
        let mut private = MockVideo::generated("mariajose", 6, now - 3 * 86_400 - 3_600);
        private.is_public = false;
        private.title = "Borrador (privado)".to_owned();
        videos.push(private);
        Self {
            open_id: DEMO_OPEN_ID.to_owned(),
            union_id: "b4e7d2c9-61a3-4f58-9e0b-7a2c1d5f8e36".to_owned(),
            display_name: "María José 🌮".to_owned(),
            username: "mariajose".to_owned(),
            avatar_url: None,
            bio_description: "Tacos, viajes y código · CDMX ✈️".to_owned(),
            is_verified: true,
            profile_deep_link: "https://vm.tiktok.com/ZMmariajose/".to_owned(),
            follower_count: 15_230,
            following_count: 312,
            likes_count: 482_107,
            video_count: 6,
            videos,
        }
    }

    /// The `nini-auth demo` accounts: María José (the [`MockUser::demo`] user, verified, her
    /// videos titled), first so the consent page selects her, and Diego Ramírez
    /// ([`DEMO_TEAM_OPEN_ID`]): on the NINI team, not verified, a small audience, four videos.
    pub fn demo_team() -> Vec<Self> {
        let now = real_now();
        let mut maria = Self::demo();
        let titles = [
            "Tacos al pastor en 60 segundos 🌮",
            "Un día en CDMX ✈️",
            "Mi setup para programar",
            "Probando el metro de Tokio",
            "Receta: salsa verde",
            "Q&A: ¿cómo empecé?",
        ];
        for (v, t) in maria.videos.iter_mut().zip(titles) {
            v.title = t.to_owned();
            v.view_count = v.view_count * 37 + 4_210;
        }
        let diego_titles = [
            "Primer video en NINI",
            "Cómo edito mis clips",
            "Café de especialidad ☕",
            "Vlog: hackathon",
        ];
        let videos = diego_titles
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = MockVideo::generated("diegoramirez", i as u64, now - (i as i64 * 2 + 1) * 86_400);
                v.title = (*t).to_owned();
                v
            })
            .collect();
        let diego = Self {
            open_id: DEMO_TEAM_OPEN_ID.to_owned(),
            union_id: "e2c4a7f1-3b9d-4f6e-8a1c-5d7b9e2f4a60".to_owned(),
            display_name: "Diego Ramírez".to_owned(),
            username: "diegoramirez".to_owned(),
            avatar_url: None,
            bio_description: "Equipo NINI · café y código".to_owned(),
            is_verified: false,
            profile_deep_link: "https://vm.tiktok.com/ZMdiegoramirez/".to_owned(),
            follower_count: 870,
            following_count: 221,
            likes_count: 9_420,
            video_count: 4,
            videos,
        };
        vec![maria, diego]
    }

    /// A minimal user with `count` public videos one hour apart, newest one hour before now.
    pub fn with_videos(open_id: &str, username: &str, count: usize) -> Self {
        let now = real_now();
        let videos = (0..count)
            .map(|i| MockVideo::generated(username, i as u64, now - (i as i64 + 1) * 3_600))
            .collect();
        Self {
            open_id: open_id.to_owned(),
            union_id: format!("union-{open_id}"),
            display_name: username.to_owned(),
            username: username.to_owned(),
            profile_deep_link: format!("https://vm.tiktok.com/ZM{username}/"),
            video_count: count as i64,
            videos,
            ..Self::default()
        }
    }
}

impl MockVideo {
    /// A public video with a 19-digit id derived from `seq`, so ids are unique per user.
    pub fn generated(username: &str, seq: u64, create_time: i64) -> Self {
        let id = format!("{}", 7_300_000_000_000_000_000u64 + create_time as u64 * 1_000 + seq);
        Self {
            title: format!("Video {seq}"),
            video_description: format!("Video {seq} de @{username} #mock"),
            duration: 15 + (seq as i64 % 45),
            cover_image_url: None,
            share_url: format!("https://www.tiktok.com/@{username}/video/{id}"),
            embed_link: format!("https://www.tiktok.com/player/v1/{id}"),
            like_count: 100 + seq as i64 * 7,
            comment_count: 10 + seq as i64,
            share_count: 3 + seq as i64,
            view_count: 1_000 + seq as i64 * 113,
            is_public: true,
            create_time,
            id,
        }
    }
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
