//! Issue 7, the rebalance on the request path (`proxy/moves.rs`), over mock
//! backends: a move saved in the storage is resumed at start; while a key
//! moves its writes reach old and new owners (the new one through its write
//! queue, behind its databases), every live write is answered, reads stay on
//! the old owners and deletes are refused.

use super::*;
use crate::rebalance::{plan, KeyId, KeyMove, Placement, Rebalance, RebalanceOptions};
use std::collections::BTreeSet;

const OLD: [&str; 3] = ["a", "b", "c"];
const NEW: [&str; 4] = ["a", "b", "c", "d"];
const RP: &str = r#"{"results":[{"statement_id":0,"series":[{"name":"x","columns":["name","duration","shardGroupDuration","replicaN","default"],"values":[["autogen","0s","168h0m0s",1,true]]}]}]}"#;

/// A measurement of db `x` that moves to d when d joins a, b, c (RF 2), and
/// its move.
fn moving_key() -> KeyMove {
    let keys: BTreeSet<KeyId> = (0..100).map(|i| KeyId::new("x", &format!("m{i}"), None)).collect();
    let moves = plan(
        Placement { backends: &OLD, replication_factor: 2 },
        Placement { backends: &NEW, replication_factor: 2 },
        &keys,
    );
    moves.into_iter().find(|m| m.added() == ["d"]).expect("some key moves to d")
}

/// The proxy over a, b, c, d (group `main` of all four, RF 2) with the move
/// of `km` saved in its storage before it starts.
fn open_moving(
    t: &MockTransport,
    km: &KeyMove,
    single_writer: bool,
) -> Result<Proxy<MockTransport, MemStorage>, String> {
    let storage = MemStorage::new();
    let options = RebalanceOptions { single_writer: true, ..RebalanceOptions::default() };
    run(Rebalance::start(&storage, "main", None, vec![km.clone()], options))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        r#"{{
            "backends": {{ "a": {{ "url": "http://127.0.0.1:1" }}, "b": {{ "url": "http://127.0.0.1:2" }},
                           "c": {{ "url": "http://127.0.0.1:3" }}, "d": {{ "url": "http://127.0.0.1:4" }} }},
            "shard_groups": {{ "main": {{ "backends": ["a", "b", "c", "d"], "replication_factor": 2 }} }},
            "keymaps": {{ "_default_": "main" }},
            "rebalance_single_writer": {single_writer}
        }}"#
    );
    let config = Config::parse("test.json", &text).unwrap_or_else(|e| panic!("{e}"));
    run(Proxy::open(config, t.clone(), storage))
}

#[test]
fn a_saved_move_not_yet_verified_needs_single_writer_to_start() {
    let km = moving_key();
    let e = open_moving(&MockTransport::default(), &km, false).err().expect("refused");
    assert!(e.contains("only writer"), "{e}");
    assert!(open_moving(&MockTransport::default(), &km, true).is_ok());
}

#[test]
fn a_moving_keys_writes_reach_old_and_new_owners_reads_stay_old_deletes_wait() {
    let t = MockTransport::default();
    let km = moving_key();
    let source = km.source.clone().expect("a source");
    t.answer(&source, RP);
    let p = open_moving(&t, &km, true).unwrap_or_else(|e| panic!("{e}"));
    let m = km.key.measurement.clone();
    let mv = p.topology().moves.get("main").cloned().expect("the move is resumed");
    let line = |v: u32| format!("{m} v={v} {}\n", 1_000 + v);

    // Pending: the old owners only.
    assert_eq!(write(&p, "db=x", &line(1)).status, 204);
    for b in &km.old_owners {
        assert_eq!(t.writes(b), vec![line(1)], "old owner {b}");
    }
    assert!(t.writes("d").is_empty(), "not yet to the new owner");

    // Schema, then Copying: d gets the database first, sent to it directly.
    for _ in 0..4 {
        if mv.rebalance.phase(&km.key) == Some(crate::rebalance::Phase::Copying) {
            break;
        }
        run(p.step_moves(T0));
    }
    assert_eq!(mv.rebalance.phase(&km.key), Some(crate::rebalance::Phase::Copying));
    let d = p.topology().index_of("d").expect("d");
    let schema = t.statements("d");
    assert!(
        schema.first().is_some_and(|q| q.starts_with("CREATE DATABASE")) && schema.len() >= 2,
        "CREATE DATABASE and the retention policy sent to d: {schema:?}"
    );
    assert_eq!(p.queue_depth(d).records, 0, "nothing of the move waits in d's write queue");

    assert_eq!(write(&p, "db=x", &line(2)).status, 204);
    for b in &km.old_owners {
        assert_eq!(t.writes(b).last(), Some(&line(2)), "old owner {b}");
    }
    assert_eq!(t.writes("d"), vec![line(2)], "the live write sent to d, after its schema");
    assert_eq!(p.queue_depth(d).records, 0);
    assert_eq!(mv.rebalance.live_writes_held(), 0, "the source acknowledged it: answered and dropped");

    // Reads: old owners only.
    let before = t.statements("d").len();
    assert_eq!(query_db_x(&p, &format!("SELECT * FROM {m}")).status, 200);
    assert_eq!(t.statements("d").len(), before, "d is not read before the key is verified");

    // A delete could be undone by a chunk read before it.
    let r = query_db_x(&p, &format!("DELETE FROM {m} WHERE time < 5"));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("being moved"), "{}", error_of(&r));
    // So could one of every measurement (issue 9: no FROM, or a regex).
    let sent = (t.statements("d").len(), t.statements("a").len());
    for q in ["DELETE WHERE time < 5", "DROP SERIES FROM /./ WHERE host = 'h'"] {
        let r = query_db_x(&p, q);
        assert_eq!(r.status, 400, "{q}");
        assert!(error_of(&r).contains("is being moved between backends"), "{q}: {}", error_of(&r));
    }
    assert_eq!((t.statements("d").len(), t.statements("a").len()), sent, "nothing sent");

    let h: serde_json::Value = serde_json::from_slice(&p_get(&p, "/health").body).unwrap_or_default();
    assert_eq!(h["rebalance"][0]["keys_moving"], 1, "{h}");
    let metrics = String::from_utf8_lossy(&p_get(&p, "/metrics").body).into_owned();
    assert!(
        metrics.contains("influx_proxy_rebalance_keys{group=\"main\",state=\"moving\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn cleanup_and_resync_are_loopback_only() {
    let t = MockTransport::default();
    let p = open_moving(&t, &moving_key(), true).unwrap_or_else(|e| panic!("{e}"));
    for path in ["/cleanup", "/resync"] {
        let mut request = Request::new(Method::Post, path);
        request.peer = Some("192.0.2.1".parse().expect("an address"));
        assert_eq!(run(p.handle(request, T0)).status, 403, "{path}");
    }
    let mut request = Request::new(Method::Post, "/cleanup");
    request.query = vec![("group".into(), "main".into())];
    request.peer = Some("127.0.0.1".parse().expect("an address"));
    let r = run(p.handle(request, T0));
    assert_eq!(r.status, 400, "cleanup while keys move");
    assert!(error_of(&r).contains("still moving"), "{}", error_of(&r));
}

fn query_db_x(p: &Proxy<MockTransport, MemStorage>, q: &str) -> Response {
    let mut request = Request::new(Method::Get, "/query");
    request.query = vec![("q".into(), q.into()), ("db".into(), "x".into())];
    run(p.handle(request, T0))
}

fn p_get(p: &Proxy<MockTransport, MemStorage>, path: &str) -> Response {
    run(p.handle(Request::new(Method::Get, path), T0))
}

#[test]
fn a_reload_moving_two_groups_refused_for_the_second_saves_no_move_of_the_first() {
    let t = MockTransport::default();
    let text = |g1: &str, g2: &str| {
        format!(
            r#"{{
                "backends": {{ "a": {{ "url": "http://127.0.0.1:1" }}, "b": {{ "url": "http://127.0.0.1:2" }},
                               "c": {{ "url": "http://127.0.0.1:3" }}, "d": {{ "url": "http://127.0.0.1:4" }},
                               "e": {{ "url": "http://127.0.0.1:5" }} }},
                "shard_groups": {{ "g1": {{ "backends": {g1}, "replication_factor": 1 }},
                                   "g2": {{ "backends": {g2}, "replication_factor": 1 }} }},
                "keymaps": {{ "cpu": "g1", "_default_": "g2" }},
                "rebalance_single_writer": true
            }}"#
        )
    };
    let first = text(r#"["a", "b"]"#, r#"["d", "e"]"#);
    let config = Config::parse("test.json", &first).unwrap_or_else(|e| panic!("{e}"));
    let mut p = run(Proxy::open(config, t.clone(), MemStorage::new())).unwrap_or_else(|e| panic!("{e}"));
    let file = Rc::new(RefCell::new(text(r#"["a", "b", "c"]"#, r#"["c", "d", "e"]"#)));
    let read = file.clone();
    p.set_config_file("test.json".into(), Rc::new(move |_| Ok(read.borrow().clone())));
    // g2's keys cannot be listed: e does not answer.
    t.set("e", Behaviour::Down);
    let e = run(p.reload_file(1_700_000_000_000)).expect_err("refused");
    assert!(e.contains("g2") || e.contains("\"e\"") || e.contains(" e"), "{e}");
    assert_eq!(p.topology().generation(), 1, "the old configuration keeps serving");
    assert!(p.topology().moves.is_empty(), "no move installed");
    let files = p.storage.snapshot();
    assert!(
        files.keys().all(|path| !path.starts_with("rebalance/")),
        "a refused reload leaves no move saved: {:?}",
        files.keys().collect::<Vec<_>>()
    );
}
