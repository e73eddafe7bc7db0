//! Per-user locks on PostgreSQL: session-level advisory locks, held on a connection of the
//! store's lock pool that the returned lock keeps out of that pool until it is released. The server ends a lock
//! with its connection, so a holder that crashes, or a replica that dies, frees its locks
//! without any lease or expiry; `try_lock_user`'s `ttl` is therefore unused here.

use async_trait::async_trait;
use deadpool_postgres::Object;

use super::sql::query_one;
use crate::store::{HeldLock, LockPurpose, StoreError};

/// The lock's key: two int4 (a key space apart from the migration lock's single bigint).
/// hashtext can collide, which only means two users occasionally wait for each other.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('nini-auth:' || $1), hashtext($2))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('nini-auth:' || $1), hashtext($2))";

pub(super) struct AdvisoryLock {
    /// Some while the lock may be held on it. Only a successful unlock lets it go back to
    /// the pool; otherwise `Drop` closes it, which is what frees the lock.
    conn: Option<Object>,
    /// The store's database runtime, where the unlock runs like all database work.
    runtime: tokio::runtime::Handle,
    purpose: LockPurpose,
    user_id: String,
}

/// Takes the lock on `conn`, or gives the connection back when someone holds it.
pub(super) async fn try_lock(
    conn: Object,
    runtime: tokio::runtime::Handle,
    purpose: LockPurpose,
    user_id: &str,
) -> Result<Option<AdvisoryLock>, StoreError> {
    // Built first so that any failure below detaches the connection: whether the server
    // took the lock before an error is unknowable, and a pooled connection must not carry
    // a lock to its next user.
    let mut lock = AdvisoryLock {
        conn: Some(conn),
        runtime,
        purpose,
        user_id: user_id.to_string(),
    };
    let Some(c) = lock.conn.as_ref() else {
        return Ok(None);
    };
    let taken: bool = query_one(c, TRY_LOCK, &[&purpose.as_str(), &user_id])
        .await?
        .try_get(0)?;
    if taken {
        return Ok(Some(lock));
    }
    // Not taken: nothing is held on this connection, it may serve others.
    drop(lock.conn.take());
    Ok(None)
}

impl AdvisoryLock {
    async fn unlock(&mut self) {
        let Some(c) = self.conn.as_ref() else {
            return;
        };
        let unlocked = match query_one(c, UNLOCK, &[&self.purpose.as_str(), &self.user_id]).await {
            Ok(row) => row.try_get::<_, bool>(0).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match unlocked {
            // Back to the pool, holding nothing.
            Ok(true) => drop(self.conn.take()),
            Ok(false) => log::warn!(
                "the {} lock of user {} was not held at release; closing its connection",
                self.purpose.as_str(),
                self.user_id
            ),
            Err(e) => log::warn!(
                "releasing the {} lock of user {} failed ({e}); closing its connection",
                self.purpose.as_str(),
                self.user_id
            ),
        }
    }
}

#[async_trait]
impl HeldLock for AdvisoryLock {
    async fn release(self: Box<Self>) {
        let runtime = self.runtime.clone();
        // If the store (and its runtime) is gone, the task never runs and dropping it drops
        // the lock, whose Drop closes the connection: the lock is freed either way.
        let _ = runtime
            .spawn(async move {
                let mut lock = self;
                lock.unlock().await;
            })
            .await;
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detached from the pool and dropped: the connection closes, and with it the
            // server ends the lock. Nothing here needs a runtime.
            drop(Object::take(conn));
        }
    }
}
