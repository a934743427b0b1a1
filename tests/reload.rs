//! Issue 7, live reload, end to end: the real proxy (native, and the wasm
//! component under wasmtime) in front of real `influxd` servers, its config
//! file edited while it runs and applied with `POST /reload` (both hosts) or
//! SIGHUP (native), checked as a user sees it: the answer of `/reload`,
//! `/health`, `/metrics`, and the points on each backend read directly.

#[macro_use]
mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::*;

const DB: &str = "itest";
/// How long a reload's effect (SIGHUP) or a leaving backend's replay may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// The config file the proxy runs with (written by [`Proxy::start`]).
fn config_path(proxy: &Proxy) -> PathBuf {
    let dir = proxy.log_path().parent().expect("the proxy's directory").to_path_buf();
    dir.join("config").join("proxy.json")
}

fn read_config(proxy: &Proxy) -> Value {
    let text = std::fs::read_to_string(config_path(proxy)).expect("read proxy.json");
    serde_json::from_str(&text).expect("proxy.json is JSON")
}

/// Rewrites the running proxy's config file with `edit` applied (listen and
/// data_dir stay as the proxy started with them).
fn edit_config(proxy: &Proxy, edit: impl FnOnce(&mut Value)) {
    let mut config = read_config(proxy);
    edit(&mut config);
    let text = serde_json::to_string_pretty(&config).expect("serialize proxy.json");
    std::fs::write(config_path(proxy), text).expect("write proxy.json");
}

/// `POST /reload` from loopback.
fn post_reload(proxy: &Proxy) -> Resp {
    proxy.request("POST", "/reload", &[], None)
}

/// SIGHUP to the native proxy.
fn hangup(proxy: &Proxy) {
    let pid = proxy.pid().expect("the proxy runs");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("send SIGHUP");
}

/// `n` points of `measurement` from second `start_s`, `v` = their index.
fn points(measurement: &str, n: usize, start_s: u64) -> String {
    lines(measurement, n, start_s)
}

/// The config with `b` added as a backend and `_default_` on a and b.
fn add_b(config: &mut Value, b: &Influxd) {
    config["backends"]["b"] = json!({ "url": b.url() });
    config["keymaps"] = json!({ "_default_": ["a", "b"] });
}

/// How the reload is triggered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trigger {
    Post,
    Hangup,
}

/// Backend a only; b added to the file, then the reload: answer 200 (POST) or
/// the generation in `/health` (SIGHUP), writes now reach b, `/health` and
/// `/metrics` show generation 2.
fn added_backend_gets_writes_after_reload(mode: Mode, trigger: Trigger) {
    let a = Influxd::start("a");
    let b = Influxd::start("b");
    let proxy = Proxy::start(mode, Proxy::config(&[&a]));
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    proxy.write_ok(DB, &points("cpu", 10, 1_600_000_000));
    assert_eq!(proxy.health()["config_generation"], 1);

    edit_config(&proxy, |c| add_b(c, &b));
    match trigger {
        Trigger::Post => {
            let r = post_reload(&proxy);
            assert_eq!(r.status, 200, "POST /reload: {r:?}");
            let v = r.json();
            assert_eq!(v["generation"], 2, "{v}");
            let changes: Vec<&str> =
                v["changes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(changes.contains(&format!("backend b added ({})", b.url()).as_str()), "{v}");
        }
        Trigger::Hangup => {
            hangup(&proxy);
            wait_until(PATIENCE, "generation 2 after SIGHUP", || {
                let h = proxy.health();
                if h["config_generation"] == 2 {
                    Ok(())
                } else {
                    Err(format!("{h}"))
                }
            });
            let log = std::fs::read_to_string(proxy.log_path()).unwrap_or_default();
            assert!(log.contains("configuration reloaded (generation 2): backend b added"), "{log}");
        }
    }
    let h = proxy.health();
    assert_eq!(h["config_generation"], 2, "{h}");
    assert_eq!(h["last_reload"]["result"], "applied", "{h}");
    assert_eq!(h["backends"][1]["name"], "b", "{h}");
    assert_eq!(h["backends"][1]["state"], "active", "{h}");
    // A new backend has no databases: CREATE DATABASE again (idempotent) reaches it.
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    assert!(b.databases().contains(&DB.to_string()));
    proxy.write_ok(DB, &points("cpu", 5, 1_600_001_000));
    assert_eq!(a.count(DB, "cpu"), 15);
    assert_eq!(b.count(DB, "cpu"), 5, "only what was written after the reload (no backfill)");
    let metrics = proxy.get("/metrics").body;
    assert!(metrics.contains("influx_proxy_config_reloads_total{result=\"applied\"} 1"), "{metrics}");
    assert!(metrics.contains("influx_proxy_config_generation 2"), "{metrics}");
    assert!(metrics.contains("influx_proxy_write_queue_records{backend=\"b\"} 0"), "{metrics}");
}

fn post_reload_adds_a_backend(mode: Mode) {
    added_backend_gets_writes_after_reload(mode, Trigger::Post)
}

fn sighup_adds_a_backend(mode: Mode) {
    assert_eq!(mode, Mode::Native, "WASI has no signals");
    added_backend_gets_writes_after_reload(mode, Trigger::Hangup)
}

/// A config file that does not validate: 400 with the one-line error, the
/// old configuration keeps serving.
fn broken_config_is_refused_and_writes_still_work(mode: Mode) {
    let a = Influxd::start("a");
    let proxy = Proxy::start(mode, Proxy::config(&[&a]));
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let path = config_path(&proxy);
    let good = std::fs::read_to_string(&path).unwrap();
    let mut text = good.clone();
    // A trailing comma after the last key.
    let end = text.rfind('}').unwrap();
    text.insert(end, ',');
    std::fs::write(&path, text).unwrap();

    let r = post_reload(&proxy);
    assert_eq!(r.status, 400, "{r:?}");
    let e = r.error();
    let file = match mode {
        Mode::Native => path.display().to_string(),
        Mode::Wasm => "/config/proxy.json".to_string(),
    };
    assert!(e.starts_with(&format!("{file}: $: trailing comma at line ")), "{e}");
    assert!(!e.contains('\n'));
    let h = proxy.health();
    assert_eq!(h["config_generation"], 1, "{h}");
    assert_eq!(h["last_reload"]["result"], "refused", "{h}");
    assert_eq!(h["last_reload"]["error"], e.as_str(), "{h}");
    proxy.write_ok(DB, &points("cpu", 3, 1_600_000_000));
    assert_eq!(a.count(DB, "cpu"), 3);

    // A key that cannot change live names the key; still nothing changes.
    std::fs::write(&path, good).unwrap();
    edit_config(&proxy, |c| c["listen"] = json!("127.0.0.1:1"));
    let r = post_reload(&proxy);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().starts_with(&format!("{file}: $.listen: cannot change while the proxy runs")), "{r:?}");
    let metrics = proxy.get("/metrics").body;
    assert!(metrics.contains("influx_proxy_config_reloads_total{result=\"refused\"} 2"), "{metrics}");
    let log = std::fs::read_to_string(proxy.log_path()).unwrap_or_default();
    assert_eq!(
        log.matches("configuration reload refused, the old configuration keeps serving").count(),
        2,
        "{log}"
    );
    proxy.write_ok(DB, &points("cpu", 3, 1_600_000_100));
    assert_eq!(a.count(DB, "cpu"), 6);
}

/// Backends `a` and `b` behind a proxy, database `DB` created, `b` stopped
/// and 20 `cpu` points written: acknowledged, held in b's queue.
fn b_down_with_20_points_queued(mode: Mode) -> (Influxd, Influxd, Proxy) {
    let a = Influxd::start("a");
    let mut b = Influxd::start("b");
    let proxy = Proxy::start(mode, Proxy::config(&[&a, &b]));
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    b.stop();
    proxy.write_ok(DB, &points("cpu", 20, 1_600_000_000));
    wait_until(PATIENCE, "b's queue holds the write", || {
        let h = proxy.health();
        if h["backends"][1]["queue_records"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(format!("{h}"))
        }
    });
    (a, b, proxy)
}

/// A backend removed while its write queue holds acknowledged points: it gets
/// nothing new, is shown leaving, delivers its queue once back up, then leaves.
fn removed_backend_delivers_its_queue_then_leaves(mode: Mode) {
    let (a, mut b, proxy) = b_down_with_20_points_queued(mode);

    edit_config(&proxy, |c| {
        c["backends"].as_object_mut().unwrap().remove("b");
        c["keymaps"] = json!({ "_default_": ["a"] });
    });
    let r = post_reload(&proxy);
    assert_eq!(r.status, 200, "{r:?}");
    let h = proxy.health();
    assert_eq!(h["backends"][1]["state"], "leaving", "{h}");
    assert_eq!(h["status"], "pass", "a leaving backend that is down does not degrade the proxy: {h}");
    proxy.write_ok(DB, &points("cpu", 5, 1_600_001_000));

    b.restart();
    wait_until(PATIENCE, "b has left", || {
        let h = proxy.health();
        match h["backends"].as_array() {
            Some(list) if list.len() == 1 => Ok(()),
            _ => Err(format!("{h}")),
        }
    });
    assert_eq!(b.count(DB, "cpu"), 20, "b got what it had acknowledged in its queue, nothing after");
    assert_eq!(a.count(DB, "cpu"), 25);
    let log = std::fs::read_to_string(proxy.log_path()).unwrap_or_default();
    assert!(log.contains("backend b left: its write queue is delivered"), "{log}");
}

/// A restart while a removed backend is still leaving (down, its queue
/// holding acknowledged points) keeps it leaving: once it is back up it gets
/// its queue, then leaves.
fn a_restart_keeps_a_removed_backend_leaving(mode: Mode) {
    let (_a, mut b, mut proxy) = b_down_with_20_points_queued(mode);
    edit_config(&proxy, |c| {
        c["backends"].as_object_mut().unwrap().remove("b");
        c["keymaps"] = json!({ "_default_": ["a"] });
    });
    assert_eq!(post_reload(&proxy).status, 200);

    proxy.kill();
    proxy.restart();
    let h = proxy.health();
    assert_eq!(h["backends"][1]["name"], "b", "{h}");
    assert_eq!(h["backends"][1]["state"], "leaving", "{h}");
    b.restart();
    wait_until(PATIENCE, "b has left", || {
        let h = proxy.health();
        match h["backends"].as_array() {
            Some(list) if list.len() == 1 => Ok(()),
            _ => Err(format!("{h}")),
        }
    });
    assert_eq!(b.count(DB, "cpu"), 20, "b got the points acknowledged before the restart");
}

/// The first non-loopback IPv4 address of this machine, if it has one (the
/// address a UDP socket "connected" towards a public address would use; no
/// packet is sent).
fn local_non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    for target in ["192.0.2.1:9", "10.255.255.1:9", "8.8.8.8:53"] {
        if socket.connect(target).is_ok() {
            if let Ok(local) = socket.local_addr() {
                if !local.ip().is_loopback() && !local.ip().is_unspecified() {
                    return Some(local.ip());
                }
            }
        }
    }
    None
}

/// Bound to 0.0.0.0, the proxy answers `/reload` with 403 to a client on a
/// non-loopback address and 200 to one on loopback.
fn reload_from_a_non_loopback_peer_is_403(mode: Mode) {
    let Some(ip) = local_non_loopback_ip() else {
        panic!(
            "this test needs a non-loopback IPv4 address on this machine to connect from; \
             add one (as root) with `ip addr add 192.0.2.2/24 dev lo` (a /24: its route to \
             192.0.2.1 then takes 192.0.2.2 as the source; a /32 has no route) and run it again"
        );
    };
    let a = Influxd::start("a");
    let mut proxy = Proxy::start(mode, Proxy::config(&[&a]));
    proxy.kill();
    let port = proxy.addr().rsplit(':').next().unwrap().to_string();
    edit_config(&proxy, |c| c["listen"] = json!(format!("0.0.0.0:{port}")));
    proxy.restart();
    let remote = http("POST", &format!("http://{ip}:{port}/reload"), &[], None);
    assert_eq!(remote.status, 403, "{remote:?}");
    assert_eq!(remote.error(), "/reload is answered only to clients on a loopback address");
    let local = post_reload(&proxy);
    assert_eq!(local.status, 200, "{local:?}");
    assert_eq!(local.json()["changes"], json!([]), "the file did not change since the start");
}

/// A SIGHUP that arrives while the proxy is still starting (opening its write
/// queues, which takes a while with a large backlog to recover) must not kill
/// it: the reload is applied once the proxy serves. The slow start is made
/// deterministic with a FIFO as backend a's queue `ack` file: the proxy's read
/// of it blocks until this test opens and closes the FIFO's write end.
fn sighup_while_the_queues_open_is_applied_once_serving(mode: Mode) {
    use std::process::{Command, Stdio};
    assert_eq!(mode, Mode::Native, "WASI has no signals");
    let a = Influxd::start("a");
    let dir = tempfile::Builder::new().prefix("itest-proxy-").tempdir().expect("a temporary directory");
    let port = free_port();
    let mut config = Proxy::config(&[&a]);
    config["listen"] = json!(format!("127.0.0.1:{port}"));
    config["data_dir"] = json!(dir.path().join("data").display().to_string());
    let config_file = dir.path().join("proxy.json");
    std::fs::write(&config_file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let queue = dir.path().join("data").join("queue").join("a");
    std::fs::create_dir_all(&queue).unwrap();
    let ack = queue.join("ack");
    let made = Command::new("mkfifo").arg(&ack).status().expect("run mkfifo (GNU coreutils)");
    assert!(made.success(), "mkfifo {}", ack.display());

    let log_path = dir.path().join("proxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_influx-proxy"))
        .arg("--config")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn the proxy");
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(child);

    // Opening the write end returns once the proxy has opened the read end:
    // it is inside the opening of its write queues, its read blocked.
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo = ack.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::OpenOptions::new().write(true).open(fifo));
    });
    let writer = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the proxy never read {}; log:\n{}", ack.display(), log_tail(&log_path)))
        .expect("open the FIFO's write end");
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).expect("a valid pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("send SIGHUP");
    // From now on the path is an empty regular file (an ack file the queue
    // resets); closing the write end ends the proxy's read of the FIFO.
    let regular = queue.join("ack.regular");
    std::fs::write(&regular, b"").unwrap();
    std::fs::rename(&regular, &ack).unwrap();
    drop(writer);

    let url = format!("http://127.0.0.1:{port}");
    let health = wait_until(PATIENCE, "the proxy serves and has applied the SIGHUP", || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("a SIGHUP during start-up killed the proxy ({status}); log:\n{}", log_tail(&log_path));
        }
        let h = try_http("GET", &format!("{url}/health"), &[], None)?.json();
        if h["last_reload"].is_null() {
            Err(format!("{h}"))
        } else {
            Ok(h)
        }
    });
    assert_eq!(health["last_reload"]["result"], "applied", "{health}");
    assert_eq!(health["config_generation"], 1, "the file did not change: {health}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("configuration reloaded: no change (generation 1)"), "{log}");
}

scenarios!(native: Mode::Native; [
    post_reload_adds_a_backend,
    sighup_adds_a_backend,
    broken_config_is_refused_and_writes_still_work,
    removed_backend_delivers_its_queue_then_leaves,
    reload_from_a_non_loopback_peer_is_403,
    sighup_while_the_queues_open_is_applied_once_serving,
    a_restart_keeps_a_removed_backend_leaving,
]);
scenarios!(wasm: Mode::Wasm; [
    post_reload_adds_a_backend,
    broken_config_is_refused_and_writes_still_work,
    removed_backend_delivers_its_queue_then_leaves,
    reload_from_a_non_loopback_peer_is_403,
    a_restart_keeps_a_removed_backend_leaving,
]);
