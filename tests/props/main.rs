//! Property-based tests (proptest) of the code that reads attacker-controlled input: path
//! canonicalisation, redirect validation, cookies and tokens, configuration, TikTok's JSON and
//! sealed values. Each property runs `PROPTEST_CASES` cases (256 by default); `scripts/fuzz`
//! raises that and bounds each property in time with `NINI_PROPS_SECONDS`.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

// Path canonicalisation: idempotent, protected or refused, look-alikes refused.
mod paths;
// Redirect validation: accepted targets are same-origin and carry no URL in the query.
mod redirects;
// Cookie header parsing, session token decoding.
mod cookies;
// Configuration parsing and validation: no panic, every problem names a key.
mod config;
// TikTok's token, revoke, user-info and video-list answers.
mod tiktok;
// Sealed values: round trip, and any mutation is an error.
mod sealed;
// Test oracles built from an independent Unicode implementation.
mod unicode;

/// Cases per runner: between two chunks the time budget is checked, so a property stops within
/// about one chunk's time of its budget.
const CHUNK: u32 = 2_000;

/// Runs `test` on `PROPTEST_CASES` values of `strategy` (fresh random seeds per chunk), stops
/// early once `NINI_PROPS_SECONDS` have passed, and prints how many cases ran. A failure panics
/// with proptest's minimal failing input.
pub fn check<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    // Config::default() reads PROPTEST_CASES and the other PROPTEST_* variables. Failures are
    // reported with their minimal input instead of being written next to the sources.
    let base = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let total = base.cases;
    let budget = std::env::var("NINI_PROPS_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    let started = Instant::now();
    let mut done: u32 = 0;
    while done < total {
        let chunk = (total - done).min(CHUNK);
        let mut runner = TestRunner::new(Config {
            cases: chunk,
            ..base.clone()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("property {name} failed (after at least {done} passing cases): {e}");
        }
        done += chunk;
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
    }
    let note = if done < total { " (time budget reached)" } else { "" };
    println!(
        "props: {name}: {done} cases in {:.1} s{note}",
        started.elapsed().as_secs_f64()
    );
}

/// `../shared/<rel>` next to the crate, when that checkout is present (it is optional).
pub fn shared_file(rel: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join(rel);
    p.is_file().then_some(p)
}
