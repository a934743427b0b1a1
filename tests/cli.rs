//! The command line as a user meets it: `--help`, `--version`, `check`, and
//! configuration errors that stop start-up with one line naming the file, the
//! JSON path and the problem.

use std::net::TcpListener;
use std::process::{Command, Output};

fn proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_influx-proxy")).args(args).output().expect("run influx-proxy")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `text` to a config file in a new temp dir; returns (dir, path).
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.json");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

const GOOD: &str = r#"{
  "listen": "127.0.0.1:0",
  "backends": { "a": { "url": "http://127.0.0.1:8086" }, "b": { "url": "http://127.0.0.1:8087" } },
  "keymaps": { "cpu": ["a", "b"], "cpu.load": ["b"], "_default_": ["a", "b"] }
}"#;

#[test]
fn help_and_version() {
    let help = proxy(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--config") && text.contains("check"), "{text}");
    let version = proxy(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("influx-proxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_prints_the_routes() {
    let (_dir, path) = config_file(GOOD);
    let out = proxy(&["check", "-c", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cpu.load -> b"), "{text}");
    assert!(text.contains("cpu -> a, b"), "{text}");
    assert!(text.contains("_default_ -> a, b"), "{text}");
}

#[test]
fn config_errors_are_one_line_with_file_path_and_problem() {
    let cases: &[(&str, &str, &str)] = &[
        ("{ \"backends\": ", "$", "EOF"),
        (r#"{"backends": {}, "keymaps": {"_default_": []}}"#, "$.backends", "backend"),
        (
            r#"{"backends": {"a": {"url": "http://x:1"}}, "keymaps": {"cpu": ["a", "c"]}}"#,
            "$.keymaps.cpu[1]",
            "unknown backend \"c\"",
        ),
        (r#"{"backends": {"a": {"url": "ftp://x"}}, "keymaps": {"cpu": ["a"]}}"#, "$.backends.a.url", "http"),
        (
            r#"{"backends": {"a": {"url": "http://x:1"}}, "keymaps": {"cpu": ["a"]}, "colour": "red"}"#,
            "$",
            "colour",
        ),
    ];
    for (text, json_path, problem) in cases {
        let (_dir, path) = config_file(text);
        for args in [vec!["--config", path.as_str()], vec!["check", "--config", path.as_str()]] {
            let out = proxy(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?} with {text}: {}", stderr(&out));
            let err = stderr(&out);
            assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
            assert!(err.contains(&path), "names the file: {err}");
            assert!(err.contains(json_path), "names {json_path}: {err}");
            assert!(err.contains(problem), "says {problem}: {err}");
        }
    }
}

#[test]
fn missing_config_file_and_port_in_use_are_one_line() {
    let out = proxy(&["--config", "/nonexistent/proxy.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/proxy.json"), "{}", stderr(&out));

    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let text = GOOD.replace(
        "\"listen\": \"127.0.0.1:0\"",
        &format!("\"listen\": \"{addr}\", \"data_dir\": {:?}", data.to_string_lossy()),
    );
    let path = dir.path().join("proxy.json");
    std::fs::write(&path, text).expect("write config");
    let out = proxy(&["--config", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("$.listen") && err.contains("in use"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = proxy(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim_end().lines().count(), 1);
}

/// `influx-proxy create token`: `token: apiv3_<86 characters of URL-safe
/// base64 of 64 bytes>` and `sha512: <its SHA-512, 128 hex digits>`; a new
/// token each run.
#[test]
fn create_token_prints_an_influxdb3_token_and_its_sha512() {
    use base64::Engine as _;
    let run = || {
        let out = proxy(&["create", "token"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let token = lines[0].strip_prefix("token: ").unwrap_or_else(|| panic!("{text}")).to_string();
        let hash = lines[1].strip_prefix("sha512: ").unwrap_or_else(|| panic!("{text}")).to_string();
        (token, hash)
    };
    let (token, hash) = run();
    let random = token.strip_prefix("apiv3_").unwrap_or_else(|| panic!("{token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(random).expect("URL-safe base64");
    assert_eq!(bytes.len(), 64);
    assert_eq!(hash.len(), 128);
    assert!(hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{hash}");
    assert_eq!(hash, influx_proxy::auth::token_hash_hex(&token));
    let (other, _) = run();
    assert_ne!(token, other);
    let out = proxy(&["create"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("influx-proxy create token"), "{}", stderr(&out));
}
