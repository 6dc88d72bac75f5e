//! `kascade kv put|get|ls|rm|trigger`: versioned objects by key.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{cell, encode_path, encode_query, table, Client, ClientArgs};

/// Versioned K/V objects.
#[derive(Debug, clap::Args)]
pub struct KvArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KvCommand {
    /// Store a new version of a key: the value given, a file's bytes, or stdin.
    Put {
        /// The key, an absolute path like /sensors/t1.
        key: String,
        /// The value (stdin when neither it nor --file is given).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(short, long)]
        file: Option<PathBuf>,
    },
    /// Print a version's value: the latest, or the one --version, --seq or --at-us names.
    Get {
        /// The key.
        key: String,
        /// Exactly this shard version.
        #[arg(long, conflicts_with_all = ["seq", "at_us"])]
        version: Option<u64>,
        /// The version holding this seq.
        #[arg(long, conflicts_with = "at_us")]
        seq: Option<u64>,
        /// The newest version at or before this time (µs since the Unix epoch).
        #[arg(long)]
        at_us: Option<u64>,
        /// Also print the version's metadata on stderr.
        #[arg(long)]
        meta: bool,
    },
    /// List the keys at or under a prefix.
    Ls {
        /// The prefix (default /).
        #[arg(default_value = "/")]
        prefix: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Remove a key (its history stays readable by version and seq).
    Rm {
        /// The key.
        key: String,
    },
    /// Upcall the lambdas bound over a key with a value, storing nothing.
    Trigger {
        /// The key.
        key: String,
        /// The value (stdin when neither it nor --file is given).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(short, long)]
        file: Option<PathBuf>,
    },
}

fn key_path(route: &str, key: &str) -> anyhow::Result<String> {
    if !key.starts_with('/') {
        bail!("keys are absolute paths, like /sensors/t1 (got {key:?})");
    }
    Ok(format!("{route}{}", encode_path(key)))
}

fn print_write(verb: &str, w: &Value) {
    println!(
        "{verb} {}: version {}, seq {}, at {} µs",
        cell(&w["key"]),
        cell(&w["version"]),
        cell(&w["seq"]),
        cell(&w["timestamp_us"])
    );
}

/// Runs a `kv` subcommand.
pub fn run(args: KvArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.command {
        KvCommand::Put { key, value, file } => {
            let body = super::read_value(value.as_deref(), file.as_deref())?;
            let w = client
                .send(
                    "PUT",
                    &key_path("/v1/kv", &key)?,
                    body,
                    "application/octet-stream",
                )?
                .json()?;
            if !client.print_json(&w)? {
                print_write("stored", &w);
            }
        }
        KvCommand::Trigger { key, value, file } => {
            let body = super::read_value(value.as_deref(), file.as_deref())?;
            let w = client
                .send(
                    "POST",
                    &key_path("/v1/trigger", &key)?,
                    body,
                    "application/octet-stream",
                )?
                .json()?;
            if !client.print_json(&w)? {
                print_write("triggered", &w);
            }
        }
        KvCommand::Get {
            key,
            version,
            seq,
            at_us,
            meta,
        } => {
            let mut path = key_path("/v1/kv", &key)?;
            let mut query = Vec::new();
            if let Some(v) = version {
                query.push(format!("version={v}"));
            }
            if let Some(s) = seq {
                query.push(format!("seq={s}"));
            }
            if let Some(t) = at_us {
                query.push(format!("at_us={t}"));
            }
            if client.json {
                query.push("format=json".into());
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let reply = client.get(&path)?;
            if client.json {
                client.print_json(&reply.json()?)?;
                return Ok(());
            }
            if meta {
                let header = |name: &str| {
                    reply
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                eprintln!(
                    "{key}: version {}, seq {}, count {}, at {} µs, previous version {}",
                    header("kascade-version"),
                    header("kascade-seq"),
                    header("kascade-count"),
                    header("kascade-timestamp-us"),
                    header("kascade-prev-version")
                );
            }
            let mut out = std::io::stdout().lock();
            out.write_all(&reply.body).context("writing the value")?;
            out.flush()?;
        }
        KvCommand::Ls { prefix, limit } => {
            let list = client
                .get(&format!(
                    "/v1/kv?prefix={}&limit={limit}",
                    encode_query(&prefix)
                ))?
                .json()?;
            if !client.print_json(&list)? {
                let rows: Vec<Vec<String>> = list["keys"]
                    .as_array()
                    .context("the key list has no keys")?
                    .iter()
                    .map(|k| {
                        vec![
                            cell(&k["key"]),
                            cell(&k["start_seq"]),
                            cell(&k["next_seq"]),
                            cell(&k["latest_version"]),
                        ]
                    })
                    .collect();
                table(&["KEY", "START SEQ", "NEXT SEQ", "VERSION"], &rows);
                if list["truncated"].as_bool() == Some(true) {
                    eprintln!("(only the first {limit} keys; raise --limit for more)");
                }
            }
        }
        KvCommand::Rm { key } => {
            let w = client.delete(&key_path("/v1/kv", &key)?)?.json()?;
            if !client.print_json(&w)? {
                print_write("removed", &w);
            }
        }
    }
    Ok(())
}
