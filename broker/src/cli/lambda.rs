//! `kascade lambda deploy|ls|inspect|rm`.
//!
//! `deploy --wasm module.wasm` sends the module inside the config as
//! `{"module_base64": "<standard base64>"}` (kind `wasm`); `deploy --cdylib lib.so`
//! sends `{"path": "/abs/path/lib.so"}` (kind `cdylib`), a path on the broker's host;
//! `deploy --cuda kernel.cu --kernel NAME` sends the CUDA C source (kind `cuda`,
//! compiled by the broker's NVRTC; `--ptx` sends PTX instead), with the launch
//! shape and parameter block the other `--` options give.

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

// Parsed once per process: the size of the `deploy` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum LambdaCommand {
    /// Deploy a lambda on a prefix (or replace the one of that name with --replace).
    Deploy {
        /// The lambda's name.
        name: String,
        /// The prefix whose versions it receives.
        #[arg(long)]
        prefix: String,
        /// A registered kind (`forward`, `wasm`, `cdylib`, `process`, `cuda`, ...); implied by --wasm, --cdylib, --process, --cuda and --ptx.
        #[arg(long, required_unless_present_any = ["wasm", "cdylib", "cuda", "ptx", "process"])]
        kind: Option<String>,
        /// A WASM module to upload (kind `wasm`).
        #[arg(long, conflicts_with_all = ["cdylib", "kind", "config", "config_file"])]
        wasm: Option<PathBuf>,
        /// A shared library on the broker's host (kind `cdylib`).
        #[arg(long, conflicts_with_all = ["kind", "config", "config_file", "cuda", "ptx"])]
        cdylib: Option<PathBuf>,
        /// An external program the broker starts and supervises (kind `process`):
        /// give it after `--`, e.g. `--process -- /usr/local/bin/upper --verbose`.
        #[arg(long, conflicts_with_all = ["wasm", "cdylib", "kind", "config", "config_file", "cuda", "ptx"], requires = "argv")]
        process: bool,
        /// The program and its arguments, with --process (the program's path is made absolute).
        #[arg(last = true, value_name = "PROGRAM ARGS", requires = "process")]
        argv: Vec<String>,
        /// A CUDA C file to upload (kind `cuda`; the broker compiles it with NVRTC).
        #[arg(long, conflicts_with_all = ["wasm", "kind", "config", "config_file", "ptx"], requires = "kernel")]
        cuda: Option<PathBuf>,
        /// A PTX file to upload (kind `cuda`).
        #[arg(long, conflicts_with_all = ["wasm", "kind", "config", "config_file"], requires = "kernel")]
        ptx: Option<PathBuf>,
        /// The kernel to launch (`extern "C" __global__`), with --cuda or --ptx.
        #[arg(long)]
        kernel: Option<String>,
        /// Threads per block, with --cuda or --ptx (default 256).
        #[arg(long)]
        block: Option<u32>,
        /// Blocks per launch, with --cuda or --ptx (default: one thread per input byte).
        #[arg(long)]
        grid: Option<u32>,
        /// A float32 of the kernel's parameter block, little-endian (repeatable, in order).
        #[arg(
            long = "params-f32",
            value_name = "F32",
            conflicts_with = "params_file"
        )]
        params_f32: Vec<f32>,
        /// A file whose bytes are the kernel's parameter block.
        #[arg(long)]
        params_file: Option<PathBuf>,
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

/// The `cuda` config's launch options, as given on the command line.
struct GpuOptions {
    kernel: Option<String>,
    block: Option<u32>,
    grid: Option<u32>,
    params_f32: Vec<f32>,
    params_file: Option<PathBuf>,
}

impl GpuOptions {
    /// A `cuda` config with the program under `field` (`source` or `ptx`).
    fn config(self, field: &str, program: String) -> anyhow::Result<Value> {
        let kernel = self.kernel.context("--kernel names the kernel to launch")?;
        let mut config = json!({ field: program, "kernel": kernel });
        if let Some(b) = self.block {
            config["block"] = json!(b);
        }
        if let Some(g) = self.grid {
            config["grid"] = json!(g);
        }
        let params: Vec<u8> = match self.params_file {
            Some(path) => std::fs::read(&path)
                .with_context(|| format!("reading the parameter block {}", path.display()))?,
            None => self
                .params_f32
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect(),
        };
        if !params.is_empty() {
            config["params_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&params));
        }
        Ok(config)
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
            cuda,
            ptx,
            kernel,
            block,
            grid,
            params_f32,
            params_file,
            process,
            argv,
        } => {
            let gpu = GpuOptions {
                kernel,
                block,
                grid,
                params_f32,
                params_file,
            };
            let (kind, config) = if let Some(path) = wasm {
                let module = std::fs::read(&path)
                    .with_context(|| format!("reading the WASM module {}", path.display()))?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&module);
                ("wasm".to_string(), json!({ "module_base64": encoded }))
            } else if let Some(path) = cuda {
                let source = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the CUDA C file {}", path.display()))?;
                ("cuda".to_string(), gpu.config("source", source)?)
            } else if let Some(path) = ptx {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the PTX file {}", path.display()))?;
                ("cuda".to_string(), gpu.config("ptx", text)?)
            } else if process {
                let mut command = argv.clone();
                if let Some(program) = command.first_mut() {
                    let path = std::path::Path::new(program.as_str());
                    if path.components().count() > 1 {
                        *program = std::path::absolute(path)
                            .with_context(|| format!("making {program} absolute"))?
                            .display()
                            .to_string();
                    }
                }
                ("process".to_string(), json!({ "command": command }))
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
