//! Issue 9 item 5, TLS, end to end: the native proxy in front of real
//! `influxd` servers serving HTTPS (their own `[http] https-enabled`), with
//! a test PKI made at run time (`support/pki.rs`). Checked as a user sees
//! it: answers through the proxy's own TLS listener, `/health`, the points
//! on each backend read directly, and the proxy's start-up errors.
//!
//! Native only: the wasm host has no TLS (README, "TLS"); its refusal is
//! checked in `wasm/`.

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
#[test]
fn writes_and_queries_go_through_https_both_ways() {
    let pki = test_pki();
    let a = Influxd::start_tls("a", &pki.server);
    let b = Influxd::start_tls("b", &pki.server);
    assert!(a.url().starts_with("https://"));
    let mut config = Proxy::config(&[&a, &b]);
    config["backend_tls"] = json!({ "ca_file": s(&pki.ca) });
    config["listen_tls"] = json!({ "cert_file": s(&pki.server.cert), "key_file": s(&pki.server.key) });
    let proxy = Proxy::start(Mode::Native, config);
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
#[test]
fn an_untrusted_backend_is_refused_and_its_writes_queued_until_it_is_trusted() {
    let pki = test_pki();
    let a = Influxd::start_tls("a", &pki.server);
    let b = Influxd::start_tls("b", &pki.untrusted_server);
    // The test's own client trusts both CAs: the databases exist on both.
    a.query("", &format!("CREATE DATABASE {DB}"));
    b.query("", &format!("CREATE DATABASE {DB}"));
    let mut config = Proxy::config(&[&a, &b]);
    config["backend_tls"] = json!({ "ca_file": s(&pki.ca) });
    let proxy = Proxy::start(Mode::Native, config);

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

/// TLS files the proxy cannot use stop it at start with one line naming
/// the config key and the file (exit status 1).
#[test]
fn unusable_tls_files_stop_the_start_with_a_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = s(&dir.path().join("missing-ca.pem"));
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let pki = test_pki();
    for (edit, expected) in [
        (
            json!({"backend_tls": {"ca_file": missing}}),
            format!("$.backend_tls.ca_file: cannot read {missing}: No such file or directory (os error 2)"),
        ),
        (
            json!({"listen_tls": {"cert_file": s(&not_pem), "key_file": s(&pki.server.key)}}),
            format!("$.listen_tls.cert_file: {}: no PEM CERTIFICATE block found", s(&not_pem)),
        ),
    ] {
        let mut config = json!({
            "listen": format!("127.0.0.1:{}", free_port()),
            "data_dir": s(&dir.path().join("data")),
            "backends": {"a": {"url": "https://127.0.0.1:1"}},
            "keymaps": {"_default_": ["a"]},
        });
        for (k, v) in edit.as_object().unwrap() {
            config[k] = v.clone();
        }
        let file = dir.path().join("proxy.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_influx-proxy"))
            .arg("--config")
            .arg(&file)
            .output()
            .expect("run influx-proxy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.trim_end().ends_with(&format!("{}: {expected}", s(&file))), "{stderr}");
    }
}

/// The wasm component has no TLS: an `https://` backend or `listen_tls`
/// stops its start with one line naming the key and why (README, "TLS"),
/// instead of talking plain HTTP to a backend configured as `https://`.
#[test]
fn the_wasm_component_refuses_tls_settings_at_start() {
    let pki = test_pki();
    for (edit, expected) in [
        (
            json!({"backends": {"a": {"url": "https://127.0.0.1:1"}}}),
            "/config/proxy.json: $.backends.a.url: https:// backends: TLS is not available in the wasm build",
        ),
        (
            json!({"listen_tls": {"cert_file": s(&pki.server.cert), "key_file": s(&pki.server.key)}}),
            "/config/proxy.json: $.listen_tls: TLS is not available in the wasm build",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (config_dir, data_dir) = (dir.path().join("config"), dir.path().join("data"));
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut config = json!({
            "listen": format!("127.0.0.1:{}", free_port()),
            "backends": {"a": {"url": "http://127.0.0.1:1"}},
            "keymaps": {"_default_": ["a"]},
        });
        for (k, v) in edit.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(config_dir.join("proxy.json"), config.to_string()).unwrap();
        let out = wasm_command(&config_dir, &data_dir).output().expect("run wasmtime");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with(&format!("influx-proxy: {expected}")), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}
