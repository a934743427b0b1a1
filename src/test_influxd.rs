//! A real InfluxDB 1.x server for the crate's own unit tests (the
//! integration tests in `tests/` have theirs in `tests/support`): started in
//! a temporary directory on free loopback ports, stopped on drop. A machine
//! without `influxd` fails the test with how to install it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running influxd; `port` is its HTTP port on 127.0.0.1.
pub(crate) struct Influxd {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A loopback TCP port free when asked.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts influxd; tries again (new ports) if it exits early, e.g. because
/// another test took a port in between.
pub(crate) fn start() -> Influxd {
    start_with("")
}

/// Like [`start`], with `http` added to its `[http]` section (with
/// `https-enabled = true`, started once its port listens).
pub(crate) fn start_with(http: &str) -> Influxd {
    let mut last_log = String::new();
    for _ in 0..3 {
        match try_start(http) {
            Ok(server) => return server,
            Err(log) => last_log = log,
        }
    }
    panic!("influxd did not start; its log:\n{last_log}");
}

fn try_start(http: &str) -> Result<Influxd, String> {
    let dir = tempfile::tempdir().unwrap();
    let (port, rpc_port) = (free_port(), free_port());
    let d = dir.path().display();
    let config = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
         [meta]\n  dir = \"{d}/meta\"\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n{http}\n\
         [monitor]\n  store-enabled = false\n"
    );
    let config_path = dir.path().join("influxdb.conf");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.path().join("influxd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = match Command::new("influxd")
        .arg("-config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start influxd ({e}): install it with `apt-get install influxdb`"),
    };
    let mut server = Influxd { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Behind TLS a plain /ping cannot be asked: listening is enough (influxd
    // opens its HTTP port last, once it serves).
    let tls = http.contains("https-enabled = true");
    loop {
        if tls {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
        } else if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            // Our influxd answers /ping; anything else holds the port.
            c.set_read_timeout(Some(Duration::from_secs(5))).ok();
            c.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").ok();
            let mut head = [0u8; 12];
            if c.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 204" {
                return Ok(server);
            }
        }
        let exited = server.child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() > deadline {
            return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
