//! The native host: smol executor, async-h1 server and client, file storage,
//! timers and signals. Everything here performs IO; the core does not.

pub mod server;
pub mod storage;
pub mod transport;
