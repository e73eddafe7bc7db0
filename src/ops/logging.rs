//! Logging: `RUST_LOG` filters (env_filter), text or one JSON object per line, formatted by
//! the thread that logs and written to stderr by a thread of its own through a bounded queue.
//! A request never waits on the log: when stderr stalls (a full pipe nobody reads) lines are
//! dropped and counted (`nini_auth_log_dropped_total`) instead of stopping every worker that
//! logs. Under load the writer drains the queue in batches on its own schedule, so logging a
//! line costs no system call and wakes no thread.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use log::{Log, Metadata, Record};

use crate::config::LogFormat;
use crate::metrics::LOG_DROPPED;
use crate::web::{push_json_str, ACCESS_TARGET};

/// Lines waiting for the writer; beyond this, new lines are dropped.
const QUEUE: usize = 16_384;
/// How long `drain` (at shutdown) waits for the queue to empty.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// After writing a batch the writer waits this long before looking again: lines logged
/// meanwhile queue up without waking it.
const BATCH_EVERY: Duration = Duration::from_millis(10);
/// pingora logs its start-up and shutdown chatter at info; ours stay at info, its at warn.
const DEFAULT_FILTER: &str = "info,pingora=warn,pingora_core=warn,pingora_proxy=warn";

/// Lines queued and not yet written, for `drain`.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Logger {
    filter: env_filter::Filter,
    json: bool,
    tx: SyncSender<Vec<u8>>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let mut line = Vec::with_capacity(192);
        if self.json {
            json_line(&mut line, record);
        } else {
            text_line(&mut line, record);
        }
        QUEUED.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            QUEUED.fetch_sub(1, Ordering::Relaxed);
            LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A flush that waited would put the caller back on the log's pace; `drain` is the
    /// waiting flush, for shutdown.
    fn flush(&self) {}
}

/// Waits (at most `FLUSH_WAIT`) until every line queued so far is written: the last lines
/// before an exit are the ones worth having.
pub fn drain() {
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let until = Instant::now() + FLUSH_WAIT;
    while QUEUED.load(Ordering::Acquire) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes queued lines to stderr: blocks while there is nothing to write; once lines come,
/// writes whatever is queued in one go every `BATCH_EVERY` until the queue stays empty.
fn writer(rx: Receiver<Vec<u8>>) {
    let stderr = std::io::stderr();
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let Ok(mut first) = rx.recv() else {
        return;
    };
    loop {
        let mut n = 1;
        batch.clear();
        batch.append(&mut first);
        while let Ok(mut line) = rx.try_recv() {
            batch.append(&mut line);
            n += 1;
            if batch.len() >= 256 * 1024 {
                break;
            }
        }
        {
            let mut out = stderr.lock();
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
        QUEUED.fetch_sub(n, Ordering::Release);
        std::thread::sleep(BATCH_EVERY);
        first = match rx.try_recv() {
            Ok(line) => line,
            Err(TryRecvError::Empty) => match rx.recv() {
                Ok(line) => line,
                Err(_) => return,
            },
            Err(TryRecvError::Disconnected) => return,
        };
    }
}

/// Installs the logger (once per process; later calls do nothing). `text`: one human line per
/// record, `[<time> <LEVEL> <target>] <message>`. `json`: one JSON object per line (`ts`,
/// `level`, `target`, `msg`); access lines carry their fields at the top level. Filter:
/// `RUST_LOG`, default info (pingora at warn).
pub fn init(format: LogFormat) {
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let mut b = env_filter::Builder::new();
    b.parse(&spec);
    let filter = b.build();
    let max = filter.filter();
    let (tx, rx) = sync_channel(QUEUE);
    if std::thread::Builder::new()
        .name("nini-auth-log".into())
        .spawn(move || writer(rx))
        .is_err()
    {
        // No thread for the writer: nothing would ever be written; leave logging off rather
        // than block requests on stderr.
        return;
    }
    let logger = Logger {
        filter,
        json: format == LogFormat::Json,
        tx,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
        INSTALLED.store(true, Ordering::Release);
    }
}

/// The record's message: borrowed when it is a plain literal, formatted otherwise.
fn message<'a>(record: &'a Record<'_>, scratch: &'a mut String) -> &'a str {
    match record.args().as_str() {
        Some(s) => s,
        None => {
            use std::fmt::Write as _;
            let _ = write!(scratch, "{}", record.args());
            scratch
        }
    }
}

fn text_line(out: &mut Vec<u8>, record: &Record<'_>) {
    out.push(b'[');
    timestamp(out);
    let _ = write!(out, " {:<5} {}] ", record.level(), record.target());
    let _ = write!(out, "{}", record.args());
    out.push(b'\n');
}

fn json_line(out: &mut Vec<u8>, record: &Record<'_>) {
    let mut scratch = String::new();
    let msg = message(record, &mut scratch);
    out.extend_from_slice(b"{\"ts\":\"");
    timestamp(out);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(record.level().as_str().as_bytes());
    out.extend_from_slice(b"\",\"target\":");
    push_json_str(out, record.target());
    let object = record.target() == ACCESS_TARGET && msg.starts_with('{') && msg.ends_with('}') && msg.len() > 2;
    if object {
        // The access line is already an object (rendered by the proxy): lift its fields.
        out.push(b',');
        out.extend_from_slice(&msg.as_bytes()[1..]);
    } else {
        out.extend_from_slice(b",\"msg\":");
        push_json_str(out, msg);
        out.push(b'}');
    }
    out.push(b'\n');
}

thread_local! {
    /// The date and time to the second, formatted once per second per thread.
    static SECOND: RefCell<(i64, [u8; 19])> = const { RefCell::new((i64::MIN, [0; 19])) };
}

/// RFC 3339 UTC with milliseconds: `2026-12-03T20:10:00.123Z`.
fn timestamp(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    SECOND.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut buf = [0u8; 19];
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            if s.len() == 19 {
                buf.copy_from_slice(s.as_bytes());
            }
            *c = (secs, buf);
        }
        out.extend_from_slice(&c.1);
    });
    let _ = write!(out, ".{:03}Z", now.subsec_millis());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é🌮");
        let s = String::from_utf8(out).expect("utf-8");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é🌮""#);
        let back: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\nd\u{1}é🌮");
    }

    /// One record through `line` (format_args! values live only for their statement).
    fn formatted(args: std::fmt::Arguments<'_>, target: &str, line: fn(&mut Vec<u8>, &Record)) -> Vec<u8> {
        let record = Record::builder()
            .args(args)
            .level(log::Level::Info)
            .target(target)
            .build();
        let mut out = Vec::new();
        line(&mut out, &record);
        out
    }

    #[test]
    fn lines_are_formatted_as_documented() {
        let text = formatted(format_args!("hello {}", "world"), "nini_auth::x", text_line);
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.starts_with('[') && text.ends_with(" INFO  nini_auth::x] hello world\n"),
            "{text}"
        );
        assert_eq!(text.find('Z'), Some(24), "{text}");

        let json = formatted(format_args!("hello {}", "world"), "nini_auth::x", json_line);
        let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(v["msg"], "hello world");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "nini_auth::x");
        assert!(
            v["ts"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
            "{v}"
        );

        let access = r#"{"method":"GET","status":200}"#;
        let json = formatted(format_args!("{access}"), ACCESS_TARGET, json_line);
        let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 200);
        assert!(v.get("msg").is_none(), "{v}");
    }
}
