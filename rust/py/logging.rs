//! Rust `log` records to Python's `logging`, under the logger "ferroq".
//!
//! The engine logs from tokio threads, which must never wait for the GIL (a performer may hold
//! it for seconds). Records are queued without blocking and forwarded by one thread of their
//! own, "ferroq-log", which is the only one that takes the GIL for them. A forked child starts
//! its own forwarding thread on its first record (the parent's did not survive the fork).
//! Which records are made at all follows the Python logger's level when a worker starts
//! ([`follow_python_level`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

use crate::fork::ProcessLocal;

/// Records waiting for the forwarding thread; past this many, new ones are dropped rather than
/// let a database outage that logs on every retry fill memory.
const MAX_QUEUED: usize = 10_000;

/// The sending end of the queue to the forwarding thread.
type Records = Sender<(Level, String)>;

struct Bridge {
    /// To this process's forwarding thread; None when it could not be started.
    records: Mutex<ProcessLocal<Option<Records>>>,
    queued: AtomicUsize,
}

impl Bridge {
    /// A channel to a new forwarding thread, or None (records are then dropped).
    fn start_forwarding(&'static self) -> Option<Records> {
        let (sender, receiver) = mpsc::channel();
        self.queued.store(0, Ordering::Relaxed);
        std::thread::Builder::new()
            .name("ferroq-log".into())
            .spawn(move || forward(self, receiver))
            .ok()
            .map(|_| sender)
    }
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Only the engine's own records: the database drivers log every statement at debug
        // and some at info, which is noise at ferroq's level.
        metadata.level() <= log::max_level()
            && metadata.target().split("::").next() == Some(env!("CARGO_CRATE_NAME"))
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let message = message
            .strip_prefix("ferroq: ")
            .unwrap_or(&message)
            .to_owned();
        let bridge = *BRIDGE.get().expect("the logger is the installed bridge");
        let mut records = self.records.lock().unwrap();
        // First, since a new forwarding thread (in a forked child) starts the count anew.
        let Some(sender) = records.get_mut(|| bridge.start_forwarding()) else {
            return;
        };
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let _ = sender.send((record.level(), message));
    }

    fn flush(&self) {}
}

static BRIDGE: std::sync::OnceLock<&'static Bridge> = std::sync::OnceLock::new();

/// Whether the bridge is the process's `log` logger (another library may have installed one).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Let through the records the Python logger "ferroq" would keep, at its effective level now:
/// `log`'s macros then skip the others before formatting anything (a DEBUG line per job costs
/// a comparison unless the logger is at DEBUG). Called when a worker starts.
pub fn follow_python_level(py: Python<'_>) {
    if !INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    let level: Option<u32> = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("ferroq",)))
        .and_then(|logger| logger.call_method0("getEffectiveLevel"))
        .and_then(|level| level.extract())
        .ok();
    let filter = match level {
        None => LevelFilter::Info,
        Some(0..=10) => LevelFilter::Debug,
        Some(11..=20) => LevelFilter::Info,
        Some(21..=30) => LevelFilter::Warn,
        Some(31..=40) => LevelFilter::Error,
        Some(_) => LevelFilter::Off,
    };
    log::set_max_level(filter);
}

/// Install the bridge once per process. If another library already installed a `log` logger,
/// ferroq's records go to that one instead.
pub fn install() {
    BRIDGE.get_or_init(|| {
        let bridge: &'static Bridge = Box::leak(Box::new(Bridge {
            records: Mutex::new(ProcessLocal::new(None)),
            queued: AtomicUsize::new(0),
        }));
        if log::set_logger(bridge).is_ok() {
            log::set_max_level(LevelFilter::Info);
            match bridge.start_forwarding() {
                Some(sender) => {
                    *bridge.records.lock().unwrap() = ProcessLocal::new(Some(sender));
                    INSTALLED.store(true, Ordering::Relaxed);
                }
                None => log::set_max_level(LevelFilter::Off),
            }
        }
        bridge
    });
}

fn forward(bridge: &'static Bridge, records: Receiver<(Level, String)>) {
    while let Ok((level, message)) = records.recv() {
        bridge.queued.fetch_sub(1, Ordering::Relaxed);
        let python_level: u8 = match level {
            Level::Error => 40,
            Level::Warn => 30,
            Level::Info => 20,
            Level::Debug | Level::Trace => 10,
        };
        // None once the interpreter is shutting down: the record is dropped, nothing panics.
        let _ = Python::try_attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", ("ferroq",)))
                .and_then(|logger| logger.call_method1("log", (python_level, message)));
            if let Err(err) = logged {
                err.print(py);
            }
        });
    }
}
