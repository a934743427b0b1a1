//! Unit tests over mock backends: each mock backend is a small in-memory
//! InfluxDB (applies line protocol with the duplicate-point rule, answers the
//! copy's queries) fed through a real `WriteQueue` on a storage that can
//! "crash" at any write.

use super::*;
use crate::storage::MemStorage;
use crate::write_queue::WriteQueue;
use futures_lite::future::block_on;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;

// ---------------------------------------------------------------- storage

/// A storage that refuses every mutating call from the `fail_from`-th on (a
/// process killed just before that call): nothing after it reaches "disk".
#[derive(Debug, Default)]
struct CrashStorage {
    inner: MemStorage,
    ops: Cell<u64>,
    fail_from: Cell<Option<u64>>,
    tripped: Cell<bool>,
}

impl CrashStorage {
    fn from(inner: MemStorage) -> CrashStorage {
        CrashStorage { inner, ..CrashStorage::default() }
    }
    fn gate(&self) -> io::Result<()> {
        let n = self.ops.get();
        self.ops.set(n + 1);
        if self.tripped.get() || self.fail_from.get().is_some_and(|k| n >= k) {
            self.tripped.set(true);
            return Err(io::Error::other("killed"));
        }
        Ok(())
    }
}

impl Storage for CrashStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.inner.read(path).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(path, offset, len).await
    }
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.gate()?;
        self.inner.append(path, data).await
    }
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.gate()?;
        self.inner.write_atomic(path, data).await
    }
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.gate()?;
        self.inner.write_at(path, offset, data).await
    }
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.gate()?;
        self.inner.truncate(path, len).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        self.gate()?;
        self.inner.remove(path).await
    }
    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.inner.len(path).await
    }
}

// ---------------------------------------------------------------- line protocol (test reader)

#[derive(Debug, Clone, PartialEq)]
enum Val {
    F(f64),
    I(i64),
    U(u64),
    S(String),
    B(bool),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::F(_) => "float",
            Val::I(_) => "integer",
            Val::U(_) => "unsigned",
            Val::S(_) => "string",
            Val::B(_) => "boolean",
        }
    }
    fn json(&self) -> Value {
        match self {
            Val::F(f) => json!(f),
            Val::I(i) => json!(i),
            Val::U(u) => json!(u),
            Val::S(s) => json!(s),
            Val::B(b) => json!(b),
        }
    }
    /// Bit-exact equality for floats.
    fn same(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::F(a), Val::F(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
}

type Tags = BTreeMap<String, String>;
type Fields = BTreeMap<String, Val>;

#[derive(Debug, Clone, PartialEq)]
struct Line {
    measurement: String,
    tags: Tags,
    fields: Fields,
    time: i64,
}

/// Reads `until` (unescaped) chars; `\` before one of `escapable` is removed.
fn read_part(chars: &[char], i: &mut usize, until: &[char], escapable: &[char]) -> String {
    let mut out = String::new();
    while *i < chars.len() {
        let c = chars[*i];
        if c == '\\' && *i + 1 < chars.len() && escapable.contains(&chars[*i + 1]) {
            out.push(chars[*i + 1]);
            *i += 2;
            continue;
        }
        if until.contains(&c) {
            break;
        }
        out.push(c);
        *i += 1;
    }
    out
}

/// The line protocol reader of InfluxDB 1.x, for what this module writes.
fn parse_body(body: &str) -> Vec<Line> {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let mut lines = Vec::new();
    while i < chars.len() {
        if chars[i] == '\n' {
            i += 1;
            continue;
        }
        let measurement = read_part(&chars, &mut i, &[',', ' '], &[',', ' ']);
        let mut tags = Tags::new();
        while chars[i] == ',' {
            i += 1;
            let k = read_part(&chars, &mut i, &['='], &[',', '=', ' ']);
            i += 1;
            let v = read_part(&chars, &mut i, &[',', ' '], &[',', '=', ' ']);
            tags.insert(k, v);
        }
        assert_eq!(chars[i], ' ');
        i += 1;
        let mut fields = Fields::new();
        loop {
            let k = read_part(&chars, &mut i, &['='], &[',', '=', ' ']);
            i += 1;
            let v = if chars[i] == '"' {
                i += 1;
                let mut s = String::new();
                while chars[i] != '"' {
                    if chars[i] == '\\' && matches!(chars.get(i + 1), Some('"' | '\\')) {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                i += 1;
                Val::S(s)
            } else {
                let raw: String = chars[i..].iter().take_while(|c| **c != ',' && **c != ' ').collect();
                i += raw.chars().count();
                if let Some(n) = raw.strip_suffix('i') {
                    Val::I(n.parse().unwrap())
                } else if let Some(n) = raw.strip_suffix('u') {
                    Val::U(n.parse().unwrap())
                } else if raw == "true" || raw == "false" {
                    Val::B(raw == "true")
                } else {
                    Val::F(raw.parse().unwrap_or_else(|_| panic!("float {raw}")))
                }
            };
            fields.insert(k, v);
            if chars[i] == ',' {
                i += 1;
                continue;
            }
            break;
        }
        assert_eq!(chars[i], ' ');
        i += 1;
        let t: String = chars[i..].iter().take_while(|c| **c != '\n').collect();
        i += t.chars().count();
        lines.push(Line { measurement, tags, fields, time: t.parse().unwrap() });
    }
    lines
}

// ---------------------------------------------------------------- mock InfluxDB

#[derive(Debug, Clone, PartialEq)]
struct RpInfo {
    duration: String,
    default: bool,
}

/// (db, rp, measurement) -> series tags -> time -> fields.
type Data = BTreeMap<(String, String, String), BTreeMap<Tags, BTreeMap<i64, Fields>>>;

#[derive(Debug, Clone, Default)]
struct Server {
    dbs: BTreeMap<String, BTreeMap<String, RpInfo>>,
    data: Data,
    /// Writes and statements refused (database or rp not found).
    refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    Str(String),
    W(String),
}

fn tokens(q: &str) -> Vec<Tok> {
    let c: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        match c[i] {
            ' ' => i += 1,
            '"' | '\'' => {
                let quote = c[i];
                i += 1;
                let mut s = String::new();
                while c[i] != quote {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    s.push(c[i]);
                    i += 1;
                }
                i += 1;
                out.push(if quote == '"' { Tok::Id(s) } else { Tok::Str(s) });
            }
            '>' if c.get(i + 1) == Some(&'=') => {
                out.push(Tok::W(">=".into()));
                i += 2;
            }
            ch if ch.is_alphanumeric() || ch == '_' || ch == '-' => {
                let w: String =
                    c[i..].iter().take_while(|x| x.is_alphanumeric() || **x == '_' || **x == '-').collect();
                i += w.chars().count();
                out.push(Tok::W(w));
            }
            ch => {
                out.push(Tok::W(ch.to_string()));
                i += 1;
            }
        }
    }
    out
}

fn w(s: &str) -> Tok {
    Tok::W(s.to_string())
}
fn id(t: &Tok) -> String {
    match t {
        Tok::Id(s) | Tok::Str(s) | Tok::W(s) => s.clone(),
    }
}

#[derive(Debug, Default)]
struct Where {
    tag: Option<(String, String)>,
    from: Option<i64>,
    to: Option<i64>,
}

fn parse_where(t: &[Tok]) -> (Where, usize) {
    let mut wh = Where::default();
    let mut i = 0;
    if t.first() != Some(&w("WHERE")) {
        return (wh, 0);
    }
    i += 1;
    loop {
        if t[i] == w("time") {
            let n: i64 = id(&t[i + 2]).parse().unwrap();
            if t[i + 1] == w(">=") {
                wh.from = Some(n);
            } else {
                wh.to = Some(n);
            }
            i += 3;
        } else {
            wh.tag = Some((id(&t[i]), id(&t[i + 2])));
            i += 3;
        }
        if t.get(i) == Some(&w("AND")) {
            i += 1;
        } else {
            return (wh, i);
        }
    }
}

fn matches_tag(tags: &Tags, cond: &Option<(String, String)>) -> bool {
    match cond {
        None => true,
        Some((k, v)) => tags.get(k).map(String::as_str).unwrap_or("") == v,
    }
}

impl Server {
    fn create_db(&mut self, db: &str) {
        self.dbs.entry(db.to_string()).or_insert_with(|| {
            BTreeMap::from([("autogen".into(), RpInfo { duration: "0s".into(), default: true })])
        });
    }

    fn apply(&mut self, record: &Record) {
        match record {
            Record::Write { db, rp, precision, body, .. } => {
                assert!(precision.is_none());
                let Some(rps) = self.dbs.get(db) else {
                    self.refused.push(format!("database not found: {db}"));
                    return;
                };
                let rp = match rp {
                    Some(rp) => rp.clone(),
                    None => rps.iter().find(|(_, i)| i.default).map(|(n, _)| n.clone()).unwrap(),
                };
                if !rps.contains_key(&rp) {
                    self.refused.push(format!("retention policy not found: {rp}"));
                    return;
                }
                for line in parse_body(std::str::from_utf8(body).unwrap()) {
                    let series = self.data.entry((db.clone(), rp.clone(), line.measurement)).or_default();
                    let point = series.entry(line.tags).or_default().entry(line.time).or_default();
                    point.extend(line.fields);
                }
            }
            Record::Statement { db, q, .. } => self.statement(db.as_deref().unwrap_or(""), q),
        }
    }

    fn statement(&mut self, db: &str, q: &str) {
        let t = tokens(q);
        match (id(&t[0]).as_str(), id(&t[1]).as_str()) {
            ("CREATE", "DATABASE") => self.create_db(&id(&t[2])),
            ("CREATE" | "ALTER", "RETENTION") => {
                let (rp, db) = (id(&t[3]), id(&t[5]));
                let duration = id(&t[7]);
                let default = t.last() == Some(&w("DEFAULT"));
                let Some(rps) = self.dbs.get_mut(&db) else {
                    self.refused.push(format!("database not found: {db}"));
                    return;
                };
                if default {
                    rps.values_mut().for_each(|i| i.default = false);
                }
                let was_default = rps.get(&rp).is_some_and(|i| i.default);
                rps.insert(rp, RpInfo { duration, default: default || was_default });
            }
            ("DROP", "MEASUREMENT") => {
                let m = id(&t[2]);
                self.data.retain(|(d, _, mm), _| !(d == db && *mm == m));
            }
            ("DROP", "SERIES") => {
                let m = id(&t[3]);
                let (wh, _) = parse_where(&t[4..]);
                for ((d, _, mm), series) in self.data.iter_mut() {
                    if d == db && *mm == m {
                        series.retain(|tags, _| !matches_tag(tags, &wh.tag));
                    }
                }
                self.data.retain(|_, s| !s.is_empty());
            }
            _ => panic!("mock: unknown statement {q}"),
        }
    }

    /// (rp, measurement) -> fields -> type, from the data.
    fn field_types(&self, db: &str, rp: &str, m: &str) -> BTreeMap<String, &'static str> {
        let mut types = BTreeMap::new();
        if let Some(series) = self.data.get(&(db.into(), rp.into(), m.into())) {
            for points in series.values() {
                for fields in points.values() {
                    for (k, v) in fields {
                        types.entry(k.clone()).or_insert(v.type_name());
                    }
                }
            }
        }
        types
    }

    fn answer(&self, db: &str, q: &str) -> Result<StatementResult, String> {
        let t = tokens(q);
        let result = |series: Vec<Value>| {
            let v = if series.is_empty() { json!({}) } else { json!({ "series": series }) };
            Ok(StatementResult::from(v))
        };
        if t[0] == w("SHOW") && t[1] == w("RETENTION") {
            let Some(rps) = self.dbs.get(&id(&t[4])) else {
                return Ok(StatementResult::from(json!({"error": "database not found"})));
            };
            let rows: Vec<Value> =
                rps.iter().map(|(n, i)| json!([n, i.duration, "168h0m0s", 1, i.default])).collect();
            return result(vec![
                json!({"columns": ["name","duration","shardGroupDuration","replicaN","default"], "values": rows}),
            ]);
        }
        if t[0] == w("SHOW") && t[1] == w("FIELD") {
            let (db, rp, m) = (id(&t[4]), id(&t[6]), id(&t[8]));
            let types = self.field_types(&db, &rp, &m);
            if types.is_empty() {
                return result(vec![]);
            }
            let rows: Vec<Value> = types.iter().map(|(k, v)| json!([k, v])).collect();
            return result(vec![json!({"name": m, "columns": ["fieldKey","fieldType"], "values": rows})]);
        }
        assert_eq!(t[0], w("SELECT"), "mock: {q}");
        let count = t[1] == w("count");
        let from = t.iter().position(|x| *x == w("FROM")).unwrap();
        let (qdb, rp, m) = (id(&t[from + 1]), id(&t[from + 3]), id(&t[from + 5]));
        assert_eq!(qdb, db);
        let (wh, used) = parse_where(&t[from + 6..]);
        let rest = &t[from + 6 + used..];
        let in_range = |time: i64| wh.from.is_none_or(|a| time >= a) && wh.to.is_none_or(|b| time < b);
        let empty = BTreeMap::new();
        let series = self.data.get(&(db.into(), rp.clone(), m.clone())).unwrap_or(&empty);
        let types = self.field_types(db, &rp, &m);
        let fields: Vec<String> = types.keys().cloned().collect();
        if count {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for (tags, points) in series {
                if !matches_tag(tags, &wh.tag) {
                    continue;
                }
                for (_, f) in points.range(..).filter(|(time, _)| in_range(**time)) {
                    for k in f.keys() {
                        *counts.entry(k.clone()).or_default() += 1;
                    }
                }
            }
            if counts.is_empty() {
                return result(vec![]);
            }
            let mut columns = vec![json!("time")];
            let mut row = vec![json!(0)];
            for f in &fields {
                columns.push(json!(format!("count_{f}")));
                row.push(json!(counts.get(f).copied().unwrap_or(0)));
            }
            return result(vec![json!({"name": m, "columns": columns, "values": [row]})]);
        }
        let mut columns = vec![json!("time")];
        columns.extend(fields.iter().map(|f| json!(f)));
        let row_of = |time: i64, f: &Fields| {
            let mut row = vec![json!(time)];
            row.extend(fields.iter().map(|k| f.get(k).map_or(Value::Null, Val::json)));
            Value::Array(row)
        };
        if rest.first() == Some(&w("ORDER")) {
            let asc = rest[3] == w("ASC");
            let mut all: Vec<(i64, &Fields)> = series
                .iter()
                .filter(|(tags, _)| matches_tag(tags, &wh.tag))
                .flat_map(|(_, p)| p.iter().map(|(t, f)| (*t, f)))
                .collect();
            all.sort_by_key(|(t, _)| *t);
            let pick = if asc { all.first() } else { all.last() };
            return match pick {
                None => result(vec![]),
                Some((time, f)) => {
                    result(vec![json!({"name": m, "columns": columns, "values": [row_of(*time, f)]})])
                }
            };
        }
        assert_eq!(rest, &[w("GROUP"), w("BY"), w("*")], "mock: {q}");
        let tag_keys: BTreeSet<&String> = series.keys().flat_map(|t| t.keys()).collect();
        let mut out = Vec::new();
        for (tags, points) in series {
            if !matches_tag(tags, &wh.tag) {
                continue;
            }
            let rows: Vec<Value> =
                points.iter().filter(|(t, _)| in_range(**t)).map(|(t, f)| row_of(*t, f)).collect();
            if rows.is_empty() {
                continue;
            }
            let all_tags: BTreeMap<&String, &str> =
                tag_keys.iter().map(|k| (*k, tags.get(*k).map_or("", String::as_str))).collect();
            out.push(json!({"name": m, "tags": all_tags, "columns": columns, "values": rows}));
        }
        result(out)
    }

    /// The points of `key` (tag-sharded when `shard_tag`), by (rp, tags).
    fn key_data(
        &self,
        key: &KeyId,
        shard_tag: Option<&str>,
    ) -> BTreeMap<(String, Tags), BTreeMap<i64, Fields>> {
        let mut out = BTreeMap::new();
        for ((db, rp, m), series) in &self.data {
            if *db != key.db || *m != key.measurement {
                continue;
            }
            for (tags, points) in series {
                let cond = shard_tag.zip(key.tag_value.clone()).map(|(t, v)| (t.to_string(), v));
                if matches_tag(tags, &cond) && !points.is_empty() {
                    out.insert((rp.clone(), tags.clone()), points.clone());
                }
            }
        }
        out
    }
}

fn same_data(
    a: &BTreeMap<(String, Tags), BTreeMap<i64, Fields>>,
    b: &BTreeMap<(String, Tags), BTreeMap<i64, Fields>>,
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, pa), (kb, pb))| {
            ka == kb
                && pa.len() == pb.len()
                && pa.iter().zip(pb).all(|((ta, fa), (tb, fb))| {
                    ta == tb
                        && fa.len() == fb.len()
                        && fa.iter().zip(fb).all(|((x, va), (y, vb))| x == y && va.same(vb))
                })
        })
}

// ---------------------------------------------------------------- mock cluster

type Hook = Box<dyn FnMut(&Cluster, &str, &str)>;

struct Cluster {
    servers: RefCell<BTreeMap<String, Server>>,
    storage: CrashStorage,
    queues: BTreeMap<String, WriteQueue>,
    down: RefCell<BTreeSet<String>>,
    /// Answer of `requests_done_before`.
    requests_done: Cell<bool>,
    /// Runs before a chunk SELECT is answered: (cluster, backend, query).
    hook: RefCell<Option<Hook>>,
    queries: Cell<u64>,
    /// Records the copy sent directly ([`Backends::send`]).
    sent: Cell<u64>,
    /// Backends that answer every direct send with a 500 while healthy.
    failing: RefCell<BTreeSet<String>>,
}

const NOW: u64 = 1_700_000_000_000;

impl Cluster {
    fn new(names: &[&str]) -> Cluster {
        let servers = names.iter().map(|n| (n.to_string(), Server::default())).collect();
        Cluster::with(servers, CrashStorage::default())
    }

    fn with(servers: BTreeMap<String, Server>, storage: CrashStorage) -> Cluster {
        let queues = servers
            .keys()
            .map(|n| {
                let q =
                    block_on(WriteQueue::open(&storage, &format!("queue/{n}"), 1 << 30)).expect("open queue");
                (n.clone(), q)
            })
            .collect();
        Cluster {
            servers: RefCell::new(servers),
            storage,
            queues,
            down: RefCell::default(),
            requests_done: Cell::new(true),
            hook: RefCell::new(None),
            queries: Cell::new(0),
            sent: Cell::new(0),
            failing: RefCell::default(),
        }
    }

    /// The proxy killed: the backends keep their data, the proxy's files are
    /// what reached the disk.
    fn restart(self) -> Cluster {
        let files = self.storage.inner.snapshot();
        Cluster::with(self.servers.into_inner(), CrashStorage::from(MemStorage::from_snapshot(files)))
    }

    fn server<R>(&self, name: &str, f: impl FnOnce(&mut Server) -> R) -> R {
        f(self.servers.borrow_mut().get_mut(name).expect("server"))
    }

    /// Replays `name`'s queue into its server (as the replay loop does).
    fn deliver(&self, name: &str) {
        if self.down.borrow().contains(name) {
            return;
        }
        let q = &self.queues[name];
        while let Ok(Some((rid, record))) = block_on(q.peek(&self.storage)) {
            if block_on(q.ack(&self.storage, rid)).is_err() {
                return;
            }
            self.server(name, |s| s.apply(&record));
        }
    }

    fn deliver_all(&self) {
        for n in self.queues.keys() {
            self.deliver(n);
        }
    }

    /// A client's write of `key`'s `line` (db default rp): routed by the
    /// rebalance (or `owners`), registered as live, queued to every target,
    /// delivered; the source's answer reported.
    fn write(&self, rb: Option<&Rebalance>, key: &KeyId, owners: &[String], line: &str) {
        let record = write_record(&key.db, None, line);
        let targets = rb.and_then(|rb| rb.write_targets(key)).unwrap_or_else(|| owners.to_vec());
        let token = rb.and_then(|rb| rb.live_write(key, &record));
        for t in &targets {
            block_on(self.queues[t].push(&self.storage, &record, NOW)).expect("push");
        }
        self.deliver_all();
        if let (Some(rb), Some(token)) = (rb, token) {
            rb.source_answered(token, SourceOutcome::Acked);
        }
    }
}

impl Cluster {
    /// [`Cluster::write`] that stops at the first push the storage refuses
    /// (the proxy killed mid-write: the client got no answer); true when the
    /// write was acknowledged.
    fn try_write(&self, rb: &Rebalance, key: &KeyId, owners: &[String], line: &str) -> bool {
        let record = write_record(&key.db, None, line);
        let targets = rb.write_targets(key).unwrap_or_else(|| owners.to_vec());
        let token = rb.live_write(key, &record);
        for t in &targets {
            if block_on(self.queues[t].push(&self.storage, &record, NOW)).is_err() {
                return false;
            }
        }
        self.deliver_all();
        if let Some(token) = token {
            rb.source_answered(token, SourceOutcome::Acked);
        }
        !self.storage.tripped.get()
    }
}

fn write_record(db: &str, rp: Option<&str>, body: &str) -> Record {
    Record::Write {
        db: db.into(),
        rp: rp.map(str::to_string),
        precision: None,
        credentials: Default::default(),
        body: format!("{body}\n").into_bytes().into(),
    }
}

impl Backends for Cluster {
    async fn query(&self, backend: &str, db: &str, q: &str) -> Result<StatementResult, String> {
        if self.down.borrow().contains(backend) {
            return Err("connection refused".into());
        }
        self.queries.set(self.queries.get() + 1);
        if q.ends_with("GROUP BY *") {
            let hook = self.hook.borrow_mut().take();
            if let Some(mut hook) = hook {
                hook(self, backend, q);
                self.hook.borrow_mut().get_or_insert(hook);
            }
        }
        self.server(backend, |s| s.answer(db, q))
    }
    async fn push(&self, backend: &str, record: &Record, now_ms: u64) -> Result<(), String> {
        self.queues[backend].push(&self.storage, record, now_ms).await.map_err(|e| e.to_string())
    }
    async fn send(&self, backend: &str, record: &Record) -> Result<(), String> {
        if self.down.borrow().contains(backend) {
            return Err("connection refused".into());
        }
        if self.failing.borrow().contains(backend) {
            return Err("HTTP 500: engine: error writing WAL".into());
        }
        self.sent.set(self.sent.get() + 1);
        let refused = self.server(backend, |s| s.refused.len());
        self.server(backend, |s| s.apply(record));
        match self.server(backend, |s| s.refused.get(refused).cloned()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn is_healthy(&self, backend: &str) -> bool {
        !self.down.borrow().contains(backend)
    }
    fn queue_is_empty(&self, backend: &str) -> bool {
        self.queues[backend].is_empty()
    }
    fn requests_done_before(&self, _epoch: u64) -> bool {
        self.requests_done.get()
    }
}

fn options() -> RebalanceOptions {
    RebalanceOptions {
        single_writer: true,
        points_per_chunk: 4,
        points_per_s: 0,
        initial_span_ns: 3,
        save_interval_ms: 0,
        ..RebalanceOptions::default()
    }
}

/// Steps (delivering queues in between) until idle; false if the storage
/// "crashed" on the way.
fn drive(rb: &Rebalance, c: &Cluster, now: &mut u64) -> bool {
    drive_with(rb, c, now, &mut |_, _| {})
}

/// [`drive`], calling `between` (live traffic) before every step.
fn drive_with(
    rb: &Rebalance,
    c: &Cluster,
    now: &mut u64,
    between: &mut dyn FnMut(&Rebalance, &Cluster),
) -> bool {
    for _ in 0..100_000 {
        c.deliver_all();
        if c.storage.tripped.get() {
            return false;
        }
        between(rb, c);
        if c.storage.tripped.get() {
            return false;
        }
        let outcome = block_on(rb.step(c, &c.storage, *now));
        if c.storage.tripped.get() {
            return false;
        }
        match outcome.expect("step") {
            StepOutcome::Idle => {
                c.deliver_all();
                return !c.storage.tripped.get();
            }
            StepOutcome::Again { at_ms } => *now = at_ms.max(*now + 1),
        }
    }
    panic!("the move does not finish: {:?}", rb.progress());
}

// ---------------------------------------------------------------- scenario

const GROUP_BEFORE: [&str; 3] = ["a", "b", "c"];
const GROUP_AFTER: [&str; 4] = ["a", "b", "c", "d"];

fn all_keys(n: usize) -> BTreeSet<KeyId> {
    (0..n).map(|i| KeyId::new(if i % 2 == 0 { "db0" } else { "db1" }, &format!("m{i}"), None)).collect()
}

/// History of key number `i`: points at times 0..6 of every field type,
/// one series with a tag, in the default rp and (db1) in rp "week".
fn history(key: &KeyId, i: usize) -> Vec<(Option<&'static str>, String)> {
    let m = &key.measurement;
    let mut lines = Vec::new();
    for t in 0..6i64 {
        lines.push((
            None,
            format!("{m},host=h{} f={}.5,n={}i,s=\"v{t}\",b={} {t}", t % 2, i as i64 * 10 + t, t, t % 2 == 0),
        ));
    }
    if key.db == "db1" {
        lines.push((Some("week"), format!("{m},host=w x=1.25 100")));
    }
    lines
}

/// A cluster with every key of `keys` written (history) on its owners in
/// `placement`, plus a reference server holding everything once.
fn seeded(keys: &BTreeSet<KeyId>, placement: Placement<'_>, names: &[&str]) -> (Cluster, Server) {
    let c = Cluster::new(names);
    let mut reference = Server::default();
    let week =
        r#"CREATE RETENTION POLICY "week" ON "db1" DURATION 604800s REPLICATION 1 SHARD DURATION 86400s"#;
    for n in placement.backends {
        c.server(n, |s| {
            s.create_db("db0");
            s.create_db("db1");
            s.statement("db1", week);
        });
    }
    reference.create_db("db0");
    reference.create_db("db1");
    reference.statement("db1", week);
    for (i, key) in keys.iter().enumerate() {
        for (rp, line) in history(key, i) {
            let record = write_record(&key.db, rp, &line);
            for o in placement.owners(key) {
                c.server(&o, |s| s.apply(&record));
            }
            reference.apply(&record);
        }
    }
    (c, reference)
}

/// Every key is on exactly its `owners` with the reference's data, and on
/// `also` (lost owners before cleanup) too; nowhere else.
fn check_placement(
    c: &Cluster,
    reference: &Server,
    moves: &[KeyMove],
    keys: &BTreeSet<KeyId>,
    placement: Placement<'_>,
    cleaned: bool,
) {
    let servers = c.servers.borrow();
    for key in keys {
        let expected = reference.key_data(key, None);
        let mv = moves.iter().find(|m| &m.key == key);
        let owners = placement.owners(key);
        for (name, server) in servers.iter() {
            let data = server.key_data(key, None);
            let should =
                owners.contains(name) || (!cleaned && mv.is_some_and(|m| m.old_owners.contains(name)));
            if should {
                assert!(same_data(&data, &expected), "{key:?} on {name}: {data:?} != {expected:?}");
            } else {
                assert!(data.is_empty(), "{key:?} must not be on {name}");
            }
        }
    }
    for (name, server) in servers.iter() {
        assert!(server.refused.is_empty(), "{name} refused {:?}", server.refused);
    }
}

// ---------------------------------------------------------------- tests: plan

#[test]
fn adding_a_backend_moves_only_keys_whose_owners_changed_each_losing_one_old_owner() {
    let keys = all_keys(400);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let moves = plan(before, after, &keys);
    let moved: BTreeSet<&KeyId> = moves.iter().map(|m| &m.key).collect();
    for key in &keys {
        let mut o = before.owners(key);
        let mut n = after.owners(key);
        o.sort();
        n.sort();
        assert_eq!(o != n, moved.contains(key), "{key:?}");
    }
    for m in &moves {
        assert_eq!(m.added(), vec!["d".to_string()], "{m:?}");
        assert_eq!(m.lost().len(), 1, "{m:?}");
        let source = m.source.as_deref().unwrap();
        assert!(
            m.old_owners.iter().any(|o| o == source) && m.new_owners.iter().any(|o| o == source),
            "{m:?}"
        );
    }
    // About RF/(N+1) = 1/2 of the keys.
    let fraction = moves.len() as f64 / keys.len() as f64;
    assert!((fraction - 0.5).abs() < 0.1, "{fraction}");
}

#[test]
fn removing_a_backend_moves_exactly_its_keys_to_one_new_owner_each() {
    let keys = all_keys(400);
    let before = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let after = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let moves = plan(before, after, &keys);
    for key in &keys {
        let held = before.owners(key).contains(&"d".to_string());
        assert_eq!(held, moves.iter().any(|m| &m.key == key), "{key:?}");
    }
    for m in &moves {
        assert_eq!(m.lost(), vec!["d".to_string()]);
        assert_eq!(m.added().len(), 1);
        assert_ne!(m.source.as_deref(), Some("d"), "a staying owner is the source: {m:?}");
    }
}

#[test]
fn resync_refills_every_key_of_the_replaced_backend_and_reads_skip_it() {
    let keys = all_keys(100);
    let p = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let moves = plan_resync(p, "b", &keys);
    assert_eq!(moves.len(), keys.iter().filter(|k| p.owners(k).contains(&"b".to_string())).count());
    for m in &moves {
        assert_eq!(m.added(), vec!["b".to_string()]);
        assert!(m.lost().is_empty());
        assert!(!m.old_owners.contains(&"b".to_string()));
    }
    let single = Placement { backends: &GROUP_BEFORE, replication_factor: 1 };
    assert!(plan_resync(single, "b", &keys).iter().all(|m| m.source.is_none()));
}

#[test]
fn discovered_keys_from_show_answers() {
    let dbs = StatementResult::from(
        json!({"series":[{"name":"databases","columns":["name"],"values":[["db0"],["_internal"]]}]}),
    );
    assert_eq!(show_names(&dbs).unwrap(), vec!["db0", "_internal"]);
    let ms = StatementResult::from(
        json!({"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["req"]]}]}),
    );
    let tags = StatementResult::from(
        json!({"series":[{"name":"req","columns":["key","value"],"values":[["customer","c1"],["customer","c2"]]}]}),
    );
    let mut keys = BTreeSet::new();
    keys_of_db("db0", &show_names(&ms).unwrap(), Some(&show_tag_values(&tags).unwrap()), &mut keys);
    let expected: BTreeSet<KeyId> = [
        KeyId::new("db0", "cpu", Some("")),
        KeyId::new("db0", "req", Some("")),
        KeyId::new("db0", "req", Some("c1")),
        KeyId::new("db0", "req", Some("c2")),
    ]
    .into();
    assert_eq!(keys, expected);
    let err = StatementResult::from(json!({"error":"database not found: x"}));
    assert!(show_names(&err).is_err());
}

// ---------------------------------------------------------------- tests: the move end to end

fn start(c: &Cluster, moves: Vec<KeyMove>, tag: Option<&str>) -> Rebalance {
    block_on(Rebalance::start(&c.storage, "main", tag, moves, options())).expect("start")
}

#[test]
fn adding_a_backend_moves_every_key_to_its_new_owners_then_cleanup_removes_old_copies() {
    let keys = all_keys(12);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    assert!(!moves.is_empty());
    let rb = start(&c, moves.clone(), None);
    let key = moves[0].key.clone();
    assert_eq!(rb.read_targets(&key), Some(moves[0].old_owners.clone()));
    let mut now = NOW;
    assert!(drive(&rb, &c, &mut now));
    let p = rb.progress();
    assert_eq!((p.keys, p.keys_verified, p.keys_moving), (moves.len() as u64, moves.len() as u64, 0));
    assert!(p.points_copied >= moves.len() as u64 * 6, "{p:?}");
    assert_eq!(rb.read_targets(&key), Some(moves[0].new_owners.clone()));
    check_placement(&c, &reference, &moves, &keys, after, false);
    for m in &moves {
        assert!(rb.removal_complete(&m.lost()[0]));
    }
    assert_eq!(block_on(rb.cleanup(&c.storage)).unwrap(), moves.len());
    assert!(drive(&rb, &c, &mut now));
    assert_eq!(rb.progress().keys_cleaned, moves.len() as u64);
    assert_eq!(rb.write_targets(&key), Some(moves[0].new_owners.clone()));
    check_placement(&c, &reference, &moves, &keys, after, true);
}

/// A key with points at InfluxDB 1.x's earliest and latest timestamps
/// (backend data) is copied whole: the length of its range (more than
/// i64::MAX ns) does not overflow when the next chunk is sized.
#[test]
fn a_key_spanning_the_whole_time_range_is_copied() {
    let keys = all_keys(12);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, mut reference) = seeded(&keys, before, &GROUP_AFTER);
    for key in &keys {
        for t in [-9_223_372_036_854_775_806i64, 9_223_372_036_854_775_806] {
            let line = format!("{},host=edge f=2.5 {t}", key.measurement);
            c.write(None, key, &before.owners(key), &line);
            reference.apply(&write_record(&key.db, None, &line));
        }
    }
    let moves = plan(before, after, &keys);
    assert!(!moves.is_empty());
    let rb = start(&c, moves.clone(), None);
    let mut now = NOW;
    assert!(drive(&rb, &c, &mut now));
    assert_eq!(rb.progress().keys_verified, moves.len() as u64, "{:?}", rb.progress());
    check_placement(&c, &reference, &moves, &keys, after, false);
}

#[test]
fn removing_a_backend_leaves_every_key_with_rf_copies_elsewhere() {
    let keys = all_keys(12);
    let before = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let after = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    assert!(!rb.removal_complete("d"));
    let mut now = NOW;
    assert!(drive(&rb, &c, &mut now));
    assert!(rb.removal_complete("d"));
    block_on(rb.cleanup(&c.storage)).unwrap();
    assert!(drive(&rb, &c, &mut now));
    check_placement(&c, &reference, &moves, &keys, after, true);
}

/// The backends that stay after a removal become new owners of the removed
/// backend's keys and keep serving reads of all their other keys: the copy
/// must not sit in their write queues, where the delivery rule would put
/// every live write to them (any key) behind it, acknowledged but not yet
/// readable.
#[test]
fn a_copy_is_sent_to_its_new_owners_directly_and_never_waits_in_their_write_queues() {
    let keys = all_keys(12);
    let before = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let after = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let mut now = NOW;
    drive_without_delivery(&rb, &c, &mut now);
    assert!(rb.removal_complete("d"), "{:?}", rb.progress());
    assert!(c.sent.get() > 0);
    // The cleanup's drops too: sent to the caught-up backends that lose keys.
    block_on(rb.cleanup(&c.storage)).unwrap();
    drive_without_delivery(&rb, &c, &mut now);
    check_placement(&c, &reference, &moves, &keys, after, true);
}

/// Steps until idle without ever delivering a write queue, asserting after
/// each step that every queue is empty (nothing of the move waits in one).
fn drive_without_delivery(rb: &Rebalance, c: &Cluster, now: &mut u64) {
    for _ in 0..100_000 {
        let outcome = block_on(rb.step(c, &c.storage, *now)).expect("step");
        for (name, q) in &c.queues {
            assert!(q.is_empty(), "the move left records in {name}'s write queue: {:?}", rb.progress());
        }
        match outcome {
            StepOutcome::Idle => return,
            StepOutcome::Again { at_ms } => *now = at_ms.max(*now + 1),
        }
    }
    panic!("the move does not finish: {:?}", rb.progress());
}

/// A backend losing keys that is down at cleanup gets its drops through its
/// write queue, applied when it is back (after what the queue held).
#[test]
fn the_cleanup_queues_its_drops_for_a_backend_that_is_down() {
    let keys = all_keys(8);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let mut now = NOW;
    assert!(drive(&rb, &c, &mut now));
    let loser = moves[0].lost()[0].clone();
    c.down.borrow_mut().insert(loser.clone());
    block_on(rb.cleanup(&c.storage)).unwrap();
    for _ in 0..100_000 {
        match block_on(rb.step(&c, &c.storage, now)).expect("step") {
            StepOutcome::Idle => break,
            StepOutcome::Again { at_ms } => now = at_ms.max(now + 1),
        }
    }
    assert!(!c.queues[&loser].is_empty(), "the drops wait in {loser}'s queue");
    assert_eq!(rb.progress().keys_cleaned, moves.len() as u64);
    c.down.borrow_mut().clear();
    c.deliver_all();
    check_placement(&c, &reference, &moves, &keys, after, true);
}

/// A new owner that is down or still replaying its write queue gets
/// nothing from the copy until it is caught up (what it is sent would
/// otherwise overtake what it was sent before).
#[test]
fn the_copy_waits_for_a_new_owner_that_is_down_or_replaying() {
    let keys = all_keys(4);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let mut now = NOW;
    c.down.borrow_mut().insert("d".into());
    for _ in 0..20 {
        block_on(rb.step(&c, &c.storage, now)).expect("step");
        now += 10_000;
    }
    c.down.borrow_mut().clear();
    // Replaying: one record in d's queue.
    let record = Record::Statement {
        db: None,
        q: "CREATE DATABASE \"other\"".into(),
        credentials: Default::default(),
    };
    block_on(c.queues["d"].push(&c.storage, &record, NOW)).unwrap();
    for _ in 0..20 {
        block_on(rb.step(&c, &c.storage, now)).expect("step");
        now += 10_000;
    }
    assert_eq!(c.sent.get(), 0, "sent to d before it was caught up");
    assert_eq!(rb.progress().errors, 0, "waiting is not an error");
    assert!(moves.iter().all(|m| rb.phase(&m.key) == Some(Phase::Pending)));
    assert!(drive(&rb, &c, &mut now));
    assert!(c.sent.get() > 0);
    block_on(rb.cleanup(&c.storage)).unwrap();
    assert!(drive(&rb, &c, &mut now));
    check_placement(&c, &reference, &moves, &keys, after, true);
}

/// A write queued for an added owner before the copy (routed by the old
/// placement, which included it, e.g. before a resync; the owner failed it)
/// must be applied there before any chunk: its successor went to the old
/// owners only (routed while `Pending`), so only the chunk carries the
/// newer value. The copy reads no chunk until the added owner's queue is
/// empty; a chunk sent while that write still waits would be overwritten
/// by it (and counts would not see the older value).
#[test]
fn no_chunk_is_sent_to_an_added_owner_whose_queue_still_holds_older_writes() {
    let keys = all_keys(1);
    let key = keys.iter().next().unwrap().clone();
    let placement = Placement { backends: &GROUP_BEFORE, replication_factor: 1 };
    let (c, _) = seeded(&keys, placement, &GROUP_AFTER);
    let source = placement.owners(&key)[0].clone();
    let added = GROUP_BEFORE.iter().find(|n| **n != source).unwrap().to_string();
    let moves = vec![KeyMove {
        key: key.clone(),
        old_owners: vec![source.clone()],
        new_owners: vec![source.clone(), added.clone()],
        source: Some(source.clone()),
    }];
    let rb = start(&c, moves, None);
    let mut now = NOW;
    while rb.phase(&key) != Some(Phase::Copying) {
        block_on(rb.step(&c, &c.storage, now)).expect("step");
        now += 1000;
    }
    // W0 (old routing, failed by the added owner: in its queue), then W1
    // (its successor, routed while Pending: on the source only).
    let m = &key.measurement;
    let w0 = write_record(&key.db, None, &format!("{m},host=h1 f=100.5 3"));
    block_on(c.queues[&added].push(&c.storage, &w0, NOW)).unwrap();
    c.server(&source, |s| s.apply(&write_record(&key.db, None, &format!("{m},host=h1 f=200.5 3"))));
    // The replay is slow: a few steps before it delivers.
    for _ in 0..50 {
        block_on(rb.step(&c, &c.storage, now)).expect("step");
        now += 1000;
    }
    c.deliver(&added);
    assert!(drive(&rb, &c, &mut now));
    assert_eq!(rb.phase(&key), Some(Phase::Verified), "{:?}", rb.progress());
    let (want, got) =
        (c.server(&source, |s| s.key_data(&key, None)), c.server(&added, |s| s.key_data(&key, None)));
    assert!(same_data(&want, &got), "the added owner holds an older value:\n{got:?}\nsource:\n{want:?}");
}

#[test]
fn a_resynced_empty_backend_is_filled_from_its_replicas() {
    let keys = all_keys(12);
    let p = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let (c, reference) = seeded(&keys, p, &GROUP_BEFORE);
    c.server("b", |s| *s = Server::default()); // wiped
    let moves = plan_resync(p, "b", &keys);
    let rb = start(&c, moves.clone(), None);
    let b = "b".to_string();
    for m in &moves {
        assert!(!rb.read_targets(&m.key).unwrap().contains(&b));
        // No writes before its databases exist again.
        assert!(!rb.write_targets(&m.key).unwrap().contains(&b));
    }
    let mut now = NOW;
    assert!(drive(&rb, &c, &mut now));
    for m in &moves {
        assert!(rb.read_targets(&m.key).unwrap().contains(&b));
        assert!(rb.write_targets(&m.key).unwrap().contains(&b));
    }
    check_placement(&c, &reference, &moves, &keys, p, false);
}

#[test]
fn a_new_owner_gets_its_databases_before_any_write_of_the_key() {
    let keys = all_keys(8);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, _) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let key = &moves[0].key;
    // Pending: the new owner is not yet a write target.
    assert!(!rb.write_targets(key).unwrap().contains(&"d".to_string()));
    let mut now = NOW;
    // One step: the schema of the first key is queued on d, then d becomes a target.
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    assert_eq!(rb.phase(key), Some(Phase::Schema));
    assert!(rb.write_targets(key).unwrap().contains(&"d".to_string()));
    c.write(Some(&rb), key, &before.owners(key), &format!("{},host=h0 f=9.5 1000", key.measurement));
    assert!(drive(&rb, &c, &mut now));
    c.server("d", |s| assert!(s.refused.is_empty(), "{:?}", s.refused));
    let week = c.server("d", |s| s.dbs.get("db1").map(|rps| rps.contains_key("week")));
    assert_eq!(week, Some(true));
}

#[test]
fn writes_during_the_move_reach_old_and_new_owners_and_reads_switch_after_verification() {
    let keys = all_keys(6);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, mut reference) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let mut now = NOW;
    for t in 50..250 {
        c.deliver_all();
        // A live write to every key between steps (newer values of old points too).
        for key in &keys {
            let line = format!("{},host=h{} f={}.25 {}", key.measurement, t % 2, t, t % 7);
            c.write(Some(&rb), key, &before.owners(key), &line);
            reference.apply(&write_record(&key.db, None, &line));
        }
        match block_on(rb.step(&c, &c.storage, now)).unwrap() {
            StepOutcome::Idle => break,
            StepOutcome::Again { at_ms } => now = at_ms.max(now + 1),
        }
    }
    assert_eq!(rb.progress().keys_moving, 0, "{:?}", rb.progress());
    c.deliver_all();
    check_placement(&c, &reference, &moves, &keys, after, false);
}

/// The race of the ordering argument: a live write reaches the new owner
/// before a chunk that was read from the source before the source applied
/// the write. `during_read`: the write is accepted while the chunk is being
/// read; else it was accepted (and is in flight to the source) when the read
/// began. `tracked: false` hides the write from the window (what a copy
/// without it would do). Returns the point's value on the source and on the
/// new owner after the move.
fn race(during_read: bool, tracked: bool) -> (Val, Val) {
    let keys: BTreeSet<KeyId> = [KeyId::new("db0", "m0", None)].into();
    let key = keys.first().unwrap().clone();
    let old = Placement { backends: &["a"], replication_factor: 1 };
    let (c, _) = seeded(&keys, old, &["a", "n"]);
    let mv = KeyMove {
        key: key.clone(),
        old_owners: vec!["a".into()],
        new_owners: vec!["n".into()],
        source: Some("a".into()),
    };
    let mut opts = options();
    opts.initial_span_ns = 1000; // one chunk holds the whole history
    let rb = Rc::new(block_on(Rebalance::start(&c.storage, "main", None, vec![mv], opts)).unwrap());
    let mut now = NOW;
    for _ in 0..3 {
        // Schema, Copying, bounds.
        block_on(rb.step(&c, &c.storage, now)).unwrap();
        c.deliver_all();
        now += 1;
    }
    assert_eq!(rb.phase(&key), Some(Phase::Copying));
    // A newer value of the point (host=h1, t=3), whose f was 3.5.
    let record = write_record("db0", None, "m0,host=h1 f=777.5 3");
    let token: Rc<Cell<Option<LiveToken>>> = Rc::default();
    // The write path: register, then the new owner applies it at once while
    // the source has it in flight (applied only after the chunk is read).
    let accept = {
        let (rb, record, key, token) = (Rc::clone(&rb), record.clone(), key.clone(), Rc::clone(&token));
        move |c: &Cluster| {
            if tracked {
                token.set(rb.live_write(&key, &record));
                assert!(token.get().is_some());
            }
            block_on(c.queues["n"].push(&c.storage, &record, NOW)).unwrap();
            c.deliver("n");
        }
    };
    if during_read {
        let mut accept = Some(accept);
        *c.hook.borrow_mut() = Some(Box::new(move |c, backend, _| {
            assert_eq!(backend, "a");
            if let Some(accept) = accept.take() {
                accept(c);
            }
        }));
    } else {
        accept(&c);
    }
    block_on(rb.step(&c, &c.storage, now)).unwrap(); // the chunk
    assert_eq!(rb.progress().points_copied, 6);
    c.server("a", |s| s.apply(&record));
    if let Some(t) = token.get() {
        rb.source_answered(t, SourceOutcome::Acked);
    }
    *c.hook.borrow_mut() = None;
    assert!(drive(&rb, &c, &mut now));
    assert_eq!(rb.phase(&key), Some(Phase::Verified));
    let series = ("autogen".to_string(), Tags::from([("host".into(), "h1".into())]));
    let value = |name: &str| c.server(name, |s| s.key_data(&key, None)[&series][&3]["f"].clone());
    (value("a"), value("n"))
}

#[test]
fn a_live_write_accepted_during_a_chunk_read_is_not_overwritten_by_the_chunk() {
    let (source, new) = race(false, true);
    assert_eq!(source, Val::F(777.5));
    assert_eq!(new, Val::F(777.5), "the chunk's old value overwrote the live write");
}

#[test]
fn a_live_write_in_flight_to_the_source_when_the_read_began_is_not_overwritten() {
    let (source, new) = race(true, true);
    assert_eq!(source, Val::F(777.5));
    assert_eq!(new, Val::F(777.5), "the chunk's old value overwrote the live write");
}

/// The mock reproduces the race: without the window the new owner ends up
/// with the old value (so the two tests above can fail).
#[test]
fn without_the_window_the_race_loses_the_newer_value() {
    assert_eq!(race(false, false), (Val::F(777.5), Val::F(3.5)));
    assert_eq!(race(true, false), (Val::F(777.5), Val::F(3.5)));
}

// ---------------------------------------------------------------- tests: crash at every step

fn crash_scenario() -> (BTreeSet<KeyId>, Placement<'static>, Placement<'static>) {
    let keys = all_keys(6);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    (keys, before, after)
}

/// Runs the whole move with the proxy killed just before its `k`-th write to
/// disk (queue appends, acks, state file), restarts it and finishes; returns
/// whether the kill happened.
/// Runs the whole move with the proxy killed just before its `k`-th write to
/// disk (queue appends, acks, state file), restarts it and finishes; returns
/// whether the kill happened and how many writes the run made. With `live`,
/// clients write to every key between steps, new values of old points too.
fn move_killed_at(k: Option<u64>, options: RebalanceOptions, live: bool) -> (bool, u64) {
    let (keys, before, after) = crash_scenario();
    let (c, reference) = seeded(&keys, before, &GROUP_AFTER);
    let reference = RefCell::new(reference);
    let moves = plan(before, after, &keys);
    let base = c.storage.ops.get();
    c.storage.fail_from.set(k.map(|k| base + k));
    let mut now = NOW;
    let mut t = 0u64;
    // A new value of a history point (host=h{t%2}, time t%6) of every key.
    let mut traffic = |rb: &Rebalance, c: &Cluster| {
        if !live {
            return;
        }
        t += 1;
        for key in &keys {
            let line = format!("{},host=h{} f={t}.75 {}", key.measurement, t % 2, t % 6);
            if c.try_write(rb, key, &before.owners(key), &line) {
                reference.borrow_mut().apply(&write_record(&key.db, None, &line));
            } else {
                return;
            }
        }
    };
    let started = block_on(Rebalance::start(&c.storage, "main", None, moves.clone(), options.clone()));
    let mut killed = c.storage.tripped.get();
    let mut finished = false;
    let mut c = c;
    if let Ok(rb) = &started {
        if drive_with(rb, &c, &mut now, &mut traffic)
            && block_on(rb.cleanup(&c.storage)).is_ok()
            && drive_with(rb, &c, &mut now, &mut traffic)
        {
            finished = true;
        }
    }
    killed |= c.storage.tripped.get();
    let ops = c.storage.ops.get() - base;
    if !finished {
        assert!(killed);
        c = c.restart();
        let rb = match block_on(Rebalance::open(&c.storage, "main", options.clone())).expect("open") {
            Some(rb) => rb,
            // Killed before the state file was first written: start again.
            None => block_on(Rebalance::start(&c.storage, "main", None, moves.clone(), options.clone()))
                .expect("start"),
        };
        if live {
            // The write the kill interrupted reached some owners only (its
            // client got no answer); the client writes those points again.
            for key in &keys {
                for time in 0..6 {
                    let line = format!("{},host=h{} f=999.25 {time}", key.measurement, time % 2);
                    assert!(c.try_write(&rb, key, &before.owners(key), &line));
                    reference.borrow_mut().apply(&write_record(&key.db, None, &line));
                }
            }
        }
        assert!(drive_with(&rb, &c, &mut now, &mut traffic));
        block_on(rb.cleanup(&c.storage)).expect("cleanup");
        assert!(drive_with(&rb, &c, &mut now, &mut traffic));
        assert_eq!(rb.progress().keys_cleaned, moves.len() as u64);
        assert_eq!(rb.live_writes_held(), 0);
    }
    check_placement(&c, &reference.borrow(), &moves, &keys, after, true);
    (killed, ops)
}

#[test]
fn a_proxy_killed_at_every_step_of_a_move_resumes_and_loses_nothing() {
    // Every state change saved at once, and progress saved only every 5 s
    // (more is re-copied after the kill).
    for save_interval_ms in [0, 5_000] {
        let opts = RebalanceOptions { save_interval_ms, ..options() };
        let (killed, total) = move_killed_at(None, opts.clone(), false);
        assert!(!killed);
        assert!(total > 8, "{total} writes");
        for k in 0..total {
            let (killed, _) = move_killed_at(Some(k), opts.clone(), false);
            assert!(killed, "kill at {k} of {total}");
        }
    }
}

#[test]
fn a_proxy_killed_at_every_step_of_a_move_under_write_load_resumes_and_loses_nothing() {
    let (killed, total) = move_killed_at(None, options(), true);
    assert!(!killed);
    for k in 0..total {
        let (killed, _) = move_killed_at(Some(k), options(), true);
        assert!(killed, "kill at {k} of {total}");
    }
}

#[test]
fn the_rate_limit_holds_for_the_whole_group() {
    let keys = all_keys(6);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, _) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    assert!(moves.len() >= 2);
    let rate = 4; // points/s
    let opts = RebalanceOptions { points_per_s: rate, ..options() };
    let rb = block_on(Rebalance::start(&c.storage, "main", None, moves, opts)).unwrap();
    let mut now = NOW;
    let mut copies: Vec<(u64, u64)> = Vec::new();
    let mut copied = 0;
    loop {
        c.deliver_all();
        let outcome = block_on(rb.step(&c, &c.storage, now)).unwrap();
        let p = rb.progress().points_copied;
        if p > copied {
            copies.push((now, p - copied));
            copied = p;
        }
        match outcome {
            StepOutcome::Idle => break,
            StepOutcome::Again { at_ms } => now = at_ms.max(now + 1),
        }
    }
    assert!(copies.len() > 2, "{copies:?}");
    for pair in copies.windows(2) {
        let ((t0, points), (t1, _)) = (pair[0], pair[1]);
        assert!(t1 - t0 >= points * 1000 / rate, "{copies:?}");
    }
}

// ---------------------------------------------------------------- tests: conversion

fn field_keys(pairs: &[(&str, &str)]) -> StatementResult {
    let rows: Vec<Value> = pairs.iter().map(|(k, t)| json!([k, t])).collect();
    StatementResult::from(json!({"series":[{"name":"m","columns":["fieldKey","fieldType"],"values":rows}]}))
}

#[test]
fn chunk_conversion_round_trips_every_field_type_and_awkward_names() {
    let types = field_types(&field_keys(&[
        ("f x", "float"),
        ("i,n", "integer"),
        ("u=n", "unsigned"),
        ("s", "string"),
        ("b", "boolean"),
        ("big", "float"),
    ]))
    .unwrap();
    // The backend's JSON text, as InfluxDB prints it (0.1 + 0.2, 1e21, -0).
    let answer = r#"{"series":[{"name":"cpu load,x\\y","tags":{"ho st":"v,1 =2","empty":"","t\\x":"a\\b"},
        "columns":["time","b","big","f x","i,n","s","u=n"],
        "values":[[-5,true,1e+21,0.30000000000000004,-9223372036854775808,"a \"q\" \\ b\nnext",18446744073709551615],
                  [7,null,null,null,null,null,null],
                  [9,false,-0,1,1,"",0]]}]}"#;
    let result = StatementResult::from_json(answer).unwrap();
    let converted = chunk_to_line_protocol(&result, &types).unwrap();
    assert_eq!(converted.points, 2, "the all-null row is skipped");
    let body = String::from_utf8(converted.body.clone()).unwrap();
    // The proxy's own InfluxDB-compatible parser accepts it and reads the measurement.
    let points = crate::line_protocol::parse_points(&body).expect("valid line protocol");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].measurement, "cpu load,x\\y");
    let lines = parse_body(&body);
    let tags: Tags =
        [("ho st".to_string(), "v,1 =2".to_string()), ("t\\x".to_string(), "a\\b".to_string())].into();
    assert_eq!(lines[0].tags, tags, "{body}");
    let f = &lines[0].fields;
    assert!(f["f x"].same(&Val::F(0.1 + 0.2)), "{body}");
    assert!(f["big"].same(&Val::F(1e21)));
    assert_eq!(f["i,n"], Val::I(i64::MIN));
    assert_eq!(f["u=n"], Val::U(u64::MAX));
    assert_eq!(f["s"], Val::S("a \"q\" \\ b\nnext".into()));
    assert_eq!(f["b"], Val::B(true));
    assert_eq!(lines[0].time, -5);
    let g = &lines[1].fields;
    assert!(g["big"].same(&Val::F(-0.0)), "{body}");
    assert!(g["f x"].same(&Val::F(1.0)), "a float field with an integral value stays a float: {body}");
    assert_eq!(
        (g["i,n"].clone(), g["s"].clone(), g["u=n"].clone()),
        (Val::I(1), Val::S("".into()), Val::U(0))
    );
    assert_eq!(lines[1].time, 9);
}

#[test]
fn floats_keep_every_bit_through_the_conversion() {
    let types = field_types(&field_keys(&[("v", "float")])).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let f = f64::from_bits(rng.u64(..));
        if !f.is_finite() {
            continue;
        }
        let answer =
            format!(r#"{{"series":[{{"name":"m","columns":["time","v"],"values":[[1,{}]]}}]}}"#, json!(f));
        let converted =
            chunk_to_line_protocol(&StatementResult::from_json(&answer).unwrap(), &types).unwrap();
        let line = &parse_body(std::str::from_utf8(&converted.body).unwrap())[0];
        assert!(line.fields["v"].same(&Val::F(f)), "{f:?} -> {:?}", line.fields["v"]);
    }
}

#[test]
fn a_cell_of_the_wrong_type_or_a_partial_answer_is_an_error() {
    let types = field_types(&field_keys(&[("n", "integer")])).unwrap();
    let bad =
        StatementResult::from(json!({"series":[{"name":"m","columns":["time","n"],"values":[[1,"x"]]}]}));
    assert!(chunk_to_line_protocol(&bad, &types).unwrap_err().contains("\"n\""));
    let partial = StatementResult::from(
        json!({"partial":true,"series":[{"name":"m","columns":["time","n"],"values":[[1,1]]}]}),
    );
    assert!(chunk_to_line_protocol(&partial, &types).unwrap_err().starts_with("partial"));
    let error = StatementResult::from(json!({"error":"database not found: x"}));
    assert_eq!(chunk_to_line_protocol(&error, &types).unwrap_err(), "database not found: x");
    assert!(field_types(&field_keys(&[("n", "decimal")])).is_err());
}

#[test]
fn queries_quote_names_and_pin_the_range_and_tag() {
    let cond = tag_condition(Some("cus\"t"), Some("o'b")).unwrap();
    assert_eq!(cond, r#""cus\"t" = 'o\'b'"#);
    assert_eq!(
        chunk_query("d b", "rp", "m\\x", Some(&cond), -1, 5),
        r#"SELECT * FROM "d b"."rp"."m\\x" WHERE "cus\"t" = 'o\'b' AND time >= -1 AND time < 5 GROUP BY *"#
    );
    assert_eq!(
        count_query("d", "r", "m", None, 0, 9),
        r#"SELECT count(*) FROM "d"."r"."m" WHERE time >= 0 AND time < 9"#
    );
    assert_eq!(
        bound_query("d", "r", "m", None, false),
        r#"SELECT * FROM "d"."r"."m" ORDER BY time DESC LIMIT 1"#
    );
    assert_eq!(tag_condition(None, None), None);
}

#[test]
fn chunk_length_follows_the_points_target_and_the_rate_gives_a_delay() {
    assert_eq!(next_span_ns(1000, 500, 1000, i64::MAX), 2000);
    assert_eq!(next_span_ns(1000, 0, 1000, i64::MAX), 4000, "empty: 4 times longer");
    assert_eq!(next_span_ns(1000, 100_000, 1000, i64::MAX), 250, "at most 4 times shorter");
    assert_eq!(next_span_ns(1000, 0, 1000, 1500), 1500, "never past the range");
    assert_eq!(rate_delay_ms(10_000, 5_000), 2_000);
    assert_eq!(rate_delay_ms(1, 5_000), 1);
    assert_eq!(rate_delay_ms(10_000, 0), 0);
    assert_eq!(go_duration_secs("168h0m0s"), Some(604_800));
    assert_eq!(go_duration_secs("0s"), Some(0));
    assert_eq!(go_duration_secs("1h30m"), Some(5_400));
    assert_eq!(go_duration_secs("7d"), None);
}

// ---------------------------------------------------------------- tests: verification

#[test]
fn verification_names_the_fields_whose_counts_differ() {
    let old = StatementResult::from(
        json!({"series":[{"name":"m","columns":["time","count_a","count_b"],"values":[[0,5,3]]}]}),
    );
    let new = StatementResult::from(
        json!({"series":[{"name":"m","columns":["time","count_a","count_b"],"values":[[0,5,2]]}]}),
    );
    let (o, n) = (field_counts(&old).unwrap(), field_counts(&new).unwrap());
    assert_eq!(compare_counts(&o, &o), Verification::Equal);
    assert_eq!(
        compare_counts(&o, &n),
        Verification::Differs(vec![CountDiff { field: "b".into(), old: 3, new: 2 }])
    );
    let empty = field_counts(&StatementResult::from(json!({}))).unwrap();
    assert_eq!(
        compare_counts(&o, &empty),
        Verification::Differs(vec![
            CountDiff { field: "a".into(), old: 5, new: 0 },
            CountDiff { field: "b".into(), old: 3, new: 0 }
        ])
    );
}

#[test]
fn a_count_mismatch_keeps_reads_on_the_old_owners_and_copies_again() {
    let keys: BTreeSet<KeyId> = [KeyId::new("db0", "m0", None)].into();
    let key = keys.first().unwrap().clone();
    let old = Placement { backends: &["a"], replication_factor: 1 };
    let (c, reference) = seeded(&keys, old, &["a", "n"]);
    let mv = KeyMove {
        key: key.clone(),
        old_owners: vec!["a".into()],
        new_owners: vec!["n".into()],
        source: Some("a".into()),
    };
    let rb = start(&c, vec![mv.clone()], None);
    let mut now = NOW;
    while rb.phase(&key) != Some(Phase::Verifying) {
        c.deliver_all();
        block_on(rb.step(&c, &c.storage, now)).unwrap();
        now += 1;
    }
    c.deliver_all();
    // A point lost on the new owner (e.g. dropped by hand).
    c.server("n", |s| {
        for series in s.data.values_mut() {
            for points in series.values_mut() {
                points.remove(&0);
            }
        }
    });
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    assert_eq!(rb.phase(&key), Some(Phase::Verifying));
    assert_eq!(rb.read_targets(&key), Some(vec!["a".to_string()]));
    let p = rb.progress();
    assert_eq!(p.errors, 1);
    assert!(p.last_error.as_deref().unwrap().contains("counts differ"), "{p:?}");
    assert!(p.last_error.as_deref().unwrap().contains("f 6 on a, 5 on n"), "{p:?}");
    // After max_verify_mismatches the key is copied again and then verifies.
    assert!(drive(&rb, &c, &mut now));
    assert_eq!(rb.phase(&key), Some(Phase::Verified));
    assert!(rb.progress().errors >= 3);
    check_placement(
        &c,
        &reference,
        &[mv],
        &keys,
        Placement { backends: &["n"], replication_factor: 1 },
        false,
    );
}

// ---------------------------------------------------------------- tests: state file and rules

#[test]
fn a_move_refuses_to_start_unless_this_proxy_is_the_only_writer() {
    let c = Cluster::new(&["a"]);
    let err = block_on(Rebalance::start(&c.storage, "main", None, vec![], RebalanceOptions::default()))
        .unwrap_err();
    assert_eq!(err, RebalanceError::NotSingleWriter("main".into()));
    assert!(err.to_string().contains("only writer"), "{err}");
    assert!(!c.storage.inner.snapshot().contains_key(&state_path("main")), "nothing written");
}

#[test]
fn the_state_file_is_checksummed_and_a_damaged_one_is_refused() {
    let keys = all_keys(4);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, _) = seeded(&keys, before, &GROUP_AFTER);
    let rb = start(&c, plan(before, after, &keys), Some("tag"));
    let path = state_path("main");
    let bytes = c.storage.inner.snapshot()[&path].clone();
    assert_eq!(&bytes[..5], b"IRB1\x01");
    assert_eq!(decode(&path, &bytes).unwrap(), rb.state());
    let mut damaged = bytes.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x20;
    assert!(matches!(decode(&path, &damaged), Err(RebalanceError::Damaged(_))));
    c.storage.inner.with_files(|f| f.insert(path.clone(), damaged));
    assert!(matches!(
        block_on(Rebalance::open(&c.storage, "main", options())),
        Err(RebalanceError::Damaged(_))
    ));
    assert_eq!(state_path("a/b"), "rebalance/x612f62.state");
    // A second move of the group is refused while the first is not verified.
    c.storage.inner.with_files(|f| f.insert(path.clone(), bytes));
    let again = block_on(Rebalance::start(&c.storage, "main", None, vec![], options()));
    assert_eq!(again.unwrap_err(), RebalanceError::Busy("main".into()));
}

#[test]
fn tag_sharded_keys_move_by_tag_value_and_deletes_wait_for_the_copy() {
    let tag = "customer";
    let keys: BTreeSet<KeyId> =
        [KeyId::new("db0", "req", Some("c1")), KeyId::new("db0", "req", Some(""))].into();
    let c = Cluster::new(&["a", "n"]);
    let mut reference = Server::default();
    c.server("a", |s| s.create_db("db0"));
    reference.create_db("db0");
    for line in [
        "req,customer=c1,h=x v=1i 1",
        "req,customer=c2,h=x v=2i 2",
        "req,h=y v=3i 3",
        "req,customer=c1 v=4i 4",
    ] {
        let r = write_record("db0", None, line);
        c.server("a", |s| s.apply(&r));
        reference.apply(&r);
    }
    let moves: Vec<KeyMove> = keys
        .iter()
        .map(|k| KeyMove {
            key: k.clone(),
            old_owners: vec!["a".into()],
            new_owners: vec!["n".into()],
            source: Some("a".into()),
        })
        .collect();
    let rb = block_on(Rebalance::start(&c.storage, "tenants", Some(tag), moves, options())).unwrap();
    let mut now = NOW;
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    let first = keys.first().unwrap();
    assert!(!rb.delete_allowed(first) || !rb.delete_allowed(keys.last().unwrap()));
    assert!(drive(&rb, &c, &mut now));
    assert!(rb.delete_allowed(first));
    for key in &keys {
        let on_n = c.server("n", |s| s.key_data(key, Some(tag)));
        assert!(same_data(&on_n, &reference.key_data(key, Some(tag))), "{key:?}: {on_n:?}");
    }
    // c2 was not moved: not on n.
    assert!(c.server("n", |s| s.key_data(&KeyId::new("db0", "req", Some("c2")), Some(tag))).is_empty());
    block_on(rb.cleanup(&c.storage)).unwrap();
    assert!(drive(&rb, &c, &mut now));
    let left: Vec<Tags> = c.server("a", |s| s.data.values().flat_map(|x| x.keys().cloned()).collect());
    assert_eq!(left, vec![Tags::from([("customer".into(), "c2".into()), ("h".into(), "x".into())])]);
}

#[test]
fn progress_counts_keys_points_and_errors() {
    let keys = all_keys(4);
    let before = Placement { backends: &GROUP_BEFORE, replication_factor: 2 };
    let after = Placement { backends: &GROUP_AFTER, replication_factor: 2 };
    let (c, _) = seeded(&keys, before, &GROUP_AFTER);
    let moves = plan(before, after, &keys);
    let rb = start(&c, moves.clone(), None);
    let p = rb.progress();
    assert_eq!(
        (p.group.as_str(), p.keys, p.keys_moving, p.keys_verified, p.points_copied),
        ("main", moves.len() as u64, moves.len() as u64, 0, 0)
    );
    // The source down: its queries fail? No: the step waits for it (not an error).
    for m in &moves {
        c.down.borrow_mut().insert(m.source.clone().unwrap());
    }
    let mut now = NOW;
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    assert_eq!(rb.progress().errors, 0);
    c.down.borrow_mut().clear();
    now += 1000;
    // The new owner fails the copy's sends (healthy, answering 500):
    // counted, retried.
    c.failing.borrow_mut().insert("d".into());
    block_on(rb.step(&c, &c.storage, now)).expect("a failed step is retried, not the move's end");
    c.failing.borrow_mut().clear();
    assert_eq!(rb.progress().errors, 1);
    assert!(rb.progress().last_error.is_some_and(|e| e.contains("d: ") && e.contains("HTTP 500")));
    now += 120_000;
    assert!(drive(&rb, &c, &mut now));
    let p = rb.progress();
    assert_eq!(p.keys_verified, moves.len() as u64);
    assert!(p.points_copied > 0);
    let _ = c.queries.get();
}

#[test]
fn live_writes_are_held_only_until_the_source_has_them_and_a_failed_one_spoils_the_chunk() {
    let keys: BTreeSet<KeyId> = [KeyId::new("db0", "m0", None)].into();
    let key = keys.first().unwrap().clone();
    let (c, _) = seeded(&keys, Placement { backends: &["a"], replication_factor: 1 }, &["a", "n"]);
    let mv = KeyMove {
        key: key.clone(),
        old_owners: vec!["a".into()],
        new_owners: vec!["n".into()],
        source: Some("a".into()),
    };
    let opts = RebalanceOptions { initial_span_ns: 1000, ..options() };
    let rb = Rc::new(block_on(Rebalance::start(&c.storage, "main", None, vec![mv], opts)).unwrap());
    let record = write_record("db0", None, "m0,host=h0 f=1.5 0");
    assert!(rb.live_write(&key, &record).is_none(), "Pending: n is no write target yet");
    let mut now = NOW;
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    c.deliver_all();
    assert_eq!(rb.phase(&key), Some(Phase::Schema));
    let t1 = rb.live_write(&key, &record).unwrap();
    assert_eq!(rb.live_writes_held(), 1);
    rb.source_answered(t1, SourceOutcome::Acked);
    assert_eq!(rb.live_writes_held(), 0);
    // Queued at the source: held until the source's queue is seen empty.
    let t2 = rb.live_write(&key, &record).unwrap();
    rb.source_answered(t2, SourceOutcome::Queued);
    assert_eq!(rb.live_writes_held(), 1);
    block_on(c.queues["a"].push(&c.storage, &record, NOW)).unwrap();
    now += 1;
    block_on(rb.step(&c, &c.storage, now)).unwrap(); // Schema -> Copying
    now += 1;
    block_on(rb.step(&c, &c.storage, now)).unwrap(); // waits: the source's queue is not empty
    assert_eq!(rb.live_writes_held(), 1);
    c.deliver_all();
    now += 1_000;
    block_on(rb.step(&c, &c.storage, now)).unwrap(); // bounds
    assert_eq!(rb.live_writes_held(), 0);
    // A write the source failed during the chunk read: the chunk is read again.
    let (rb_h, rec) = (Rc::clone(&rb), record.clone());
    let mut once = true;
    *c.hook.borrow_mut() = Some(Box::new(move |_, _, _| {
        if std::mem::take(&mut once) {
            let t = rb_h.live_write(&KeyId::new("db0", "m0", None), &rec).unwrap();
            rb_h.source_answered(t, SourceOutcome::Failed);
        }
    }));
    now += 1;
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    assert_eq!(rb.progress().points_copied, 0, "spoiled chunk not counted");
    assert_eq!(rb.live_writes_held(), 0);
    now += 1;
    block_on(rb.step(&c, &c.storage, now)).unwrap();
    assert_eq!(rb.progress().points_copied, 6);
    *c.hook.borrow_mut() = None;
    assert!(drive(&rb, &c, &mut now));
    assert!(rb.live_write(&key, &record).is_none(), "Verified: no more tracking");
}
