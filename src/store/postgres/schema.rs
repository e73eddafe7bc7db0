//! The PostgreSQL schema and its migrations: the NINI app's Prisma tables (`users`,
//! `sessions`, created exactly as Prisma would, or adopted when Prisma got there first) and
//! nini-auth's own tables beside them, in the schema `nini_auth`. Migrations run in one transaction under
//! an advisory lock, so replicas starting together apply each one exactly once.
//!
//! Times: the Prisma tables use `TIMESTAMP(3)` (UTC wall clock, no zone) because that is what
//! the NINI app reads; nini-auth's own tables store unix seconds as `BIGINT`, the unit the
//! `Store` trait speaks, so they need no conversion and no TimeZone care at all. The one
//! exception is `nini_auth.invalidations.created_at`, a `timestamptz` set by the server's
//! clock, because the invalidation follower compares it with that same clock.

use deadpool_postgres::GenericClient;

use super::connect::WHAT;
use crate::store::StoreError;

/// `pg_advisory_xact_lock` key serialising migrations across replicas ("niniauth" in ASCII).
/// The two-int4 advisory locks `try_lock_user` takes live in a separate key space.
const MIGRATION_LOCK: i64 = 0x6e69_6e69_6175_7468;

/// Migrations this binary knows; the highest is the schema version it writes.
pub const KNOWN: i64 = 1;

/// Applies every migration not yet recorded. One transaction holds the advisory lock from the
/// version check to the commit: a second replica waits, then finds the work done.
pub async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // nini-auth's own tables live in a schema of their own: `prisma db pull` and `prisma
    // migrate` on the NINI app's schema see only the NINI model (no back-relations from our
    // foreign keys, no drift to "fix"), while the foreign keys still point at its users.
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS nini_auth;
         CREATE TABLE IF NOT EXISTS nini_auth.schema_migrations (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0)::bigint FROM nini_auth.schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if found > KNOWN {
        return Err(StoreError::SchemaTooNew { found, known: KNOWN });
    }
    for version in found + 1..=KNOWN {
        apply(&tx, version).await?;
        tx.execute(
            "INSERT INTO nini_auth.schema_migrations (version) VALUES ($1::bigint)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn apply(tx: &impl GenericClient, version: i64) -> Result<(), StoreError> {
    match version {
        1 => {
            prisma_tables(tx).await?;
            tx.batch_execute(OWN_TABLES_1).await?;
            Ok(())
        }
        other => Err(StoreError::Open {
            what: WHAT.into(),
            reason: format!("no migration {other} in this binary"),
        }),
    }
}

/// An object of the Prisma DDL, by the name Prisma gives it.
enum Object {
    Table(&'static str),
    Index(&'static str),
    Constraint(&'static str),
}

/// The NINI model's DDL as `prisma migrate diff --from-empty --script` (Prisma 6.19.3) prints
/// it, statement by statement, unchanged. Prisma's leading `CREATE SCHEMA IF NOT EXISTS
/// "public"` is left out: the tables go to `current_schema()` (so a `search_path` in the URL
/// is honoured), and that statement needs CREATE on the database even when the schema exists.
///
/// No index on `sessions(user_id)`: `prisma db pull` would show it as an `@@index` the NINI
/// model does not have. Per-user session lookups go through `nini_auth.session_meta.user_id`
/// instead (see queries.rs).
const PRISMA_DDL: &[(Object, &str)] = &[
    (
        Object::Table("users"),
        r#"CREATE TABLE "users" (
    "id" TEXT NOT NULL,
    "username" TEXT,
    "email" TEXT,
    "tiktok_id" TEXT NOT NULL,
    "tiktok_username" TEXT,
    "avatar" TEXT,
    "display_name" TEXT,
    "access_token" TEXT,
    "refresh_token" TEXT,
    "token_expires_at" TIMESTAMP(3),
    "refresh_expires_at" TIMESTAMP(3),
    "videos" INTEGER NOT NULL DEFAULT 0,
    "streak" INTEGER NOT NULL DEFAULT 0,
    "earnings" DECIMAL(10,2) NOT NULL DEFAULT 0,
    "nini_score" INTEGER NOT NULL DEFAULT 0,
    "verified" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);"#,
    ),
    (
        Object::Table("sessions"),
        r#"CREATE TABLE "sessions" (
    "id" TEXT NOT NULL,
    "session_token" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "expires" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "sessions_pkey" PRIMARY KEY ("id")
);"#,
    ),
    (
        Object::Index("users_username_key"),
        r#"CREATE UNIQUE INDEX "users_username_key" ON "users"("username");"#,
    ),
    (
        Object::Index("users_email_key"),
        r#"CREATE UNIQUE INDEX "users_email_key" ON "users"("email");"#,
    ),
    (
        Object::Index("users_tiktok_id_key"),
        r#"CREATE UNIQUE INDEX "users_tiktok_id_key" ON "users"("tiktok_id");"#,
    ),
    (
        Object::Index("sessions_session_token_key"),
        r#"CREATE UNIQUE INDEX "sessions_session_token_key" ON "sessions"("session_token");"#,
    ),
    (
        Object::Constraint("sessions_user_id_fkey"),
        r#"ALTER TABLE "sessions" ADD CONSTRAINT "sessions_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;"#,
    ),
];

/// Columns nini-auth reads or writes in a Prisma table it adopts.
const USERS_COLUMNS: &[&str] = &[
    "id",
    "username",
    "email",
    "tiktok_id",
    "tiktok_username",
    "avatar",
    "display_name",
    "access_token",
    "refresh_token",
    "token_expires_at",
    "refresh_expires_at",
    "videos",
    "streak",
    "earnings",
    "nini_score",
    "verified",
    "created_at",
    "updated_at",
];
const SESSIONS_COLUMNS: &[&str] = &["id", "session_token", "user_id", "expires"];

/// Creates the Prisma tables, or adopts them. When the NINI app ran `prisma migrate` first,
/// its tables are already there: each object is created only when missing (by the name
/// Prisma gives it), rather than `IF NOT EXISTS` on everything, so an adopted table that
/// lacks a column we need is refused with a clear message instead of failing later on a
/// query. `tiktok_id` and `session_token` must be unique for our upserts; their indexes are
/// created when missing.
async fn prisma_tables(tx: &impl GenericClient) -> Result<(), StoreError> {
    for (object, ddl) in PRISMA_DDL {
        let exists =
            match object {
                Object::Table(name) => {
                    let exists = query_bool(
                        tx,
                        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = $1)",
                        name,
                    )
                    .await?;
                    if exists {
                        let wanted = if *name == "users" {
                            USERS_COLUMNS
                        } else {
                            SESSIONS_COLUMNS
                        };
                        check_columns(tx, name, wanted).await?;
                    }
                    exists
                }
                Object::Index(name) => query_bool(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1)",
                    name,
                )
                .await?,
                Object::Constraint(name) => {
                    query_bool(
                        tx,
                        "SELECT EXISTS (SELECT 1 FROM information_schema.table_constraints
                     WHERE constraint_schema = current_schema() AND constraint_name = $1)",
                        name,
                    )
                    .await?
                }
            };
        if !exists {
            tx.batch_execute(ddl).await?;
        }
    }
    Ok(())
}

async fn query_bool(tx: &impl GenericClient, sql: &str, name: &str) -> Result<bool, StoreError> {
    Ok(tx.query_one(sql, &[&name]).await?.try_get(0)?)
}

async fn check_columns(tx: &impl GenericClient, table: &str, wanted: &[&str]) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await?;
    let mut have = Vec::with_capacity(rows.len());
    for r in rows {
        have.push(r.try_get::<_, String>(0)?);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Open {
        what: WHAT.into(),
        reason: format!(
            "table {table} already exists but lacks column(s) {} that nini-auth needs (is it the NINI model?)",
            missing.join(", ")
        ),
    })
}

/// nini-auth's own tables. Everything the NINI model has no column for lives here, keyed by
/// the Prisma rows' ids with cascading foreign keys, so deleting a user or a session in the
/// app (or in nini-auth) takes our rows along.
const OWN_TABLES_1: &str = "
CREATE TABLE nini_auth.user_state (
    user_id            text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE ON UPDATE CASCADE,
    token_scope        text,
    token_obtained_at  bigint,
    grant_error        text,
    bio                text,
    follower_count     bigint,
    following_count    bigint,
    likes_count        bigint,
    tiktok_video_count bigint,
    last_synced_at     bigint
);
-- user_id duplicates sessions.user_id so that per-user session lookups have an index
-- without adding one to the Prisma table (which `prisma db pull` would report).
CREATE TABLE nini_auth.session_meta (
    session_id   text PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE ON UPDATE CASCADE,
    user_id      text NOT NULL REFERENCES users(id) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at   bigint NOT NULL,
    last_seen_at bigint,
    device       text
);
CREATE INDEX session_meta_user_id ON nini_auth.session_meta (user_id);
CREATE TABLE nini_auth.videos (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users(id) ON DELETE CASCADE ON UPDATE CASCADE,
    create_time     bigint NOT NULL,
    title           text,
    description     text,
    cover_image_url text,
    share_url       text,
    duration        bigint,
    view_count      bigint,
    like_count      bigint,
    comment_count   bigint,
    share_count     bigint,
    synced_at       bigint NOT NULL
);
-- id DESC too: user_videos pages by (create_time, id) and this serves it without a sort.
CREATE INDEX videos_user_time ON nini_auth.videos (user_id, create_time DESC, id DESC);
CREATE TABLE nini_auth.used_states (
    state_hash text PRIMARY KEY,
    expires    bigint NOT NULL
);
CREATE INDEX used_states_expires ON nini_auth.used_states (expires);
CREATE TABLE nini_auth.invalidations (
    seq           bigserial PRIMARY KEY,
    user_id       text,
    session_token text,
    -- The store (process) that wrote it: its own follower skips it.
    origin        text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX invalidations_created_at ON nini_auth.invalidations (created_at);
-- No index on window_start alone: only purge_expired filters on it, rarely, and every
-- rate_hit would pay for one.
CREATE TABLE nini_auth.rate_windows (
    key          text NOT NULL,
    window_start bigint NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
";
