//! The deployment material stays wired to the code: every YAML document under
//! `examples/kubernetes/` parses, the Service reaches only the sidecar's proxy port, the probes
//! hit the admin listener, the secrets come from the Secret under the names the config reads,
//! the ConfigMap's `config.toml` is mounted where `run --config` reads it and passes the
//! sidecar's own validation, the database sits on the claim, the containers are locked down,
//! and the `Dockerfile` builds with cmake and runs as a non-root user. Also: every metric in
//! `src/metrics.rs` is documented in `docs/operations.md`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nini_auth::config::{self, Config, SecretsPolicy};
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// One YAML document, converted to JSON values for easy indexing.
struct Doc {
    file: String,
    v: Value,
}

/// Every document of every `*.yaml` / `*.yml` under examples/kubernetes (multi-document files
/// included; empty documents skipped). The directory also holds other examples (forward-auth).
fn all_docs() -> Vec<Doc> {
    let dir = root().join("examples/kubernetes");
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
            let y = serde_norway::Value::deserialize(de).unwrap_or_else(|e| panic!("{name}: invalid YAML: {e}"));
            if y.is_null() {
                continue;
            }
            let v = serde_json::to_value(&y).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push(Doc { file: name.clone(), v });
        }
    }
    out
}

/// The sidecar example: the documents of the files `kustomization.yaml` applies.
fn docs() -> Vec<Doc> {
    let all = all_docs();
    let listed: Vec<String> = arr(&one(&all, "Kustomization")["resources"])
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    all.into_iter().filter(|d| listed.contains(&d.file)).collect()
}

/// The Secret the sidecar's environment refers to (not applied by the kustomization).
fn referenced_secret(docs: &[Doc]) -> (String, Value) {
    let names: BTreeSet<String> = secret_env(sidecar(docs)).into_values().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 1, "the sidecar's secrets come from one Secret: {names:?}");
    let name = names.into_iter().next().expect("secret name");
    let all = all_docs();
    let d = all
        .iter()
        .find(|d| d.v["kind"] == "Secret" && d.v["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no example Secret named {name:?} under examples/kubernetes"));
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
        .unwrap_or_else(|| panic!("no {kind} named {name:?} in examples/kubernetes"))
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

/// The ConfigMap's config.toml as mounted for the sidecar, validated exactly as `run` would,
/// with the Deployment's Secret-backed variables set to test values. Returns the config and the
/// database path as written in the file (validation needs its directory to exist here, so a
/// missing /data alone is tolerated and the database moved to a temporary directory).
fn sidecar_config(docs: &[Doc]) -> (Config, PathBuf, tempfile::TempDir) {
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
        let value = if name == config::ENV_SECRET {
            nini_auth::crypto::generate_key_base64().expect("key")
        } else {
            format!("test-{}", name.to_lowercase())
        };
        env.insert(name.clone(), value);
    }
    let raw = config::parse(&text).unwrap_or_else(|e| panic!("{cm_name}/{key} does not parse:\n{}", e.report()));
    let database = PathBuf::from(&raw.storage.database);
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
    (cfg, database, tmp)
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_real_files() {
    let all = all_docs();
    for d in &all {
        assert!(d.v["apiVersion"].is_string(), "{}: document without apiVersion", d.file);
        assert!(d.v["kind"].is_string(), "{}: document without kind", d.file);
        if d.v["kind"] != "Kustomization" {
            assert!(
                d.v["metadata"]["name"].is_string(),
                "{}: {} without a name",
                d.file,
                d.v["kind"]
            );
        }
    }
    let k = one(&all, "Kustomization");
    for f in arr(&k["resources"]).iter().map(s) {
        assert!(
            root().join("examples/kubernetes").join(f).is_file(),
            "kustomization lists missing {f}"
        );
    }
    let docs = docs();
    for kind in ["Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Ingress"] {
        one(&docs, kind);
    }
    let (secret_file, _) = referenced_secret(&docs);
    assert!(
        docs.iter().all(|d| d.file != secret_file),
        "the placeholder Secret ({secret_file}) must not be applied by the kustomization"
    );
}

#[test]
fn service_targets_the_sidecar_proxy_port_only() {
    let docs = docs();
    let svc = one(&docs, "Service");
    let deploy = one(&docs, "Deployment");
    let labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    for (k, v) in svc["spec"]["selector"].as_object().expect("service selector") {
        assert_eq!(labels.get(k), Some(v), "Service selector {k} does not match the Pod");
    }
    for (k, v) in deploy["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(labels.get(k), Some(v), "Deployment selector {k} does not match the Pod");
    }
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
            "Service port {p} must target the sidecar's proxy port"
        );
        assert!(resolve_port(app, target).is_none(), "Service port {p} reaches the app");
        assert_ne!(
            resolve_port(side, target),
            Some(admin),
            "the admin port must stay out of the Service"
        );
    }
    // The app declares no port at all: it listens on loopback, behind the sidecar.
    assert!(
        app["ports"].as_array().is_none_or(|p| p.is_empty()),
        "the app container must not declare ports"
    );
}

#[test]
fn probes_hit_the_admin_listener() {
    let docs = docs();
    let side = sidecar(&docs);
    let admin = named_port(side, "admin");
    let (cfg, _, _tmp) = sidecar_config(&docs);
    let listen = cfg.ops.admin_listen.expect("admin.listen must be set");
    assert_eq!(
        u64::from(listen.port()),
        admin,
        "admin.listen port = the admin containerPort"
    );
    assert!(
        listen.ip().is_unspecified(),
        "admin.listen must bind all interfaces: the kubelet probes the Pod IP, not loopback"
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
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(
            resolve_port(side, &get["port"]),
            Some(admin),
            "{probe} must use the admin port"
        );
    }
    assert_ne!(u64::from(cfg.listen.port()), admin);
}

#[test]
fn secrets_come_from_the_secret_under_the_names_the_config_reads() {
    let docs = docs();
    let side = sidecar(&docs);
    let env = secret_env(side);
    let expected: BTreeSet<&str> = [config::ENV_CLIENT_KEY, config::ENV_CLIENT_SECRET, config::ENV_SECRET].into();
    let got: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(got, expected, "the sidecar's Secret-backed variables");
    let (_, secret) = referenced_secret(&docs);
    let secret_name = s(&secret["metadata"]["name"]);
    for (var, (name, key)) in &env {
        assert_eq!(name, secret_name, "{var} must come from the Secret {secret_name}");
        assert_eq!(key, var, "{var}: the Secret key has the variable's name");
        assert!(
            secret["stringData"][key.as_str()].is_string() || secret["data"][key.as_str()].is_string(),
            "the example Secret has no key {key}"
        );
    }
    // No secret (or database override) as a plain value anywhere in the Pod.
    for c in arr(&pod_spec(&docs)["containers"]) {
        for e in c["env"].as_array().into_iter().flatten() {
            let n = s(&e["name"]);
            if expected.contains(n) || n == config::ENV_DATABASE_URL {
                assert!(e["value"].is_null(), "{n} must not be a literal value");
            }
        }
    }
    assert!(!env.contains_key(config::ENV_DATABASE_URL));
}

#[test]
fn config_is_mounted_where_run_reads_it_and_validates() {
    let docs = docs();
    let side = sidecar(&docs);
    let app = app(&docs);
    let (cfg, _, _tmp) = sidecar_config(&docs);
    assert_eq!(
        u64::from(cfg.listen.port()),
        named_port(side, "proxy"),
        "server.listen = the proxy port"
    );
    assert!(
        cfg.listen.ip().is_unspecified(),
        "server.listen must accept the Service's traffic on the Pod IP"
    );
    assert_eq!(cfg.public_url.scheme(), "https", "production public_url is https");
    assert!(matches!(cfg.ops.log_format, config::LogFormat::Json));
    assert!(
        !cfg.ops.trusted_proxies.is_empty(),
        "trusted_proxies must name the ingress"
    );
    assert!(cfg.ops.hsts_max_age.is_some());
    // The app: loopback only, on the port the sidecar forwards to.
    assert!(
        cfg.upstream.addr.ip().is_loopback(),
        "upstream must be the app on loopback"
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
            "the app must bind loopback"
        );
    }
    if let Some(port) = app_env.get("PORT") {
        assert_eq!(
            port.parse::<u16>().ok(),
            Some(cfg.upstream.addr.port()),
            "app PORT = upstream.url port"
        );
    }
    // Room for the drain: the kubelet's SIGKILL comes after the grace period.
    let grace = pod_spec(&docs)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > cfg.shutdown_timeout.as_secs(),
        "terminationGracePeriodSeconds ({grace}) must exceed server.shutdown_timeout ({:?})",
        cfg.shutdown_timeout
    );
    // The image's default command reads the same file.
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&config_path(side)),
        "Dockerfile CMD and the Deployment must agree on the config path"
    );
}

#[test]
fn database_lives_on_the_persistent_volume_claim() {
    let docs = docs();
    let side = sidecar(&docs);
    let (_, database, _tmp) = sidecar_config(&docs);
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
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    // pingora's pid file and upgrade socket go to /tmp; the root file system is read-only.
    let (_, tmp) = mount_at(&docs, side, Path::new("/tmp"));
    assert!(tmp["emptyDir"].is_object(), "/tmp must be an emptyDir");
}

#[test]
fn containers_are_locked_down_and_sized() {
    let docs = docs();
    let pod = pod_spec(&docs);
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    for c in arr(&pod["containers"]) {
        let name = s(&c["name"]);
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
    assert_eq!(uid.to_string(), user, "the sidecar's runAsUser = the Dockerfile's USER");
}

#[test]
fn ingress_terminates_tls_for_the_public_url_in_front_of_the_service() {
    let docs = docs();
    let ing = one(&docs, "Ingress");
    let svc = one(&docs, "Service");
    let (cfg, _, _tmp) = sidecar_config(&docs);
    let host = cfg.public_url.host_str().expect("public_url host");
    let rules = arr(&ing["spec"]["rules"]);
    assert!(
        rules.iter().any(|r| r["host"] == host),
        "an Ingress rule for {host} (server.public_url)"
    );
    assert!(
        arr(&ing["spec"]["tls"])
            .iter()
            .any(|t| arr(&t["hosts"]).iter().any(|h| h == host) && t["secretName"].is_string()),
        "TLS for {host}"
    );
    for r in rules {
        for p in arr(&r["http"]["paths"]) {
            let b = &p["backend"]["service"];
            assert_eq!(b["name"], svc["metadata"]["name"], "Ingress backend = the Service");
            let port = &b["port"];
            assert!(
                arr(&svc["spec"]["ports"])
                    .iter()
                    .any(|sp| (port["name"].is_string() && sp["name"] == port["name"]) || sp["port"] == port["number"]),
                "Ingress backend port {port} is not a Service port"
            );
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
