//! `kascade pipeline load|ls|rm`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

use super::lambda::duration;
use super::{cell, encode_query, table, Client, ClientArgs};

/// Pipelines: graphs of lambdas described in TOML or JSON.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PipelineCommand {
    /// Load a pipeline from a TOML or JSON file (`-` reads stdin).
    Load {
        /// The description.
        file: PathBuf,
        /// Replace the pipeline of that name if it is loaded.
        #[arg(long)]
        replace: bool,
    },
    /// List the pipelines with each stage's counters.
    #[command(alias = "list")]
    Ls,
    /// Remove a pipeline and unbind its stages.
    #[command(alias = "delete")]
    Rm {
        /// The pipeline's name.
        name: String,
    },
}

fn print_pipeline(p: &Value) {
    println!("pipeline {}", cell(&p["name"]));
    let rows: Vec<Vec<String>> = p["vertices"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    let dests: Vec<String> = v["destinations"]
                        .as_array()
                        .map(|ds| {
                            ds.iter()
                                .map(|d| format!("{}:{}", cell(&d["prefix"]), cell(&d["mode"])))
                                .collect()
                        })
                        .unwrap_or_default();
                    vec![
                        format!("  {}", cell(&v["name"])),
                        cell(&v["kind"]),
                        cell(&v["prefix"]),
                        if dests.is_empty() {
                            "-".into()
                        } else {
                            dests.join(",")
                        },
                        cell(&v["stats"]["calls"]),
                        cell(&v["stats"]["errors"]),
                        duration(&v["stats"]["mean_lag_ns"]),
                        duration(&v["stats"]["mean_ns"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "  VERTEX",
            "KIND",
            "PREFIX",
            "DESTINATIONS",
            "CALLS",
            "ERRORS",
            "MEAN LAG",
            "MEAN CALL",
        ],
        &rows,
    );
}

/// Runs a `pipeline` subcommand.
pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.command {
        PipelineCommand::Load { file, replace } => {
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the pipeline from stdin")?;
            } else {
                text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
            }
            let content_type = if text.trim_start().starts_with('{') {
                "application/json"
            } else {
                "application/toml"
            };
            let p = if replace {
                // The path names the pipeline: read its name here (the broker checks the rest).
                let spec = kascade_core::PipelineSpec::parse(&text)
                    .with_context(|| format!("{} is not a valid pipeline", file.display()))?;
                client.send(
                    "PUT",
                    &format!("/v1/pipelines/{}", encode_query(&spec.name)),
                    text.into_bytes(),
                    content_type,
                )?
            } else {
                client.send("POST", "/v1/pipelines", text.into_bytes(), content_type)?
            }
            .json()?;
            if !client.print_json(&p)? {
                let n = p["vertices"].as_array().map_or(0, Vec::len);
                println!(
                    "loaded pipeline {} with {n} vert{}",
                    cell(&p["name"]),
                    if n == 1 { "ex" } else { "ices" }
                );
            }
        }
        PipelineCommand::Ls => {
            let list = client.get("/v1/pipelines")?.json()?;
            if !client.print_json(&list)? {
                let list = list
                    .as_array()
                    .context("the pipeline list is not an array")?;
                if list.is_empty() {
                    println!("no pipelines");
                }
                for p in list {
                    print_pipeline(p);
                }
            }
        }
        PipelineCommand::Rm { name } => {
            client.delete(&format!("/v1/pipelines/{}", encode_query(&name)))?;
            if !client.print_json(&json!({ "removed": name }))? {
                println!("removed pipeline {name}");
            }
        }
    }
    Ok(())
}
