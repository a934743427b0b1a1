//! influx-proxy's stand-in for the `async-io` crate on wasm32-wasip2.
//!
//! Why this exists: async-h1 2.3 depends on `async-io` 1.x for one thing only,
//! the header-read timeout of its server (`async_io::Timer::after(d).await` in
//! `server/mod.rs`, 60 s by default). The real async-io is built on `polling`,
//! which does not support WASI ("polling does not support this target OS"), so
//! async-h1 does not build for wasm32-wasip2. `wasm/Cargo.toml` patches
//! `async-io` with this crate, which provides exactly that API on top of the
//! WASI executor of `wstd` (a `wasi:clocks/monotonic-clock` pollable).
//!
//! This is the project's own code, not a copy of async-io; it provides nothing
//! else, so any other use of async-io fails to compile instead of misbehaving.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A future that completes once, after a duration, with the time it completed
/// (same shape as `async_io::Timer` as async-h1 uses it). Must be created and
/// polled inside `wstd::runtime::block_on`.
pub struct Timer {
    wait: Pin<Box<wstd::time::Wait>>,
}

impl Timer {
    /// A timer that fires after `duration`.
    pub fn after(duration: Duration) -> Timer {
        Timer { wait: Box::pin(wstd::task::sleep(duration.into())) }
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.wait.as_mut().poll(cx).map(|_| Instant::now())
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timer")
    }
}
