//! Token auth at the proxy (issue 9, item 4) against two real influxd: a
//! token made by `influx-proxy create token`, its hash in the config; a
//! scoped token writes and reads; a wrong token gets influxd's 401; an
//! out-of-scope write gets influxd's 403 and leaves no data on either
//! backend; failed attempts are counted in `/metrics`. Backends' own
//! credentials (password file, environment variable) on both hosts.

#[macro_use]
mod support;

use serde_json::json;
use std::process::Command;
use support::*;

const DB: &str = "itest";
const OTHER: &str = "other";

/// A new token and its hash from the CLI (`token: ...`, `sha512: ...`).
fn create_token() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_influx-proxy"))
        .args(["create", "token"])
        .output()
        .expect("run influx-proxy create token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {text}"))
            .to_string()
    };
    (field("token: "), field("sha512: "))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn tokens_at_the_proxy_against_real_influxd() {
    let (writer, writer_hash) = create_token();
    let (admin, admin_hash) = create_token();
    let cluster = Cluster::start_with(Mode::Native, |config| {
        config["auth"] = json!({
            "tokens": [
                { "name": "telegraf", "sha512": writer_hash, "databases": [DB], "permissions": ["read", "write"] },
                { "name": "ops", "sha512": admin_hash, "databases": ["*"], "permissions": ["admin"] },
            ]
        });
    });
    let proxy = &cluster.proxy;
    let post_query = |q: &str, db: &str, auth: &str| {
        let mut params = vec![("q", q)];
        if !db.is_empty() {
            params.push(("db", db));
        }
        proxy.request(
            "POST",
            "/query",
            &[("content-type", "application/x-www-form-urlencoded"), ("authorization", auth)],
            Some(form(&params).into_bytes()),
        )
    };
    // The admin token creates both databases on both backends.
    for db in [DB, OTHER] {
        let r = post_query(&format!("CREATE DATABASE {db}"), "", &bearer(&admin));
        assert_eq!(r.status, 200, "{r:?}");
    }
    for backend in cluster.backends() {
        let dbs = backend.databases();
        assert!(dbs.contains(&DB.to_string()) && dbs.contains(&OTHER.to_string()), "{dbs:?}");
    }

    // The scoped token writes (Bearer) ...
    let write = |db: &str, auth: &str, body: &str| {
        proxy.request(
            "POST",
            &format!("/write?{}", form(&[("db", db), ("precision", "s")])),
            &[("authorization", auth)],
            Some(body.as_bytes().to_vec()),
        )
    };
    let r = write(DB, &bearer(&writer), "cpu,host=a v=1 1700000000\ncpu,host=b v=2 1700000001\n");
    assert_eq!(r.status, 204, "{r:?}");
    // ... with p= too, and as Basic's password.
    let r = proxy.write_to(
        &format!("/write?{}", form(&[("db", DB), ("precision", "s"), ("p", &writer)])),
        "cpu,host=c v=3 1700000002\n",
        false,
    );
    assert_eq!(r.status, 204, "{r:?}");
    for backend in cluster.backends() {
        assert_eq!(backend.count(DB, "cpu"), 3, "influxd {}", backend.name());
    }
    // ... and reads (Token scheme, and Basic with any user name).
    let r = post_query("SELECT count(v) FROM cpu", DB, &format!("Token {writer}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(count_of(&r.json()), 3, "{r:?}");
    use base64::Engine as _;
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("anyone:{writer}")));
    let r = post_query("SELECT count(v) FROM cpu", DB, &basic);
    assert_eq!((r.status, count_of(&r.json())), (200, 3), "{r:?}");

    // A wrong token and none: influxd's 401s, with its challenge header.
    let r = write(DB, &bearer("apiv3_not-a-token"), "cpu,host=x v=9 1700000009\n");
    assert_eq!((r.status, r.error().as_str()), (401, "authorization failed"), "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"InfluxDB\""));
    let r = proxy.write_to(&format!("/write?{}", form(&[("db", DB)])), "cpu,host=x v=9 1700000009\n", false);
    assert_eq!((r.status, r.error().as_str()), (401, "unable to parse authentication credentials"));
    let r = proxy.query_get("SELECT * FROM cpu", DB);
    assert_eq!(r.0, 401);

    // Out of scope: influxd's 403, and nothing reaches the backends.
    let r = write(OTHER, &bearer(&writer), "secret v=1 1700000000\n");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error(), "\"telegraf\" user is not authorized to write to database \"other\"");
    let r = post_query("DROP DATABASE itest", "", &bearer(&writer));
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.error(),
        "error authorizing query: telegraf not authorized to execute statement 'DROP DATABASE itest', requires \
         admin privilege"
    );
    for backend in cluster.backends() {
        assert_eq!(backend.measurements(OTHER), Vec::<String>::new(), "influxd {}", backend.name());
        assert_eq!(backend.count(DB, "cpu"), 3, "influxd {}: the wrong token wrote nothing", backend.name());
        assert!(backend.databases().contains(&DB.to_string()));
    }

    // /ping and /health stay open; /metrics needs a token and counts the
    // refusals: 3 unauthorized, 2 forbidden.
    assert_eq!(proxy.get("/ping").status, 204);
    assert_eq!(proxy.get("/health").status, 200);
    assert_eq!(proxy.get("/metrics").status, 401);
    let metrics = proxy.request("GET", "/metrics", &[("authorization", &bearer(&admin))], None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("influx_proxy_auth_failures_total{reason=\"unauthorized\"} 4\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("influx_proxy_auth_failures_total{reason=\"forbidden\"} 2\n"),
        "{}",
        metrics.body
    );
}

/// `SELECT count(v) FROM m` on `backend` directly, as user `admin`.
fn count_as_admin(backend: &Influxd, db: &str, measurement: &str) -> u64 {
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:admin-pw"));
    let r = http(
        "POST",
        &format!("{}/query", backend.url()),
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &basic)],
        Some(form(&[("q", &format!("SELECT count(v) FROM {measurement}")), ("db", db)]).into_bytes()),
    );
    assert_eq!(r.status, 200, "influxd {}: {r:?}", backend.name());
    count_of(&r.json())
}

/// Backends with `auth-enabled`: the proxy sends each its own credentials
/// (a's password from a file, b's from an environment variable), never
/// the client's token; a write queued while b is down is replayed with b's
/// credentials once it is back.
#[test]
fn backends_with_auth_get_the_proxy_s_credentials_direct_and_replayed() {
    backend_credentials(Mode::Native);
}

/// The WASI host reads the same secrets: the variable passed by wasmtime
/// (`--env`, see `support::wasm_command`), the file from the preopened
/// config directory.
#[test]
fn the_wasm_component_gives_backends_their_credentials_too() {
    backend_credentials(Mode::Wasm);
}

fn backend_credentials(mode: Mode) {
    let mut servers = Influxd::start_many(&["a", "b"]);
    for server in &mut servers {
        server.query_ok("", "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES");
        server.enable_auth();
        // Now it refuses requests without credentials.
        let r = http(
            "POST",
            &format!("{}/query", server.url()),
            &[],
            Some(form(&[("q", "SHOW DATABASES")]).into_bytes()),
        );
        assert_eq!(r.status, 401, "{r:?}");
    }
    let (token, hash) = create_token();
    // Only these tests read this variable; the proxy inherits it.
    std::env::set_var("INFLUX_PROXY_TEST_B_PASSWORD", "admin-pw");
    let mut config = Proxy::config(&[&servers[0], &servers[1]]);
    config["auth"] = json!({
        "tokens": [{ "name": "ops", "sha512": hash, "databases": ["*"], "permissions": ["admin"] }]
    });
    // The password file: natively anywhere; for the component in the
    // proxy's config directory (preopened as /config), written before it
    // starts.
    let secrets = tempfile::tempdir().expect("temp dir");
    let host_file = secrets.path().join("a-password");
    std::fs::write(&host_file, "admin-pw\n").expect("write the password file");
    config["backends"]["a"]["username"] = json!("admin");
    config["backends"]["a"]["password_file"] = json!(match mode {
        Mode::Native => host_file.display().to_string(),
        Mode::Wasm => "/config/a-password".to_string(),
    });
    config["backends"]["b"]["username"] = json!("admin");
    config["backends"]["b"]["password_env"] = json!("INFLUX_PROXY_TEST_B_PASSWORD");
    let proxy = Proxy::start_prepared(mode, config, |data| {
        let file = data.parent().expect("the proxy's directory").join("config").join("a-password");
        std::fs::copy(&host_file, file).expect("copy the password file");
    });
    let auth = bearer(&token);
    let r = proxy.request(
        "POST",
        "/query",
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &auth)],
        Some(form(&[("q", "CREATE DATABASE itest")]).into_bytes()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(query_error(&r.json()).is_none(), "{r:?}");
    let write = |body: &str| {
        proxy.request(
            "POST",
            &format!("/write?{}", form(&[("db", DB), ("precision", "s")])),
            &[("authorization", &auth)],
            Some(body.as_bytes().to_vec()),
        )
    };
    let r = write("cpu,host=a v=1 1700000000\n");
    assert_eq!(r.status, 204, "{r:?}");
    // On both (at once, or replayed soon if a slow answer on a busy machine
    // had the write queued: either way with the backend's credentials).
    for server in &servers {
        wait_until(std::time::Duration::from_secs(30), "the point on each backend", || match count_as_admin(
            server, DB, "cpu",
        ) {
            1 => Ok(()),
            n => Err(format!("{n} points on {}", server.name())),
        });
    }
    let r = proxy.request(
        "GET",
        &format!("/query?{}", form(&[("q", "SELECT count(v) FROM cpu"), ("db", DB)])),
        &[("authorization", &auth)],
        None,
    );
    assert_eq!((r.status, count_of(&r.json())), (200, 1), "{r:?}");

    // b down: the write is queued (204), then replayed with b's credentials.
    servers[1].stop();
    let r = write("cpu,host=b v=2 1700000001\n");
    assert_eq!(r.status, 204, "{r:?}");
    servers[1].restart();
    let b = &servers[1];
    wait_until(std::time::Duration::from_secs(30), "b catches up", || match count_as_admin(b, DB, "cpu") {
        2 => Ok(()),
        n => Err(format!("{n} points on b")),
    });
    assert_eq!(count_as_admin(&servers[0], DB, "cpu"), 2);
}
