use super::*;
use crate::storage::MemStorage;
use futures_lite::future::block_on;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};

const DIR: &str = "queue/a";
/// The push time given to every push (ms since the epoch).
const NOW: u64 = 1_700_000_000_000;

fn options(max_bytes: u64, segment_bytes: u64) -> QueueOptions {
    QueueOptions { max_bytes, segment_bytes, dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES }
}

/// A write whose frame has the same size for every `i` < 10000.
fn write(i: usize) -> Record {
    Record::Write {
        db: "telegraf".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: format!("cpu,host=h{i:04} value={i:04}i\n").into_bytes().into(),
    }
}

fn frame_size() -> u64 {
    WriteQueue::record_bytes(&write(0))
}

fn open<S: Storage>(storage: &S, options: QueueOptions) -> WriteQueue {
    block_on(WriteQueue::open_with(storage, DIR, options)).expect("open")
}

/// A restart after a crash: a new storage with exactly the files on "disk".
fn restart(storage: &MemStorage) -> MemStorage {
    MemStorage::from_snapshot(storage.snapshot())
}

fn push<S: Storage>(q: &WriteQueue, s: &S, r: &Record) {
    block_on(q.push(s, r, NOW)).expect("push");
}

/// A queue opened on `s` with the writes of `range` pushed.
fn open_with_writes<S: Storage>(s: &S, o: QueueOptions, range: std::ops::Range<usize>) -> WriteQueue {
    let q = open(s, o);
    for r in writes(range) {
        push(&q, s, &r);
    }
    q
}

/// Peeks and acks everything, oldest first.
fn drain<S: Storage>(q: &WriteQueue, s: &S) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some((id, r)) = block_on(q.peek(s)).expect("peek") {
        block_on(q.ack(s, id)).expect("ack");
        out.push(r);
    }
    out
}

fn segment_files(s: &MemStorage) -> BTreeMap<String, Vec<u8>> {
    s.snapshot().into_iter().filter(|(k, _)| k.starts_with(DIR) && k.ends_with(SEGMENT_SUFFIX)).collect()
}

fn disk_bytes(s: &MemStorage) -> u64 {
    segment_files(s).values().map(|v| v.len() as u64).sum()
}

fn newest_segment(s: &MemStorage) -> String {
    segment_files(s).into_keys().next_back().expect("a segment file")
}

fn writes(range: std::ops::Range<usize>) -> Vec<Record> {
    range.map(write).collect()
}

/// A storage whose appends can be torn, delayed, and whose truncates and
/// removes can fail.
#[derive(Default)]
struct Flaky {
    inner: MemStorage,
    /// The next append writes only this many bytes, then fails.
    tear_next_append: Cell<Option<usize>>,
    /// Appends write half, yield once (a cancellation point), then the rest.
    pause_appends: Cell<bool>,
    fail_truncate: Cell<bool>,
    fail_remove: Cell<bool>,
    /// Removes yield once before removing (an unlink in flight).
    pause_removes: Cell<bool>,
    /// The next this many calls of `read_at` yield once before reading (a
    /// storage read in flight, as on a host's blocking thread).
    pause_reads: Cell<u32>,
    /// Calls of `read_at` and the bytes they returned.
    reads_at: Cell<(u64, u64)>,
    /// Calls of `append`.
    appends: Cell<u64>,
}

impl Storage for Flaky {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.inner.read(path).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if self.pause_reads.get() > 0 {
            self.pause_reads.set(self.pause_reads.get() - 1);
            futures_lite::future::yield_now().await;
        }
        let data = self.inner.read_at(path, offset, len).await?;
        let (calls, bytes) = self.reads_at.get();
        self.reads_at.set((calls + 1, bytes + data.len() as u64));
        Ok(data)
    }
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.appends.set(self.appends.get() + 1);
        if let Some(keep) = self.tear_next_append.take() {
            self.inner.append(path, data[..keep].to_vec()).await?;
            return Err(io::Error::other("disk full in the middle of an append"));
        }
        if self.pause_appends.get() {
            let half = data.len() / 2;
            self.inner.append(path, data[..half].to_vec()).await?;
            futures_lite::future::yield_now().await;
            return self.inner.append(path, data[half..].to_vec()).await;
        }
        self.inner.append(path, data).await
    }
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.inner.write_atomic(path, data).await
    }
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(path, offset, data).await
    }
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        if self.fail_truncate.get() {
            return Err(io::Error::other("truncate refused"));
        }
        self.inner.truncate(path, len).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        if self.pause_removes.get() {
            futures_lite::future::yield_now().await;
        }
        if self.fail_remove.get() {
            return Err(io::Error::other("remove refused"));
        }
        self.inner.remove(path).await
    }
    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.inner.len(path).await
    }
}

#[test]
fn records_come_back_in_push_order_across_segments() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, 4 * frame_size()));
    for r in writes(0..30) {
        push(&q, &s, &r);
    }
    assert_eq!(segment_files(&s).len(), 8, "4 records per segment");
    assert_eq!(drain(&q, &s), writes(0..30));
    assert!(q.is_empty());
}

#[test]
fn depth_counts_records_and_frame_bytes() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, 4 * frame_size()));
    assert_eq!(q.depth(), QueueDepth::default());
    for r in writes(0..10) {
        push(&q, &s, &r);
    }
    assert_eq!(q.depth(), QueueDepth { records: 10, bytes: 10 * frame_size() });
    assert_eq!(disk_bytes(&s), 10 * frame_size());
    let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
    assert_eq!(id.end - id.offset, frame_size());
    block_on(q.ack(&s, id)).unwrap();
    assert_eq!(q.depth(), QueueDepth { records: 9, bytes: 9 * frame_size() });
    // Reopening counts the same.
    let s2 = restart(&s);
    let q2 = open(&s2, options(1 << 20, 4 * frame_size()));
    assert_eq!(q2.depth(), QueueDepth { records: 9, bytes: 9 * frame_size() });
}

#[test]
fn ack_survives_restart_and_unacked_records_are_redelivered() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let q = open_with_writes(&s, o, 0..10);
    for _ in 0..5 {
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
    }
    // Record 5 is peeked (sent) but not acknowledged when the crash comes.
    let (_, peeked) = block_on(q.peek(&s)).unwrap().unwrap();
    assert_eq!(peeked, write(5));

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.depth().records, 5);
    assert!(!q2.recovery().ack_reset);
    assert_eq!(drain(&q2, &s2), writes(5..10));
}

#[test]
fn open_truncates_partial_record_cut_in_header() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let seg = newest_segment(&s);
    let torn_len = 2 * frame_size() + 5;
    s.with_files(|f| f.get_mut(&seg).unwrap().truncate(torn_len as usize));

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 5);
    assert_eq!(q2.depth(), QueueDepth { records: 2, bytes: 2 * frame_size() });
    assert_eq!(s2.snapshot()[&seg].len() as u64, 2 * frame_size(), "torn bytes cut on disk");
    assert_eq!(drain(&q2, &s2), writes(0..2));
}

#[test]
fn open_truncates_partial_record_cut_in_payload() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let seg = newest_segment(&s);
    let torn_len = 3 * frame_size() - 3;
    s.with_files(|f| f.get_mut(&seg).unwrap().truncate(torn_len as usize));

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, frame_size() - 3);
    assert_eq!(q2.dropped().bytes, frame_size() - 3);
    assert_eq!(q2.depth().records, 2);
    assert_eq!(drain(&q2, &s2), writes(0..2));
}

#[test]
fn open_drops_last_record_with_bit_flip_detected_by_crc() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let seg = newest_segment(&s);
    // Flip one bit in the body of the last record ("value=0002i" -> "value=0003i").
    let at = (3 * frame_size() - 4) as usize;
    s.with_files(|f| f.get_mut(&seg).unwrap()[at] ^= 0x01);

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, frame_size());
    assert_eq!(drain(&q2, &s2), writes(0..2), "the altered record is not delivered");
}

#[test]
fn push_after_recovery_continues_cleanly() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let seg = newest_segment(&s);
    s.with_files(|f| f.get_mut(&seg).unwrap().truncate((3 * frame_size() - 7) as usize));

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    push(&q2, &s2, &write(100));
    push(&q2, &s2, &write(101));
    let s3 = restart(&s2);
    let q3 = open(&s3, o);
    assert_eq!(q3.recovery().truncated_bytes, 0, "no garbage between old and new records");
    assert_eq!(drain(&q3, &s3), vec![write(0), write(1), write(100), write(101)]);
}

#[test]
fn push_is_refused_when_full_and_accepted_after_acks() {
    let s = MemStorage::new();
    let q = open(&s, options(3 * frame_size(), 2 * frame_size()));
    for r in writes(0..3) {
        push(&q, &s, &r);
    }
    assert_eq!(block_on(q.push(&s, &write(3), NOW)), Err(QueueError::Full { max_bytes: 3 * frame_size() }));
    assert_eq!(q.depth().records, 3, "a refused write is not kept");
    let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.ack(&s, id)).unwrap();
    push(&q, &s, &write(3));
    assert_eq!(drain(&q, &s), writes(1..4));
    // A record larger than the whole queue is refused outright.
    let huge = Record::Write {
        db: "db".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: vec![b'x'; 4 * frame_size() as usize].into(),
    };
    assert!(matches!(block_on(q.push(&s, &huge, NOW)), Err(QueueError::Full { .. })));
}

#[test]
fn failed_append_keeps_nothing_and_queue_stays_usable() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    push(&q, &s, &write(0));
    s.fail_appends(true);
    assert!(matches!(block_on(q.push(&s, &write(1), NOW)), Err(QueueError::Io(_))));
    assert_eq!(q.depth().records, 1);
    s.fail_appends(false);
    push(&q, &s, &write(2));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 0);
    assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
}

#[test]
fn torn_append_is_rolled_back_so_no_partial_record_stays() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    push(&q, &s, &write(0));
    s.tear_next_append.set(Some(7));
    assert!(matches!(block_on(q.push(&s, &write(1), NOW)), Err(QueueError::Io(_))));
    assert_eq!(disk_bytes(&s.inner), frame_size(), "partial bytes cut");
    push(&q, &s, &write(2));
    let s2 = restart(&s.inner);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 0);
    assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
}

#[test]
fn torn_append_that_cannot_be_cut_seals_the_segment() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    push(&q, &s, &write(0));
    s.fail_truncate.set(true);
    s.tear_next_append.set(Some(7));
    assert!(block_on(q.push(&s, &write(1), NOW)).is_err());
    push(&q, &s, &write(2));
    assert_eq!(segment_files(&s.inner).len(), 2, "the next record went to a new segment");
    // The running queue never reads the garbage.
    let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
    assert_eq!(r, write(0));
    block_on(q.ack(&s, id)).unwrap();
    let (_, r) = block_on(q.peek(&s)).unwrap().unwrap();
    assert_eq!(r, write(2));
    // Neither does a restarted one.
    s.fail_truncate.set(false);
    let s2 = restart(&s.inner);
    let q2 = open(&s2, o);
    assert_eq!(drain(&q2, &s2), vec![write(2)]);
}

#[test]
fn cancelled_push_leaves_no_partial_record() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    push(&q, &s, &write(0));
    s.pause_appends.set(true);
    {
        let record = write(1);
        let mut fut = Box::pin(q.push(&s, &record, NOW));
        assert!(block_on(futures_lite::future::poll_once(&mut fut)).is_none(), "stopped mid-append");
        // Dropped here: the host gave up on the request.
    }
    assert!(disk_bytes(&s.inner) > frame_size(), "half a record on disk");
    s.pause_appends.set(false);
    push(&q, &s, &write(2));
    let s2 = restart(&s.inner);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 0);
    assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
}

/// Polls `fut` once: `Some` when it finished without waiting.
fn ready<F: std::future::Future>(fut: F) -> Option<F::Output> {
    block_on(futures_lite::future::poll_once(Box::pin(fut)))
}

#[test]
fn replay_reads_and_acknowledges_while_a_push_is_being_written() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..2);
    s.pause_appends.set(true);
    let record = write(2);
    let mut pushing = Box::pin(q.push(&s, &record, NOW));
    assert!(block_on(futures_lite::future::poll_once(&mut pushing)).is_none(), "stopped mid-append");
    // The append in flight holds up neither a peek nor an ack, and what they
    // see ends before the bytes being written.
    let (id, head) = ready(q.peek(&s)).expect("peek waited for the append").expect("peek").expect("a record");
    assert_eq!(head, write(0));
    ready(q.ack(&s, id)).expect("ack waited for the append").expect("ack");
    let batch = ready(q.peek_batch(&s, 1 << 20, 100)).expect("peek_batch waited").expect("peek_batch");
    assert_eq!(batch.expect("a batch").ids.len(), 1, "only write(1): write(2) is not written yet");
    assert_eq!(q.depth().records, 1);
    block_on(pushing).expect("push");
    assert_eq!(q.depth().records, 2);
    assert_eq!(drain(&q, &s), writes(1..3));
}

#[test]
fn a_queue_drained_while_a_push_is_being_written_keeps_that_record() {
    // Into the same segment, and into a new one (one record per segment):
    // the drain must neither remove the file being appended to nor move the
    // acknowledged position past the new segment (the next open would delete
    // it as acknowledged).
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, frame_size()] {
        let s = Flaky::default();
        let o = options(1 << 20, segment_bytes);
        let q = open_with_writes(&s, o, 0..1);
        s.pause_appends.set(true);
        let record = write(1);
        let mut pushing = Box::pin(q.push(&s, &record, NOW));
        assert!(block_on(futures_lite::future::poll_once(&mut pushing)).is_none(), "stopped mid-append");
        let (id, _) = ready(q.peek(&s)).expect("peek waited").expect("peek").expect("write(0)");
        ready(q.ack(&s, id)).expect("ack waited").expect("ack");
        assert!(q.is_empty());
        block_on(pushing).expect("push");
        s.pause_appends.set(false);
        assert_eq!(q.depth().records, 1, "segment_bytes {segment_bytes}");
        // What a crash now would leave: the record is still there.
        let s2 = restart(&s.inner);
        assert_eq!(
            drain(&open(&s2, o), &s2),
            vec![write(1)],
            "after a restart, segment_bytes {segment_bytes}"
        );
        assert_eq!(drain(&q, &s), vec![write(1)], "segment_bytes {segment_bytes}");
        // Drained with nothing in flight: compacted as before.
        assert_eq!(segment_files(&s.inner).len(), 0, "segment_bytes {segment_bytes}");
        push(&q, &s, &write(2));
        let s3 = restart(&s.inner);
        assert_eq!(drain(&open(&s3, o), &s3), vec![write(2)], "segment_bytes {segment_bytes}");
    }
}

#[test]
fn pushes_waiting_behind_an_append_are_written_together_in_order() {
    // One segment for all; and segments of two records, so that the waiting
    // records are split across the end of a segment (one append per segment).
    for (segment_bytes, appends) in [(DEFAULT_SEGMENT_BYTES, 2), (2 * frame_size(), 3)] {
        let s = Flaky::default();
        // Room for four records: the fifth push is refused, the others not.
        let o = options(4 * frame_size(), segment_bytes);
        let q = open(&s, o);
        s.pause_appends.set(true);
        let records: Vec<Record> = (0..5).map(write).collect();
        let mut pushes: Vec<_> = records.iter().map(|r| Box::pin(q.push(&s, r, NOW))).collect();
        for p in &mut pushes {
            assert!(block_on(futures_lite::future::poll_once(p)).is_none(), "waiting");
        }
        let results: Vec<_> = pushes.into_iter().map(block_on).collect();
        assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
        assert!(matches!(results[4], Err(QueueError::Full { .. })), "{results:?}");
        assert_eq!(s.appends.get(), appends, "segment_bytes {segment_bytes}: one append per segment");
        assert_eq!(q.depth().records, 4);
        s.pause_appends.set(false);
        let s2 = restart(&s.inner);
        assert_eq!(drain(&open(&s2, o), &s2), writes(0..4), "after a restart, segment_bytes {segment_bytes}");
        assert_eq!(drain(&q, &s), writes(0..4), "segment_bytes {segment_bytes}");
    }
}

#[test]
fn a_push_cancelled_while_writing_others_records_leaves_them_to_the_next() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    s.pause_appends.set(true);
    let records: Vec<Record> = (0..3).map(write).collect();
    let mut first = Box::pin(q.push(&s, &records[0], NOW));
    assert!(block_on(futures_lite::future::poll_once(&mut first)).is_none(), "mid-append");
    let mut second = Box::pin(q.push(&s, &records[1], NOW));
    let mut third = Box::pin(q.push(&s, &records[2], NOW));
    assert!(block_on(futures_lite::future::poll_once(&mut second)).is_none(), "waiting");
    assert!(block_on(futures_lite::future::poll_once(&mut third)).is_none(), "waiting");
    block_on(first).expect("first push");
    // The second push writes both waiting records, and is cancelled
    // half-way through that append.
    assert!(block_on(futures_lite::future::poll_once(&mut second)).is_none(), "mid-append");
    drop(second);
    s.pause_appends.set(false);
    // The third record was not lost with it: its own push writes it (after
    // cutting the half-written append back) and says so.
    block_on(third).expect("third push");
    assert_eq!(s.appends.get(), 3, "the first's, the cancelled one of both, the third's");
    assert_eq!(q.depth().records, 2);
    let expected = vec![write(0), write(2)];
    let s2 = restart(&s.inner);
    assert_eq!(drain(&open(&s2, o), &s2), expected, "after a restart");
    assert_eq!(drain(&q, &s), expected);
}

#[test]
fn consumed_segments_are_deleted_and_disk_use_shrinks() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let q = open_with_writes(&s, o, 0..16);
    assert_eq!(segment_files(&s).len(), 4);
    let mut last = disk_bytes(&s);
    for i in 0..16 {
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        assert_eq!(r, write(i));
        block_on(q.ack(&s, id)).unwrap();
        let now = disk_bytes(&s);
        assert!(now <= last);
        if i % 4 == 3 {
            assert!(now < last, "segment freed after record {i}");
        }
        last = now;
    }
    assert_eq!(segment_files(&s).len(), 0, "a drained queue keeps no segment");
    // The queue goes on after compaction, also across a restart.
    push(&q, &s, &write(16));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(drain(&q2, &s2), vec![write(16)]);
}

#[test]
fn segments_left_by_a_failed_remove_are_deleted_on_open() {
    let s = Flaky::default();
    let o = options(1 << 20, 2 * frame_size());
    let q = open_with_writes(&s, o, 0..6);
    s.fail_remove.set(true);
    for _ in 0..4 {
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
    }
    assert_eq!(segment_files(&s.inner).len(), 3);
    s.fail_remove.set(false);
    let s2 = restart(&s.inner);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().removed_segments, 2);
    assert_eq!(segment_files(&s2).len(), 1);
    assert_eq!(drain(&q2, &s2), writes(4..6));
}

#[test]
fn damaged_record_in_the_middle_is_skipped_when_the_next_one_is_valid() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..4);
    let seg = newest_segment(&s);
    let at = (2 * frame_size() - 4) as usize; // body of record 1
    s.with_files(|f| f.get_mut(&seg).unwrap()[at] ^= 0x10);
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().corrupt_records, 1);
    assert_eq!(q2.recovery().truncated_bytes, 0);
    assert_eq!(drain(&q2, &s2), vec![write(0), write(2), write(3)]);
    assert_eq!(q2.dropped(), QueueDepth { records: 1, bytes: frame_size() });
    assert_eq!(q2.depth(), QueueDepth::default());
}

#[test]
fn damaged_header_in_the_middle_cuts_the_rest_of_that_segment_only() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let _q = open_with_writes(&s, o, 0..8);
    let first = segment_files(&s).into_keys().next().unwrap();
    let at = frame_size() as usize; // magic byte of record 1
    s.with_files(|f| f.get_mut(&first).unwrap()[at] = 0);
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 3 * frame_size());
    assert_eq!(drain(&q2, &s2), vec![write(0), write(4), write(5), write(6), write(7)]);
}

#[test]
fn damage_appearing_under_a_running_queue_is_skipped_by_peek() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..3);
    let seg = newest_segment(&s);
    s.with_files(|f| f.get_mut(&seg).unwrap()[5] ^= 0xff); // length of record 0
    assert_eq!(block_on(q.peek(&s)).unwrap(), None, "the segment cannot be read past the damage");
    assert_eq!(q.dropped().records, 3);
    assert!(q.is_empty());
    // New records go to a fresh segment and are delivered.
    push(&q, &s, &write(9));
    assert_eq!(drain(&q, &s), vec![write(9)]);
}

#[test]
fn damaged_ack_file_replays_from_the_oldest_record() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..3);
    let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.ack(&s, id)).unwrap();
    s.with_files(|f| {
        let ack = f.get_mut(&format!("{DIR}/{ACK_FILE}")).unwrap();
        // Both slots.
        ack[6] ^= 1;
        ack[ACK_SLOT_BYTES + 6] ^= 1;
    });
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert!(q2.recovery().ack_reset);
    assert_eq!(drain(&q2, &s2), writes(0..3), "duplicates rather than loss");
}

#[test]
fn ack_of_an_acked_id_is_a_no_op_and_of_a_later_id_an_error() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    for r in writes(0..3) {
        push(&q, &s, &r);
    }
    let (first, _) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.ack(&s, first)).unwrap();
    block_on(q.ack(&s, first)).unwrap();
    assert_eq!(q.depth().records, 2, "a second ack removes nothing");
    let (second, _) = block_on(q.peek(&s)).unwrap().unwrap();
    let third = RecordId {
        segment: second.segment,
        offset: second.end,
        end: second.end + frame_size(),
        pushed_ms: Some(NOW),
    };
    assert!(matches!(block_on(q.ack(&s, third)), Err(QueueError::Io(_))));
    let wrong_end = RecordId { end: second.end + 1, ..second };
    assert!(block_on(q.ack(&s, wrong_end)).is_err());
    assert_eq!(q.depth().records, 2);
    // An ack without a preceding peek is checked against the file.
    let s2 = restart(&s);
    let q2 = open(&s2, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    block_on(q2.ack(&s2, second)).unwrap();
    assert_eq!(drain(&q2, &s2), vec![write(2)]);
}

#[test]
fn failed_ack_write_changes_nothing() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    push(&q, &s, &write(0));
    let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
    s.fail_appends(true);
    assert!(block_on(q.ack(&s, id)).is_err());
    s.fail_appends(false);
    assert_eq!(q.depth().records, 1);
    assert_eq!(block_on(q.peek(&s)).unwrap().unwrap().1, write(0));
}

#[test]
fn dead_letters_are_json_lines_counted_across_restart() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    let statement = Record::Statement {
        db: Some("telegraf".into()),
        q: "CREATE RETENTION POLICY \"x\" ON telegraf".into(),
        credentials: Credentials { password: Some("secret".into()), ..Default::default() },
    };
    push(&q, &s, &write(0));
    push(&q, &s, &statement);
    push(&q, &s, &write(2));
    let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.dead_letter(&s, id, &r, "400 unable to parse", 1_700_000_000_000)).unwrap();
    let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.dead_letter(&s, id, &r, "400 error parsing query", 1_700_000_000_001)).unwrap();
    // Dead-lettering an id twice writes one line.
    block_on(q.dead_letter(&s, id, &r, "again", 1)).unwrap();
    assert_eq!(q.dead_letters(), 2);
    assert_eq!(q.depth().records, 1);

    let file = s.snapshot()[&format!("{DIR}/{DEAD_LETTER_FILE}")].clone();
    let text = String::from_utf8(file).unwrap();
    assert!(!text.contains("secret"), "credentials are not written");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({"time_ms": 1_700_000_000_000u64, "reason": "400 unable to parse",
            "db": "telegraf", "rp": null, "precision": null, "body": "cpu,host=h0000 value=0000i\n"})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"time_ms": 1_700_000_000_001u64, "reason": "400 error parsing query",
            "db": "telegraf", "q": "CREATE RETENTION POLICY \"x\" ON telegraf"})
    );

    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.dead_letters(), 2);
    assert_eq!(drain(&q2, &s2), vec![write(2)]);
}

#[test]
fn torn_dead_letter_line_is_cut_on_open() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    push(&q, &s, &write(0));
    push(&q, &s, &write(1));
    let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.dead_letter(&s, id, &r, "400", 1)).unwrap();
    let path = format!("{DIR}/{DEAD_LETTER_FILE}");
    s.with_files(|f| f.get_mut(&path).unwrap().extend_from_slice(b"{\"time_ms\":2,\"rea"));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.dead_letters(), 1);
    assert_eq!(q2.recovery().dead_letter_truncated_bytes, 17);
    let (id, r) = block_on(q2.peek(&s2)).unwrap().unwrap();
    block_on(q2.dead_letter(&s2, id, &r, "404 database not found", 2)).unwrap();
    let text = String::from_utf8(s2.snapshot()[&path].clone()).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn dead_letter_file_stops_growing_at_its_cap() {
    let s = MemStorage::new();
    let o = QueueOptions { dead_letter_max_bytes: 150, ..options(1 << 20, DEFAULT_SEGMENT_BYTES) };
    let q = open_with_writes(&s, o, 0..5);
    for _ in 0..5 {
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.dead_letter(&s, id, &r, "400", 1)).unwrap();
    }
    assert_eq!(q.dead_letters(), 5);
    assert!(q.is_empty());
    let len = s.snapshot()[&format!("{DIR}/{DEAD_LETTER_FILE}")].len();
    assert!(len > 0 && len <= 150, "dead-letter file is {len} bytes");
}

#[test]
fn body_keeps_its_trailing_newline_and_gets_one_if_missing() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    let with = |body: &[u8]| Record::Write {
        db: "db".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: body.into(),
    };
    push(&q, &s, &with(b"a v=1 1\nb v=2 2\n"));
    push(&q, &s, &with(b"c v=3 3"));
    push(&q, &s, &with(b""));
    let got = drain(&q, &s);
    assert_eq!(got, vec![with(b"a v=1 1\nb v=2 2\n"), with(b"c v=3 3\n"), with(b"")]);
}

#[test]
fn credentials_precision_and_statements_round_trip_across_restart() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    let creds = Credentials {
        username: Some("écrivain".into()),
        password: Some("p@ss:word".into()),
        authorization: Some("Token abc==".into()),
    };
    let records = vec![
        Record::Write {
            db: "metrics".into(),
            rp: Some("one_week".into()),
            precision: Some("ms".into()),
            credentials: creds.clone(),
            body: b"cpu value=1 1700000000000\n".to_vec().into(),
        },
        Record::Statement { db: None, q: "CREATE DATABASE \"metrics\"".into(), credentials: creds },
        Record::Statement {
            db: Some("metrics".into()),
            q: "DROP MEASUREMENT cpu".into(),
            credentials: Credentials::default(),
        },
        Record::Write {
            db: String::new(),
            rp: None,
            precision: Some("n".into()),
            credentials: Credentials { username: Some(String::new()), ..Default::default() },
            body: vec![0xff, 0xfe, b'\n'].into(),
        },
    ];
    for r in &records {
        push(&q, &s, r);
    }
    assert_eq!(q.depth().bytes, records.iter().map(WriteQueue::record_bytes).sum::<u64>());
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(drain(&q2, &s2), records);
}

#[test]
fn open_creates_an_empty_queue_and_ignores_other_files() {
    let s = MemStorage::new();
    s.with_files(|f| {
        f.insert(format!("{DIR}/notes.txt"), b"hello".to_vec());
        f.insert(format!("{DIR}/7.seg"), b"not a segment name".to_vec());
        f.insert(format!("{DIR}/ack.tmp"), b"x".to_vec());
    });
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    assert!(q.is_empty());
    assert_eq!(block_on(q.peek(&s)).unwrap(), None);
    assert_eq!(q.recovery(), &Recovery::default());
    push(&q, &s, &write(0));
    assert_eq!(drain(&q, &s), vec![write(0)]);
}

#[test]
fn new_segments_are_never_covered_by_an_old_ack_position() {
    // Ack points into segment 3 at offset > 0 but segment 3 is gone (e.g.
    // deleted by hand): a new segment must not be numbered 3.
    let s = MemStorage::new();
    s.with_files(|f| {
        f.insert(format!("{DIR}/{ACK_FILE}"), encode_ack_v1(3, 2 * frame_size()));
    });
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(drain(&q2, &s2), writes(0..3));
}

/// Random push/peek/ack/dead-letter/restart/crash sequences against a
/// `VecDeque` model.
#[test]
fn random_operations_match_a_fifo_model() {
    for seed in [1, 2, 3, 42, 2024] {
        run_model(seed, 3000);
    }
}

fn random_record(rng: &mut fastrand::Rng) -> Record {
    let text = |rng: &mut fastrand::Rng, n: usize| -> String { (0..n).map(|_| rng.alphanumeric()).collect() };
    let credentials = if rng.bool() {
        Credentials::default()
    } else {
        Credentials { username: Some(text(rng, 4)), password: Some(text(rng, 6)), authorization: None }
    };
    if rng.u8(..10) == 0 {
        Record::Statement {
            db: rng.bool().then(|| text(rng, 3)),
            q: format!("DROP SERIES FROM {}", text(rng, 5)),
            credentials,
        }
    } else {
        let n = rng.usize(0..150);
        let mut body = text(rng, n).into_bytes();
        if rng.bool() {
            body.push(b'\n');
        }
        Record::Write {
            db: text(rng, 4),
            rp: rng.bool().then(|| text(rng, 2)),
            precision: rng.bool().then(|| "s".to_string()),
            credentials,
            body: body.into(),
        }
    }
}

/// The record as the queue gives it back (body newline-terminated).
fn normalized(r: &Record) -> Record {
    let mut r = r.clone();
    if let Record::Write { body, .. } = &mut r {
        if needs_newline(body) {
            *body = [&body[..], b"\n"].concat().into();
        }
    }
    r
}

fn run_model(seed: u64, ops: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let o = QueueOptions { max_bytes: 3000, segment_bytes: 400, dead_letter_max_bytes: 100_000 };
    let mut s = MemStorage::new();
    let mut q = open(&s, o);
    let mut model: VecDeque<Record> = VecDeque::new();
    let mut dead = 0u64;
    // Dead letters whose line is in the file (counted again on open); on a
    // full disk a dead letter may be counted without its line.
    let mut dead_on_disk = 0u64;
    let dl_len = |s: &MemStorage| s.snapshot().get(&format!("{DIR}/{DEAD_LETTER_FILE}")).map_or(0, Vec::len);
    let mut last_acked: Option<RecordId> = None;
    let mut largest = 0u64;
    // Disk full: the capacity is the bytes in use plus this slack.
    let mut full: Option<u64> = None;
    for step in 0..ops {
        let ctx = format!("seed {seed} step {step}");
        if rng.u8(..100) < 4 {
            full = match full {
                Some(_) => None,
                None => Some(rng.u64(0..200)),
            };
            s.set_capacity(full.map(|slack| s.used_bytes() + slack));
        }
        let op = rng.u8(..100);
        match op {
            0..=44 => {
                let r = random_record(&mut rng);
                let size = WriteQueue::record_bytes(&r);
                largest = largest.max(size);
                let model_bytes: u64 = model.iter().map(WriteQueue::record_bytes).sum();
                let result = block_on(q.push(&s, &r, NOW));
                if model_bytes + size > o.max_bytes {
                    assert_eq!(result, Err(QueueError::Full { max_bytes: o.max_bytes }), "{ctx}");
                } else if full.is_some() {
                    match result {
                        Ok(()) => model.push_back(normalized(&r)),
                        Err(QueueError::Io(e)) => assert!(e.contains("No space left"), "{ctx}: {e}"),
                        Err(e) => panic!("{ctx}: {e}"),
                    }
                } else {
                    assert_eq!(result, Ok(()), "{ctx}");
                    model.push_back(normalized(&r));
                }
            }
            45..=82 => {
                let got = block_on(q.peek(&s)).expect(&ctx);
                assert_eq!(got.as_ref().map(|(_, r)| r), model.front(), "{ctx}");
                if let (Some((id, _)), true) = (got, op < 75) {
                    block_on(q.ack(&s, id)).expect(&ctx);
                    model.pop_front();
                    last_acked = Some(id);
                }
            }
            83..=86 => {
                if let Some((id, r)) = block_on(q.peek(&s)).expect(&ctx) {
                    let before = dl_len(&s);
                    block_on(q.dead_letter(&s, id, &r, "400 bad", step as u64)).expect(&ctx);
                    dead_on_disk += u64::from(dl_len(&s) > before);
                    assert_eq!(Some(r), model.pop_front(), "{ctx}");
                    dead += 1;
                    last_acked = Some(id);
                }
            }
            87..=92 => {
                s = restart(&s);
                s.set_capacity(full.map(|slack| s.used_bytes() + slack));
                q = open(&s, o);
                dead = dead_on_disk;
                assert_eq!(q.recovery().truncated_bytes, 0, "{ctx}");
                last_acked = None;
            }
            93..=96 => {
                // Crash in the middle of an append to the newest segment.
                if let Some(seg) = segment_files(&s).into_keys().next_back() {
                    let frame = encode_frame(&random_record(&mut rng), NOW).unwrap();
                    let keep = rng.usize(1..frame.len());
                    s.with_files(|f| f.get_mut(&seg).unwrap().extend_from_slice(&frame[..keep]));
                    s = restart(&s);
                    s.set_capacity(full.map(|slack| s.used_bytes() + slack));
                    q = open(&s, o);
                    dead = dead_on_disk;
                    assert_eq!(q.recovery().truncated_bytes, keep as u64, "{ctx}");
                    last_acked = None;
                }
            }
            _ => {
                if let Some(id) = last_acked {
                    block_on(q.ack(&s, id)).expect(&ctx);
                }
            }
        }
        let bytes: u64 = model.iter().map(WriteQueue::record_bytes).sum();
        assert_eq!(q.depth(), QueueDepth { records: model.len() as u64, bytes }, "{ctx}");
        assert_eq!(q.dead_letters(), dead, "{ctx}");
        let empty: Vec<String> =
            segment_files(&s).into_iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| k).collect();
        assert!(empty.is_empty(), "{ctx}: empty segment files {empty:?}");
        assert!(
            disk_bytes(&s) <= bytes + o.segment_bytes.max(largest),
            "{ctx}: {} bytes of segments for {bytes} waiting",
            disk_bytes(&s)
        );
    }
    assert_eq!(drain(&q, &s), Vec::from(model), "seed {seed}: acks need no free space");
}

// Disk full (ENOSPC), modelled by `MemStorage::set_capacity`.

/// Names of the segment files on "disk".
fn segment_names(s: &MemStorage) -> Vec<String> {
    segment_files(s).into_keys().collect()
}

#[test]
fn disk_full_queue_still_drains_because_acks_need_no_free_space() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let q = open_with_writes(&s, o, 0..10);
    s.set_capacity(Some(s.used_bytes()));
    assert!(block_on(q.push(&s, &write(10), NOW)).is_err(), "the disk is full");
    assert_eq!(drain(&q, &s), writes(0..10), "every ack succeeds with 0 bytes free");
    assert!(q.is_empty());
    assert_eq!(segment_names(&s), Vec::<String>::new(), "consumed segments removed");
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert!(q2.is_empty(), "the acks were durable: nothing is replayed again");
}

#[test]
fn refused_push_on_a_full_disk_leaves_no_segment_file() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    s.set_capacity(Some(s.used_bytes()));
    for i in 0..18 {
        let e = block_on(q.push(&s, &write(i), NOW)).unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
    }
    assert_eq!(segment_names(&s), Vec::<String>::new(), "no empty segment left behind");
    assert!(q.is_empty());
}

#[test]
fn partial_append_on_a_full_disk_is_cut_back() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..2);
    let before = segment_files(&s);
    // Room for half a frame: the append writes that much, then fails.
    s.set_capacity(Some(s.used_bytes() + frame_size() / 2));
    assert!(block_on(q.push(&s, &write(2), NOW)).is_err());
    assert_eq!(segment_files(&s), before, "no partial record stays");
    // A new segment's partial first record is removed with its file.
    let q2 = open(&s, options(1 << 20, 2 * frame_size()));
    assert!(block_on(q2.push(&s, &write(2), NOW)).is_err());
    assert_eq!(segment_files(&s), before);
    s.set_capacity(None);
    assert_eq!(drain(&q2, &s), writes(0..2));
}

#[test]
fn pushes_are_accepted_again_once_space_frees() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let q = open_with_writes(&s, o, 0..8);
    s.set_capacity(Some(s.used_bytes()));
    assert!(block_on(q.push(&s, &write(100), NOW)).is_err());
    // Replay frees the oldest segment (4 records): room again.
    for _ in 0..4 {
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
    }
    push(&q, &s, &write(8));
    let s2 = restart(&s);
    assert_eq!(drain(&open(&s2, o), &s2), writes(4..9));
}

#[test]
fn dead_letter_on_a_full_disk_still_removes_the_record() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..2);
    s.set_capacity(Some(s.used_bytes()));
    let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
    block_on(q.dead_letter(&s, id, &r, "HTTP 400: bad", NOW)).unwrap();
    assert_eq!(q.dead_letters(), 1);
    assert_eq!(drain(&q, &s), writes(1..2), "the queue flows on");
}

/// Any failure to write the dead-letter line (here an IO error, not ENOSPC:
/// a quota, EIO, or ENOSPC as WASI reports it) still lets the record leave
/// the queue: the file is a record of refusals, never a reason to stop.
#[test]
fn dead_letter_whose_line_cannot_be_written_still_removes_the_record() {
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    for i in 0..3 {
        push(&q, &s, &write(i));
    }
    // The line's append fails half-way (not ENOSPC) and the torn tail cannot
    // be cut either.
    s.tear_next_append.set(Some(5));
    s.fail_truncate.set(true);
    for _ in 0..2 {
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.dead_letter(&s, id, &r, "HTTP 400: bad", NOW)).unwrap();
    }
    assert_eq!(q.dead_letters(), 2);
    assert_eq!(drain(&q, &s), vec![write(2)], "the queue flows on");
}

/// The `ack` file's two slots: a torn overwrite of one leaves the other.
#[test]
fn torn_ack_slot_write_falls_back_to_the_previous_position() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..5);
    for _ in 0..3 {
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
    }
    let ack_path = format!("{DIR}/{ACK_FILE}");
    assert_eq!(s.snapshot()[&ack_path].len(), 2 * ACK_SLOT_BYTES, "the ack file keeps its size");
    // Open wrote generation 1, the acks 2, 3, 4: slot 0 holds the newest.
    s.with_files(|f| f.get_mut(&ack_path).unwrap()[20..32].fill(0xEE));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert!(!q2.recovery().ack_reset, "the other slot is valid");
    assert_eq!(drain(&q2, &s2), writes(2..5), "one record again, none lost");
}

#[test]
fn version_1_ack_file_is_read_and_upgraded_in_place() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let ack_path = format!("{DIR}/{ACK_FILE}");
    let first_seq = parse_segment_name(newest_segment(&s).rsplit('/').next().unwrap()).unwrap();
    s.with_files(|f| f.insert(ack_path.clone(), encode_ack_v1(first_seq, frame_size())));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert!(!q2.recovery().ack_reset);
    assert_eq!(s2.snapshot()[&ack_path].len(), 2 * ACK_SLOT_BYTES, "upgraded on open");
    let (id, r) = block_on(q2.peek(&s2)).unwrap().unwrap();
    assert_eq!(r, write(1), "resumes after the version 1 position");
    s2.set_capacity(Some(s2.used_bytes()));
    block_on(q2.ack(&s2, id)).unwrap();
    let s3 = restart(&s2);
    assert_eq!(drain(&open(&s3, o), &s3), writes(2..3));
}

#[test]
fn push_time_is_stored_in_the_record_and_survives_restart() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    assert_eq!(q.oldest_pushed_ms(), None);
    block_on(q.push(&s, &write(0), NOW)).unwrap();
    block_on(q.push(&s, &write(1), NOW + 5_000)).unwrap();
    assert_eq!(q.oldest_pushed_ms(), Some(NOW));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.oldest_pushed_ms(), Some(NOW), "read on open");
    let (id, _) = block_on(q2.peek(&s2)).unwrap().unwrap();
    assert_eq!(id.pushed_ms, Some(NOW));
    block_on(q2.ack(&s2, id)).unwrap();
    assert_eq!(q2.oldest_pushed_ms(), Some(NOW + 5_000), "the next head's time after an ack");
    drain(&q2, &s2);
    assert_eq!(q2.oldest_pushed_ms(), None);
}

#[test]
fn version_1_records_are_still_read_without_a_push_time() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..2);
    // Rewrite the segment as version 1 frames: no push time in the payload.
    let path = newest_segment(&s);
    let mut v1 = Vec::new();
    for r in writes(0..2) {
        let v2 = encode_frame(&r, NOW).unwrap();
        let payload = &v2[HEADER + 8..];
        v1.extend_from_slice(&[RECORD_MAGIC, RECORD_VERSION_1]);
        v1.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v1.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        v1.extend_from_slice(payload);
    }
    s.with_files(|f| f.insert(path, v1));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.recovery().truncated_bytes, 0);
    let (id, r) = block_on(q2.peek(&s2)).unwrap().unwrap();
    assert_eq!((id.pushed_ms, r), (None, write(0)));
    assert_eq!(drain(&q2, &s2), writes(0..2));
}

#[test]
fn version_1_ack_file_is_upgraded_in_place_when_there_is_no_room_for_a_new_file() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..3);
    let ack_path = format!("{DIR}/{ACK_FILE}");
    let first_seq = parse_segment_name(newest_segment(&s).rsplit('/').next().unwrap()).unwrap();
    s.with_files(|f| f.insert(ack_path.clone(), encode_ack_v1(first_seq, frame_size())));
    let s2 = restart(&s);
    // Room to grow the 24-byte file to 64 in place, not for a new 64-byte file
    // (on a real file system: the slack of the file's last block).
    s2.set_capacity(Some(s2.used_bytes() + 40));
    let q2 = open(&s2, o);
    assert_eq!(s2.snapshot()[&ack_path].len(), 2 * ACK_SLOT_BYTES, "upgraded in place");
    assert_eq!(drain(&q2, &s2), writes(1..3), "and every ack on the full disk succeeds");
    let s3 = restart(&s2);
    assert!(open(&s3, o).is_empty());
}

// ---- Batches: several records peeked together, acknowledged with one ack.

/// The body of the writes of `range`, concatenated in order.
fn bodies(range: std::ops::Range<usize>) -> Vec<u8> {
    writes(range)
        .into_iter()
        .flat_map(|r| match r {
            Record::Write { body, .. } => body.to_vec(),
            Record::Statement { .. } => Vec::new(),
        })
        .collect()
}

fn ack_generation(s: &MemStorage) -> Option<u64> {
    decode_ack(&s.snapshot()[&format!("{DIR}/{ACK_FILE}")]).and_then(|a| a.generation)
}

fn peek_batch<S: Storage>(q: &WriteQueue, s: &S, max_body: u64, max_records: usize) -> Batch {
    block_on(q.peek_batch(s, max_body, max_records)).expect("peek_batch").expect("a batch")
}

#[test]
fn a_batch_holds_consecutive_writes_in_order_and_one_ack_removes_them_durably() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..10);
    let generation = ack_generation(&s);
    let batch = peek_batch(&q, &s, 1 << 20, 4);
    assert_eq!(batch.ids.len(), 4);
    let Record::Write { body, .. } = &batch.record else { panic!("a write") };
    assert_eq!(body, &bodies(0..4));
    assert_eq!(batch.record(2), Some(write(2)));
    assert_eq!(batch.body_range(1), bodies(0..1).len()..bodies(0..2).len());
    block_on(q.ack_batch(&s, &batch.ids)).unwrap();
    assert_eq!(ack_generation(&s), Some(generation.unwrap_or(0) + 1), "one acknowledgement");
    assert_eq!(q.depth(), QueueDepth { records: 6, bytes: 6 * frame_size() });
    // Acknowledging again is a no-op.
    block_on(q.ack_batch(&s, &batch.ids)).unwrap();
    assert_eq!(q.depth().records, 6);
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(drain(&q2, &s2), writes(4..10));
}

#[test]
fn a_batch_is_read_ahead_no_further_than_it_may_reach() {
    // Writes to two databases in turn (~300 KB): each batch is one record,
    // and the segment after it is not read up to the byte limit each time.
    let s = Flaky::default();
    let q = open(&s, options(64 << 20, DEFAULT_SEGMENT_BYTES));
    let other_db = |i: usize| match write(i) {
        Record::Write { rp, precision, credentials, body, .. } => {
            Record::Write { db: "other".into(), rp, precision, credentials, body }
        }
        statement => statement,
    };
    for i in 0..4000 {
        push(&q, &s, &if i % 2 == 0 { write(i) } else { other_db(i) });
    }
    s.reads_at.set((0, 0));
    let batch = peek_batch(&q, &s, 8 << 20, 10_000);
    assert_eq!(batch.record, write(0));
    let (_, bytes) = s.reads_at.get();
    assert!(bytes <= 2 * frame_size() + READ_AHEAD_MIN_BYTES, "{bytes} bytes read for one record");
    // One database: a batch up to the record limit is still read in a few
    // reads, each at most READ_AHEAD_GROWTH times as long as the batch so
    // far.
    let s = Flaky::default();
    let q = open(&s, options(64 << 20, DEFAULT_SEGMENT_BYTES));
    for i in 0..20_000 {
        push(&q, &s, &write(i % 10_000));
    }
    s.reads_at.set((0, 0));
    let batch = peek_batch(&q, &s, 8 << 20, 5000);
    assert_eq!(batch.ids.len(), 5000);
    let (calls, bytes) = s.reads_at.get();
    assert!(calls <= 5, "{calls} reads");
    let most = (1 + READ_AHEAD_GROWTH) * 5000 * frame_size() + READ_AHEAD_MIN_BYTES;
    assert!(bytes <= most, "{bytes} bytes read for 5000 records of a 1.2 MB segment");
}

#[test]
fn a_batch_stops_at_the_byte_limit_a_segment_end_and_a_record_that_cannot_share_the_request() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, 6 * frame_size()));
    for r in writes(0..3) {
        push(&q, &s, &r);
    }
    let with = |i: usize, change: &dyn Fn(&mut Record)| {
        let mut r = write(i);
        change(&mut r);
        r
    };
    let other_db = with(3, &|r| {
        if let Record::Write { db, .. } = r {
            *db = "other".into()
        }
    });
    let statement =
        Record::Statement { db: None, q: "CREATE DATABASE x".into(), credentials: Credentials::default() };
    let other_user = with(4, &|r| {
        if let Record::Write { credentials, .. } = r {
            credentials.username = Some("u".into())
        }
    });
    let other_rp = with(5, &|r| {
        if let Record::Write { rp, .. } = r {
            *rp = Some("week".into())
        }
    });
    let other_precision = with(6, &|r| {
        if let Record::Write { precision, .. } = r {
            *precision = Some("s".into())
        }
    });
    for r in [&other_db, &statement, &other_user, &other_rp, &other_precision] {
        push(&q, &s, r);
    }
    // 3 writes that share a request, then five records that each differ from
    // the one before in what a request carries: each alone.
    let one = bodies(0..1).len() as u64;
    assert_eq!(peek_batch(&q, &s, 2 * one - 1, 100).ids.len(), 1, "bodies over the limit");
    assert_eq!(peek_batch(&q, &s, 2 * one, 100).ids.len(), 2, "bodies up to the limit");
    assert_eq!(peek_batch(&q, &s, one / 2, 100).ids.len(), 1, "the head alone may be longer");
    assert_eq!(peek_batch(&q, &s, 1 << 20, 2).ids.len(), 2, "at most max_records");
    let batch = peek_batch(&q, &s, 1 << 20, 100);
    assert_eq!(batch.ids.len(), 3, "up to the other db");
    block_on(q.ack_batch(&s, &batch.ids)).unwrap();
    let mut alone = Vec::new();
    while let Some(batch) = block_on(q.peek_batch(&s, 1 << 20, 100)).unwrap() {
        assert_eq!(batch.ids.len(), 1);
        block_on(q.ack_batch(&s, &batch.ids)).unwrap();
        alone.push(batch.record);
    }
    assert_eq!(alone, vec![other_db, statement, other_user, other_rp, other_precision]);
    assert!(q.is_empty());
}

#[test]
fn a_batch_ends_at_the_segment_end() {
    let s = MemStorage::new();
    let o = options(1 << 20, 4 * frame_size());
    let q = open_with_writes(&s, o, 0..10);
    let sizes: Vec<usize> = std::iter::from_fn(|| {
        let batch = block_on(q.peek_batch(&s, 1 << 20, 100)).unwrap()?;
        block_on(q.ack_batch(&s, &batch.ids)).unwrap();
        Some(batch.ids.len())
    })
    .collect();
    assert_eq!(sizes, vec![4, 4, 2]);
}

#[test]
fn a_batch_peeked_but_not_acknowledged_before_a_crash_is_delivered_again_whole() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..6);
    let first = peek_batch(&q, &s, 1 << 20, 2);
    block_on(q.ack_batch(&s, &first.ids)).unwrap();
    // Sent, then the crash before its ack.
    let sent = peek_batch(&q, &s, 1 << 20, 3);
    assert_eq!(sent.ids.len(), 3);
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    assert_eq!(q2.depth().records, 4);
    let again = peek_batch(&q2, &s2, 1 << 20, 3);
    assert_eq!(again.record, sent.record, "the same records, in the same order");
    block_on(q2.ack_batch(&s2, &again.ids)).unwrap();
    assert_eq!(drain(&q2, &s2), writes(5..6));
}

#[test]
fn the_first_records_of_a_batch_are_acknowledged_alone_and_wrong_ids_change_nothing() {
    let s = MemStorage::new();
    let q = open_with_writes(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES), 0..5);
    let batch = peek_batch(&q, &s, 1 << 20, 5);
    // Not from the head, or not consecutive: refused.
    assert!(matches!(block_on(q.ack_batch(&s, &batch.ids[1..3])), Err(QueueError::Io(_))));
    let gap = [batch.ids[0], batch.ids[2]];
    assert!(matches!(block_on(q.ack_batch(&s, &gap)), Err(QueueError::Io(_))));
    assert_eq!(q.depth().records, 5);
    // The first two, then the third alone (as a dead letter), then the rest.
    block_on(q.ack_batch(&s, &batch.ids[..2])).unwrap();
    block_on(q.dead_letter(&s, batch.ids[2], &write(2), "HTTP 400: refused", NOW)).unwrap();
    assert_eq!(q.dead_letters(), 1);
    block_on(q.ack_batch(&s, &batch.ids)).unwrap();
    assert!(q.is_empty());
    // Ids from a fresh queue (not peeked) are checked against the frames on disk.
    let s2 = MemStorage::new();
    let q2 = open_with_writes(&s2, options(1 << 20, DEFAULT_SEGMENT_BYTES), 0..3);
    let ids = peek_batch(&q2, &s2, 1 << 20, 3).ids;
    let s3 = restart(&s2);
    let q3 = open(&s3, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    let wrong = [ids[0], RecordId { end: ids[1].end - 1, ..ids[1] }];
    assert!(matches!(block_on(q3.ack_batch(&s3, &wrong)), Err(QueueError::Io(_))));
    block_on(q3.ack_batch(&s3, &ids)).unwrap();
    assert!(q3.is_empty());
}

#[test]
fn a_damaged_record_ends_a_batch_and_is_skipped_by_the_next_peek() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open_with_writes(&s, o, 0..6);
    let seg = newest_segment(&s);
    // A payload byte of record 3 changes on disk (its CRC no longer matches).
    let at = (3 * frame_size() + RECORD_HEADER_BYTES + 12) as usize;
    s.with_files(|f| f.get_mut(&seg).unwrap()[at] ^= 0x01);
    let batch = peek_batch(&q, &s, 1 << 20, 100);
    assert_eq!(batch.ids.len(), 3);
    block_on(q.ack_batch(&s, &batch.ids)).unwrap();
    let rest = peek_batch(&q, &s, 1 << 20, 100);
    assert_eq!(rest.ids.len(), 2, "record 3 skipped");
    assert_eq!(rest.record(0), Some(write(4)));
    assert_eq!(q.dropped().records, 1);
    block_on(q.ack_batch(&s, &rest.ids)).unwrap();
    assert!(q.is_empty());
}

#[test]
fn a_batch_over_a_torn_tail_holds_the_good_records_only() {
    let s = MemStorage::new();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let _q = open_with_writes(&s, o, 0..4);
    let seg = newest_segment(&s);
    s.with_files(|f| f.get_mut(&seg).unwrap().truncate((4 * frame_size() - 3) as usize));
    let s2 = restart(&s);
    let q2 = open(&s2, o);
    let batch = peek_batch(&q2, &s2, 1 << 20, 100);
    assert_eq!(batch.ids.len(), 3);
    let Record::Write { body, .. } = &batch.record else { panic!("a write") };
    assert_eq!(body, &bodies(0..3));
}

#[test]
fn the_batch_after_one_in_flight_is_read_across_a_segment_end_and_acknowledged_in_turn() {
    // Segments of three records; batches of up to two, each read while the
    // one before it is not yet acknowledged, as pipelined replay does.
    let s = Flaky::default();
    let o = options(1 << 20, 3 * frame_size());
    let q = open(&s, o);
    for r in writes(0..8) {
        push(&q, &s, &r);
    }
    let after = |q: &WriteQueue, id: RecordId| block_on(q.peek_batch_after(&s, id, 1 << 20, 2));
    let ack = |q: &WriteQueue, batch: &Batch| {
        s.reads_at.set((0, 0));
        block_on(q.ack_batch(&s, &batch.ids)).unwrap();
        // Its frames are not read again (the new head's push time only).
        assert!(s.reads_at.get().0 <= 1, "{:?} reads to acknowledge", s.reads_at.get());
    };
    let first = peek_batch(&q, &s, 1 << 20, 2);
    assert_eq!(first.ids.len(), 2);
    // Only after the last id peeked.
    assert!(after(&q, first.ids[0]).is_none());
    let second = after(&q, first.ids[1]).expect("the record after the batch");
    assert_eq!(second.ids.len(), 1, "the end of the first segment");
    assert_eq!(second.record, write(2));
    // Nothing was consumed by reading ahead.
    assert_eq!(q.depth().records, 8);
    ack(&q, &first);
    let third = after(&q, second.ids[0]).expect("the next segment");
    assert_eq!(third.ids[0].segment, first.ids[0].segment + 1);
    assert_eq!(third.ids[0].offset, 0);
    let Record::Write { body, .. } = &third.record else { panic!("a write") };
    assert_eq!(body, &bodies(3..5));
    ack(&q, &second);
    // A crash now, with the third batch sent: it is delivered again.
    let s2 = restart(&s.inner);
    assert_eq!(drain(&open(&s2, o), &s2), writes(3..8));
    ack(&q, &third);
    assert_eq!(q.depth().records, 3);
    assert!(after(&q, third.ids[1]).is_none(), "acknowledged: no longer the last id peeked");
    let head = peek_batch(&q, &s, 1 << 20, 2);
    assert_eq!(head.record, write(5), "the end of the second segment");
    let last = after(&q, head.ids[0]).expect("the last segment");
    let Record::Write { body, .. } = &last.record else { panic!("a write") };
    assert_eq!(body, &bodies(6..8));
    assert!(after(&q, last.ids[1]).is_none(), "nothing after the tail");
    ack(&q, &head);
    ack(&q, &last);
    assert_eq!(q.depth().records, 0);
}

#[test]
fn the_batch_after_one_in_flight_is_read_while_that_one_is_acknowledged() {
    // Pipelined replay acknowledges a batch while it reads the one after the
    // next: the read must not hold the queue's lock through its storage
    // reads, or the ack (and every push) would wait for it.
    let s = Flaky::default();
    let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let q = open(&s, o);
    for r in writes(0..9) {
        push(&q, &s, &r);
    }
    let first = peek_batch(&q, &s, 1 << 20, 3);
    let second = block_on(q.peek_batch_after(&s, first.ids[2], 1 << 20, 3)).expect("the second batch");
    // The third batch's first read is in flight ...
    s.pause_reads.set(1);
    let mut third = Box::pin(q.peek_batch_after(&s, second.ids[2], 1 << 20, 3));
    assert!(block_on(futures_lite::future::poll_once(&mut third)).is_none(), "a read in flight");
    // ... while the first batch is acknowledged, and a write is pushed.
    let acked = block_on(futures_lite::future::poll_once(q.ack_batch(&s, &first.ids)));
    assert!(matches!(acked, Some(Ok(()))), "the ack does not wait for the read: {acked:?}");
    assert_eq!(q.depth().records, 6);
    let pushed = block_on(futures_lite::future::poll_once(q.push(&s, &write(9), NOW)));
    assert!(matches!(pushed, Some(Ok(_))), "nor does a push: {pushed:?}");
    let third = block_on(third).expect("the third batch");
    let Record::Write { body, .. } = &third.record else { panic!("a write") };
    assert_eq!(body, &bodies(6..9), "exactly the records after the second batch");
    block_on(q.ack_batch(&s, &second.ids)).unwrap();
    block_on(q.ack_batch(&s, &third.ids)).unwrap();
    assert_eq!(drain(&q, &s), writes(9..10));
}

#[test]
fn a_batch_read_after_one_peeked_again_meanwhile_is_not_given() {
    // Its ids would not follow the last ones peeked: it is dropped, and the
    // records are read again in turn.
    let s = Flaky::default();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    for r in writes(0..6) {
        push(&q, &s, &r);
    }
    let first = peek_batch(&q, &s, 1 << 20, 3);
    s.pause_reads.set(1);
    let mut second = Box::pin(q.peek_batch_after(&s, first.ids[2], 1 << 20, 3));
    assert!(block_on(futures_lite::future::poll_once(&mut second)).is_none(), "a read in flight");
    let again = block_on(futures_lite::future::poll_once(q.peek_batch(&s, 1 << 20, 2)));
    let again = again.expect("a new peek does not wait for the read in flight").unwrap().unwrap();
    assert_eq!(again.ids, first.ids[..2]);
    assert!(block_on(second).is_none(), "peeked again while it was read");
    block_on(q.ack_batch(&s, &again.ids)).unwrap();
    assert_eq!(drain(&q, &s), writes(2..6));
}

#[test]
fn files_left_by_an_acknowledgement_are_removed_later_and_their_records_stay_removed() {
    // Segments of two records, one batch each.
    let s = MemStorage::new();
    let o = options(1 << 20, 2 * frame_size());
    let q = open_with_writes(&s, o, 0..6);
    assert_eq!(segment_files(&s).len(), 3);
    let first = peek_batch(&q, &s, 1 << 20, 2);
    block_on(q.ack_batch_leaving_files(&s, &first.ids)).unwrap();
    assert_eq!(q.depth().records, 4, "the records are acknowledged");
    assert_eq!(segment_files(&s).len(), 3, "the consumed segment's file is left");
    // A crash now: the acknowledged records are not delivered again, and
    // the next open removes the file.
    let s2 = restart(&s);
    assert_eq!(drain(&open(&s2, o), &s2), writes(2..6));
    assert_eq!(segment_files(&s2).len(), 0);
    block_on(q.remove_consumed_segments(&s));
    assert_eq!(segment_files(&s).len(), 2, "removed");
    // Any later acknowledgement removes what was left before it too.
    let second = peek_batch(&q, &s, 1 << 20, 2);
    let third = block_on(q.peek_batch_after(&s, second.ids[1], 1 << 20, 2)).expect("the third batch");
    block_on(q.ack_batch_leaving_files(&s, &second.ids)).unwrap();
    block_on(q.ack_batch(&s, &third.ids)).unwrap();
    assert_eq!(q.depth().records, 0);
    assert_eq!(segment_files(&s).len(), 0, "the second and third segments' files are gone");
}

#[test]
fn a_removal_of_consumed_segments_cut_short_is_finished_by_the_next_one() {
    // Segments of two records; two batches acknowledged with their files
    // left, then a removal dropped after its first unlink (a replay loop
    // restarting): the next removal still removes the other file.
    let s = Flaky::default();
    let q = open(&s, options(1 << 20, 2 * frame_size()));
    for r in writes(0..6) {
        push(&q, &s, &r);
    }
    let first = peek_batch(&q, &s, 1 << 20, 2);
    let second = block_on(q.peek_batch_after(&s, first.ids[1], 1 << 20, 2)).expect("the second batch");
    block_on(q.ack_batch_leaving_files(&s, &first.ids)).unwrap();
    block_on(q.ack_batch_leaving_files(&s, &second.ids)).unwrap();
    assert_eq!(segment_files(&s.inner).len(), 3);
    s.pause_removes.set(true);
    {
        let mut removal = Box::pin(q.remove_consumed_segments(&s));
        assert!(block_on(futures_lite::future::poll_once(&mut removal)).is_none());
        assert!(block_on(futures_lite::future::poll_once(&mut removal)).is_none());
        assert_eq!(segment_files(&s.inner).len(), 2, "one file removed, then dropped");
    }
    s.pause_removes.set(false);
    block_on(q.remove_consumed_segments(&s));
    assert_eq!(segment_files(&s.inner).len(), 1, "only the segment still holding records");
    assert_eq!(drain(&q, &s), writes(4..6));
}

#[test]
fn a_batch_of_long_records_is_read_in_few_reads() {
    // 100 KB records, batches of up to 1 MiB (the write bench's shape,
    // scaled down): the head (its header, then its payload) and two reads.
    let s = Flaky::default();
    let q = open(&s, options(64 << 20, DEFAULT_SEGMENT_BYTES));
    let long = |i: usize| Record::Write {
        db: "telegraf".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: format!("m,i={i} v=\"{}\" 1\n", "x".repeat(100_000)).into_bytes().into(),
    };
    for i in 0..30 {
        push(&q, &s, &long(i));
    }
    s.reads_at.set((0, 0));
    let batch = peek_batch(&q, &s, 1 << 20, 10_000);
    assert_eq!(batch.ids.len(), 10);
    let (calls, _) = s.reads_at.get();
    assert!(calls <= 4, "{calls} reads for a batch of 10 records");
}

#[test]
fn a_kept_batch_buffer_has_room_for_any_later_batch() {
    // A first segment of short records, then one of longer ones: the buffer
    // of the first batch is reused for the second without growing (an 8 MiB
    // copy and its page faults on every batch otherwise).
    let record = |i: usize, len: usize| Record::Write {
        db: "telegraf".into(),
        rp: None,
        precision: None,
        credentials: Credentials::default(),
        body: format!("m,i={i} v=\"{}\" 1\n", "x".repeat(len)).into_bytes().into(),
    };
    let s = MemStorage::new();
    let (short, long) =
        (WriteQueue::record_bytes(&record(0, 100)), WriteQueue::record_bytes(&record(0, 150)));
    let segment_bytes = 3 * long;
    assert!(3 * short + long > segment_bytes, "the longer records start the second segment");
    let q = open(&s, options(1 << 20, segment_bytes));
    for i in 0..3 {
        push(&q, &s, &record(i, 100));
    }
    for i in 3..6 {
        push(&q, &s, &record(i, 150));
    }
    let first = peek_batch(&q, &s, 1 << 20, 3);
    assert_eq!(first.ids.len(), 3);
    block_on(q.ack_batch(&s, &first.ids)).unwrap();
    q.recycle(first);
    let capacities = q.spare_buffer_capacities();
    assert_eq!(capacities.len(), 1);
    assert!(capacities[0] as u64 >= segment_bytes, "{capacities:?}: room for a whole segment's batch");
    let second = peek_batch(&q, &s, 1 << 20, 3);
    assert_eq!(second.ids.len(), 3, "the longer records' segment");
    assert_eq!(q.spare_buffers_held(), 0, "the kept buffer holds it");
}

/// A delivered batch's buffer, kept by `recycle`, holds a later batch's
/// body: exactly that body (nothing left of the earlier, longer one), in
/// queue order; a buffer still shared is not kept; at most two are kept,
/// and none once the queue is found empty.
#[test]
fn a_recycled_batch_buffer_holds_the_next_batch_exactly_and_is_let_go_when_the_queue_drains() {
    let s = MemStorage::new();
    let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    let body = |i: usize, len: usize| -> Record {
        let line = format!("m,i={i} v={} 1\n", "x".repeat(len));
        Record::Write {
            db: "telegraf".into(),
            rp: None,
            precision: None,
            credentials: Credentials::default(),
            body: line.into_bytes().into(),
        }
    };
    // Long records first, then shorter ones: a reused buffer that kept its
    // old bytes would show them.
    let records: Vec<Record> = (0..9).map(|i| body(i, 400 - 40 * i)).collect();
    for r in &records {
        push(&q, &s, r);
    }
    let spares = || q.spare_buffers_held();
    let expected = |range: std::ops::Range<usize>| -> Vec<u8> {
        records[range]
            .iter()
            .flat_map(|r| match r {
                Record::Write { body, .. } => body.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    };
    let first = peek_batch(&q, &s, 1 << 20, 3);
    block_on(q.ack_batch(&s, &first.ids)).unwrap();
    let Record::Write { body: shared, .. } = &first.record else { panic!("a write") };
    let shared = shared.clone();
    q.recycle(first);
    assert_eq!(spares(), 0, "a buffer still shared is not kept");
    drop(shared);
    for (n, range) in [3..6, 6..9].into_iter().enumerate() {
        let batch = peek_batch(&q, &s, 1 << 20, 3);
        let Record::Write { body, .. } = &batch.record else { panic!("a write") };
        assert_eq!(body[..], expected(range.clone())[..], "batch {n}: exactly its records, in order");
        block_on(q.ack_batch(&s, &batch.ids)).unwrap();
        q.recycle(batch);
        assert_eq!(spares(), 1, "batch {n}'s buffer is kept, and taken again by the next batch");
    }
    // A third buffer is not kept.
    let extra = |i: usize| Batch { ids: vec![first_id(); 2], record: body(i, 10), ends: vec![0, 0] };
    q.recycle(extra(1));
    q.recycle(extra(2));
    assert_eq!(spares(), 2, "at most two are kept");
    assert!(block_on(q.peek_batch(&s, 1 << 20, 3)).unwrap().is_none(), "drained");
    assert_eq!(spares(), 0, "let go once the queue is found empty");
}

/// Any id (only the count of a batch's ids matters to `recycle`).
fn first_id() -> RecordId {
    RecordId { segment: 0, offset: 0, end: 0, pushed_ms: None }
}
