//! The deployment material stays wired to the code. Both Kubernetes sets are checked alike
//! where they agree: `examples/kubernetes/` (one replica on SQLite) and
//! `examples/kubernetes/multi-replica/` (three on PostgreSQL). Every YAML document parses, each
//! kustomization lists real files, the Service reaches only the sidecar's proxy port, the probes
//! hit the admin listener, the secrets come from the Secret under the names the config reads,
//! the ConfigMap's `config.toml` is mounted where `run --config` reads it and passes the
//! sidecar's own validation, the shutdown timings leave room for the drain, and the containers
//! are locked down. Where they differ: the SQLite database sits on the claim of one `Recreate`
//! replica; the PostgreSQL set rolls three replicas without downtime under a disruption budget,
//! spreads them over nodes, keeps no data in the Pod and stays within a connection budget.
//! Also: the `Dockerfile` builds with cmake and runs as a non-root user, and every metric in
//! `src/metrics.rs` is documented in `docs/operations.md`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nini_auth::config::{self, Config, Database, SecretsPolicy};
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The two Kubernetes sets: alternatives for one namespace (both name their objects `nini`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// One replica, SQLite on a PersistentVolumeClaim, `Recreate`.
    Single,
    /// Three replicas on PostgreSQL, `RollingUpdate`, no volume for data.
    Multi,
}

const SETS: [Set; 2] = [Set::Single, Set::Multi];

impl Set {
    fn dir(self) -> &'static str {
        match self {
            Set::Single => "examples/kubernetes",
            Set::Multi => "examples/kubernetes/multi-replica",
        }
    }

    /// What the set's kustomization applies, one of each.
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Set::Single => &["Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Ingress"],
            Set::Multi => &["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Ingress"],
        }
    }

    /// The variables the sidecar takes from the Secret: the PostgreSQL URL carries a password.
    fn secret_vars(self) -> BTreeSet<&'static str> {
        let mut vars = BTreeSet::from([config::ENV_CLIENT_KEY, config::ENV_CLIENT_SECRET, config::ENV_SECRET]);
        if self == Set::Multi {
            vars.insert(config::ENV_DATABASE_URL);
        }
        vars
    }
}

/// What validation gets for `DATABASE_URL`: any well-formed URL; nothing connects to it.
const TEST_DATABASE_URL: &str = "postgres://nini_auth:test-password@postgres.test.internal:5432/nini";

/// Half of PostgreSQL's default `max_connections` (100): what the Pods a rollout runs at once
/// may hold, leaving the rest to old Pods still draining, the app's own pool and operators.
const CONNECTION_BUDGET: u64 = 50;

/// One YAML document, converted to JSON values for easy indexing.
struct Doc {
    file: String,
    v: Value,
}

/// Every document of every `*.yaml` / `*.yml` directly in the set's directory (multi-document
/// files included; empty documents skipped). The single-replica directory also holds other
/// examples (forward-auth).
fn all_docs(set: Set) -> Vec<Doc> {
    let dir = root().join(set.dir());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests under {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).expect("read manifest");
        for de in serde_norway::Deserializer::from_str(&text) {
            let y = serde_norway::Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{}/{name}: invalid YAML: {e}", set.dir()));
            if y.is_null() {
                continue;
            }
            let v = serde_json::to_value(&y).unwrap_or_else(|e| panic!("{}/{name}: {e}", set.dir()));
            out.push(Doc { file: name.clone(), v });
        }
    }
    out
}

/// The sidecar example: the documents of the files the set's `kustomization.yaml` applies.
fn docs(set: Set) -> Vec<Doc> {
    let all = all_docs(set);
    let listed: Vec<String> = arr(&one(&all, "Kustomization")["resources"])
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    all.into_iter().filter(|d| listed.contains(&d.file)).collect()
}

/// The Secret the sidecar's environment refers to (not applied by the kustomization).
fn referenced_secret(set: Set, docs: &[Doc]) -> (String, Value) {
    let names: BTreeSet<String> = secret_env(sidecar(docs)).into_values().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 1, "the sidecar's secrets come from one Secret: {names:?}");
    let name = names.into_iter().next().expect("secret name");
    let all = all_docs(set);
    let d = all
        .iter()
        .find(|d| d.v["kind"] == "Secret" && d.v["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no example Secret named {name:?} under {}", set.dir()));
    (d.file.clone(), d.v.clone())
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d.v["kind"] == kind).map(|d| &d.v).collect()
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name:?}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("expected a list, got {v}"))
}

fn pod_spec(docs: &[Doc]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]
}

/// Whether a `matchLabels` selector picks the Deployment's Pods.
fn selects_pods(docs: &[Doc], match_labels: &Value) -> bool {
    let labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    match_labels
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The Deployment's replica count.
fn replicas(docs: &[Doc]) -> u64 {
    one(docs, "Deployment")["spec"]["replicas"]
        .as_u64()
        .expect("spec.replicas as a number")
}

/// A rolling update's `maxSurge` / `maxUnavailable` as a Pod count: a number, or a percentage
/// of `replicas` (Kubernetes rounds surge up and unavailability down).
fn rollout_pods(v: &Value, replicas: u64, round_up: bool) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    let pct: u64 = s(v)
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected a count or a percentage, got {v}"));
    if round_up {
        (replicas * pct).div_ceil(100)
    } else {
        replicas * pct / 100
    }
}

/// The nini-auth container: the one running our image.
fn sidecar(docs: &[Doc]) -> &Value {
    let found: Vec<&Value> = arr(&pod_spec(docs)["containers"])
        .iter()
        .filter(|c| s(&c["image"]).contains("nini-auth"))
        .collect();
    assert_eq!(found.len(), 1, "exactly one container must run the nini-auth image");
    found[0]
}

/// The app: every other container (one).
fn app(docs: &[Doc]) -> &Value {
    let found: Vec<&Value> = arr(&pod_spec(docs)["containers"])
        .iter()
        .filter(|c| !s(&c["image"]).contains("nini-auth"))
        .collect();
    assert_eq!(found.len(), 1, "exactly one app container besides the sidecar");
    found[0]
}

/// A port reference (number or container port name) resolved against one container.
fn resolve_port(c: &Value, port: &Value) -> Option<u64> {
    let ports = c["ports"].as_array()?;
    match port {
        Value::Number(n) => {
            let n = n.as_u64()?;
            ports
                .iter()
                .any(|p| p["containerPort"].as_u64() == Some(n))
                .then_some(n)
        }
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

fn named_port(c: &Value, name: &str) -> u64 {
    resolve_port(c, &Value::String(name.into())).unwrap_or_else(|| panic!("container has no port named {name:?}"))
}

/// The `--config` argument of the sidecar.
fn config_path(c: &Value) -> String {
    let args: Vec<&str> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(s)
        .collect();
    assert!(args.contains(&"run"), "the sidecar must run `run`: {args:?}");
    let i = args
        .iter()
        .position(|a| *a == "--config" || *a == "-c")
        .unwrap_or_else(|| panic!("the sidecar's args must pass --config: {args:?}"));
    args.get(i + 1).expect("--config value").to_string()
}

fn volume<'a>(docs: &'a [Doc], name: &str) -> &'a Value {
    arr(&pod_spec(docs)["volumes"])
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name:?}"))
}

/// The volume mounted at exactly `dir` in container `c`, with the mount.
fn mount_at<'a>(docs: &'a [Doc], c: &'a Value, dir: &Path) -> (&'a Value, &'a Value) {
    let m = arr(&c["volumeMounts"])
        .iter()
        .find(|m| Path::new(s(&m["mountPath"])) == dir)
        .unwrap_or_else(|| panic!("container {} mounts nothing at {}", c["name"], dir.display()));
    (m, volume(docs, s(&m["name"])))
}

/// Environment variables the sidecar takes from a Secret: name → (secret, key).
fn secret_env(c: &Value) -> HashMap<String, (String, String)> {
    arr(&c["env"])
        .iter()
        .filter_map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            r.is_object().then(|| {
                (
                    s(&e["name"]).to_string(),
                    (s(&r["name"]).to_string(), s(&r["key"]).to_string()),
                )
            })
        })
        .collect()
}

/// Seconds a container's `preStop` hook sleeps (the built-in `sleep` action or `exec sleep
/// N`); 0 without a hook. Any other hook fails the test: its duration could not be checked.
fn prestop_sleep(c: &Value) -> u64 {
    let hook = &c["lifecycle"]["preStop"];
    if hook.is_null() {
        return 0;
    }
    if let Some(n) = hook["sleep"]["seconds"].as_u64() {
        return n;
    }
    let cmd: Vec<&str> = arr(&hook["exec"]["command"]).iter().map(s).collect();
    match cmd.as_slice() {
        ["sleep", n] => n
            .parse()
            .unwrap_or_else(|_| panic!("{}: preStop sleeps {n:?}", c["name"])),
        _ => panic!("{}: preStop must be a sleep, got {cmd:?}", c["name"]),
    }
}

/// The sidecar's configuration as its Pod would load it.
struct Loaded {
    cfg: Config,
    /// The ConfigMap's `config.toml`, as written.
    text: String,
    /// `storage.database` as written in the file (its default when the key is absent).
    written_database: String,
    /// Where the database went when the file's directory (a volume) does not exist here.
    _tmp: tempfile::TempDir,
}

/// The ConfigMap's config.toml as mounted for the sidecar, validated exactly as `run` would,
/// with the Deployment's Secret-backed variables set to test values (`DATABASE_URL` to a
/// PostgreSQL URL). Validation needs a SQLite database's directory to exist here, so a missing
/// one alone is tolerated and the database moved to a temporary directory.
fn sidecar_config(docs: &[Doc]) -> Loaded {
    let c = sidecar(docs);
    let path = PathBuf::from(config_path(c));
    let dir = path.parent().expect("config dir");
    let file = path
        .file_name()
        .expect("config file name")
        .to_string_lossy()
        .into_owned();
    let (m, vol) = mount_at(docs, c, dir);
    assert!(
        m["subPath"].is_null(),
        "mount the ConfigMap as a directory (subPath mounts never update)"
    );
    let cm_name = s(&vol["configMap"]["name"]);
    // With `items`, the key must be projected to the file name; without, keys are file names.
    let key = match vol["configMap"]["items"].as_array() {
        Some(items) => s(&items
            .iter()
            .find(|i| i["path"] == file.as_str())
            .unwrap_or_else(|| panic!("configMap items do not project {file}"))["key"])
        .to_string(),
        None => file.clone(),
    };
    let text = s(&named(docs, "ConfigMap", cm_name)["data"][&key]).to_string();

    let mut env: HashMap<String, String> = HashMap::new();
    for name in secret_env(c).keys() {
        let value = match name.as_str() {
            config::ENV_SECRET => nini_auth::crypto::generate_key_base64().expect("key"),
            config::ENV_DATABASE_URL => TEST_DATABASE_URL.to_string(),
            _ => format!("test-{}", name.to_lowercase()),
        };
        env.insert(name.clone(), value);
    }
    let raw = config::parse(&text).unwrap_or_else(|e| panic!("{cm_name}/{key} does not parse:\n{}", e.report()));
    let written_database = raw.storage.database.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = match config::validate(raw, &env, SecretsPolicy::Required) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Only the database directory (a volume in the Pod) may be missing on this machine.
            assert!(
                e.0.iter()
                    .all(|p| p.key == "storage.database" && p.message.contains("does not exist")),
                "{cm_name}/{key} does not validate:\n{}",
                e.report()
            );
            let mut raw = config::parse(&text).expect("parsed once already");
            raw.storage.database = tmp.path().join("nini-auth.db").display().to_string();
            config::validate(raw, &env, SecretsPolicy::Required)
                .unwrap_or_else(|e| panic!("{cm_name}/{key} does not validate:\n{}", e.report()))
        }
    };
    assert_eq!(
        cfg.tiktok.client_key,
        env[config::ENV_CLIENT_KEY],
        "TIKTOK_CLIENT_KEY reaches the config"
    );
    assert_eq!(cfg.keys.len(), 1, "NINI_AUTH_SECRET reaches the key ring");
    if env.contains_key(config::ENV_DATABASE_URL) {
        assert!(
            matches!(cfg.storage.database, Database::Postgres(_)),
            "DATABASE_URL reaches storage.database"
        );
    }
    Loaded {
        cfg,
        text,
        written_database,
        _tmp: tmp,
    }
}

#[test]
fn every_manifest_parses_and_each_kustomization_lists_real_files() {
    for set in SETS {
        let all = all_docs(set);
        for d in &all {
            let at = format!("{}/{}", set.dir(), d.file);
            assert!(d.v["apiVersion"].is_string(), "{at}: document without apiVersion");
            assert!(d.v["kind"].is_string(), "{at}: document without kind");
            if d.v["kind"] != "Kustomization" {
                assert!(
                    d.v["metadata"]["name"].is_string(),
                    "{at}: {} without a name",
                    d.v["kind"]
                );
            }
        }
        let k = one(&all, "Kustomization");
        for f in arr(&k["resources"]).iter().map(s) {
            assert!(
                root().join(set.dir()).join(f).is_file(),
                "{}/kustomization.yaml lists missing {f}",
                set.dir()
            );
        }
        let docs = docs(set);
        for kind in set.kinds() {
            one(&docs, kind);
        }
        let (secret_file, _) = referenced_secret(set, &docs);
        assert!(
            docs.iter().all(|d| d.file != secret_file),
            "the placeholder Secret ({}/{secret_file}) must not be applied by the kustomization",
            set.dir()
        );
    }
}

#[test]
fn service_targets_the_sidecar_proxy_port_only() {
    for set in SETS {
        let docs = docs(set);
        let svc = one(&docs, "Service");
        let deploy = one(&docs, "Deployment");
        assert!(
            selects_pods(&docs, &svc["spec"]["selector"]),
            "{set:?}: the Service selector must match the Pods"
        );
        assert!(
            selects_pods(&docs, &deploy["spec"]["selector"]["matchLabels"]),
            "{set:?}: the Deployment selector must match its Pods"
        );
        let side = sidecar(&docs);
        let app = app(&docs);
        let proxy = named_port(side, "proxy");
        let admin = named_port(side, "admin");
        assert_eq!(proxy, 4180);
        let ports = arr(&svc["spec"]["ports"]);
        assert!(!ports.is_empty());
        for p in ports {
            let target = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            assert_eq!(
                resolve_port(side, target),
                Some(proxy),
                "{set:?}: Service port {p} must target the sidecar's proxy port"
            );
            assert!(
                resolve_port(app, target).is_none(),
                "{set:?}: Service port {p} reaches the app"
            );
            assert_ne!(
                resolve_port(side, target),
                Some(admin),
                "{set:?}: the admin port must stay out of the Service"
            );
        }
        // The app declares no port at all: it listens on loopback, behind the sidecar.
        assert!(
            app["ports"].as_array().is_none_or(|p| p.is_empty()),
            "{set:?}: the app container must not declare ports"
        );
    }
}

#[test]
fn probes_hit_the_admin_listener() {
    for set in SETS {
        let docs = docs(set);
        let side = sidecar(&docs);
        let admin = named_port(side, "admin");
        let cfg = sidecar_config(&docs).cfg;
        let listen = cfg.ops.admin_listen.expect("admin.listen must be set");
        assert_eq!(
            u64::from(listen.port()),
            admin,
            "{set:?}: admin.listen port = the admin containerPort"
        );
        assert!(
            listen.ip().is_unspecified(),
            "{set:?}: admin.listen must bind all interfaces: the kubelet probes the Pod IP, not loopback"
        );
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let p = &side[probe];
            if probe == "startupProbe" && p.is_null() {
                continue;
            }
            let get = &p["httpGet"];
            assert_eq!(get["path"], path, "{set:?}: {probe} path");
            assert_eq!(
                resolve_port(side, &get["port"]),
                Some(admin),
                "{set:?}: {probe} must use the admin port"
            );
        }
        assert_ne!(u64::from(cfg.listen.port()), admin);
    }
}

#[test]
fn secrets_come_from_the_secret_under_the_names_the_config_reads() {
    for set in SETS {
        let docs = docs(set);
        let side = sidecar(&docs);
        let env = secret_env(side);
        let expected = set.secret_vars();
        let got: BTreeSet<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(got, expected, "{set:?}: the sidecar's Secret-backed variables");
        let (_, secret) = referenced_secret(set, &docs);
        let secret_name = s(&secret["metadata"]["name"]);
        for (var, (name, key)) in &env {
            assert_eq!(
                name, secret_name,
                "{set:?}: {var} must come from the Secret {secret_name}"
            );
            assert_eq!(key, var, "{set:?}: {var}: the Secret key has the variable's name");
            assert!(
                secret["stringData"][key.as_str()].is_string() || secret["data"][key.as_str()].is_string(),
                "{set:?}: the example Secret has no key {key}"
            );
        }
        // No secret (or database override) as a plain value anywhere in the Pod.
        for c in arr(&pod_spec(&docs)["containers"]) {
            for e in c["env"].as_array().into_iter().flatten() {
                let n = s(&e["name"]);
                if expected.contains(n) || n == config::ENV_DATABASE_URL {
                    assert!(e["value"].is_null(), "{set:?}: {n} must not be a literal value");
                }
            }
        }
    }
}

#[test]
fn config_is_mounted_where_run_reads_it_and_validates() {
    for set in SETS {
        let docs = docs(set);
        let side = sidecar(&docs);
        let app = app(&docs);
        let cfg = sidecar_config(&docs).cfg;
        assert_eq!(
            u64::from(cfg.listen.port()),
            named_port(side, "proxy"),
            "{set:?}: server.listen = the proxy port"
        );
        assert!(
            cfg.listen.ip().is_unspecified(),
            "{set:?}: server.listen must accept the Service's traffic on the Pod IP"
        );
        assert_eq!(cfg.public_url.scheme(), "https", "production public_url is https");
        assert!(matches!(cfg.ops.log_format, config::LogFormat::Json));
        assert!(
            !cfg.ops.trusted_proxies.is_empty(),
            "{set:?}: trusted_proxies must name the ingress"
        );
        assert!(cfg.ops.hsts_max_age.is_some());
        // The app: loopback only, on the port the sidecar forwards to.
        assert!(
            cfg.upstream.addr.ip().is_loopback(),
            "{set:?}: upstream must be the app on loopback"
        );
        let app_env: HashMap<&str, &str> = app["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        if let Some(host) = app_env.get("HOSTNAME") {
            assert!(
                host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
                "{set:?}: the app must bind loopback"
            );
        }
        if let Some(port) = app_env.get("PORT") {
            assert_eq!(
                port.parse::<u16>().ok(),
                Some(cfg.upstream.addr.port()),
                "{set:?}: app PORT = upstream.url port"
            );
        }
        // The image's default command reads the same file.
        let dockerfile = read("Dockerfile");
        assert!(
            dockerfile.contains(&config_path(side)),
            "{set:?}: Dockerfile CMD and the Deployment must agree on the config path"
        );
    }
}

#[test]
fn shutdown_leaves_room_for_the_drain() {
    for set in SETS {
        let docs = docs(set);
        let cfg = sidecar_config(&docs).cfg;
        // pingora drains in whole seconds, rounded up.
        let drain = cfg.shutdown_timeout.as_millis().div_ceil(1000) as u64;
        let grace = pod_spec(&docs)["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        // The sidecar gets SIGTERM after its own preStop hook, then drains; the kubelet's
        // SIGKILL comes after the grace period, which counts from the start of the hooks.
        let sidecar_stops = prestop_sleep(sidecar(&docs)) + drain;
        assert!(
            grace > sidecar_stops,
            "{set:?}: terminationGracePeriodSeconds ({grace}) must exceed the sidecar's preStop \
             sleep plus server.shutdown_timeout ({sidecar_stops} s)"
        );
        // Requests being drained still need an app to talk to.
        let app_sleep = prestop_sleep(app(&docs));
        assert!(
            app_sleep > sidecar_stops,
            "{set:?}: the app's preStop sleep ({app_sleep} s) must outlast the sidecar's drain \
             ({sidecar_stops} s)"
        );
        assert!(
            grace > app_sleep,
            "{set:?}: the grace period must leave the app time to stop after its preStop sleep"
        );
    }
}

#[test]
fn sqlite_database_lives_on_the_persistent_volume_claim() {
    let docs = docs(Set::Single);
    let side = sidecar(&docs);
    let loaded = sidecar_config(&docs);
    assert!(matches!(loaded.cfg.storage.database, Database::Sqlite(_)));
    let database = PathBuf::from(&loaded.written_database);
    assert!(
        database.is_absolute(),
        "storage.database must be an absolute path on the volume"
    );
    let dir = database.parent().expect("database dir");
    let (m, vol) = mount_at(&docs, side, dir);
    assert_ne!(
        m["readOnly"], true,
        "the database directory must be writable (WAL files)"
    );
    let claim = s(&vol["persistentVolumeClaim"]["claimName"]);
    let pvc = named(&docs, "PersistentVolumeClaim", claim);
    assert!(
        arr(&pvc["spec"]["accessModes"]).iter().any(|m| m == "ReadWriteOnce"),
        "the claim is ReadWriteOnce"
    );
    assert!(pvc["spec"]["resources"]["requests"]["storage"].is_string());
    // One writer node: one replica, and the old Pod gone before the new one starts.
    let deploy = one(&docs, "Deployment");
    assert_eq!(replicas(&docs), 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    // pingora's pid file and upgrade socket go to /tmp; the root file system is read-only.
    let (_, tmp) = mount_at(&docs, side, Path::new("/tmp"));
    assert!(tmp["emptyDir"].is_object(), "/tmp must be an emptyDir");
}

#[test]
fn postgresql_set_keeps_no_data_in_the_pod() {
    let set = Set::Multi;
    let docs = docs(set);
    assert!(
        of_kind(&all_docs(set), "PersistentVolumeClaim").is_empty(),
        "the PostgreSQL set has no PersistentVolumeClaim"
    );
    for v in arr(&pod_spec(&docs)["volumes"]) {
        for kind in ["persistentVolumeClaim", "hostPath", "ephemeral"] {
            assert!(v[kind].is_null(), "volume {} keeps data in the Pod ({kind})", v["name"]);
        }
    }
    // The database comes from the Secret alone: no path in the file to mislead anyone.
    let loaded = sidecar_config(&docs);
    let file: toml::Value = toml::from_str(&loaded.text).expect("config.toml is TOML");
    assert!(
        file.get("storage").and_then(|st| st.get("database")).is_none(),
        "the ConfigMap's config.toml must leave storage.database to DATABASE_URL"
    );
    assert!(matches!(loaded.cfg.storage.database, Database::Postgres(_)));
    // The example URL is one the sidecar accepts, and asks for no TLS it cannot do yet.
    let (_, secret) = referenced_secret(set, &docs);
    let url = s(&secret["stringData"][config::ENV_DATABASE_URL]);
    let storage = config::storage_from_url(config::ENV_DATABASE_URL, url)
        .unwrap_or_else(|e| panic!("the example DATABASE_URL is refused:\n{}", e.report()));
    assert!(matches!(storage.database, Database::Postgres(_)));
    let sslmode = url::Url::parse(url)
        .expect("URL")
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.into_owned());
    assert!(
        sslmode.as_deref().is_none_or(|m| m == "disable" || m == "prefer"),
        "sslmode={sslmode:?}: TLS to PostgreSQL is not implemented, the start would fail"
    );
    // pingora's pid file and upgrade socket go to /tmp; the root file system is read-only.
    let (_, tmp) = mount_at(&docs, sidecar(&docs), Path::new("/tmp"));
    assert!(tmp["emptyDir"].is_object(), "/tmp must be an emptyDir");
}

#[test]
fn postgresql_set_rolls_three_replicas_within_a_disruption_budget() {
    let docs = docs(Set::Multi);
    let n = replicas(&docs);
    assert_eq!(n, 3);
    let strategy = &one(&docs, "Deployment")["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    let rolling = &strategy["rollingUpdate"];
    assert_eq!(
        rollout_pods(&rolling["maxUnavailable"], n, false),
        0,
        "maxUnavailable: 0, a new Pod is ready before an old one stops"
    );
    assert!(
        rollout_pods(&rolling["maxSurge"], n, true) >= 1,
        "with maxUnavailable 0, only a surge Pod lets a rollout progress"
    );
    let pdb = one(&docs, "PodDisruptionBudget");
    assert!(
        selects_pods(&docs, &pdb["spec"]["selector"]["matchLabels"]),
        "the PodDisruptionBudget must select the Deployment's Pods"
    );
    assert!(pdb["spec"]["maxUnavailable"].is_null(), "use minAvailable");
    let min = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable as a number");
    assert!(
        (1..n).contains(&min),
        "minAvailable {min} must keep Pods up and still let a drain evict one of {n}"
    );
}

#[test]
fn postgresql_set_spreads_replicas_over_nodes() {
    let docs = docs(Set::Multi);
    let pod = pod_spec(&docs);
    let host = "kubernetes.io/hostname";
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["topologyKey"] == host
                && c["maxSkew"] == 1
                && c["whenUnsatisfiable"] == "DoNotSchedule"
                && selects_pods(&docs, &c["labelSelector"]["matchLabels"])
        });
    let anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["topologyKey"] == host && selects_pods(&docs, &t["labelSelector"]["matchLabels"]));
    assert!(
        spread || anti,
        "replicas must be spread over nodes ({host}): a required topology spread constraint or pod anti-affinity"
    );
}

#[test]
fn postgresql_set_stays_within_the_connection_budget() {
    let docs = docs(Set::Multi);
    let cfg = sidecar_config(&docs).cfg;
    let n = replicas(&docs);
    let surge = rollout_pods(
        &one(&docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        n,
        true,
    );
    // Per replica: the query pool, the per-user lock pool (each max_connections) and the
    // LISTEN connection (src/store/postgres/mod.rs).
    let per_pod = 2 * u64::from(cfg.storage.max_connections) + 1;
    let total = (n + surge) * per_pod;
    assert!(
        total <= CONNECTION_BUDGET,
        "{} Pods x {per_pod} connections = {total}, over {CONNECTION_BUDGET}: lower storage.max_connections",
        n + surge
    );
}

#[test]
fn containers_are_locked_down_and_sized() {
    for set in SETS {
        let docs = docs(set);
        let pod = pod_spec(&docs);
        let pod_sc = &pod["securityContext"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{set:?}");
        for c in arr(&pod["containers"]) {
            let name = format!("{set:?}/{}", s(&c["name"]));
            let sc = &c["securityContext"];
            // Container settings win over the Pod's.
            let eff = |k: &str| if sc[k].is_null() { &pod_sc[k] } else { &sc[k] };
            assert_eq!(eff("runAsNonRoot"), &Value::Bool(true), "{name}: runAsNonRoot");
            let uid = eff("runAsUser")
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: numeric runAsUser"));
            assert!(uid > 0, "{name}: runAsUser must not be root");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: readOnlyRootFilesystem");
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{name}: allowPrivilegeEscalation"
            );
            assert!(
                arr(&sc["capabilities"]["drop"]).iter().any(|c| c == "ALL"),
                "{name}: capabilities.drop ALL"
            );
            assert_eq!(eff("seccompProfile")["type"], "RuntimeDefault", "{name}: seccomp");
            let res = &c["resources"];
            for r in ["cpu", "memory"] {
                assert!(!res["requests"][r].is_null(), "{name}: resources.requests.{r}");
            }
            assert!(!res["limits"]["memory"].is_null(), "{name}: resources.limits.memory");
        }
        // The sidecar runs as the image's user.
        let uid = sidecar(&docs)["securityContext"]["runAsUser"]
            .as_u64()
            .expect("sidecar uid");
        let (user, _) = dockerfile_user();
        assert_eq!(
            uid.to_string(),
            user,
            "{set:?}: the sidecar's runAsUser = the Dockerfile's USER"
        );
    }
}

#[test]
fn ingress_terminates_tls_for_the_public_url_in_front_of_the_service() {
    for set in SETS {
        let docs = docs(set);
        let ing = one(&docs, "Ingress");
        let svc = one(&docs, "Service");
        let cfg = sidecar_config(&docs).cfg;
        let host = cfg.public_url.host_str().expect("public_url host");
        let rules = arr(&ing["spec"]["rules"]);
        assert!(
            rules.iter().any(|r| r["host"] == host),
            "{set:?}: an Ingress rule for {host} (server.public_url)"
        );
        assert!(
            arr(&ing["spec"]["tls"])
                .iter()
                .any(|t| arr(&t["hosts"]).iter().any(|h| h == host) && t["secretName"].is_string()),
            "{set:?}: TLS for {host}"
        );
        for r in rules {
            for p in arr(&r["http"]["paths"]) {
                let b = &p["backend"]["service"];
                assert_eq!(
                    b["name"], svc["metadata"]["name"],
                    "{set:?}: Ingress backend = the Service"
                );
                let port = &b["port"];
                assert!(
                    arr(&svc["spec"]["ports"])
                        .iter()
                        .any(|sp| (port["name"].is_string() && sp["name"] == port["name"])
                            || sp["port"] == port["number"]),
                    "{set:?}: Ingress backend port {port} is not a Service port"
                );
            }
        }
    }
}

/// Dockerfile instructions with line continuations joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (op, rest) = cur.trim().split_once(char::is_whitespace).unwrap_or((cur.trim(), ""));
                out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

/// The runtime (last) stage's USER as (user, group).
fn dockerfile_user() -> (String, String) {
    let ins = dockerfile_instructions();
    let last_from = ins.iter().rposition(|(op, _)| op == "FROM").expect("FROM");
    let user = ins[last_from..]
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, v)| v.clone())
        .expect("the runtime stage must set USER");
    match user.split_once(':') {
        Some((u, g)) => (u.to_string(), g.to_string()),
        None => (user.clone(), String::new()),
    }
}

#[test]
fn dockerfile_builds_with_cmake_and_runs_as_a_numeric_non_root_user() {
    let ins = dockerfile_instructions();
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(froms.len() >= 2, "multi-stage: a build stage and a runtime stage");
    let build = &ins[froms[0]..froms[1]];
    let runtime = &ins[*froms.last().expect("runtime")..];
    assert!(
        ins[froms[0]].1.contains("rust"),
        "the build stage starts from a Rust image"
    );
    assert!(
        build
            .iter()
            .any(|(op, v)| op == "RUN" && v.contains("install") && v.split_whitespace().any(|w| w == "cmake")),
        "the build stage installs cmake (pingora's build needs it)"
    );
    assert!(
        build.iter().any(|(op, v)| op == "RUN"
            && v.contains("cargo build")
            && v.contains("--release")
            && v.contains("--locked")),
        "cargo build --release --locked"
    );
    assert!(
        !runtime[0].1.contains("rust:"),
        "the runtime stage is not the Rust image"
    );
    let (user, group) = dockerfile_user();
    let uid: u32 = user
        .parse()
        .unwrap_or_else(|_| panic!("USER must be numeric, got {user:?}"));
    assert!(uid > 0, "USER must not be root");
    if !group.is_empty() {
        assert!(group.parse::<u32>().is_ok_and(|g| g > 0), "numeric non-root group");
    }
    let exposed: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, v)| v.split_whitespace())
        .collect();
    for port in ["4180", "9090"] {
        assert!(
            exposed.iter().any(|p| p.trim_end_matches("/tcp") == port),
            "EXPOSE {port}"
        );
    }
    let exec = |op: &str| -> Vec<String> {
        runtime
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, v)| serde_json::from_str(v).unwrap_or_else(|e| panic!("{op} must be a JSON array: {e}")))
            .unwrap_or_default()
    };
    let entry = exec("ENTRYPOINT");
    assert!(
        entry.first().is_some_and(|e| e.ends_with("/nini-auth")),
        "ENTRYPOINT is the binary: {entry:?}"
    );
    let cmd: Vec<String> = entry.iter().skip(1).cloned().chain(exec("CMD")).collect();
    assert_eq!(
        cmd,
        ["run", "--config", "/etc/nini-auth/config.toml"],
        "default command"
    );
    assert!(
        runtime.iter().any(|(op, v)| op == "VOLUME" && v.contains("/data")),
        "VOLUME /data for SQLite"
    );
    let ignore = read(".dockerignore");
    for pat in ["target", "node_modules", "*.db"] {
        assert!(
            ignore.lines().any(|l| l.contains(pat)),
            ".dockerignore must exclude {pat}"
        );
    }
}

#[test]
fn operations_doc_lists_every_metric() {
    let src = read("src/metrics.rs");
    let doc = read("docs/operations.md");
    let names: BTreeSet<&str> = src
        .split('"')
        .filter(|t| t.starts_with("nini_auth_") && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert!(names.len() >= 5, "found metric names {names:?}");
    let missing: Vec<&&str> = names.iter().filter(|n| !doc.contains(**n)).collect();
    assert!(missing.is_empty(), "docs/operations.md does not document {missing:?}");
}
