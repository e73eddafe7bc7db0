//! Logging: env_logger's filters and formats (text, or one JSON object per line), written to
//! stderr by a thread of its own through a bounded queue. A request never waits on the log:
//! when stderr stalls (a full pipe nobody reads) lines are dropped and counted
//! (`nini_auth_log_dropped_total`) instead of stopping every worker that logs.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::config::LogFormat;
use crate::metrics::LOG_DROPPED;

/// Lines waiting for the writer; beyond this, new lines are dropped.
const QUEUE: usize = 16_384;
/// How long a flush (at shutdown) waits for the queue to drain.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Lines queued and not yet written, for `flush`.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    drained: Condvar,
}

/// What env_logger writes each formatted record into: one `write` per record, queued.
struct QueueWriter {
    tx: SyncSender<Vec<u8>>,
    pending: Arc<Pending>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        *self.pending.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        match self.tx.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
                self.done(1);
            }
        }
        Ok(buf.len())
    }

    /// env_logger flushes after every record: waiting here would put the request back on
    /// the log's pace. `drain` is the waiting flush, for shutdown.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The queue of the installed logger, for `drain`.
static PENDING: std::sync::OnceLock<Arc<Pending>> = std::sync::OnceLock::new();

/// Waits (at most `FLUSH_WAIT`) until every line queued so far is written: the last lines
/// before an exit are the ones worth having.
pub fn drain() {
    let Some(pending) = PENDING.get() else {
        return;
    };
    let count = pending.count.lock().unwrap_or_else(|p| p.into_inner());
    let _ = pending.drained.wait_timeout_while(count, FLUSH_WAIT, |n| *n > 0);
}

impl QueueWriter {
    fn done(&self, n: usize) {
        let mut count = self.pending.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.pending.drained.notify_all();
        }
    }
}

/// Writes queued lines to stderr, in batches while lines keep coming.
fn writer(rx: Receiver<Vec<u8>>, pending: Arc<Pending>) {
    let stderr = std::io::stderr();
    while let Ok(first) = rx.recv() {
        let mut out = stderr.lock();
        let mut n = 1;
        let _ = out.write_all(&first);
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(&more);
            n += 1;
            if n >= 256 {
                break;
            }
        }
        let _ = out.flush();
        drop(out);
        let mut count = pending.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(n);
        if *count == 0 {
            pending.drained.notify_all();
        }
    }
}

/// Installs the logger (once per process; later calls do nothing). `text`: one human line per
/// record. `json`: one JSON object per line (`ts`, `level`, `target`, `msg`); access lines
/// carry their fields at the top level. Filter: `RUST_LOG`, default info (pingora at warn).
pub fn init(format: LogFormat) {
    // pingora logs its start-up and shutdown chatter at info; keep ours at info and its at warn.
    let env = env_logger::Env::default().default_filter_or("info,pingora=warn,pingora_core=warn,pingora_proxy=warn");
    let mut b = env_logger::Builder::from_env(env);
    match format {
        LogFormat::Text => {
            b.format_timestamp_millis();
        }
        LogFormat::Json => {
            b.format(|buf, record| {
                let ts = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let msg = record.args().to_string();
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.into());
                obj.insert("level".into(), record.level().as_str().into());
                obj.insert("target".into(), record.target().into());
                // Access lines are already JSON objects: lift their fields.
                match serde_json::from_str::<serde_json::Value>(&msg) {
                    Ok(serde_json::Value::Object(fields)) if record.target() == "nini_auth::access" => {
                        obj.extend(fields);
                    }
                    _ => {
                        obj.insert("msg".into(), msg.into());
                    }
                }
                writeln!(buf, "{}", serde_json::Value::Object(obj))
            });
        }
    }
    let (tx, rx) = sync_channel(QUEUE);
    let pending = Arc::new(Pending::default());
    let spawned = {
        let pending = pending.clone();
        std::thread::Builder::new()
            .name("nini-auth-log".into())
            .spawn(move || writer(rx, pending))
    };
    if spawned.is_err() {
        // No thread for the writer: log straight to stderr rather than not at all.
        let _ = b.try_init();
        return;
    }
    b.target(env_logger::Target::Pipe(Box::new(QueueWriter {
        tx,
        pending: pending.clone(),
    })));
    if b.try_init().is_ok() {
        let _ = PENDING.set(pending);
    }
}
