//! The `kascade` command line's client side: `topic`, `kv`, `lambda`, `pipeline`
//! and `pool` talk HTTP to a broker's admin API (`--admin`, `KASCADE_ADMIN_URL`),
//! with its token (`--token`, `KASCADE_ADMIN_TOKEN`) when it has one. Output is
//! for people by default, the API's JSON with `--json`. `pub` and `sub` use the
//! native client instead (`--url`, `KASCADE_NATIVE_URL`; see [`native`]).

pub mod kv;
pub mod lambda;
pub mod native;
pub mod pipeline;
pub mod pool;
pub mod topic;

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Where the admin API is and how to talk to it; every client subcommand takes these.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// The broker's admin API.
    #[arg(
        long,
        global = true,
        env = "KASCADE_ADMIN_URL",
        default_value = "http://127.0.0.1:9644"
    )]
    pub admin: String,
    /// The admin token, when the broker has one.
    #[arg(
        long,
        global = true,
        env = "KASCADE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Bodies over this size show upload progress on stderr.
const PROGRESS_FROM: usize = 1 << 20;

/// An admin API answer that succeeded.
pub struct Reply {
    /// The response headers.
    pub headers: ureq::http::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .context("the admin API answered with something that is not JSON")
    }
}

/// A connection to a broker's admin API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    /// Whether to print JSON.
    pub json: bool,
}

impl Client {
    /// A client for `args`.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let base = args.admin.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            bail!("this build of kascade speaks plain HTTP to the admin API; use http://HOST:PORT (or a TLS-terminating proxy)");
        }
        if !base.starts_with("http://") {
            bail!("--admin must be an http:// URL, like http://127.0.0.1:9644 (got {base:?})");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .max_redirects(0)
            .build()
            .into();
        Ok(Client {
            agent,
            base,
            token: args.token.clone(),
            json: args.json,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call("GET", path, None, "")
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        self.call("DELETE", path, None, "")
    }

    /// `method path` with a JSON body.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Reply> {
        let bytes = serde_json::to_vec(body).context("encoding the request")?;
        self.call(method, path, Some(bytes), "application/json")
    }

    /// `method path` with a body of `content_type`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<Reply> {
        self.call(method, path, Some(body), content_type)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match body {
            None => {
                let request = match method {
                    "GET" => self.agent.get(&url),
                    "DELETE" => self.agent.delete(&url),
                    other => bail!("internal: {other} without a body"),
                };
                let request = match &auth {
                    Some(a) => request.header("authorization", a),
                    None => request,
                };
                request.call()
            }
            Some(bytes) => {
                let request = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => bail!("internal: {other} with a body"),
                };
                let request = match &auth {
                    Some(a) => request.header("authorization", a),
                    None => request,
                }
                .content_type(content_type);
                if bytes.len() > PROGRESS_FROM {
                    let total = bytes.len();
                    let request = request.header("content-length", total.to_string());
                    let reader = Progress::new(bytes);
                    let result = request.send(ureq::SendBody::from_owned_reader(reader));
                    if result.is_ok() {
                        eprintln!("uploaded {}", size(total as u64));
                    }
                    result
                } else {
                    request.send(&bytes[..])
                }
            }
        };
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow::anyhow!(
                    "cannot reach the admin API at {} ({e}): is `kascade serve` running there? (--admin or KASCADE_ADMIN_URL)",
                    self.base
                )
            }
            other => anyhow::anyhow!("{method} {url}: {other}"),
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if status >= 400 {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            bail!("{message} (HTTP {status})");
        }
        Ok(Reply { headers, body })
    }

    /// Prints `value` as pretty JSON when `--json` was given; true when it did.
    pub fn print_json(&self, value: &Value) -> anyhow::Result<bool> {
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)?;
        }
        Ok(self.json)
    }
}

/// A body reader that reports how much of it was sent, on stderr.
struct Progress {
    data: std::io::Cursor<Vec<u8>>,
    total: u64,
    shown: u64,
    terminal: bool,
}

impl Progress {
    fn new(data: Vec<u8>) -> Progress {
        let total = data.len() as u64;
        Progress {
            data: std::io::Cursor::new(data),
            total,
            shown: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl Read for Progress {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        let sent = self.data.position();
        let percent = sent * 100 / self.total.max(1);
        // A line per 10% (a rewritten line per 1% on a terminal).
        let step = if self.terminal { 1 } else { 10 };
        if n > 0 && percent >= self.shown + step {
            self.shown = percent - percent % step;
            let line = format!(
                "uploading {} of {} ({percent}%)",
                size(sent),
                size(self.total)
            );
            if self.terminal {
                eprint!("\r{line}");
                if sent == self.total {
                    eprintln!();
                }
            } else {
                eprintln!("{line}");
            }
        }
        Ok(n)
    }
}

/// A byte count for people.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// Percent-encodes a key or prefix for a URL path, keeping its `/` separators.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    encode_path(value).replace('/', "%2F")
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A JSON field as text for a table cell (`-` when absent or null).
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a value: the argument, the file, or stdin when neither is given.
pub fn read_value(value: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("give a value or --file, not both"),
        (Some(v), None) => Ok(v.as_bytes().to_vec()),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from stdin")?;
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        assert_eq!(encode_path("/a b/c%"), "/a%20b/c%25");
        assert_eq!(encode_query("/a/b"), "%2Fa%2Fb");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
    }
}
