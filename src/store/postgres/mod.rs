//! PLACEHOLDER while the PostgreSQL backend is written: refuses to open.
use std::time::Duration;

use crate::config::{PgUrl, StorageConfig};
use crate::crypto::KeyRing;
use crate::store::StoreError;

pub struct PgStore;

impl PgStore {
    pub async fn open(
        url: &PgUrl,
        _cfg: &StorageConfig,
        _keys: KeyRing,
    ) -> Result<crate::store::sqlite::SqliteStore, StoreError> {
        let _ = Duration::ZERO;
        Err(StoreError::Open {
            what: "storage.database".into(),
            reason: format!("{}: PostgreSQL not built yet", url.redacted()),
        })
    }
}
