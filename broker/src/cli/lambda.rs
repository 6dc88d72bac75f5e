//! `kascade lambda deploy|ls|inspect|rm`.
//!
//! `deploy --wasm module.wasm` sends the module inside the config as
//! `{"module_base64": "<standard base64>"}` (kind `wasm`); `deploy --cdylib lib.so`
//! sends `{"path": "/abs/path/lib.so"}` (kind `cdylib`), a path on the broker's host.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use super::{cell, encode_query, table, Client, ClientArgs};

/// Lambdas deployed at run time.
#[derive(Debug, clap::Args)]
pub struct LambdaArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: LambdaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LambdaCommand {
    /// Deploy a lambda on a prefix (or replace the one of that name with --replace).
    Deploy {
        /// The lambda's name.
        name: String,
        /// The prefix whose versions it receives.
        #[arg(long)]
        prefix: String,
        /// A registered kind (`forward`, `wasm`, `cdylib`, ...); implied by --wasm and --cdylib.
        #[arg(long, required_unless_present_any = ["wasm", "cdylib"])]
        kind: Option<String>,
        /// A WASM module to upload (kind `wasm`).
        #[arg(long, conflicts_with_all = ["cdylib", "kind", "config", "config_file"])]
        wasm: Option<PathBuf>,
        /// A shared library on the broker's host (kind `cdylib`).
        #[arg(long, conflicts_with_all = ["kind", "config", "config_file"])]
        cdylib: Option<PathBuf>,
        /// The kind's config, as JSON.
        #[arg(long, conflicts_with = "config_file")]
        config: Option<String>,
        /// A file holding the kind's config, as JSON.
        #[arg(long)]
        config_file: Option<PathBuf>,
        /// Where its output goes: `PREFIX` or `PREFIX:trigger` (repeatable; `:put` is the default).
        #[arg(long = "dest", value_name = "PREFIX[:put|:trigger]")]
        destinations: Vec<String>,
        /// Replace the lambda of this name if it exists (atomically).
        #[arg(long)]
        replace: bool,
    },
    /// List the lambdas with their counters.
    #[command(alias = "list")]
    Ls,
    /// Show one lambda: its binding, config and counters.
    Inspect {
        /// The lambda's name.
        name: String,
        /// Show long config strings (a module's base64) whole.
        #[arg(long)]
        full: bool,
    },
    /// Remove a lambda.
    #[command(alias = "delete")]
    Rm {
        /// The lambda's name.
        name: String,
    },
}

fn destination(text: &str) -> anyhow::Result<Value> {
    let (prefix, mode) = match text.rsplit_once(':') {
        Some((p, m @ ("put" | "trigger"))) => (p, m),
        _ => (text, "put"),
    };
    if !prefix.starts_with('/') {
        bail!("--dest {text:?}: a destination is an absolute prefix, like /out or /out:trigger");
    }
    Ok(json!({ "prefix": prefix, "mode": mode }))
}

fn destinations_text(l: &Value) -> String {
    let list: Vec<String> = l["destinations"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| format!("{}:{}", cell(&d["prefix"]), cell(&d["mode"])))
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// Nanoseconds for people.
pub fn duration(ns: &Value) -> String {
    match ns.as_u64() {
        Some(n) if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        Some(n) if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        Some(n) => format!("{n} ns"),
        None => "-".into(),
    }
}

/// Runs a `lambda` subcommand.
pub fn run(args: LambdaArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.command {
        LambdaCommand::Deploy {
            name,
            prefix,
            kind,
            wasm,
            cdylib,
            config,
            config_file,
            destinations,
            replace,
        } => {
            let (kind, config) = if let Some(path) = wasm {
                let module = std::fs::read(&path)
                    .with_context(|| format!("reading the WASM module {}", path.display()))?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&module);
                ("wasm".to_string(), json!({ "module_base64": encoded }))
            } else if let Some(path) = cdylib {
                let path = std::path::absolute(&path)
                    .with_context(|| format!("making {} absolute", path.display()))?;
                ("cdylib".to_string(), json!({ "path": path }))
            } else {
                let text = match (&config, &config_file) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(f)) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| format!("reading {}", f.display()))?,
                    ),
                    (None, None) => None,
                };
                let config = match text {
                    Some(t) => serde_json::from_str(&t).context("--config is not valid JSON")?,
                    None => Value::Null,
                };
                (kind.context("--kind is required")?, config)
            };
            let destinations = destinations
                .iter()
                .map(|d| destination(d))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut body = json!({
                "prefix": prefix,
                "kind": kind,
                "config": config,
                "destinations": destinations,
            });
            let l = if replace {
                client.send_json(
                    "PUT",
                    &format!("/v1/lambdas/{}", encode_query(&name)),
                    &body,
                )?
            } else {
                body["name"] = json!(name);
                client.send_json("POST", "/v1/lambdas", &body)?
            }
            .json()?;
            if !client.print_json(&l)? {
                println!(
                    "{} lambda {} ({}) on {} -> {}",
                    if replace {
                        "deployed or replaced"
                    } else {
                        "deployed"
                    },
                    cell(&l["name"]),
                    cell(&l["kind"]),
                    cell(&l["prefix"]),
                    destinations_text(&l)
                );
            }
        }
        LambdaCommand::Ls => {
            let list = client.get("/v1/lambdas")?.json()?;
            if !client.print_json(&list)? {
                let rows: Vec<Vec<String>> = list
                    .as_array()
                    .context("the lambda list is not an array")?
                    .iter()
                    .map(|l| {
                        vec![
                            cell(&l["name"]),
                            cell(&l["kind"]),
                            cell(&l["prefix"]),
                            destinations_text(l),
                            cell(&l["stats"]["calls"]),
                            cell(&l["stats"]["errors"]),
                            duration(&l["stats"]["mean_ns"]),
                            if l["active"].as_bool() == Some(true) {
                                "yes".into()
                            } else {
                                "NO".into()
                            },
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "KIND",
                        "PREFIX",
                        "DESTINATIONS",
                        "CALLS",
                        "ERRORS",
                        "MEAN",
                        "ACTIVE",
                    ],
                    &rows,
                );
            }
        }
        LambdaCommand::Inspect { name, full } => {
            let path = format!(
                "/v1/lambdas/{}{}",
                encode_query(&name),
                if full { "?full=true" } else { "" }
            );
            let l = client.get(&path)?.json()?;
            if !client.print_json(&l)? {
                println!("lambda {}", cell(&l["name"]));
                println!("  kind:         {}", cell(&l["kind"]));
                println!("  prefix:       {}", cell(&l["prefix"]));
                println!("  destinations: {}", destinations_text(&l));
                println!("  active:       {}", cell(&l["active"]));
                println!("  calls:        {}", cell(&l["stats"]["calls"]));
                println!("  errors:       {}", cell(&l["stats"]["errors"]));
                println!("  mean time:    {}", duration(&l["stats"]["mean_ns"]));
                println!("  mean lag:     {}", duration(&l["stats"]["mean_lag_ns"]));
                println!("  config:       {}", l["config"]);
            }
        }
        LambdaCommand::Rm { name } => {
            client.delete(&format!("/v1/lambdas/{}", encode_query(&name)))?;
            if !client.print_json(&json!({ "removed": name }))? {
                println!("removed lambda {name}");
            }
        }
    }
    Ok(())
}
