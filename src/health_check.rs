//! Health checks: a backend is marked down only after `fall` consecutive
//! failures and up again only after `rise` consecutive successes (as HAProxy's
//! `rise`/`fall` and pingora's health checks do), so one slow answer does not
//! flap it.
//!
//! Two kinds of evidence, counted apart so that one cannot hide the other:
//! - checks ([`Health::record_ok`], [`Health::record_failure`]): the periodic
//!   `GET /ping` (and successful queries);
//! - writes ([`Health::record_write_ok`], [`Health::record_write_failure`]):
//!   direct writes and replayed records that got no answer, a timeout or a
//!   5xx. `fall` of them in a row mark the backend down even while its `/ping`
//!   answers (a ping success does not reset the run); the next write the
//!   backend acknowledges (replay keeps trying) marks the write side up again.
//!
//! A backend is healthy when both sides are up. A failed query is only noted
//! ([`Health::record_query_failure`]): one heavy or failing query must not mark
//! a healthy backend down and divert its writes to the queue.

/// The health of one backend. Starts healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The check side: up or down by `rise`/`fall` of checks.
    healthy: bool,
    consecutive_ok: u32,
    consecutive_failed: u32,
    /// Writes that failed in a row (no answer, timeout, 5xx).
    write_failures: u32,
    /// Down because `fall` writes in a row failed.
    writes_down: bool,
    last_error: Option<String>,
    /// When the last error happened, ms since the Unix epoch.
    last_error_ms: Option<u64>,
    /// When the backend last acknowledged a write, ms since the Unix epoch.
    last_write_ms: Option<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            healthy: true,
            consecutive_ok: 0,
            consecutive_failed: 0,
            write_failures: 0,
            writes_down: false,
            last_error: None,
            last_error_ms: None,
            last_write_ms: None,
        }
    }

    /// Whether reads and direct writes may go to this backend: both its
    /// checks and its writes are up.
    pub fn is_healthy(&self) -> bool {
        self.healthy && !self.writes_down
    }

    /// Records a successful check; the check side goes up after `rise` in a
    /// row. Returns true if [`Health::is_healthy`] changed.
    pub fn record_ok(&mut self, rise: u32) -> bool {
        let before = self.is_healthy();
        self.consecutive_failed = 0;
        self.consecutive_ok = self.consecutive_ok.saturating_add(1);
        if !self.healthy && self.consecutive_ok >= rise.max(1) {
            self.healthy = true;
        }
        before != self.is_healthy()
    }

    /// Records a failed check (`error` says what happened); the check side
    /// goes down after `fall` in a row. Returns true if
    /// [`Health::is_healthy`] changed.
    pub fn record_failure(&mut self, fall: u32, error: String, now_ms: u64) -> bool {
        let before = self.is_healthy();
        self.consecutive_ok = 0;
        self.consecutive_failed = self.consecutive_failed.saturating_add(1);
        self.note_error(error, now_ms);
        if self.healthy && self.consecutive_failed >= fall.max(1) {
            self.healthy = false;
        }
        before != self.is_healthy()
    }

    /// Records a write (direct or replayed) the backend answered (2xx, or a
    /// 4xx: the backend works, the record was bad): ends a run of write
    /// failures and brings the write side up at once. Returns true if
    /// [`Health::is_healthy`] changed.
    pub fn record_write_ok(&mut self) -> bool {
        let before = self.is_healthy();
        self.write_failures = 0;
        self.writes_down = false;
        before != self.is_healthy()
    }

    /// Records a write (direct or replayed) that got no answer, a timeout or
    /// a 5xx; the write side goes down after `fall` in a row, whatever the
    /// checks say meanwhile. Returns true if [`Health::is_healthy`] changed.
    pub fn record_write_failure(&mut self, fall: u32, error: String, now_ms: u64) -> bool {
        let before = self.is_healthy();
        self.write_failures = self.write_failures.saturating_add(1);
        self.note_error(error, now_ms);
        if self.write_failures >= fall.max(1) {
            self.writes_down = true;
        }
        before != self.is_healthy()
    }

    /// Notes a failed query as the last error without counting it towards
    /// `fall`: a slow or failing query says little about the backend.
    pub fn record_query_failure(&mut self, error: String, now_ms: u64) {
        self.note_error(error, now_ms);
    }

    fn note_error(&mut self, error: String, now_ms: u64) {
        self.last_error = Some(error);
        self.last_error_ms = Some(now_ms);
    }

    /// Records that the backend acknowledged a write at `now_ms`.
    pub fn record_write(&mut self, now_ms: u64) {
        self.last_write_ms = Some(now_ms);
    }

    /// The last error message, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the last error happened (ms since the Unix epoch).
    pub fn last_error_ms(&self) -> Option<u64> {
        self.last_error_ms
    }

    /// When the backend last acknowledged a write (ms since the Unix epoch).
    pub fn last_write_ms(&self) -> Option<u64> {
        self.last_write_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_only_after_consecutive_results() {
        let mut h = Health::new();
        assert!(h.is_healthy());
        assert!(!h.record_failure(3, "refused".into(), 1));
        assert!(!h.record_failure(3, "refused".into(), 2));
        assert!(h.is_healthy());
        assert!(h.record_failure(3, "refused".into(), 3));
        assert!(!h.is_healthy());
        assert_eq!(h.last_error(), Some("refused"));
        assert!(!h.record_ok(2));
        assert!(!h.is_healthy());
        // a failure in between resets the run of successes
        h.record_failure(3, "again".into(), 4);
        assert!(!h.record_ok(2));
        assert!(h.record_ok(2));
        assert!(h.is_healthy());
    }

    #[test]
    fn failed_writes_mark_the_backend_down_although_pings_answer() {
        let mut h = Health::new();
        assert!(!h.record_write_failure(3, "HTTP 500: engine".into(), 1));
        h.record_ok(2);
        assert!(!h.record_write_failure(3, "HTTP 500: engine".into(), 2));
        h.record_ok(2);
        assert!(h.is_healthy());
        assert!(h.record_write_failure(3, "timeout".into(), 3));
        assert!(!h.is_healthy());
        assert_eq!((h.last_error(), h.last_error_ms()), (Some("timeout"), Some(3)));
        // Pings alone do not bring it back ...
        for _ in 0..5 {
            assert!(!h.record_ok(2));
        }
        assert!(!h.is_healthy());
        // ... an acknowledged write (replay) does.
        assert!(h.record_write_ok());
        assert!(h.is_healthy());
    }

    #[test]
    fn a_write_success_ends_the_run_of_write_failures() {
        let mut h = Health::new();
        h.record_write_failure(2, "x".into(), 1);
        h.record_write_ok();
        h.record_write_failure(2, "x".into(), 2);
        assert!(h.is_healthy());
        assert!(h.record_write_failure(2, "x".into(), 3));
        assert!(!h.is_healthy());
    }

    #[test]
    fn a_failed_query_is_noted_but_not_counted() {
        let mut h = Health::new();
        for t in 0..10 {
            h.record_query_failure("timeout".into(), t);
        }
        assert!(h.is_healthy());
        assert_eq!((h.last_error(), h.last_error_ms()), (Some("timeout"), Some(9)));
        // Nor does it break a run of check failures.
        h.record_failure(2, "refused".into(), 10);
        h.record_query_failure("timeout".into(), 11);
        assert!(h.record_failure(2, "refused".into(), 12));
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut h = Health::new();
        h.record_failure(2, "x".into(), 1);
        h.record_ok(2);
        h.record_failure(2, "x".into(), 2);
        assert!(h.is_healthy());
    }
}
