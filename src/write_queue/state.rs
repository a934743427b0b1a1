//! The queue's memory state: its segments, head position and counters.

use super::*;

/// One segment file as the queue knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) seq: u64,
    /// Good length: records end here; bytes past it (a sealed segment's
    /// damaged tail) are never read.
    pub(super) len: u64,
    /// Records not yet acknowledged in this segment.
    pub(super) records: u64,
}

#[derive(Debug, Clone)]
pub(super) struct State {
    /// Oldest first; the back one receives appends when `writable`.
    pub(super) segments: VecDeque<Segment>,
    /// Offset of the oldest unacknowledged record in `segments[0]`.
    pub(super) head_offset: u64,
    pub(super) writable: bool,
    /// Sequence number of the next new segment.
    pub(super) next_seq: u64,
    pub(super) depth: QueueDepth,
    /// The records last returned by peek, peek_batch or peek_batch_after
    /// that are not yet acknowledged, oldest (the head) first; at most
    /// `2 x max_records` ids (the batches being acknowledged, sent and read
    /// ahead; `WriteQueue::peek_batch_after` keeps the newest `max_records`
    /// before adding its own).
    pub(super) peeked: Vec<RecordId>,
    /// (segment, length before) of an append that did not finish (cancelled);
    /// length 0 means the append created the segment file.
    pub(super) pending_append: Option<(u64, u64)>,
    /// Consumed segments whose files are still to be removed.
    pub(super) garbage: Vec<u64>,
    pub(super) dead_letter_len: u64,
    /// A dead-letter append failed and could not be rolled back.
    pub(super) dead_letter_dirty: bool,
    pub(super) dead_letters: u64,
    pub(super) dropped: QueueDepth,
    /// Generation of the last `ack` slot written (0: none yet).
    pub(super) ack_generation: u64,
    /// The `ack` file on disk has the version 2 layout (two slots), so an
    /// acknowledgement overwrites a slot in place and needs no free space.
    pub(super) ack_slots: bool,
    /// When the head record was pushed (ms since the epoch), if known.
    pub(super) head_pushed_ms: Option<u64>,
}

impl State {
    /// The ack position: the oldest unacknowledged record (or where the next
    /// record will be when everything is acknowledged).
    pub(super) fn head_pos(&self) -> (u64, u64) {
        match self.segments.front() {
            Some(s) => (s.seq, self.head_offset),
            // Before a segment an append in flight is creating.
            None => (self.pending_append.map_or(self.next_seq, |(seq, _)| seq.min(self.next_seq)), 0),
        }
    }

    /// Moves consumed segments (all but the last) to `garbage`.
    pub(super) fn normalize(&mut self) {
        while self.segments.len() > 1 && self.head_offset >= self.segments[0].len {
            if let Some(s) = self.segments.pop_front() {
                self.garbage.push(s.seq);
                // Ids peeked in later segments stay peeked.
                self.peeked.retain(|id| id.segment != s.seq);
            }
            self.head_offset = 0;
        }
    }

    /// Everything acknowledged: all segment files become garbage and the next
    /// push starts a fresh segment; unless an append is in flight (or was
    /// left unfinished: the next push cuts it back). Then the last segment
    /// stays, acknowledged to its end, so the position written to the `ack`
    /// file stays at or before the record being appended: removing the file
    /// under the append, or moving the position past a new segment it
    /// creates (whose file the next open would then delete as acknowledged),
    /// would lose that record.
    pub(super) fn compact_if_drained(&mut self) {
        if self.segments.len() == 1
            && self.head_offset >= self.segments[0].len
            && self.pending_append.is_none()
        {
            if let Some(s) = self.segments.pop_front() {
                self.garbage.push(s.seq);
                self.next_seq = self.next_seq.max(s.seq + 1);
            }
            self.head_offset = 0;
            self.writable = false;
            self.peeked.clear();
            self.depth = QueueDepth::default();
        }
    }

    /// Removes the `records` head records (head offset .. `end`, in the front
    /// segment) from the counts; the ids peeked past `end` stay peeked.
    pub(super) fn consume_head(&mut self, end: u64, records: u64) {
        let bytes = end.saturating_sub(self.head_offset);
        let front_seq = self.segments.front().map(|s| s.seq);
        if let Some(front) = self.segments.front_mut() {
            front.records = front.records.saturating_sub(records);
        }
        self.head_offset = end;
        self.depth.records = self.depth.records.saturating_sub(records);
        self.depth.bytes = self.depth.bytes.saturating_sub(bytes);
        // Ids peeked in later segments (a batch read ahead) stay peeked.
        self.peeked.retain(|id| Some(id.segment) != front_seq || id.offset >= end);
    }
}

pub(super) fn segment_path(dir: &str, seq: u64) -> String {
    format!("{dir}/{seq:020}{SEGMENT_SUFFIX}")
}

/// `00000000000000000007.seg` -> 7.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
