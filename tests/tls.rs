//! Issue 9 item 5, TLS, end to end: the proxy in front of real `influxd`
//! servers serving HTTPS (their own `[http] https-enabled`), with a test PKI
//! made at run time (`support/pki.rs`). Checked as a user sees it: answers
//! through the proxy's own TLS listener, `/health`, the points on each
//! backend read directly, and the proxy's start-up errors. Each scenario
//! runs against the native binary (`native::*`) and the wasm component
//! (`wasm::*`, which sees the test PKI's directory at its own path).

#[macro_use]
mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const DB: &str = "itest";
const PATIENCE: Duration = Duration::from_secs(30);

fn s(path: &Path) -> String {
    path.display().to_string()
}

fn config_path(proxy: &Proxy) -> PathBuf {
    proxy.log_path().parent().expect("the proxy's directory").join("config").join("proxy.json")
}

/// Two https backends behind a proxy whose listener is TLS too: writes and
/// queries go client -https-> proxy -https-> influxd, certificates verified
/// against the test CA of `backend_tls.ca_file`.
fn writes_and_queries_go_through_https_both_ways(mode: Mode) {
    let pki = test_pki();
    let a = Influxd::start_tls("a", &pki.server);
    let b = Influxd::start_tls("b", &pki.server);
    assert!(a.url().starts_with("https://"));
    let mut config = Proxy::config(&[&a, &b]);
    config["backend_tls"] = json!({ "ca_file": s(&pki.ca) });
    config["listen_tls"] = json!({ "cert_file": s(&pki.server.cert), "key_file": s(&pki.server.key) });
    let proxy = Proxy::start(mode, config);
    assert!(proxy.url().starts_with("https://"), "{}", proxy.url());

    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    proxy.write_ok(DB, &lines("cpu", 100, T0));
    for backend in [&a, &b] {
        assert_eq!(backend.count(DB, "cpu"), 100, "influxd {}", backend.name());
    }
    let v = proxy.query_ok("SELECT count(v) FROM cpu", DB);
    assert_eq!(count_of(&v), 100, "{v}");
    let health = proxy.health();
    for name in ["a", "b"] {
        let entry = health_backend(&health, name).expect("a backend entry");
        assert_eq!(is_healthy(entry), Some(true), "{entry}");
    }
    // A plain-HTTP client gets no answer from the TLS listener.
    let plain = raw_http(&proxy.addr(), b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    assert!(plain.is_err(), "{plain:?}");
}

/// Backend b's certificate is signed by a CA the proxy does not trust: b is
/// refused with rustls's reason (in `/health` and the log), a's writes go
/// on, b's are queued; once b's `tls.ca_file` names b's CA (a live reload),
/// the queue is replayed to b and nothing is lost.
fn an_untrusted_backend_is_refused_and_its_writes_queued_until_it_is_trusted(mode: Mode) {
    let pki = test_pki();
    let a = Influxd::start_tls("a", &pki.server);
    let b = Influxd::start_tls("b", &pki.untrusted_server);
    // The test's own client trusts both CAs: the databases exist on both.
    a.query("", &format!("CREATE DATABASE {DB}"));
    b.query("", &format!("CREATE DATABASE {DB}"));
    let mut config = Proxy::config(&[&a, &b]);
    config["backend_tls"] = json!({ "ca_file": s(&pki.ca) });
    let proxy = Proxy::start(mode, config);

    let entry = wait_until(PATIENCE, "b marked down", || {
        let health = proxy.health();
        let entry = health_backend(&health, "b").cloned().ok_or("no entry for b")?;
        if is_healthy(&entry) == Some(false) {
            Ok(entry)
        } else {
            Err(format!("b: {entry}"))
        }
    });
    let error = entry["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("TLS handshake: invalid peer certificate: UnknownIssuer"), "{entry}");

    proxy.write_ok(DB, &lines("cpu", 50, T0));
    assert_eq!(a.count(DB, "cpu"), 50);
    assert_eq!(b.count(DB, "cpu"), 0, "nothing may reach an unverified backend");
    let queued = queue_depth(health_backend(&proxy.health(), "b").expect("b"));
    assert!(queued > 0, "b's write is queued: {}", proxy.health());
    let log = std::fs::read_to_string(proxy.log_path()).unwrap_or_default();
    assert!(log.contains("UnknownIssuer"), "the log names the reason:\n{log}");

    // Trust b's CA for b only, and reload.
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(config_path(&proxy)).expect("read proxy.json"))
            .unwrap();
    config["backends"]["b"]["tls"] = json!({ "ca_file": s(&pki.other_ca) });
    std::fs::write(config_path(&proxy), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let r = proxy.request("POST", "/reload", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("backend b tls settings changed"), "{r:?}");
    wait_until(PATIENCE, "b's queue replayed", || match b.count(DB, "cpu") {
        50 => Ok(()),
        n => Err(format!("{n} of 50 points on b")),
    });
    wait_until(PATIENCE, "b healthy with an empty queue", || {
        let health = proxy.health();
        let entry = health_backend(&health, "b").cloned().ok_or("no entry for b")?;
        match (is_healthy(&entry), queue_depth(&entry)) {
            (Some(true), 0) => Ok(()),
            _ => Err(entry.to_string()),
        }
    });
}

/// Runs the proxy in `mode` on `config` (written to `config/proxy.json` of
/// a new directory, `data` next to it), expecting it to stop at start:
/// the config file's name as the proxy sees it and its stderr. Asserts exit
/// status 1 and one line.
fn start_error(mode: Mode, mut config: Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, data_dir) = (dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    config["listen"] = json!(format!("127.0.0.1:{}", free_port()));
    config["data_dir"] = json!(s(&data_dir));
    let file = config_dir.join("proxy.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let (shown, out) = match mode {
        Mode::Native => (
            s(&file),
            std::process::Command::new(env!("CARGO_BIN_EXE_influx-proxy"))
                .arg("--config")
                .arg(&file)
                .output(),
        ),
        Mode::Wasm => ("/config/proxy.json".to_string(), wasm_command(&config_dir, &data_dir).output()),
    };
    let out = out.expect("run the proxy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    (shown, stderr)
}

/// TLS files the proxy cannot use stop it at start with one line naming
/// the config key and the file (exit status 1).
fn unusable_tls_files_stop_the_start_with_a_line_naming_the_key(mode: Mode) {
    let pki = test_pki();
    // In the test PKI's directory, which the component sees too.
    let dir = pki.ca.parent().expect("the PKI directory").to_path_buf();
    let missing = s(&dir.join("missing-ca.pem"));
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (edit, expected) in [
        (
            // (The OS error number differs: 2 natively, 44 on WASI.)
            json!({"backend_tls": {"ca_file": missing}}),
            format!("$.backend_tls.ca_file: cannot read {missing}: No such file or directory (os error "),
        ),
        (
            json!({"backend_tls": {"ca_file": s(&pki.ca)},
                   "listen_tls": {"cert_file": s(&not_pem), "key_file": s(&pki.server.key)}}),
            format!("$.listen_tls.cert_file: {}: no PEM CERTIFICATE block found", s(&not_pem)),
        ),
    ] {
        let mut config = json!({
            "backends": {"a": {"url": "https://127.0.0.1:1"}},
            "keymaps": {"_default_": ["a"]},
        });
        for (k, v) in edit.as_object().unwrap() {
            config[k] = v.clone();
        }
        let (file, stderr) = start_error(mode, config);
        assert!(stderr.contains(&format!("{file}: {expected}")), "{stderr}");
    }
}

/// The wasm component has no system trust store (WASI gives it no access
/// to the host's): an `https://` backend without a `ca_file` stops its
/// start with one line naming the backend and what to set (README, "TLS").
#[test]
fn the_wasm_component_needs_a_ca_file_for_an_https_backend() {
    let config = json!({
        "backends": {"a": {"url": "https://127.0.0.1:1"}},
        "keymaps": {"_default_": ["a"]},
    });
    let (_, stderr) = start_error(Mode::Wasm, config);
    assert_eq!(
        stderr.trim_end(),
        "influx-proxy: /config/proxy.json: $.backends.a.url: https backend: no ca_file is set, and this \
         build has no system trust store (the wasm build cannot read the host's): set backend_tls.ca_file \
         or the backend's tls.ca_file"
    );
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    writes_and_queries_go_through_https_both_ways,
    an_untrusted_backend_is_refused_and_its_writes_queued_until_it_is_trusted,
    unusable_tls_files_stop_the_start_with_a_line_naming_the_key,
]);
