//! ferroq's engine: a persistent job queue with blocking FIFO and concurrent queues.
//! The core (everything but `py`) knows nothing of Python; `py`, built with the `python`
//! feature, is the PyO3 binding.

pub mod client;
pub mod config;
pub mod error;
pub mod fork;
pub mod job;
pub mod maintenance;
pub mod periodic;
#[cfg(feature = "python")]
pub mod py;
pub mod queues;
pub mod stats;
pub mod store;
pub mod worker;

pub use error::{Error, Result};
