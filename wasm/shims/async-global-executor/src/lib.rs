//! influx-proxy's stand-in for the `async-global-executor` crate on
//! wasm32-wasip2.
//!
//! Why this exists: async-h1 2.3 depends on `async-global-executor` for one
//! call, `async_global_executor::spawn(fut).detach()` in `server/decode.rs`,
//! which writes the lazy `100 Continue` answer when a client sends
//! `Expect: 100-continue`. The real crate starts executor threads through
//! async-io/polling, neither of which exists on WASI (no threads, no
//! `polling` backend), so async-h1 does not build for wasm32-wasip2.
//! `wasm/Cargo.toml` patches `async-global-executor` with this crate, which
//! spawns onto the single-threaded `wstd` executor the WASI host runs on.
//!
//! This is the project's own code, not a copy of async-global-executor; it
//! provides nothing else, so any other use fails to compile.
#![forbid(unsafe_code)]

use std::future::Future;

/// A spawned task; `detach()` lets it run to completion on its own, dropping
/// it cancels it (the `async_task::Task` that wstd returns).
pub use wstd::runtime::Task;

/// Spawns `future` on the current wstd executor. Panics if called outside
/// `wstd::runtime::block_on` (the WASI host runs everything inside it).
pub fn spawn<F, T>(future: F) -> Task<T>
where
    F: Future<Output = T> + 'static,
    T: 'static,
{
    wstd::runtime::spawn(future)
}
