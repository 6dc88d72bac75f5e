//! `kascade pool create|ls|alter|rm`.

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::{cell, encode_path, size, table, Client, ClientArgs};

/// Pools: key prefixes with one storage, retention and ordering policy.
#[derive(Debug, clap::Args)]
pub struct PoolArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: PoolCommand,
}

/// A retention limit: a number, or `none` for no limit.
#[derive(Clone, Copy, Debug)]
struct Limit(Option<u64>);

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Limit, String> {
        if s == "none" {
            return Ok(Limit(None));
        }
        s.parse()
            .map(|n| Limit(Some(n)))
            .map_err(|_| format!("{s:?}: expected a number or none"))
    }
}

/// When writes reach the disk: `always`, or a number of milliseconds between fsyncs.
#[derive(Clone, Copy, Debug)]
struct Fsync(Option<u64>);

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Fsync, String> {
        if s == "always" {
            return Ok(Fsync(None));
        }
        s.parse()
            .map(|n| Fsync(Some(n)))
            .map_err(|_| format!("{s:?}: expected always or milliseconds between fsyncs"))
    }
}

/// The settings `create` and `alter` share.
#[derive(Debug, clap::Args)]
struct Policy {
    /// Upcall ordering: per-key or concurrent.
    #[arg(long, value_parser = ["per-key", "concurrent"])]
    ordering: Option<String>,
    /// `always` (fsync each durable write, shared by concurrent ones) or milliseconds between background fsyncs.
    #[arg(long)]
    fsync: Option<Fsync>,
    /// Keep at most this many bytes of versions per key (`none`: no limit).
    #[arg(long)]
    retention_bytes: Option<Limit>,
    /// Drop versions older than this many milliseconds (`none`: no limit).
    #[arg(long)]
    retention_ms: Option<Limit>,
    /// Keep at most this many versions per key (`none`: no limit).
    #[arg(long)]
    retention_versions: Option<Limit>,
    /// Largest value accepted, in bytes.
    #[arg(long)]
    max_value_bytes: Option<u64>,
    /// Size at which a shard's log rolls to a new segment.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Keep each new version in GPU memory too (`--gpu`, or `--gpu false` to stop);
    /// a broker without GPU support accepts it and reports it inactive.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    gpu: Option<bool>,
}

#[derive(Debug, clap::Subcommand)]
enum PoolCommand {
    /// Create a pool.
    Create {
        /// The key prefix it owns, like /sensors.
        prefix: String,
        /// Where objects live.
        #[arg(long, value_parser = ["trigger", "volatile", "persistent"])]
        storage: String,
        /// Number of shards (fixed once created).
        #[arg(long)]
        shards: Option<u32>,
        #[command(flatten)]
        policy: Policy,
    },
    /// List the pools.
    #[command(alias = "list")]
    Ls,
    /// Change a pool's retention, ordering, fsync policy or limits.
    Alter {
        /// The pool's prefix.
        prefix: String,
        #[command(flatten)]
        policy: Policy,
    },
    /// Remove a pool and every object in it.
    #[command(alias = "delete")]
    Rm {
        /// The pool's prefix.
        prefix: String,
    },
}

fn pool_path(prefix: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        prefix.starts_with('/'),
        "prefixes are absolute paths, like /sensors (got {prefix:?})"
    );
    Ok(if prefix == "/" {
        "/v1/pools/%2F".to_string()
    } else {
        format!("/v1/pools{}", encode_path(prefix))
    })
}

/// The fields `policy` sets, over `retention` (the pool's current one for `alter`).
fn fields(policy: &Policy, mut retention: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(o) = &policy.ordering {
        out.insert("ordering".into(), json!(o));
    }
    if let Some(Fsync(f)) = policy.fsync {
        out.insert(
            "fsync".into(),
            match f {
                None => json!({ "mode": "always" }),
                Some(ms) => json!({ "mode": "interval", "ms": ms }),
            },
        );
    }
    let mut touched = false;
    for (name, limit) in [
        ("max_bytes", policy.retention_bytes),
        ("max_age_ms", policy.retention_ms),
        ("max_versions", policy.retention_versions),
    ] {
        if let Some(Limit(l)) = limit {
            retention.insert(name.into(), json!(l));
            touched = true;
        }
    }
    if touched {
        out.insert("retention".into(), Value::Object(retention));
    }
    if let Some(m) = policy.max_value_bytes {
        out.insert("max_value_bytes".into(), json!(m));
    }
    if let Some(s) = policy.segment_bytes {
        out.insert("segment_bytes".into(), json!(s));
    }
    if let Some(g) = policy.gpu {
        out.insert("gpu".into(), json!(g));
    }
    out
}

fn retention_text(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(b) = r["max_bytes"].as_u64() {
        parts.push(format!("{} per key", size(b)));
    }
    if let Some(ms) = r["max_age_ms"].as_u64() {
        parts.push(format!("{ms} ms"));
    }
    if let Some(v) = r["max_versions"].as_u64() {
        parts.push(format!("{v} versions"));
    }
    if parts.is_empty() {
        "forever".into()
    } else {
        parts.join(", ")
    }
}

fn fsync_text(f: &Value) -> String {
    match f["ms"].as_u64() {
        Some(ms) => format!("every {ms} ms"),
        None => cell(&f["mode"]),
    }
}

fn print_pool(verb: &str, p: &Value) {
    println!(
        "{verb} pool {}: {}, {} shards, {} ordering, retention {}{}",
        cell(&p["prefix"]),
        cell(&p["storage"]),
        cell(&p["shards"]),
        cell(&p["ordering"]),
        retention_text(&p["retention"]),
        if p["gpu"].as_bool() == Some(true) {
            ", gpu (see GET /v1/gpu for whether it is active)"
        } else {
            ""
        }
    );
}

/// Runs a `pool` subcommand.
pub fn run(args: PoolArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.command {
        PoolCommand::Create {
            prefix,
            storage,
            shards,
            policy,
        } => {
            pool_path(&prefix)?;
            let mut body = fields(&policy, Map::new());
            body.insert("prefix".into(), json!(prefix));
            body.insert("storage".into(), json!(storage));
            if let Some(n) = shards {
                body.insert("shards".into(), json!(n));
            }
            let p = client
                .send_json("POST", "/v1/pools", &Value::Object(body))?
                .json()?;
            if !client.print_json(&p)? {
                print_pool("created", &p);
            }
        }
        PoolCommand::Ls => {
            let list = client.get("/v1/pools")?.json()?;
            if !client.print_json(&list)? {
                let rows: Vec<Vec<String>> = list
                    .as_array()
                    .context("the pool list is not an array")?
                    .iter()
                    .map(|p| {
                        vec![
                            cell(&p["prefix"]),
                            cell(&p["storage"]),
                            cell(&p["shards"]),
                            cell(&p["ordering"]),
                            fsync_text(&p["fsync"]),
                            retention_text(&p["retention"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "PREFIX",
                        "STORAGE",
                        "SHARDS",
                        "ORDERING",
                        "FSYNC",
                        "RETENTION",
                    ],
                    &rows,
                );
            }
        }
        PoolCommand::Alter { prefix, policy } => {
            let path = pool_path(&prefix)?;
            let current = client.get(&path)?.json()?;
            let retention = current["retention"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let body = fields(&policy, retention);
            anyhow::ensure!(
                !body.is_empty(),
                "nothing to change: give --retention-bytes, --retention-ms, --retention-versions, --ordering, --fsync, --max-value-bytes, --segment-bytes or --gpu"
            );
            let p = client
                .send_json("PATCH", &path, &Value::Object(body))?
                .json()?;
            if !client.print_json(&p)? {
                print_pool("altered", &p);
            }
        }
        PoolCommand::Rm { prefix } => {
            client.delete(&pool_path(&prefix)?)?;
            if !client.print_json(&json!({ "removed": prefix }))? {
                println!("removed pool {prefix}");
            }
        }
    }
    Ok(())
}
