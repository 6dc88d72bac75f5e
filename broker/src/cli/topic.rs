//! `kascade topic create|list|describe|delete`.

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::{cell, encode_query, table, Client, ClientArgs};

/// Kafka topics.
#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name.
        name: String,
        /// Number of partitions (the broker's --num-partitions when not given).
        #[arg(short, long)]
        partitions: Option<i32>,
        /// A topic config, `name=value` (repeatable): retention.ms=60000, kascade.storage=volatile, ...
        #[arg(short, long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// List the topics.
    #[command(alias = "ls")]
    List,
    /// Show a topic's partitions with their start and end offsets.
    Describe {
        /// The topic's name.
        name: String,
    },
    /// Delete a topic and all its records.
    #[command(alias = "rm")]
    Delete {
        /// The topic's name.
        name: String,
    },
}

fn configs_text(configs: &Value) -> String {
    match configs.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

fn print_description(t: &Value) {
    println!("topic {} (id {})", cell(&t["name"]), cell(&t["id"]));
    println!("configs: {}", configs_text(&t["configs"]));
    let rows: Vec<Vec<String>> = t["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    vec![
                        cell(&p["partition"]),
                        cell(&p["start_offset"]),
                        cell(&p["end_offset"]),
                        cell(&p["leader_epoch"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["PARTITION", "START", "END", "EPOCH"], &rows);
}

/// Runs a `topic` subcommand.
pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let mut map = Map::new();
            for c in &configs {
                let Some((k, v)) = c.split_once('=') else {
                    bail!("--config {c:?}: expected NAME=VALUE, like retention.ms=60000");
                };
                map.insert(k.to_string(), Value::String(v.to_string()));
            }
            let mut body = json!({ "name": name, "configs": map });
            if let Some(p) = partitions {
                body["partitions"] = json!(p);
            }
            let t = client.send_json("POST", "/v1/topics", &body)?.json()?;
            if !client.print_json(&t)? {
                let count = t["partitions"].as_array().map_or(0, Vec::len);
                println!(
                    "created topic {} with {count} partition{} (id {})",
                    cell(&t["name"]),
                    if count == 1 { "" } else { "s" },
                    cell(&t["id"])
                );
            }
        }
        TopicCommand::List => {
            let list = client.get("/v1/topics")?.json()?;
            if !client.print_json(&list)? {
                let rows: Vec<Vec<String>> = list
                    .as_array()
                    .context("the topic list is not an array")?
                    .iter()
                    .map(|t| {
                        vec![
                            cell(&t["name"]),
                            cell(&t["partitions"]),
                            configs_text(&t["configs"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "PARTITIONS", "CONFIGS"], &rows);
            }
        }
        TopicCommand::Describe { name } => {
            let t = client
                .get(&format!("/v1/topics/{}", encode_query(&name)))?
                .json()?;
            if !client.print_json(&t)? {
                print_description(&t);
            }
        }
        TopicCommand::Delete { name } => {
            client.delete(&format!("/v1/topics/{}", encode_query(&name)))?;
            if !client.print_json(&json!({ "deleted": name }))? {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}
