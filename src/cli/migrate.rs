//! `nini-auth migrate-store --from A --to B`: copies a deployment's users (tokens still
//! sealed), sessions and videos from one database to another, in key order and in batches,
//! each batch an idempotent upsert in one transaction. Running it twice gives the same
//! result, and a second run while the source still serves copies what changed meanwhile; a
//! user changed at the target since (newer `updated_at`) is never rolled back. It does not
//! delete: sessions ended at the source between two runs stay at the target, so the last run
//! happens with the source stopped (docs/operations.md). Used states, rate windows and
//! invalidations are not copied: they expire within minutes.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::config::{self, Database, EXIT_CONFIG};
use crate::crypto::KeyRing;
use crate::ops::block_on_fresh;
use crate::store::{ImportCounts, RecordKind, Store};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to copy from: a SQLite path / `sqlite:PATH`, or `postgres://…`.
    #[arg(long)]
    from: String,
    /// The database to copy to (created and migrated if empty).
    #[arg(long)]
    to: String,
    /// Rows per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    users: ImportCounts,
    sessions: ImportCounts,
    videos: ImportCounts,
}

pub fn run(args: &MigrateArgs) -> ExitCode {
    let (from, to) = match (
        config::storage_from_url("--from", &args.from),
        config::storage_from_url("--to", &args.to),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (f, t) => {
            for e in [f.err(), t.err()].into_iter().flatten() {
                eprintln!("{}", e.report());
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Database::Sqlite(path) = &from.database {
        // Copying from a mistyped path must fail, not create an empty database.
        if !path.is_file() {
            eprintln!("--from: database {} does not exist", path.display());
            return ExitCode::FAILURE;
        }
    }
    if from.database.to_string() == to.database.to_string() {
        eprintln!("--from and --to name the same database");
        return ExitCode::from(EXIT_CONFIG);
    }
    block_on_fresh(async move {
        // Tokens are copied sealed: no key is ever needed (or used) here.
        let Ok(no_keys) = KeyRing::from_base64(&[]) else {
            return ExitCode::FAILURE;
        };
        let source = match crate::store::open(&from, no_keys.clone()).await {
            Ok(s) => s,
            Err(e) => return super::admin::fail("opening --from", &e),
        };
        let target = match crate::store::open(&to, no_keys).await {
            Ok(s) => s,
            Err(e) => return super::admin::fail("opening --to", &e),
        };
        let mut report = Report::default();
        for (kind, counts) in [
            (RecordKind::Users, &mut report.users),
            (RecordKind::Sessions, &mut report.sessions),
            (RecordKind::Videos, &mut report.videos),
        ] {
            if let Err(code) = copy(&*source, &*target, kind, args.batch as usize, counts).await {
                return code;
            }
        }
        let _ = source.close().await;
        let _ = target.close().await;
        if args.json {
            match serde_json::to_string_pretty(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("cannot encode JSON: {e}"),
            }
        } else {
            println!("copied {} → {}", from.database, to.database);
            for (what, c) in [
                ("users", report.users),
                ("sessions", report.sessions),
                ("videos", report.videos),
            ] {
                println!("  {what:<9} {:>8} written {:>6} skipped", c.written, c.skipped);
            }
            if report.users.skipped + report.sessions.skipped + report.videos.skipped > 0 {
                println!(
                    "  skipped rows conflict with different data at the target (same TikTok account under \
                     another id) or belong to a user that was skipped"
                );
            }
        }
        ExitCode::SUCCESS
    })
}

async fn copy(
    source: &dyn Store,
    target: &dyn Store,
    kind: RecordKind,
    batch: usize,
    counts: &mut ImportCounts,
) -> Result<(), ExitCode> {
    let mut after = String::new();
    loop {
        let records = source
            .export(kind, &after, batch)
            .await
            .map_err(|e| super::admin::fail("reading --from", &e))?;
        let Some(last) = records.last().map(|r| r.key()) else {
            return Ok(());
        };
        let c = target
            .import(&records)
            .await
            .map_err(|e| super::admin::fail("writing --to", &e))?;
        counts.written += c.written;
        counts.skipped += c.skipped;
        if records.len() < batch {
            return Ok(());
        }
        after = last;
    }
}
