//! The compose cluster, checked without a Docker engine (this machine has
//! none): `docker-compose.yml` must describe a 3-node Raft group beside a
//! shared PostgreSQL trace store and Jaeger, with ports, volumes, health
//! checks and start order right; the `Dockerfile` must be the multi-stage
//! build that image comes from; and each node's config file must parse
//! and validate with the real binary (`waybill serve --check-config`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

const NODES: [&str; 3] = ["node1", "node2", "node3"];
/// Where each node's config file is mounted in its container.
const CONFIG_IN_CONTAINER: &str = "/etc/waybill/waybill.toml";
/// Settings that every node's file must give the same value.
const SHARED: [&str; 8] = [
    "data_dir",
    "http_addr",
    "broker_addr",
    "flush",
    "replication",
    "trace_db",
    "otlp_endpoint",
    "ui_dir",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// docker-compose.yml with its `<<: *anchor` merges applied.
fn compose() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml"))?;
    let mut v: Value = serde_yaml_ng::from_str(&text)?;
    v.apply_merge()?;
    Ok(v)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn node_toml(node: &str) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(repo().join(format!("docker/{node}.toml")))?;
    Ok(toml::from_str(&text)?)
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or_default()
}

#[test]
fn compose_file_describes_three_raft_nodes_postgres_and_jaeger() -> anyhow::Result<()> {
    let c = compose()?;
    let services = c["services"]
        .as_mapping()
        .ok_or_else(|| anyhow::anyhow!("no services"))?;
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["jaeger", "node1", "node2", "node3", "postgres"]),
        "services"
    );
    let volumes: BTreeSet<&str> = c["volumes"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(Value::as_str)
        .collect();

    // PostgreSQL: the trace store, healthy before any node starts.
    let pg = &c["services"]["postgres"];
    assert!(pg["image"].as_str().is_some_and(|i| i.starts_with("postgres:")));
    let pg_check = strings(&pg["healthcheck"]["test"]).join(" ");
    assert!(pg_check.contains("pg_isready"), "postgres health check: {pg_check}");
    let db = pg["environment"]["POSTGRES_DB"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!db.is_empty(), "postgres names its database");
    let pg_volume = strings(&pg["volumes"]).join(" ");
    assert!(
        pg_volume.contains(":/var/lib/postgresql/data"),
        "postgres keeps its data in a volume"
    );

    // Jaeger: OTLP on, its UI published.
    let jaeger = &c["services"]["jaeger"];
    assert!(jaeger["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("jaegertracing/")));
    assert_eq!(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"].as_str(), Some("true"));
    assert!(strings(&jaeger["ports"]).contains(&"16686:16686".to_string()));

    let mut host_ports = BTreeSet::new();
    let mut data_volumes = BTreeSet::new();
    for port in strings(&jaeger["ports"]) {
        assert!(host_ports.insert(port.split(':').next().unwrap_or_default().to_string()));
    }
    for (n, node) in NODES.iter().enumerate() {
        let s = &c["services"][*node];
        let cfg = node_toml(node)?;
        let get = |k: &str| cfg.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        assert_eq!(s["build"].as_str(), Some("."), "{node} is built from the Dockerfile");
        assert!(
            s["environment"]["WAYBILL_AUTH_TOKEN"]
                .as_str()
                .is_some_and(|t| t.starts_with("${WAYBILL_AUTH_TOKEN:?")),
            "{node} binds 0.0.0.0 and so needs a token, required from the environment: {:?}",
            s["environment"]
        );
        assert_eq!(
            strings(&s["command"]),
            ["serve", "--config", CONFIG_IN_CONTAINER],
            "{node} takes everything from its config file"
        );
        // Its own config file, read-only, and its own data volume at data_dir.
        let mounts = strings(&s["volumes"]);
        let config_mount = format!("./docker/{node}.toml:{CONFIG_IN_CONTAINER}:ro");
        assert!(
            mounts.contains(&config_mount),
            "{node} mounts {config_mount}: {mounts:?}"
        );
        let data = mounts
            .iter()
            .find_map(|m| m.strip_suffix(&format!(":{}", get("data_dir"))))
            .ok_or_else(|| anyhow::anyhow!("{node} has no volume at its data_dir: {mounts:?}"))?;
        assert!(volumes.contains(data), "{node}'s volume {data} is declared");
        assert!(data_volumes.insert(data.to_string()), "{node} shares a data volume");
        // Published ports: the dashboard and the client protocol, each host
        // port used once.
        let ports = strings(&s["ports"]);
        for (inner, base) in [
            (port_of(&get("http_addr")).to_string(), 8081),
            (port_of(&get("broker_addr")).to_string(), 9871),
        ] {
            let want = format!("{}:{inner}", base + n);
            assert!(ports.contains(&want), "{node} publishes {want}: {ports:?}");
        }
        for p in &ports {
            assert!(
                host_ports.insert(p.split(':').next().unwrap_or_default().to_string()),
                "host port {p} twice"
            );
        }
        // Health: GET /healthz on the node's own HTTP port.
        let check = strings(&s["healthcheck"]["test"]).join(" ");
        let url = format!("http://127.0.0.1:{}/healthz", port_of(&get("http_addr")));
        assert!(check.contains(&url), "{node} health check {check:?} asks {url}");
        assert!(s["healthcheck"]["interval"].as_str().is_some());
        // Start order: the trace store healthy, Jaeger started.
        assert_eq!(
            s["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert!(s["depends_on"]["jaeger"].is_mapping());
        // The config reaches the other services by their compose names.
        assert_eq!(get("trace_db"), format!("postgres://postgres@postgres:5432/{db}"));
        assert_eq!(get("otlp_endpoint"), "http://jaeger:4318");
        assert_eq!(
            get("advertise_addr"),
            format!("{node}:{}", port_of(&get("broker_addr")))
        );
    }
    assert!(volumes.contains("pg"));
    Ok(())
}

#[test]
fn node_configs_agree_and_name_each_other() -> anyhow::Result<()> {
    let first = node_toml(NODES[0])?;
    for (n, node) in NODES.iter().enumerate() {
        let cfg = node_toml(node)?;
        for key in SHARED {
            assert_eq!(cfg.get(key), first.get(key), "{node}: {key} differs from node1");
        }
        assert_eq!(cfg.get("node_id").and_then(|v| v.as_integer()), Some(n as i64 + 1));
        let peers: BTreeSet<String> = cfg
            .get("peer")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        let want: BTreeSet<String> = NODES
            .iter()
            .enumerate()
            .filter(|(m, _)| *m != n)
            .map(|(m, other)| format!("{}={other}:9876", m + 1))
            .collect();
        assert_eq!(peers, want, "{node}'s peers");
    }
    Ok(())
}

/// `waybill serve --config FILE --check-config` and its output fields.
fn check_config(file: &Path) -> anyhow::Result<(bool, BTreeMap<String, String>, String)> {
    // As compose passes it (x-waybill's environment): the nodes bind
    // 0.0.0.0, which needs a token.
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["serve", "--config"])
        .arg(file)
        .arg("--check-config")
        .env("WAYBILL_AUTH_TOKEN", "compose-check-secret")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let fields = stdout
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok((
        out.status.success(),
        fields,
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[test]
fn each_node_config_parses_with_the_binary() -> anyhow::Result<()> {
    for (n, node) in NODES.iter().enumerate() {
        let (ok, f, err) = check_config(&repo().join(format!("docker/{node}.toml")))?;
        assert!(ok, "{node}: {err}");
        let id = (n + 1).to_string();
        assert_eq!(f.get("node_id"), Some(&id), "{f:?}");
        assert_eq!(f.get("replication").map(String::as_str), Some("raft"));
        assert_eq!(f.get("trace_store").map(String::as_str), Some("postgres"));
        assert_eq!(f.get("data_dir").map(String::as_str), Some("/data"));
        assert_eq!(f.get("http_addr").map(String::as_str), Some("0.0.0.0:8080"));
        assert_eq!(f.get("advertise_addr"), Some(&format!("{node}:9876")));
    }
    // The check is not vacuous: a Raft node with one peer is refused.
    let tmp = tempfile::tempdir()?;
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "replication = \"raft\"\npeer = [\"2=node2:9876\"]\n")?;
    let (ok, _, err) = check_config(&bad)?;
    assert!(
        !ok && err.contains("raft needs"),
        "a one-peer raft config passed: {err}"
    );
    Ok(())
}

#[test]
fn dockerfile_is_multi_stage_with_what_compose_needs() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?;
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(text.contains("cargo build --locked --release --bin waybill"));
    assert!(text.contains("COPY --from=build /src/target/release/waybill /usr/local/bin/waybill"));
    // The dashboard where the node configs' ui_dir points, and curl for the
    // compose health checks, in the runtime stage.
    let runtime = text.rsplit("\nFROM ").next().unwrap_or_default();
    let ui = node_toml("node1")?
        .get("ui_dir")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        runtime.contains(&format!("/src/frontend/dist {ui}")),
        "dashboard at {ui}"
    );
    assert!(runtime.contains(" curl"), "curl in the runtime image");
    assert!(runtime.contains("EXPOSE 8080 9876"));
    assert!(runtime.contains("ENTRYPOINT [\"waybill\"]"));
    Ok(())
}
