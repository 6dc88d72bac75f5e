//! `kascade pub` and `kascade sub`: publish stdin lines and print pushed
//! records through the native client (like `kcat -P` and `kcat -C`), over
//! shared memory (`shm:///path/native.sock`) or TCP (`tcp://host:port`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use kascade_wire::native::{Client, ClientOptions, Delivery, Offset};

/// Where the broker's native listener is.
#[derive(Debug, clap::Args)]
pub struct UrlArgs {
    /// The broker's native URL, `shm:///path/native.sock` or `tcp://host:port`
    /// [default: shm://<KASCADE_DATA_DIR or ./kascade-data>/native.sock].
    #[arg(long, env = "KASCADE_NATIVE_URL")]
    url: Option<String>,
}

impl UrlArgs {
    /// The URL given, or the shared-memory socket of a broker run here with
    /// the same data dir.
    fn resolve(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let data_dir = std::env::var_os("KASCADE_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./kascade-data"));
        format!(
            "shm://{}",
            kascade::native::default_socket(&data_dir).display()
        )
    }

    fn connect(&self, name: &str) -> anyhow::Result<Client> {
        let url = self.resolve();
        let options = ClientOptions {
            client_name: name.into(),
            ..ClientOptions::default()
        };
        Client::connect_with(&url, options)
            .with_context(|| format!("connecting to the broker at {url} (is `kascade serve` running? set --url or KASCADE_NATIVE_URL)"))
    }
}

/// Publish each line of stdin as one record (like `kcat -P`).
#[derive(Debug, clap::Args)]
pub struct PubArgs {
    /// The topic.
    topic: String,
    /// The partition; the broker chooses when not given (by key, else round-robin per batch).
    #[arg(short, long)]
    partition: Option<i32>,
    /// The key of every record.
    #[arg(short, long, conflicts_with = "key_delimiter")]
    key: Option<String>,
    /// Split each line at the first DELIM into key and value (like `kcat -K`).
    #[arg(short = 'K', long, value_name = "DELIM")]
    key_delimiter: Option<String>,
    /// A header of every record, `name=value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Print `partition offset` for each record, in input order.
    #[arg(long)]
    print_offsets: bool,
    #[command(flatten)]
    url: UrlArgs,
}

/// Records queued before their acks are collected.
const PUB_WINDOW: usize = 1024;

/// Runs `kascade pub`.
pub fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    let headers: Vec<(String, Vec<u8>)> = args
        .headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.as_bytes().to_vec())),
            _ => bail!("header {h:?} is not name=value"),
        })
        .collect::<anyhow::Result<_>>()?;
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    if args.key_delimiter.as_deref() == Some("") {
        bail!("the key delimiter (-K) must not be empty");
    }
    let mut client = args.url.connect("kascade pub")?;
    let mut input = BufReader::with_capacity(64 << 10, std::io::stdin());
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    let mut pending = 0;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (key, value) = match (&args.key, &args.key_delimiter) {
            (Some(k), _) => (Some(k.as_bytes()), &line[..]),
            (None, Some(d)) => match find(&line, d.as_bytes()) {
                Some(at) => (Some(&line[..at]), &line[at + d.len()..]),
                None => (None, &line[..]),
            },
            (None, None) => (None, &line[..]),
        };
        client
            .publish_nowait(&args.topic, args.partition, key, value, &headers)
            .with_context(|| format!("publishing to {}", args.topic))?;
        pending += 1;
        // Collect the acks when the window is full, or when no more input is
        // already here (so records typed by hand are published at once).
        if pending >= PUB_WINDOW || input.buffer().is_empty() {
            settle(&mut client, &mut out, args.print_offsets, &args.topic)?;
            pending = 0;
        }
    }
    settle(&mut client, &mut out, args.print_offsets, &args.topic)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn settle(
    client: &mut Client,
    out: &mut impl Write,
    print: bool,
    topic: &str,
) -> anyhow::Result<()> {
    let published = client
        .flush()
        .with_context(|| format!("publishing to {topic}"))?;
    if print {
        for p in &published {
            writeln!(out, "{} {}", p.partition, p.offset)?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Print records of a topic as the broker pushes them (like `kcat -C`).
#[derive(Debug, clap::Args)]
pub struct SubArgs {
    /// The topic.
    topic: String,
    /// Partitions, comma-separated (all when not given).
    #[arg(short, long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// Where to start: `beginning`, `end` (only new records) or an offset.
    #[arg(short, long, default_value = "beginning")]
    offset: String,
    /// Exit after this many records.
    #[arg(short, long)]
    count: Option<u64>,
    /// Output per record: %t topic, %p partition, %o offset, %k key, %s value,
    /// %T timestamp (ms), %h headers (name=value,...), %% a percent sign;
    /// \n, \t and \\ are escapes.
    #[arg(short, long, default_value = "%s\\n")]
    format: String,
    #[command(flatten)]
    url: UrlArgs,
}

/// One piece of a `--format`.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

fn parse_format(format: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('s') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => bail!(
                    "unknown format token %{} in {format:?}: use %t %p %o %k %s %T %h or %%",
                    other.map(String::from).unwrap_or_default()
                ),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        let mut b = [0; 4];
                        text.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    }
                    None => text.push(b'\\'),
                }
                continue;
            }
            other => {
                let mut b = [0; 4];
                text.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn render(out: &mut impl Write, pieces: &[Piece], d: &Delivery<'_>) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.write_all(t)?,
            Piece::Topic => out.write_all(d.topic().as_bytes())?,
            Piece::Partition => write!(out, "{}", d.partition())?,
            Piece::Offset => write!(out, "{}", d.offset())?,
            Piece::Key => out.write_all(d.key().unwrap_or_default())?,
            Piece::Value => out.write_all(d.value())?,
            Piece::Timestamp => write!(out, "{}", d.timestamp_ms())?,
            Piece::Headers => {
                for (i, (name, value)) in d.headers().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(name)?;
                    out.write_all(b"=")?;
                    out.write_all(value.unwrap_or_default())?;
                }
            }
        }
    }
    Ok(())
}

/// Runs `kascade sub`.
pub fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    let pieces = parse_format(&args.format)?;
    let from = match args.offset.as_str() {
        "beginning" | "earliest" => Offset::Earliest,
        "end" | "latest" => Offset::Latest,
        o => match o.parse::<i64>() {
            Ok(o) if o >= 0 => Offset::At(o),
            _ => bail!("--offset {o:?}: use beginning, end or an offset >= 0"),
        },
    };
    if args.count == Some(0) {
        return Ok(());
    }
    let mut client = args.url.connect("kascade sub")?;
    client
        .subscribe(&args.topic, &args.partitions, from)
        .with_context(|| format!("subscribing to {}", args.topic))?;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut seen = 0u64;
    loop {
        // Records already here are written out together; stdout is flushed
        // before waiting, so a reader sees each record as it arrives.
        let mut delivery = client.next_record(Some(std::time::Duration::ZERO))?;
        if delivery.is_none() {
            out.flush()?;
            drop(delivery);
            delivery = client.next_record(None)?;
        }
        let Some(d) = delivery else {
            continue;
        };
        render(&mut out, &pieces, &d)?;
        drop(d);
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            out.flush()?;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_into_pieces_and_escapes() {
        assert_eq!(
            parse_format("%p %o %k=%s\\n").unwrap(),
            vec![
                Piece::Partition,
                Piece::Text(b" ".to_vec()),
                Piece::Offset,
                Piece::Text(b" ".to_vec()),
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b"\n".to_vec()),
            ]
        );
        assert_eq!(
            parse_format("100%%\\t%T").unwrap(),
            vec![Piece::Text(b"100%\t".to_vec()), Piece::Timestamp]
        );
        assert!(parse_format("%x").is_err());
        assert!(parse_format("%").is_err());
    }

    #[test]
    fn a_key_delimiter_splits_at_its_first_occurrence() {
        assert_eq!(find(b"k:v:w", b":"), Some(1));
        assert_eq!(find(b"kv", b"::"), None);
    }
}
