//! ferroq's engine: a persistent job queue with blocking FIFO and concurrent queues.
//! The core (everything but `py`) knows nothing of Python; `py` is the PyO3 binding.

pub mod config;
pub mod error;
pub mod job;
pub mod maintenance;
pub mod py;
pub mod runtime;
pub mod store;
pub mod worker;

pub use error::{Error, Result};
