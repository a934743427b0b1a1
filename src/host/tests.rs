//! The shared loops and their supervisor, driven by a test [`Host`] with a
//! virtual clock, against a mock transport that can panic.

use super::*;
use crate::config::Config;
use crate::http::{Method, Request, Response};
use crate::storage::MemStorage;
use crate::transport::{BackendAddr, TransportError};
use futures_lite::future::block_on;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// What the mock backend does with the next request.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// 204, as when nothing is planned.
    Answer,
    Refuse,
    Panic,
}

#[derive(Default)]
struct MockState {
    /// Planned outcomes, in order; once empty every request gets 204.
    plan: VecDeque<Next>,
    /// Requests answered 204: (path, body).
    answered: Vec<(String, String)>,
    /// Every request whose body contains this panics (a record that makes
    /// each delivery attempt panic).
    panic_on: Option<String>,
}

#[derive(Clone, Default)]
struct Mock(Rc<RefCell<MockState>>);

impl Mock {
    fn plan(&self, next: &[Next]) {
        self.0.borrow_mut().plan.extend(next.iter().copied());
    }
    fn answered(&self, path: &str) -> Vec<String> {
        self.0.borrow().answered.iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }
}

impl Transport for Mock {
    async fn send(&self, _: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        // The borrow is held across the panic: unwinding must release it.
        let mut state = self.0.borrow_mut();
        let body = String::from_utf8_lossy(&request.body).into_owned();
        if state.panic_on.as_ref().is_some_and(|p| body.contains(p.as_str())) {
            panic!("mock transport panics on this record");
        }
        match state.plan.pop_front() {
            Some(Next::Refuse) => Err(TransportError::Connect("connection refused".into())),
            Some(Next::Panic) => panic!("mock transport panics on send"),
            Some(Next::Answer) | None => {
                state.answered.push((request.path.clone(), body));
                Ok(Response::empty(204))
            }
        }
    }
}

/// A host with a virtual clock: sleeping advances both clocks at once.
struct TestHost {
    now_ms: Cell<u64>,
    sleeps: RefCell<Vec<u64>>,
    stop_when: Box<dyn Fn() -> bool>,
}

impl TestHost {
    fn new(stop_when: impl Fn() -> bool + 'static) -> TestHost {
        TestHost {
            now_ms: Cell::new(2_000_000),
            sleeps: RefCell::new(Vec::new()),
            stop_when: Box::new(stop_when),
        }
    }
}

impl Host for TestHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
    fn monotonic_us(&self) -> u64 {
        self.now_ms.get() * 1000
    }
    async fn sleep(&self, ms: u64) {
        self.sleeps.borrow_mut().push(ms);
        self.now_ms.set(self.now_ms.get() + ms);
        futures_lite::future::yield_now().await;
    }
    fn stopping(&self) -> bool {
        // Bounded: a loop that never gets there fails the test instead of hanging.
        (self.stop_when)() || self.sleeps.borrow().len() > 10_000
    }
}

fn proxy(mock: &Mock) -> Proxy<Mock, MemStorage> {
    let text = r#"{ "backends": { "b": { "url": "http://127.0.0.1:8087" } },
                    "keymaps": { "_default_": ["b"] }, "health_check_interval_ms": 1000 }"#;
    let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
    block_on(Proxy::open(config, mock.clone(), MemStorage::default())).unwrap_or_else(|e| panic!("{e}"))
}

fn get(proxy: &Proxy<Mock, MemStorage>, path: &str) -> String {
    let response = block_on(proxy.handle(Request::new(Method::Get, path), 3_000_000));
    String::from_utf8_lossy(&response.body).into_owned()
}

fn health_of_b(proxy: &Proxy<Mock, MemStorage>) -> serde_json::Value {
    let health: serde_json::Value = serde_json::from_str(&get(proxy, "/health")).unwrap_or_default();
    health["backends"][0].clone()
}

fn write(proxy: &Proxy<Mock, MemStorage>, body: &str) -> u16 {
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "telegraf".into())];
    request.body = body.as_bytes().to_vec();
    block_on(proxy.handle(request, 1_000_000)).status
}

#[test]
fn replay_resumes_after_a_panicking_send_and_delivers_the_queued_record() {
    let mock = Mock::default();
    let proxy = proxy(&mock);
    // b refuses the direct write: it goes to b's write queue.
    mock.plan(&[Next::Refuse]);
    assert_eq!(write(&proxy, "cpu value=1 1700000000000000000\n"), 204);
    assert_eq!(proxy.queue_depth(0).records, 1);

    // The first replay attempt panics inside the transport.
    mock.plan(&[Next::Panic]);
    let delivered = {
        let mock = mock.clone();
        move || !mock.answered("/write").is_empty()
    };
    let host = TestHost::new(delivered);
    block_on(run_replay(&host, &proxy, 0));

    assert_eq!(mock.answered("/write"), vec!["cpu value=1 1700000000000000000\n".to_string()]);
    assert_eq!(proxy.queue_depth(0).records, 0, "the queued record was acknowledged");
    assert_eq!(proxy.loop_restarts(0), 1);
    // The supervisor waited its backoff before the restart.
    assert!(host.sleeps.borrow().contains(&RESTART_BACKOFF_MIN_MS), "{:?}", host.sleeps.borrow());
    let b = health_of_b(&proxy);
    assert_eq!(b["loop_restarts"], 1, "{b}");
    assert_eq!(b["last_error"], "replay loop restarted after panic: mock transport panics on send", "{b}");
    let metrics = get(&proxy, "/metrics");
    assert!(
        metrics.contains("influx_proxy_loop_restarts_total{loop=\"replay\",backend=\"b\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("influx_proxy_loop_restarts_total{loop=\"health_check\",backend=\"b\"} 0"),
        "{metrics}"
    );
}

#[test]
fn health_checks_resume_after_a_panicking_ping() {
    let mock = Mock::default();
    let proxy = proxy(&mock);
    mock.plan(&[Next::Panic]);
    let pinged_twice = {
        let mock = mock.clone();
        move || mock.answered("/ping").len() >= 2
    };
    let host = TestHost::new(pinged_twice);
    block_on(run_health_checks(&host, &proxy, 0));
    assert_eq!(mock.answered("/ping").len(), 2);
    assert_eq!(proxy.loop_restarts(0), 1);
    assert!(proxy.is_healthy(0), "a restart does not count against the backend");
    // Restart backoff, then the configured interval between checks.
    assert_eq!(*host.sleeps.borrow(), vec![RESTART_BACKOFF_MIN_MS, 1000, 1000]);
    let b = health_of_b(&proxy);
    assert_eq!(
        b["last_error"], "health-check loop restarted after panic: mock transport panics on send",
        "{b}"
    );
}

#[test]
fn a_loop_that_ends_early_is_restarted_with_a_growing_backoff() {
    let mock = Mock::default();
    let proxy = proxy(&mock);
    let runs = Rc::new(Cell::new(0u32));
    let host = TestHost::new({
        let runs = runs.clone();
        move || runs.get() >= 4
    });
    let start = || {
        let runs = runs.clone();
        async move { runs.set(runs.get() + 1) }
    };
    block_on(supervise(&host, &proxy, LoopKind::Replay, 0, start));
    assert_eq!(runs.get(), 4);
    // Three early ends; the fourth run ended because the host stops.
    assert_eq!(proxy.loop_restarts(0), 3);
    assert_eq!(*host.sleeps.borrow(), vec![500, 1000, 2000]);
    assert_eq!(health_of_b(&proxy)["last_error"], "replay loop restarted after it ended");
}

#[test]
fn the_restart_backoff_starts_over_after_a_loop_ran_long() {
    let mock = Mock::default();
    let proxy = proxy(&mock);
    let runs = Rc::new(Cell::new(0u32));
    let host = TestHost::new({
        let runs = runs.clone();
        move || runs.get() >= 5
    });
    let start = || {
        let (runs, host) = (runs.clone(), &host);
        async move {
            runs.set(runs.get() + 1);
            // The third run lasts a minute before it ends.
            if runs.get() == 3 {
                host.sleep(RESTART_RESET_AFTER_MS).await;
            }
        }
    };
    block_on(supervise(&host, &proxy, LoopKind::HealthCheck, 0, start));
    assert_eq!(*host.sleeps.borrow(), vec![500, 1000, RESTART_RESET_AFTER_MS, 500, 1000]);
    assert_eq!(proxy.loop_restarts(0), 4);
}

#[test]
fn a_stopping_host_ends_the_loops_without_a_restart() {
    let mock = Mock::default();
    let proxy = proxy(&mock);
    let host = TestHost::new(|| true);
    block_on(run_replay(&host, &proxy, 0));
    block_on(run_health_checks(&host, &proxy, 0));
    assert_eq!(proxy.loop_restarts(0), 0);
    assert!(mock.answered("/ping").is_empty());
}

/// The value of the first `/metrics` line starting with `name`.
fn value(metrics: &str, name: &str) -> Option<String> {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).map(String::from)
}

#[test]
fn request_and_backend_histograms_are_observed_with_the_hosts_clock() {
    let mock = Mock::default();
    let mut proxy = proxy(&mock);
    // Without a clock nothing is observed.
    assert_eq!(write(&proxy, "cpu value=1\n"), 204);
    let metrics = get(&proxy, "/metrics");
    assert_eq!(value(&metrics, "influx_proxy_request_duration_seconds_count"), None, "{metrics}");

    // A test clock: each reading is 2 ms later.
    let us = Rc::new(Cell::new(0u64));
    proxy.set_clock(Rc::new({
        let us = us.clone();
        move || {
            us.set(us.get() + 2_000);
            us.get()
        }
    }));
    assert_eq!(write(&proxy, "cpu value=2\n"), 204);
    assert_eq!(write(&proxy, "cpu value=3\n"), 204);
    block_on(proxy.check_health(0, 3_000_000));
    let metrics = get(&proxy, "/metrics");
    assert_eq!(
        value(&metrics, "influx_proxy_request_duration_seconds_count{endpoint=\"write\"}").as_deref(),
        Some("2"),
        "{metrics}"
    );
    // Two writes and one ping reached b.
    assert_eq!(
        value(&metrics, "influx_proxy_backend_request_duration_seconds_count{backend=\"b\"}").as_deref(),
        Some("3"),
        "{metrics}"
    );
    // Each send spans two readings (2 ms); each write spans its send too.
    assert_eq!(
        value(&metrics, "influx_proxy_backend_request_duration_seconds_sum{backend=\"b\"}").as_deref(),
        Some("0.006"),
        "{metrics}"
    );
    // A write spans 6 ms: above the 5 ms bucket, within the 10 ms one.
    let bucket = |le: &str| {
        value(
            &metrics,
            &format!("influx_proxy_request_duration_seconds_bucket{{le=\"{le}\",endpoint=\"write\"}}"),
        )
    };
    assert_eq!(bucket("0.005").as_deref(), Some("0"), "{metrics}");
    assert_eq!(bucket("0.01").as_deref(), Some("2"), "{metrics}");
    assert!(metrics.contains("# TYPE influx_proxy_backend_request_duration_seconds histogram"), "{metrics}");
}

#[test]
fn a_record_that_makes_every_replay_attempt_panic_is_dead_lettered_and_the_queue_flows() {
    let mock = Mock::default();
    let text = r#"{ "backends": { "b": { "url": "http://127.0.0.1:8087" } },
                    "keymaps": { "_default_": ["b"] }, "replay_max_attempts": 3 }"#;
    let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
    let proxy =
        block_on(Proxy::open(config, mock.clone(), MemStorage::default())).unwrap_or_else(|e| panic!("{e}"));
    // Both writes are refused directly and queued for b.
    mock.plan(&[Next::Refuse]);
    assert_eq!(write(&proxy, "cpu value=1 1700000000000000000\n"), 204);
    assert_eq!(write(&proxy, "cpu value=2 1700000000000000000\n"), 204);
    assert_eq!(proxy.queue_depth(0).records, 2);

    // Every attempt to deliver the first record panics; the second must
    // still be delivered.
    mock.0.borrow_mut().panic_on = Some("value=1 ".into());
    let delivered = {
        let mock = mock.clone();
        move || !mock.answered("/write").is_empty()
    };
    let host = TestHost::new(delivered);
    block_on(run_replay(&host, &proxy, 0));

    assert_eq!(mock.answered("/write"), vec!["cpu value=2 1700000000000000000\n".to_string()]);
    assert_eq!(proxy.queue_depth(0).records, 0);
    assert_eq!(proxy.loop_restarts(0), 3, "one restart per allowed attempt, then the record is given up");
    let b = health_of_b(&proxy);
    assert_eq!(b["dead_letters"], 1, "{b}");
    assert!(get(&proxy, "/metrics").contains("influx_proxy_replay_given_up_total{backend=\"b\"} 1"));
}

/// Two backends, a and b, both in `_default_`.
fn two_backends(with_b: bool) -> Config {
    let (backends, keymap) = if with_b {
        (
            r#""a": { "url": "http://127.0.0.1:8086" }, "b": { "url": "http://127.0.0.1:8087" }"#,
            r#"["a", "b"]"#,
        )
    } else {
        (r#""a": { "url": "http://127.0.0.1:8086" }"#, r#"["a"]"#)
    };
    let text = format!(r#"{{ "backends": {{ {backends} }}, "keymaps": {{ "_default_": {keymap} }} }}"#);
    Config::parse("test.json", &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_loop_starter_starts_the_loops_of_a_backend_added_by_a_reload() {
    let p = block_on(Proxy::open(two_backends(false), Mock::default(), MemStorage::default())).unwrap();
    let stop = Rc::new(Cell::new(false));
    let host = {
        let stop = stop.clone();
        TestHost::new(move || stop.get())
    };
    let spawned: RefCell<Vec<(usize, LoopKind)>> = RefCell::new(Vec::new());
    block_on(futures_lite::future::zip(
        run_backend_loops(&host, &p, |backend, kind| spawned.borrow_mut().push((backend, kind))),
        async {
            futures_lite::future::yield_now().await;
            assert_eq!(*spawned.borrow(), [(0, LoopKind::HealthCheck), (0, LoopKind::Replay)]);
            p.reload(two_backends(true), 5).await.unwrap();
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
            }
            stop.set(true);
        },
    ));
    assert_eq!(
        *spawned.borrow(),
        [
            (0, LoopKind::HealthCheck),
            (0, LoopKind::Replay),
            (1, LoopKind::HealthCheck),
            (1, LoopKind::Replay)
        ]
    );
}

#[test]
fn a_removed_backends_loops_end_once_its_queue_is_delivered() {
    let mock = Mock::default();
    let p = block_on(Proxy::open(two_backends(true), mock.clone(), MemStorage::default())).unwrap();
    assert_eq!(p.claim_loops().len(), 4);
    // The first two sends (to a, then to b) are refused: both queue the write.
    mock.plan(&[Next::Refuse, Next::Refuse]);
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "telegraf".into())];
    request.body = b"cpu v=1 1\n".to_vec();
    assert_eq!(block_on(p.handle(request, 1_000)).status, 204);
    assert_eq!(p.queue_depth(1).records, 1);
    block_on(p.reload(two_backends(false), 2_000)).unwrap();

    let host = TestHost::new(|| false);
    block_on(run_loop(&host, &p, 1, LoopKind::Replay));
    assert!(host.sleeps.borrow().len() < 10_000, "the replay loop ended by itself");
    assert_eq!(p.queue_depth(1).records, 0, "its queue was delivered first");
    assert!(mock.answered("/write").iter().any(|b| b == "cpu v=1 1\n"));
    assert!(!p.runs_loops(1));
    block_on(run_loop(&host, &p, 1, LoopKind::HealthCheck));
    // Nothing to start again for it; the configured backend's loops still run.
    assert_eq!(p.claim_loops(), []);
}

// ---------------------------------------------------------------------------
// Pipelined replay (the next batch is sent while the previous one's ack is
// written): order after a crash at every step, and a panicking send.

use crate::proxy::ReplayStep;
use crate::storage::Storage;
use crate::write_queue::{Credentials, Record, WriteQueue};
use std::io;

/// How many more durable operations (storage writes, backend requests) the
/// process performs before it "crashes"; shared by the storage and the
/// backend of [`Crashing`].
#[derive(Clone, Default)]
struct Budget(Rc<Cell<Option<u64>>>, Rc<Cell<bool>>);

impl Budget {
    /// Takes one operation; `false` (and the crash flag set) when none is
    /// left. `None`: unlimited.
    fn take(&self) -> bool {
        match self.0.get() {
            None => true,
            Some(0) => {
                self.1.set(true);
                false
            }
            Some(n) => {
                self.0.set(Some(n - 1));
                true
            }
        }
    }
    fn last_taken(&self) -> bool {
        self.0.get() == Some(0)
    }
    fn crashed(&self) -> bool {
        self.1.get()
    }
}

/// A future that never completes: the process died inside this call.
async fn died<T>() -> T {
    futures_lite::future::pending().await
}

/// A storage over a shared [`MemStorage`] whose every call first yields (so
/// that an ack and a send are really in flight together; see
/// [`CrashingStorage::durable`]) and whose durable calls stop (never return, nothing written) once the budget is spent.
struct CrashingStorage {
    files: Rc<MemStorage>,
    budget: Budget,
}

impl CrashingStorage {
    /// A durable write takes longer than a request (an fsync): it yields
    /// three times, so a request sent with it is taken by the backend first.
    async fn durable(&self) {
        for _ in 0..3 {
            futures_lite::future::yield_now().await;
        }
        if !self.budget.take() {
            died::<()>().await;
        }
    }
}

impl Storage for CrashingStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.files.list(dir).await
    }
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        futures_lite::future::yield_now().await;
        self.files.read(path).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        futures_lite::future::yield_now().await;
        self.files.read_at(path, offset, len).await
    }
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.durable().await;
        self.files.append(path, data).await
    }
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.durable().await;
        self.files.write_atomic(path, data).await
    }
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.durable().await;
        self.files.write_at(path, offset, data).await
    }
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.durable().await;
        self.files.truncate(path, len).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        self.durable().await;
        self.files.remove(path).await
    }
    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.files.len(path).await
    }
}

/// A backend holding one point (`cpu` at time 1000) per database, whose
/// value each write's lines set in order (a later line wins, as in InfluxDB
/// 1.x); it outlives the proxy's crashes. A request that spends the last of
/// the budget is applied and then never answered (the proxy died after the
/// backend took it, before it could acknowledge).
#[derive(Clone, Default)]
struct PointBackend {
    budget: Budget,
    /// Every value set, in order.
    values: Rc<RefCell<Vec<u64>>>,
}

impl Transport for PointBackend {
    async fn send(&self, _: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        futures_lite::future::yield_now().await;
        if !self.budget.take() {
            return died().await;
        }
        if request.path == "/write" {
            for line in String::from_utf8_lossy(&request.body).lines() {
                let value = line.strip_prefix("cpu v=").and_then(|l| l.strip_suffix(" 1000"));
                self.values.borrow_mut().push(value.and_then(|v| v.parse().ok()).unwrap_or(u64::MAX));
            }
        }
        if self.budget.last_taken() {
            self.budget.1.set(true);
            return died().await;
        }
        Ok(Response::empty(204))
    }
}

/// Queued write `i` of the pipelined replay tests: the point `cpu v=<i>
/// 1000` for database `telegraf`.
fn point_write(i: u64) -> Record {
    Record::Write {
        db: "telegraf".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: format!("cpu v={i} 1000\n").into_bytes().into(),
    }
}

/// Backend `b` only, batches of two of the records of
/// [`the_later_value_of_a_point_wins_after_a_crash_at_every_step_of_pipelined_replay`]
/// (`backend_max_body_bytes` 32).
fn pipelined_proxy(backend: &PointBackend, files: Rc<MemStorage>) -> Proxy<PointBackend, CrashingStorage> {
    let text = r#"{ "backends": { "b": { "url": "http://127.0.0.1:8087" } },
                    "keymaps": { "_default_": ["b"] }, "backend_max_body_bytes": 32 }"#;
    let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
    let storage = CrashingStorage { files, budget: backend.budget.clone() };
    block_on(Proxy::open(config, backend.clone(), storage)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs replay steps until the queue is empty or the budget is spent.
fn replay_until_idle_or_crash(proxy: &Proxy<PointBackend, CrashingStorage>, budget: &Budget) {
    let replay = async {
        for _ in 0..1000 {
            if proxy.replay_step(0, 1_700_000_000_000).await == ReplayStep::Idle {
                return;
            }
        }
        panic!("replay did not drain the queue in 1000 steps");
    };
    let crash = futures_lite::future::poll_fn(|cx| match budget.crashed() {
        true => std::task::Poll::Ready(()),
        false => {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    });
    block_on(futures_lite::future::or(replay, crash));
}

#[test]
fn the_later_value_of_a_point_wins_after_a_crash_at_every_step_of_pipelined_replay() {
    // Twelve writes of the same point, values 0..11, queued for b; replay
    // sends them two per request, each request while the previous one's
    // ack is written. The process dies at each storage write or backend
    // request in turn (a request it dies in was taken by the backend but
    // not answered), restarts from what is on disk and replays to the end.
    let records = 12u64;
    let queue_files = {
        let files = MemStorage::default();
        let queue = block_on(WriteQueue::open(&files, "queue/b", 1 << 20)).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..records {
            block_on(queue.push(&files, &point_write(i), 1_700_000_000_000))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        files.snapshot()
    };
    let mut crash_at = 0;
    let mut older_value_resent = false;
    loop {
        let backend = PointBackend::default();
        let files = Rc::new(MemStorage::from_snapshot(queue_files.clone()));
        let proxy = pipelined_proxy(&backend, files.clone());
        backend.budget.0.set(Some(crash_at));
        replay_until_idle_or_crash(&proxy, &backend.budget);
        let crashed = backend.budget.crashed();
        drop(proxy);
        let before_restart = backend.values.borrow().len();
        // Restart from the files on disk, with the same backend.
        backend.budget.0.set(None);
        backend.budget.1.set(false);
        let proxy = pipelined_proxy(&backend, Rc::new(MemStorage::from_snapshot(files.snapshot())));
        replay_until_idle_or_crash(&proxy, &backend.budget);
        assert_eq!(proxy.queue_depth(0).records, 0, "crash at step {crash_at}");
        let values = backend.values.borrow().clone();
        assert_eq!(
            values.last(),
            Some(&(records - 1)),
            "crash at step {crash_at}: the point's values {values:?}"
        );
        for i in 0..records {
            assert!(values.contains(&i), "crash at step {crash_at}: value {i} never written: {values:?}");
        }
        // The pipelined window was hit: the backend had taken a later batch
        // when an earlier one (its ack not durable) was sent again.
        let seen_max = values[..before_restart].iter().copied().max();
        older_value_resent |=
            values.get(before_restart).zip(seen_max).is_some_and(|(first, max)| first + 1 < max);
        if !crashed {
            break;
        }
        crash_at += 1;
    }
    assert!(crash_at > 12, "a run without crash took only {crash_at} steps");
    assert!(older_value_resent, "no crash fell between a later batch's delivery and an earlier batch's ack");
}

#[test]
fn pipelined_replay_leaves_no_segment_file_once_the_queue_is_drained() {
    // Segments of two records, one batch each: pipelined replay leaves each
    // consumed segment's file to be removed while the next batch is sent;
    // none may be left behind.
    let files = MemStorage::default();
    let frame = WriteQueue::record_bytes(&point_write(0));
    let options = crate::write_queue::QueueOptions {
        segment_bytes: 2 * frame,
        ..crate::write_queue::QueueOptions::new(1 << 20)
    };
    let queue = block_on(WriteQueue::open_with(&files, "queue/b", options)).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..9 {
        block_on(queue.push(&files, &point_write(i), 1_700_000_000_000)).unwrap_or_else(|e| panic!("{e}"));
    }
    let segments = |files: &MemStorage| files.snapshot().into_keys().filter(|k| k.ends_with(".seg")).count();
    assert_eq!(segments(&files), 5);
    let backend = PointBackend::default();
    let files = Rc::new(MemStorage::from_snapshot(files.snapshot()));
    let proxy = pipelined_proxy(&backend, files.clone());
    replay_until_idle_or_crash(&proxy, &backend.budget);
    assert_eq!(*backend.values.borrow(), (0..9).collect::<Vec<u64>>(), "each value once, in order");
    assert_eq!(proxy.queue_depth(0).records, 0);
    assert_eq!(segments(&files), 0, "{:?}", files.snapshot().into_keys().collect::<Vec<_>>());
}

/// A storage that counts the segment files on disk each time the `ack`
/// file is written (an acknowledgement).
#[derive(Clone, Default)]
struct CountingAcks {
    files: Rc<MemStorage>,
    segments_at_acks: Rc<RefCell<Vec<usize>>>,
}

impl CountingAcks {
    fn segments(&self) -> usize {
        self.files.snapshot().into_keys().filter(|k| k.ends_with(".seg")).count()
    }
}

impl Storage for CountingAcks {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.files.list(dir).await
    }
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.files.read(path).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.files.read_at(path, offset, len).await
    }
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.files.append(path, data).await
    }
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.files.write_atomic(path, data).await
    }
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        if path.ends_with("/ack") {
            self.segments_at_acks.borrow_mut().push(self.segments());
        }
        self.files.write_at(path, offset, data).await
    }
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.files.truncate(path, len).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        self.files.remove(path).await
    }
    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.files.len(path).await
    }
}

/// A proxy whose backend `b` (mock `mock`) has `segments` segments of two
/// queued writes ([`point_write`]) each, replayed two per request
/// (`backend_max_body_bytes` 32); and its storage.
fn proxy_with_queued_segments(mock: &Mock, segments: u64) -> (Proxy<Mock, CountingAcks>, CountingAcks) {
    let files = MemStorage::default();
    let options = crate::write_queue::QueueOptions {
        segment_bytes: 2 * WriteQueue::record_bytes(&point_write(10)),
        ..crate::write_queue::QueueOptions::new(1 << 20)
    };
    let queue = block_on(WriteQueue::open_with(&files, "queue/b", options)).unwrap_or_else(|e| panic!("{e}"));
    for i in 10..10 + 2 * segments {
        block_on(queue.push(&files, &point_write(i), 1_700_000_000_000)).unwrap_or_else(|e| panic!("{e}"));
    }
    let text = r#"{ "backends": { "b": { "url": "http://127.0.0.1:8087" } },
                    "keymaps": { "_default_": ["b"] }, "backend_max_body_bytes": 32 }"#;
    let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
    let storage = CountingAcks {
        files: Rc::new(MemStorage::from_snapshot(files.snapshot())),
        ..CountingAcks::default()
    };
    let proxy =
        block_on(Proxy::open(config, mock.clone(), storage.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(storage.segments(), segments as usize);
    (proxy, storage)
}

#[test]
fn pipelined_replay_removes_consumed_segment_files_as_it_goes() {
    // One step delivers REPLAY_PIPELINE_MAX_BATCHES batches, one segment
    // each: each consumed segment's file is gone within two acks, not only
    // at the end of the step, and the step's last ack removes its own.
    let mock = Mock::default();
    let (proxy, storage) = proxy_with_queued_segments(&mock, 40);
    assert_eq!(block_on(proxy.replay_step(0, 2_000_000)), ReplayStep::Progress);
    let batches = crate::proxy::REPLAY_PIPELINE_MAX_BATCHES;
    assert_eq!(mock.answered("/write").len(), batches);
    let at_acks = storage.segments_at_acks.borrow().clone();
    assert_eq!(at_acks.len(), batches);
    for (k, &on_disk) in at_acks.iter().enumerate() {
        // Before ack k, k segments are consumed: all but the last two gone.
        assert!(on_disk <= 40 - k.saturating_sub(2), "ack {k}: {on_disk} segment files ({at_acks:?})");
    }
    assert_eq!(storage.segments(), 40 - batches, "after the step");
}

#[test]
fn a_replay_step_that_stops_removes_the_files_its_acks_left() {
    // Five batches delivered, the sixth refused and /ping refused too (b
    // down): the step ends with the fifth ack's files left by the pipeline;
    // they go before the step returns.
    let mock = Mock::default();
    let (proxy, storage) = proxy_with_queued_segments(&mock, 10);
    mock.plan(&[Next::Answer; 5]);
    mock.plan(&[Next::Refuse, Next::Refuse]);
    let step = block_on(proxy.replay_step(0, 2_000_000));
    assert!(matches!(step, ReplayStep::RetryAfter(_)), "{step:?}");
    assert_eq!(mock.answered("/write").len(), 5);
    assert_eq!(proxy.queue_depth(0).records, 10);
    assert_eq!(storage.segments(), 5, "only the segments still holding records");
}

/// A storage that yields before each write of the `ack` file, so that a
/// batch's acknowledgement is still being written when the next batch is
/// sent.
struct SlowAcks(MemStorage);

impl Storage for SlowAcks {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.0.list(dir).await
    }
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.0.read(path).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.0.read_at(path, offset, len).await
    }
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.0.append(path, data).await
    }
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.0.write_atomic(path, data).await
    }
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        self.0.write_at(path, offset, data).await
    }
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.0.truncate(path, len).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        self.0.remove(path).await
    }
    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.0.len(path).await
    }
}

#[test]
fn a_record_whose_pipelined_send_panics_while_the_previous_ack_is_written_is_dead_lettered() {
    let mock = Mock::default();
    // One record per request (backend_max_body_bytes 16), each sent while
    // the previous one's ack is written.
    let text = r#"{ "backends": { "b": { "url": "http://127.0.0.1:8087" } },
                    "keymaps": { "_default_": ["b"] }, "replay_max_attempts": 3,
                    "backend_max_body_bytes": 16 }"#;
    let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
    let proxy = block_on(Proxy::open(config, mock.clone(), SlowAcks(MemStorage::default())))
        .unwrap_or_else(|e| panic!("{e}"));
    // b refuses the first write: it and the ones after it are queued.
    mock.plan(&[Next::Refuse]);
    for i in 0..6 {
        assert_eq!(write_to(&proxy, &format!("cpu v={i} {i}\n")), 204);
    }
    assert_eq!(proxy.queue_depth(0).records, 6);
    // Every attempt to deliver v=3 panics, while v=2's ack is still being
    // written when pipelined: replay must still give v=3 up (the replay
    // policy's attempts, counted for the record that panics) and deliver the
    // others, instead of restarting forever.
    mock.0.borrow_mut().panic_on = Some("v=3 ".into());
    let delivered = {
        let mock = mock.clone();
        move || mock.answered("/write").iter().any(|w| w.contains("v=5 "))
    };
    let host = TestHost::new(delivered);
    block_on(run_replay(&host, &proxy, 0));

    let expected: Vec<String> = [0, 1, 2, 4, 5].iter().map(|i| format!("cpu v={i} {i}\n")).collect();
    let answered = mock.answered("/write");
    let mut unique = answered.clone();
    unique.dedup();
    assert_eq!(unique, expected, "b got {answered:?}");
    assert_eq!(proxy.queue_depth(0).records, 0);
    let response = block_on(proxy.handle(Request::new(Method::Get, "/health"), 3_000_000));
    let health: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let b = &health["backends"][0];
    assert_eq!(b["dead_letters"], 1, "{b}");
    assert!(proxy.loop_restarts(0) >= 3, "restarts: {}", proxy.loop_restarts(0));
}

fn write_to<S: Storage>(proxy: &Proxy<Mock, S>, body: &str) -> u16 {
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "telegraf".into())];
    request.body = body.as_bytes().to_vec();
    block_on(proxy.handle(request, 1_000_000)).status
}
