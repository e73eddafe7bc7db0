//! Small helpers every query file shares: statements prepared once per connection, and the
//! conventions for the Prisma tables' `TIMESTAMP(3)` columns.
//!
//! Those columns hold UTC wall-clock time without a zone. Every conversion names UTC
//! explicitly, so the session's TimeZone setting (the URL may set one) never shifts a value:
//! - write unix seconds: `(to_timestamp($n::bigint) AT TIME ZONE 'UTC')`
//! - read unix seconds: `floor(extract(epoch FROM col))::bigint` (epoch of a zone-less
//!   timestamp is taken as UTC; floor, because the NINI app may write milliseconds)
//! - "later than `now`" in whole seconds, the way SQLite compares integers, without a
//!   function on the column (so its index is usable): `col >= (to_timestamp($n::bigint + 1)
//!   AT TIME ZONE 'UTC')`, i.e. floor(col) > now.
//!
//! The NINI model's INTEGER columns are int4: parameters are cast (`$n::bigint`) so an `i64`
//! binds, and the assignment narrows (a value out of int4 range is an error, not a wrap);
//! reads cast back to bigint.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::store::StoreError;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

pub(super) async fn query_one(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, params).await?)
}

pub(super) async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

/// Row counts as the trait reports them.
pub(super) fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A `LIMIT` parameter.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
