//! The store side of the TikTok data sync: writing a sync's result (profile, the user's
//! videos, derived counts) in one transaction, and the reads the sync endpoints, the
//! cool-down and the background job need.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{invalidate, Store, StoreError};

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

const PROFILE_COLUMNS: &str = "id, tiktok_id, username, tiktok_username, display_name, avatar, verified, bio,
     follower_count, following_count, likes_count, tiktok_video_count, videos, streak, nini_score, last_synced_at";

fn profile_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserProfile> {
    Ok(UserProfile {
        id: r.get(0)?,
        open_id: r.get(1)?,
        username: r.get(2)?,
        tiktok_username: r.get(3)?,
        display_name: r.get(4)?,
        avatar: r.get(5)?,
        verified: r.get::<_, i64>(6)? != 0,
        bio: r.get(7)?,
        follower_count: r.get(8)?,
        following_count: r.get(9)?,
        likes_count: r.get(10)?,
        tiktok_video_count: r.get(11)?,
        videos: r.get(12)?,
        streak: r.get(13)?,
        nini_score: r.get(14)?,
        last_synced_at: r.get(15)?,
    })
}

fn profile_of(c: &rusqlite::Connection, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = ?1"),
        params![user_id],
        profile_row,
    )
    .optional()?)
}

impl Store {
    /// Stores one sync's result in one transaction: the returned profile fields (absent ones
    /// keep their stored value), and when `videos` is given, the user's videos replaced by
    /// exactly that set with `videos` (count) and `streak` derived from it; `last_synced_at`
    /// is set and other processes are told to drop their cached identity. Returns the stored
    /// profile, or None when the user no longer exists.
    pub fn save_sync(
        &self,
        user_id: &str,
        profile: &SyncedProfile,
        videos: Option<VideoSet<'_>>,
        now: i64,
    ) -> Result<Option<UserProfile>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE users SET
                    display_name = COALESCE(?2, display_name),
                    avatar = COALESCE(?3, avatar),
                    tiktok_username = COALESCE(?4, tiktok_username),
                    username = COALESCE(username, ?4),
                    verified = COALESCE(?5, verified),
                    bio = COALESCE(?6, bio),
                    follower_count = COALESCE(?7, follower_count),
                    following_count = COALESCE(?8, following_count),
                    likes_count = COALESCE(?9, likes_count),
                    tiktok_video_count = COALESCE(?10, tiktok_video_count),
                    last_synced_at = ?11, updated_at = ?11
                 WHERE id = ?1",
                params![
                    user_id,
                    profile.display_name,
                    profile.avatar,
                    profile.username,
                    profile.verified,
                    profile.bio,
                    profile.follower_count,
                    profile.following_count,
                    profile.likes_count,
                    profile.video_count,
                    now
                ],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            if let Some(set) = videos {
                tx.execute("DELETE FROM videos WHERE user_id = ?1", params![user_id])?;
                let mut stored: i64 = 0;
                {
                    // OR IGNORE: an id already stored for another account (never seen at
                    // TikTok) must not move that row over to this user.
                    let mut ins = tx.prepare_cached(
                        "INSERT OR IGNORE INTO videos (id, user_id, create_time, title, description, cover_image_url,
                            share_url, duration, view_count, like_count, comment_count, share_count, synced_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )?;
                    for v in set.videos {
                        stored += ins.execute(params![
                            v.id,
                            user_id,
                            v.create_time,
                            v.title,
                            v.description,
                            v.cover_image_url,
                            v.share_url,
                            v.duration,
                            v.view_count,
                            v.like_count,
                            v.comment_count,
                            v.share_count,
                            v.synced_at
                        ])? as i64;
                    }
                }
                tx.execute(
                    "UPDATE users SET videos = ?2, streak = ?3 WHERE id = ?1",
                    params![user_id, stored, set.streak],
                )?;
            }
            invalidate(&tx, Some(user_id), None, now)?;
            let out = profile_of(&tx, user_id)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// The user's stored profile and derived counts.
    pub fn user_profile(&self, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
        self.with_conn(|c| profile_of(c, user_id))
    }

    /// When the user's data was last synced successfully (unix seconds).
    pub fn last_synced_at(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT last_synced_at FROM users WHERE id = ?1",
                params![user_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
        })
    }

    /// Up to `limit` of the user's videos, newest first, strictly after `before` (the
    /// `(create_time, id)` of the last video of the previous page), and how many are stored.
    pub fn user_videos(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<(i64, &str)>,
    ) -> Result<(Vec<StoredVideo>, i64), StoreError> {
        let (bt, bid) = match before {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        self.with_conn(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, create_time, title, description, cover_image_url, share_url, duration,
                        view_count, like_count, comment_count, share_count, synced_at
                 FROM videos
                 WHERE user_id = ?1 AND (?2 IS NULL OR create_time < ?2 OR (create_time = ?2 AND id < ?3))
                 ORDER BY create_time DESC, id DESC
                 LIMIT ?4",
            )?;
            let rows = st.query_map(params![user_id, bt, bid, limit], |r| {
                Ok(StoredVideo {
                    id: r.get(0)?,
                    create_time: r.get(1)?,
                    title: r.get(2)?,
                    description: r.get(3)?,
                    cover_image_url: r.get(4)?,
                    share_url: r.get(5)?,
                    duration: r.get(6)?,
                    view_count: r.get(7)?,
                    like_count: r.get(8)?,
                    comment_count: r.get(9)?,
                    share_count: r.get(10)?,
                    synced_at: r.get(11)?,
                })
            })?;
            let videos = rows.collect::<Result<Vec<_>, _>>()?;
            let total: i64 = c.query_row(
                "SELECT count(*) FROM videos WHERE user_id = ?1",
                params![user_id],
                |r| r.get(0),
            )?;
            Ok((videos, total))
        })
    }

    /// Of `candidates`, up to `limit` users that still hold TikTok tokens and were never
    /// synced or last synced before `synced_before`, least recently synced first.
    pub fn due_for_sync(
        &self,
        candidates: &[String],
        synced_before: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Chunks keep each statement (and each hold on the connection) short.
        const CHUNK: usize = 500;
        let mut due: Vec<(i64, String)> = Vec::new();
        for chunk in candidates.chunks(CHUNK) {
            let ids = serde_json::Value::from(chunk.to_vec()).to_string();
            let found = self.with_conn(|c| {
                let mut st = c.prepare_cached(
                    "SELECT id, COALESCE(last_synced_at, 0) FROM users
                     WHERE id IN (SELECT value FROM json_each(?1))
                       AND access_token IS NOT NULL AND grant_error IS NULL
                       AND (last_synced_at IS NULL OR last_synced_at < ?2)",
                )?;
                let rows = st.query_map(params![ids, synced_before], |r| Ok((r.get(1)?, r.get(0)?)))?;
                Ok(rows.collect::<Result<Vec<(i64, String)>, _>>()?)
            })?;
            due.extend(found);
        }
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyRing;
    use crate::store::{Profile, Tokens};

    fn store_with_user() -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("t.db"), KeyRing::generate()).expect("open");
        let profile = Profile {
            open_id: "open-1".into(),
            display_name: Some("Ana".into()),
            username: Some("ana".into()),
            avatar: Some("http://a/1".into()),
            verified: Some(true),
        };
        let tokens = Tokens {
            access_token: "act.1".into(),
            refresh_token: "rft.1".into(),
            access_expires_at: 1000,
            refresh_expires_at: 2000,
            scope: "user.info.basic".into(),
            obtained_at: 10,
        };
        let id = s
            .complete_login(&profile, &tokens, "h", 5000, None, 10)
            .expect("login")
            .user_id;
        (dir, s, id)
    }

    fn video(id: &str, t: i64) -> StoredVideo {
        StoredVideo {
            id: id.into(),
            create_time: t,
            title: Some(format!("v{id}")),
            synced_at: 1,
            ..Default::default()
        }
    }

    #[test]
    fn absent_fields_keep_stored_values_and_videos_are_replaced() {
        let (_d, s, uid) = store_with_user();
        let first = [video("1", 100), video("2", 200), video("3", 300)];
        let p = SyncedProfile {
            bio: Some("hola".into()),
            follower_count: Some(7),
            ..Default::default()
        };
        let set = VideoSet {
            videos: &first,
            streak: 2,
        };
        let got = s.save_sync(&uid, &p, Some(set), 50).expect("save").expect("user");
        assert_eq!(got.display_name.as_deref(), Some("Ana"), "not asked for: kept");
        assert!(got.verified);
        assert_eq!(got.bio.as_deref(), Some("hola"));
        assert_eq!((got.videos, got.streak, got.last_synced_at), (3, 2, Some(50)));

        let second = [video("4", 400)];
        let set = VideoSet {
            videos: &second,
            streak: 1,
        };
        let got = s
            .save_sync(&uid, &SyncedProfile::default(), Some(set), 60)
            .expect("save")
            .expect("user");
        assert_eq!((got.videos, got.streak), (1, 1));
        assert_eq!(got.follower_count, Some(7));
        let (vs, total) = s.user_videos(&uid, 10, None).expect("videos");
        assert_eq!(total, 1);
        assert_eq!(vs.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec!["4"]);

        // Without a video set, videos and derived counts stay as they are.
        let got = s
            .save_sync(&uid, &SyncedProfile::default(), None, 70)
            .expect("save")
            .expect("user");
        assert_eq!((got.videos, got.streak, got.last_synced_at), (1, 1, Some(70)));
        assert_eq!(s.last_synced_at(&uid).expect("q"), Some(70));
        assert!(s.save_sync("nobody", &p, None, 1).expect("save").is_none());
    }

    #[test]
    fn videos_page_newest_first_with_ties() {
        let (_d, s, uid) = store_with_user();
        let vs = [video("a", 100), video("b", 100), video("c", 90), video("d", 300)];
        s.save_sync(
            &uid,
            &SyncedProfile::default(),
            Some(VideoSet { videos: &vs, streak: 0 }),
            1,
        )
        .expect("save");
        let (p1, total) = s.user_videos(&uid, 2, None).expect("page");
        assert_eq!(total, 4);
        let ids: Vec<&str> = p1.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, vec!["d", "b"]);
        let last = &p1[1];
        let (p2, _) = s
            .user_videos(&uid, 2, Some((last.create_time, &last.id)))
            .expect("page");
        let ids: Vec<&str> = p2.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "c"]);
    }

    #[test]
    fn due_users_are_the_stale_ones_with_tokens() {
        let (_d, s, uid) = store_with_user();
        let cands = vec![uid.clone(), "ghost".to_string()];
        assert_eq!(s.due_for_sync(&cands, 100, 10).expect("due"), vec![uid.clone()]);
        s.save_sync(&uid, &SyncedProfile::default(), None, 150).expect("save");
        assert!(s.due_for_sync(&cands, 100, 10).expect("due").is_empty());
        assert_eq!(s.due_for_sync(&cands, 200, 10).expect("due"), vec![uid.clone()]);
        s.clear_tokens(&uid, 160).expect("clear");
        assert!(s.due_for_sync(&cands, 200, 10).expect("due").is_empty());
    }
}
