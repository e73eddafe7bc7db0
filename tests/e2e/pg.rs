//! A real PostgreSQL for tests.
//!
//! `server()` is discovered once per test process, first match wins:
//! 1. `NINI_AUTH_TEST_POSTGRES`: an admin URL (`postgres://user@host:port/db`);
//! 2. a server on 127.0.0.1:5432 that lets `postgres` in without a password;
//! 3. a throwaway cluster (initdb + pg_ctl from PATH or `/usr/lib/postgresql/*/bin`), removed when the process exits;
//! 4. none: the test prints a skip line, or panics when `NINI_AUTH_REQUIRE_POSTGRES=1` (`scripts/test`).
//!
//! `NINI_AUTH_TEST_POSTGRES_NO_LOCAL=1` skips step 2, to exercise step 3 on a machine that has a local server.
//! `own_cluster()` / `own_cluster_or_skip()` always start a private throwaway cluster, for tests that stop and
//! restart the server.
//! Databases are dropped `WITH (FORCE)`, so the server must be PostgreSQL 13 or newer.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const ENV_URL: &str = "NINI_AUTH_TEST_POSTGRES";
const ENV_REQUIRE: &str = "NINI_AUTH_REQUIRE_POSTGRES";
const ENV_NO_LOCAL: &str = "NINI_AUTH_TEST_POSTGRES_NO_LOCAL";
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Long enough for a loaded machine to answer, short enough that a firewalled port does not stall every test.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds every wait for a starting server; initdb + start take a few seconds even on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PgServer {
    admin_url: String,
    how: String,
    /// Only for a throwaway cluster; a static is never dropped, so the cluster's watchdog (which holds the
    /// other end of a pipe this keeps open) removes it when the process exits.
    _cluster: Option<Cluster>,
}

enum Discovery {
    Found(PgServer),
    /// Nothing to use; the text says what was tried.
    Missing(String),
    /// Something was configured or installed but does not work: skipping would hide that.
    Broken(String),
}

/// Where PostgreSQL tests get a server; `None` means skip (never with `NINI_AUTH_REQUIRE_POSTGRES=1`).
pub async fn server() -> Option<&'static PgServer> {
    // The outcome, failures included, is cached: a broken setup should cost one initdb, not one per test.
    static SERVER: OnceCell<Discovery> = OnceCell::const_new();
    match SERVER.get_or_init(discover).await {
        Discovery::Found(server) => Some(server),
        Discovery::Broken(why) => panic!("PostgreSQL for tests: {why}"),
        Discovery::Missing(tried) if env_flag(ENV_REQUIRE) => panic!(
            "{ENV_REQUIRE}=1 but no PostgreSQL is available.\n  tried: {tried}\n  fix: run scripts/setup (installs \
             Debian's postgresql package), run a server on 127.0.0.1:5432 that trusts user postgres, or set \
             {ENV_URL}=postgres://user@host:port/db"
        ),
        Discovery::Missing(_) => None,
    }
}

/// `let Some(pg) = pg::server_or_skip("name").await else { return };`
pub async fn server_or_skip(test: &str) -> Option<&'static PgServer> {
    let server = server().await;
    if server.is_none() {
        eprintln!("{}", skip_line(test));
    }
    server
}

/// The one line a test prints when it skips for want of a server.
pub fn skip_line(test: &str) -> String {
    format!(
        "skipping {test}: no PostgreSQL (set {ENV_URL}, run one on 127.0.0.1:5432, or install postgresql; \
         scripts/test makes this mandatory)"
    )
}

async fn discover() -> Discovery {
    if let Ok(url) = std::env::var(ENV_URL) {
        // An explicit URL that does not answer is a mistake to report, not a reason to test against something else.
        return match connect_within(&url, PROBE_TIMEOUT).await {
            Ok(_) => Discovery::Found(PgServer {
                admin_url: url,
                how: ENV_URL.to_string(),
                _cluster: None,
            }),
            Err(e) => Discovery::Broken(format!("{ENV_URL} is set but connecting to it failed: {e}")),
        };
    }
    let mut tried = vec![format!("{ENV_URL}: not set")];
    if env_flag(ENV_NO_LOCAL) {
        tried.push(format!("127.0.0.1:5432: skipped ({ENV_NO_LOCAL}=1)"));
    } else {
        match connect_within(LOCAL_URL, PROBE_TIMEOUT).await {
            Ok(_) => {
                let how = "local server on 127.0.0.1:5432 (user postgres, trust)".to_string();
                return Discovery::Found(PgServer {
                    admin_url: LOCAL_URL.to_string(),
                    how,
                    _cluster: None,
                });
            }
            Err(e) => tried.push(format!("127.0.0.1:5432 as postgres: {e}")),
        }
    }
    match Cluster::start().await {
        Ok(cluster) => Discovery::Found(PgServer {
            admin_url: cluster.url("postgres"),
            how: format!(
                "throwaway cluster in {} on 127.0.0.1:{} (started in {:.1?})",
                cluster.dir.display(),
                cluster.port,
                cluster.startup
            ),
            _cluster: Some(cluster),
        }),
        Err(ClusterError::NoBinaries(why)) => {
            tried.push(format!("throwaway cluster: {why}"));
            Discovery::Missing(tried.join("; "))
        }
        Err(ClusterError::Failed(why)) => Discovery::Broken(format!("starting a throwaway cluster failed: {why}")),
    }
}

impl PgServer {
    /// A fresh database of its own, dropped when the `TestDb` is.
    pub async fn create_db(&self) -> TestDb {
        let name = unique_db_name();
        let admin = connect_within(&self.admin_url, PROBE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("connecting to {} failed: {e}", self.how));
        // CREATE DATABASE fails while anyone else is connected to template1 (say, a psql left open on a shared
        // server); that passes, so retry for a bounded while instead of failing the test.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
                Ok(()) => break,
                Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("CREATE DATABASE {name} on {} failed: {e}", self.how),
            }
        }
        TestDb {
            url: with_database(&self.admin_url, &name),
            name,
            admin_url: self.admin_url.clone(),
        }
    }
}

/// A database for one test alone, dropped `WITH (FORCE)` (open connections included) when this is.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await, and block_on panics on a thread that is already driving a runtime (every
        // #[tokio::test]), so the DROP runs on a thread of its own with a runtime of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = connect_within(&admin_url, PROBE_TIMEOUT).await?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                match tokio::time::timeout(Duration::from_secs(30), admin.batch_execute(&sql)).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("no answer within 30s".to_string()),
                }
            })
        })
        .join();
        // Panicking here could abort a test that is already unwinding; a leaked database only costs disk.
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A cluster this test owns alone, to stop and restart at will. Always a throwaway cluster, never the shared one.
/// `None` when initdb/pg_ctl are not installed; panics if they are but the cluster cannot start.
pub async fn own_cluster() -> Option<OwnedCluster> {
    match Cluster::start().await {
        Ok(cluster) => Some(OwnedCluster { cluster }),
        Err(ClusterError::NoBinaries(_)) => None,
        Err(ClusterError::Failed(why)) => panic!("starting a throwaway PostgreSQL cluster failed: {why}"),
    }
}

/// `let Some(cluster) = pg::own_cluster_or_skip("name").await else { return };`
pub async fn own_cluster_or_skip(test: &str) -> Option<OwnedCluster> {
    let cluster = own_cluster().await;
    if cluster.is_none() {
        let line = format!(
            "skipping {test}: no initdb/pg_ctl to start a private PostgreSQL cluster (install postgresql; \
             scripts/test makes this mandatory)"
        );
        if env_flag(ENV_REQUIRE) {
            panic!("{ENV_REQUIRE}=1: {line}");
        }
        eprintln!("{line}");
    }
    cluster
}

pub struct OwnedCluster {
    cluster: Cluster,
}

impl OwnedCluster {
    pub fn url(&self, db: &str) -> String {
        self.cluster.url(db)
    }

    pub fn admin_url(&self) -> String {
        self.cluster.url("postgres")
    }

    /// Fast shutdown: clients are disconnected and new connections are refused until `start`.
    pub async fn stop(&self) {
        let mut stop = self.cluster.pg_ctl("stop");
        stop.args(["-m", "fast", "-w", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string());
        if let Err(e) = run(stop).await {
            panic!("stopping the cluster on port {} failed: {e}", self.cluster.port);
        }
    }

    /// Returns once the server accepts connections again, on the same port.
    pub async fn start(&self) {
        if let Err(e) = self.cluster.start_server().await {
            panic!("restarting the cluster on port {} failed: {e}", self.cluster.port);
        }
    }
}

/// A throwaway cluster: the data directory, socket and log all live in one temporary directory.
/// Removal is the watchdog's job (see `spawn_watchdog`), whether this is dropped or the process dies.
struct Cluster {
    dir: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    /// `runuser -u postgres --` when running as root: initdb and postgres refuse to run as root.
    run_as: Vec<PathBuf>,
    watchdog: Option<Child>,
    startup: Duration,
}

enum ClusterError {
    NoBinaries(String),
    Failed(String),
}

impl Cluster {
    async fn start() -> Result<Cluster, ClusterError> {
        let began = Instant::now();
        let (initdb, pg_ctl) = find_binaries().map_err(ClusterError::NoBinaries)?;
        let failed = ClusterError::Failed;
        let run_as = if running_as_root() {
            run_as_postgres().map_err(failed)?
        } else {
            Vec::new()
        };
        let dir = tempfile::Builder::new()
            .prefix("nini-pg-")
            .tempdir()
            .map_err(|e| failed(format!("creating a temporary directory: {e}")))?;
        if !run_as.is_empty() {
            chown_to_postgres(dir.path()).map_err(failed)?;
        }
        let watchdog = spawn_watchdog(dir.path(), &run_as, &pg_ctl)
            .map_err(|e| failed(format!("starting the cleanup watchdog: {e}")))?;
        // From here the watchdog owns removal: dropping `cluster` on any error below stops and removes it.
        let mut cluster = Cluster {
            dir: dir.keep(),
            port: 0,
            pg_ctl,
            run_as,
            watchdog: Some(watchdog),
            startup: Duration::ZERO,
        };

        let mut init = cluster.command(&initdb);
        init.arg("-D").arg(cluster.dir.join("data"));
        init.args(["-U", "postgres", "-A", "trust"]);
        init.args(["-E", "UTF8", "--no-locale", "--no-sync"]);
        run(init).await.map_err(failed)?;
        // Speed over durability: the cluster is thrown away, and fsync dominates the time of small test
        // transactions. The socket lives in the temporary directory so it cannot clash with the system's.
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\n",
            cluster.dir.display().to_string().replace('\'', "''")
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.dir.join("data/postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .map_err(|e| failed(format!("writing postgresql.conf: {e}")))?;

        // A free port can be taken by someone else before the server binds it; a new port fixes that.
        let mut attempts = 3;
        loop {
            cluster.port = free_port().map_err(|e| failed(format!("finding a free port: {e}")))?;
            match cluster.start_server().await {
                Ok(()) => break,
                Err(_) if attempts > 1 => attempts -= 1,
                Err(e) => return Err(failed(e)),
            }
        }
        cluster.startup = began.elapsed();
        Ok(cluster)
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = match self.run_as.split_first() {
            Some((runner, args)) => {
                let mut command = Command::new(runner);
                command.args(args).arg(program);
                command
            }
            None => Command::new(program),
        };
        // The postgres user may not be allowed into the caller's working directory (often under /root).
        command.current_dir(&self.dir);
        command
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.command(&self.pg_ctl);
        command.arg(action).arg("-D").arg(self.dir.join("data"));
        command
    }

    async fn start_server(&self) -> Result<(), String> {
        let log = self.dir.join("log");
        let mut start = self.pg_ctl("start");
        // pg_ctl -w returns as soon as the server is ready or has died (a taken port fails in milliseconds).
        start
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string())
            .arg("-o")
            .arg(format!("-p {}", self.port));
        if let Err(e) = run(start).await {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!(
                "{e}; server log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        // What tests need is a server that accepts connections, so that is what is waited for.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match connect_within(&self.url("postgres"), PROBE_TIMEOUT).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(format!("not accepting connections: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            // Closing the pipe tells the watchdog to stop the server and remove the directory; waiting for it
            // makes an OwnedCluster's cleanup finish before the test does.
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// A detached shell that waits for EOF on a pipe whose write end only this process holds, then stops the server and removes
/// `dir`. The kernel closes the pipe on any exit, SIGKILL included, and unlike polling `kill -0 <pid>` this cannot
/// be fooled by the pid being reused. Its own process group keeps a Ctrl-C aimed at `cargo test` from killing it
/// before it has cleaned up.
fn spawn_watchdog(dir: &Path, run_as: &[PathBuf], pg_ctl: &Path) -> std::io::Result<Child> {
    let script = r#"trap '' HUP INT; dir=$1; shift; read -r _; "$@" >/dev/null 2>&1; rm -rf -- "$dir""#;
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", script, "nini-pg-watchdog"])
        .arg(dir)
        .args(run_as)
        .arg(pg_ctl);
    command
        .arg("stop")
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "immediate", "-w", "-t", "30"]);
    // Null output: a watchdog holding the test's stdout would keep whoever reads it (cargo, CI) waiting.
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.current_dir("/").process_group(0);
    command.spawn()
}

/// initdb and pg_ctl from one directory: PATH first, then Debian's `/usr/lib/postgresql/<version>/bin`, newest first.
fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    let path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    debian.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    path.into_iter()
        .chain(debian.into_iter().map(|(_, dir)| dir))
        .find_map(|dir| {
            // Canonical paths, so that a symlink in PATH still leads pg_ctl to the postgres binary beside it.
            let initdb = dir.join("initdb").canonicalize().ok()?;
            let pg_ctl = dir.join("pg_ctl").canonicalize().ok()?;
            Some((initdb, pg_ctl))
        })
        .ok_or_else(|| "initdb and pg_ctl not found in PATH or /usr/lib/postgresql/*/bin".to_string())
}

fn running_as_root() -> bool {
    // std has no geteuid(); /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn run_as_postgres() -> Result<Vec<PathBuf>, String> {
    let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("running as root, which initdb refuses, and runuser (util-linux) is missing")?;
    Ok(vec![runuser, "-u".into(), "postgres".into(), "--".into()])
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("running id: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse() {
            Ok(id) if out.status.success() => Ok(id),
            _ => Err("running as root, which initdb refuses, and there is no `postgres` OS user".to_string()),
        }
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
        .map_err(|e| format!("chown {} to postgres: {e}", dir.display()))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Runs a short-lived command off the async threads and returns its stderr on failure.
async fn run(mut command: Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("{shown}: {e}"))?
        .map_err(|e| format!("{shown}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

/// The connection is driven by a task on the caller's runtime, so the Client dies with that runtime: keep URLs,
/// not Clients, across tests.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn connect_within(url: &str, limit: Duration) -> Result<Client, String> {
    match tokio::time::timeout(limit, connect(url)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// pid (leaked databases name their process), per-process counter (unique within it), random (unique across
/// machines sharing one server, where pids collide).
fn unique_db_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let random = RandomState::new().build_hasher().finish() as u32;
    format!(
        "nini_test_{}_{}_{random:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The admin URL with its database replaced; a key=value connection string takes the last `dbname` given.
fn with_database(admin_url: &str, db: &str) -> String {
    let Some(scheme) = admin_url.find("://") else {
        return format!("{admin_url} dbname={db}");
    };
    let after_scheme = scheme + 3;
    let authority_end = admin_url[after_scheme..]
        .find(['/', '?'])
        .map_or(admin_url.len(), |i| after_scheme + i);
    let query = admin_url[authority_end..]
        .find('?')
        .map_or("", |i| &admin_url[authority_end + i..]);
    format!("{}/{db}{query}", &admin_url[..authority_end])
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

#[test]
fn with_database_replaces_only_the_database() {
    let cases = [
        ("postgres://u:p@h:5/admin", "postgres://u:p@h:5/x"),
        (
            "postgres://u@h:5/admin?sslmode=disable",
            "postgres://u@h:5/x?sslmode=disable",
        ),
        ("postgres://u@h:5", "postgres://u@h:5/x"),
        (
            "postgres://u@h:5?connect_timeout=3",
            "postgres://u@h:5/x?connect_timeout=3",
        ),
        ("postgresql://u@[::1]:5/admin", "postgresql://u@[::1]:5/x"),
        ("host=h user=u dbname=admin", "host=h user=u dbname=admin dbname=x"),
    ];
    for (admin, want) in cases {
        assert_eq!(with_database(admin, "x"), want, "from {admin}");
    }
}
