//! `kascade serve --config kascade.toml` with a real file: every setting can come
//! from it, and a flag beats an env var, which beats the file, which beats the default.

mod http;
mod spawn;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use http::Http;

/// Starts `cmd` and returns it with its ready line.
fn ready(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn kascade");
    let log = spawn::log_lines(&mut child);
    let line = spawn::wait_for(&log, "kascade is ready");
    // Keep draining the log so the process never blocks on a full pipe.
    std::thread::spawn(move || while log.recv().is_ok() {});
    (child, line)
}

/// `kascade serve --config file` with only `extra` flags (no test defaults).
fn serve_with(file: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kascade"));
    cmd.args(["serve", "--config"])
        .arg(file)
        .args(extra)
        .env("KASCADE_LOG", "info")
        .env("NO_COLOR", "1");
    for var in [
        "KASCADE_CONFIG",
        "KASCADE_ADMIN_TOKEN",
        "KASCADE_ADVERTISED",
        "KASCADE_LISTEN",
        "KASCADE_ADMIN_LISTEN",
        "KASCADE_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_flag_beats_the_env_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let file = dir.path().join("kascade.toml");
    std::fs::write(
        &file,
        format!(
            "# a broker from a file\n\
             data_dir = {data:?}\n\
             listen = \"127.0.0.1:0\"\n\
             admin_listen = \"127.0.0.1:0\"\n\
             advertised = \"file.example:1111\"\n\
             admin_token = \"file-token\"\n\
             upcall_wait = \"block\"\n"
        ),
    )
    .unwrap();

    // The file alone: its settings hold, the others keep their defaults.
    let (mut child, line) = ready(serve_with(&file, &[]));
    assert!(line.contains("advertised=file.example:1111"), "{line}");
    assert!(
        line.contains(&format!("data_dir={}", data.display())),
        "{line}"
    );
    let admin = spawn::field(&line, "admin").unwrap();
    let api = Http::new(&admin, Some("file-token"));
    assert_eq!(api.get("/v1/pools").status, 200);
    assert_eq!(api.with_token(None).get("/v1/pools").status, 401);
    spawn::stop(&mut child);

    // An env var beats the file.
    let mut cmd = serve_with(&file, &[]);
    cmd.env("KASCADE_ADVERTISED", "env.example:2222");
    let (mut child, line) = ready(cmd);
    assert!(line.contains("advertised=env.example:2222"), "{line}");
    spawn::stop(&mut child);

    // A flag beats both.
    let mut cmd = serve_with(&file, &["--advertised", "flag.example:3333"]);
    cmd.env("KASCADE_ADVERTISED", "env.example:2222");
    let (mut child, line) = ready(cmd);
    assert!(line.contains("advertised=flag.example:3333"), "{line}");
    spawn::stop(&mut child);

    // KASCADE_CONFIG names the file as well as --config does.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kascade"));
    cmd.arg("serve")
        .env("KASCADE_CONFIG", &file)
        .env("KASCADE_LOG", "info")
        .env_remove("KASCADE_ADVERTISED");
    let (mut child, line) = ready(cmd);
    assert!(line.contains("advertised=file.example:1111"), "{line}");
    spawn::stop(&mut child);
}

#[test]
fn a_bad_config_file_is_refused_with_the_setting_it_names() {
    let dir = tempfile::tempdir().unwrap();
    for (text, why) in [
        ("lisen = \"127.0.0.1:0\"\n", "lisen"),
        ("upcall_workers = \"two\"\n", "upcall_workers"),
        ("listen = \n", "config file"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = serve_with(&file, &[]).output().unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{text}: {err}");
    }
    let missing = serve_with(&dir.path().join("none.toml"), &[])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none.toml"));
}

#[test]
fn the_example_config_file_lists_every_serve_setting_with_its_default() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kascade.toml");
    let text = std::fs::read_to_string(&example).expect("kascade.toml at the repository root");
    // Every line `# key = value` is a setting at its default, and `#key = value`
    // one that is unset by default: uncommented, the defaults parse, and a
    // broker reads them.
    let setting = |l: &str| l.contains(" = ") && l.starts_with(|c: char| c.is_ascii_lowercase());
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| setting(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')))
        .filter(|l| setting(l))
        .filter_map(|l| l.split(" = ").next())
        .collect();
    let help = Command::new(env!("CARGO_BIN_EXE_kascade"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=']).next())
    {
        let key = flag.replace('-', "_");
        if ["help", "config"].contains(&key.as_str()) {
            continue;
        }
        assert!(keys.contains(&key.as_str()), "kascade.toml lacks {key}");
    }
    // Each value shown is the flag's default.
    let mut flag = String::new();
    for line in help.lines().map(str::trim_start) {
        if let Some(f) = line.strip_prefix("--") {
            flag = f.split([' ', '=']).next().unwrap_or("").replace('-', "_");
        } else if let Some(d) = line.strip_prefix("[default: ") {
            let default = d.trim_end_matches(']');
            let shown = uncommented
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{flag} = ")))
                .unwrap_or_else(|| panic!("kascade.toml shows no default for {flag}"));
            assert_eq!(shown.trim_matches('"'), default, "{flag}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defaults.toml");
    std::fs::write(&file, uncommented).unwrap();
    let out = serve_with(
        &file,
        &["--listen", "127.0.0.1:1", "--admin-listen", "256.0.0.1:1"],
    )
    .output()
    .unwrap();
    // It got past reading the file to binding the (deliberately bad) admin address.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin listener on 256.0.0.1:1"), "{err}");
}
