//! A scripted HTTP relay for fault tests: it sits between the proxy and a real
//! `influxd`, in the backend's place, and forwards each request, or answers it
//! the way a failing server would. The behaviour can be switched while the
//! test runs ([`Relay::set`]).
//!
//! Each request is read whole (head and `Content-Length` body; the proxy always
//! sends a length), sent to the upstream server on a fresh connection with
//! `Connection: close`, and the upstream's answer copied back byte for byte until
//! it closes; then the client connection is closed too. That keeps the relay
//! free of HTTP response parsing, at the cost of no keep-alive on this hop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Forward every request and copy the answer back.
    Forward,
    /// Read the request and never answer (the connection stays open).
    Hang,
    /// Every third `POST /write` is forwarded (so the backend stores it) and
    /// then answered `500` anyway: the worst case of an intermittent server
    /// error, since the proxy will deliver it again. Everything else is
    /// forwarded.
    Fail500EveryThirdWrite,
}

impl Behaviour {
    fn code(self) -> u8 {
        match self {
            Behaviour::Forward => 0,
            Behaviour::Hang => 1,
            Behaviour::Fail500EveryThirdWrite => 2,
        }
    }

    fn from_code(code: u8) -> Behaviour {
        match code {
            1 => Behaviour::Hang,
            2 => Behaviour::Fail500EveryThirdWrite,
            _ => Behaviour::Forward,
        }
    }
}

/// A running relay on a loopback port. Stops accepting when dropped.
pub struct Relay {
    port: u16,
    behaviour: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Writes answered 500 after being forwarded.
    injected: Arc<AtomicU64>,
    /// Writes still forwarded before the relay hangs; negative: no limit.
    budget: Arc<AtomicI64>,
    /// Bodies of the `POST /write` requests the upstream answered 2xx, in
    /// the order of its answers ([`Relay::answered_writes`]).
    answered: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Relay {
    /// A relay on a free loopback port in front of `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: &str, behaviour: Behaviour) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        listener.set_nonblocking(true).expect("nonblocking relay listener");
        let relay = Relay {
            port,
            behaviour: Arc::new(AtomicU8::new(behaviour.code())),
            stop: Arc::new(AtomicBool::new(false)),
            injected: Arc::new(AtomicU64::new(0)),
            budget: Arc::new(AtomicI64::new(-1)),
            answered: Arc::default(),
        };
        let (b, stop, injected) = (relay.behaviour.clone(), relay.stop.clone(), relay.injected.clone());
        let (budget, answered) = (relay.budget.clone(), relay.answered.clone());
        let upstream = upstream.to_string();
        let writes = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).ok();
                        let (b, upstream, writes, injected, stop, budget, answered) = (
                            b.clone(),
                            upstream.clone(),
                            writes.clone(),
                            injected.clone(),
                            stop.clone(),
                            budget.clone(),
                            answered.clone(),
                        );
                        std::thread::spawn(move || {
                            let counters =
                                Counters { writes: &writes, injected: &injected, answered: &answered };
                            serve(conn, &upstream, &b, counters, &stop, &budget)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        relay
    }

    /// `http://127.0.0.1:<port>`, the backend URL to give the proxy.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the behaviour for the requests that arrive from now on.
    pub fn set(&self, behaviour: Behaviour) {
        self.behaviour.store(behaviour.code(), Ordering::SeqCst);
    }

    /// Forwards `n` more `POST /write` requests that reach the upstream (one
    /// the upstream does not take does not count), then hangs (as
    /// [`Behaviour::Hang`]) on every request after them.
    pub fn hang_after_writes(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
    }

    /// The bodies of the `POST /write` requests the upstream answered 2xx
    /// so far (so stored: InfluxDB answers a write once it is stored), in
    /// the order of the answers.
    pub fn answered_writes(&self) -> Vec<Vec<u8>> {
        self.answered.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// How many forwarded writes were answered 500 so far.
    pub fn injected_failures(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request: its head (up to the blank line) and its body by
/// `Content-Length`. `None` at the end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// What [`serve`] counts and records, shared by the connections.
struct Counters<'a> {
    writes: &'a AtomicU64,
    injected: &'a AtomicU64,
    answered: &'a Mutex<Vec<Vec<u8>>>,
}

fn serve(
    conn: TcpStream,
    upstream: &str,
    behaviour: &AtomicU8,
    counters: Counters<'_>,
    stop: &AtomicBool,
    budget: &AtomicI64,
) {
    let Counters { writes, injected, answered } = counters;
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut conn = conn;
    let Some((head, body)) = read_request(&mut reader) else { return };
    let mut mode = Behaviour::from_code(behaviour.load(Ordering::SeqCst));
    if exhausted(budget, head.starts_with("POST /write")) {
        mode = Behaviour::Hang;
    }
    match mode {
        Behaviour::Hang => {
            // Hold the connection until the proxy gives up or the test ends.
            conn.set_read_timeout(Some(Duration::from_millis(200))).ok();
            let mut sink = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match reader.read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
        mode => {
            let is_write = head.starts_with("POST /write");
            let fail = mode == Behaviour::Fail500EveryThirdWrite
                && is_write
                && writes.fetch_add(1, Ordering::SeqCst) % 3 == 2;
            let answer = forward(upstream, &head, &body);
            if is_write && answer.as_ref().is_some_and(|a| a.starts_with(b"HTTP/1.1 2")) {
                if let Ok(mut answered) = answered.lock() {
                    answered.push(body.clone());
                }
            }
            if answer.is_none() && is_write && budget.load(Ordering::SeqCst) >= 0 {
                // Not delivered (the upstream is down): it does not use up the budget.
                budget.fetch_add(1, Ordering::SeqCst);
            }
            if fail {
                injected.fetch_add(1, Ordering::SeqCst);
                let body = b"{\"error\":\"injected by the test relay\"}\n";
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(body);
            } else if let Some(answer) = answer {
                let _ = conn.write_all(&answer);
            }
            let _ = conn.flush();
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Whether the write budget ([`Relay::hang_after_writes`]) is used up, taking
/// one from it for a write that may still pass. A negative budget is no limit;
/// a used-up budget stays at 0 (every later request hangs).
fn exhausted(budget: &AtomicI64, is_write: bool) -> bool {
    if budget.load(Ordering::SeqCst) < 0 {
        return false;
    }
    if !is_write {
        return budget.load(Ordering::SeqCst) == 0;
    }
    budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| (b > 0).then(|| b - 1)).is_err()
}

/// Sends the request upstream with `Connection: close` and returns the raw
/// answer, or `None` when the upstream cannot be reached (the client
/// connection is then closed without an answer, as a dead server's would be).
fn forward(upstream: &str, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut out = String::new();
    for line in head.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes()).ok()?;
    up.write_all(body).ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).ok()?;
    Some(answer)
}
