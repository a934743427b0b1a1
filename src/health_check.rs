//! Health checks: a backend is marked down only after `fall` consecutive
//! failures and up again only after `rise` consecutive successes (as HAProxy's
//! `rise`/`fall` and pingora's health checks do), so one slow answer does not
//! flap it. Results come from the periodic `GET /ping` and from real requests.

/// The health of one backend. Starts healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    healthy: bool,
    consecutive_ok: u32,
    consecutive_failed: u32,
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
            last_error: None,
            last_error_ms: None,
            last_write_ms: None,
        }
    }

    /// Whether reads may go to this backend.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records a success; marks the backend up after `rise` in a row.
    /// Returns true if the state changed.
    pub fn record_ok(&mut self, rise: u32) -> bool {
        self.consecutive_failed = 0;
        self.consecutive_ok = self.consecutive_ok.saturating_add(1);
        if !self.healthy && self.consecutive_ok >= rise.max(1) {
            self.healthy = true;
            return true;
        }
        false
    }

    /// Records a failure (`error` says what happened); marks the backend down
    /// after `fall` in a row. Returns true if the state changed.
    pub fn record_failure(&mut self, fall: u32, error: String, now_ms: u64) -> bool {
        self.consecutive_ok = 0;
        self.consecutive_failed = self.consecutive_failed.saturating_add(1);
        self.last_error = Some(error);
        self.last_error_ms = Some(now_ms);
        if self.healthy && self.consecutive_failed >= fall.max(1) {
            self.healthy = false;
            return true;
        }
        false
    }

    /// Records an error that says nothing about the backend's health (a
    /// query that failed or timed out: the query may be at fault): kept as
    /// `last_error`, not counted towards `fall`, and the runs of successes
    /// and failures are left as they are.
    pub fn record_error(&mut self, error: String, now_ms: u64) {
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
    fn a_success_resets_the_failure_run() {
        let mut h = Health::new();
        h.record_failure(2, "x".into(), 1);
        h.record_ok(2);
        h.record_failure(2, "x".into(), 2);
        assert!(h.is_healthy());
    }
}
