//! Forked processes. A child of `fork()` gets a copy of the parent's memory but only the thread
//! that forked: the tokio runtime's threads, the connections' driver tasks and SQLite's
//! connection threads are not there, so the runtime, pools and connections it inherited would
//! hang it on first use. Using or closing them is not an option either: they share sockets
//! and files with the parent (closing a PostgreSQL connection writes a Terminate message on
//! the parent's socket; SQLite forbids carrying a handle across fork).
//!
//! So what a process holds is tagged with the fork generation it was built in. A holder that
//! sees another generation leaks (never drops) what it has and builds anew, lazily.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// How many forks lie between the first process that loaded ferroq and this one.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static WATCHING: Once = Once::new();

/// Runs in the child right after `fork()`, where only async-signal-safe work is allowed: one
/// atomic increment. `vfork`/`posix_spawn` children do not run it (they share the parent's
/// memory until they exec).
#[cfg(unix)]
extern "C" fn forked_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The fork generation of this process: equal values mean the same process.
pub fn generation() -> u64 {
    WATCHING.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registers a handler that only increments an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
    GENERATION.load(Ordering::SeqCst)
}

/// A value that belongs to the process (fork generation) that built it. In any other process
/// it is leaked, never dropped: by [`ProcessLocal::get_mut`], and when the holder itself is
/// dropped there (a child's interpreter freeing an App it inherited).
pub struct ProcessLocal<T> {
    generation: u64,
    value: ManuallyDrop<T>,
}

impl<T> ProcessLocal<T> {
    /// `value`, owned by this process.
    pub fn new(value: T) -> ProcessLocal<T> {
        ProcessLocal {
            generation: generation(),
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, after replacing it with `fresh()` if it was inherited from a parent
    /// process (the inherited one is leaked).
    pub fn get_mut(&mut self, fresh: impl FnOnce() -> T) -> &mut T {
        let now = generation();
        if self.generation != now {
            // The old value is a ManuallyDrop: replaced, it is leaked.
            self.value = ManuallyDrop::new(fresh());
            self.generation = now;
        }
        &mut self.value
    }
}

impl<T: Default> Default for ProcessLocal<T> {
    fn default() -> ProcessLocal<T> {
        ProcessLocal::new(T::default())
    }
}

impl<T> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        if self.generation == generation() {
            // SAFETY: dropped once, here; the value is not used after.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_a_new_generation_and_never_drops_what_it_inherited() {
        /// Exits with code 3 if dropped in another process than the one that built it.
        struct Loud(u64);
        impl Drop for Loud {
            fn drop(&mut self) {
                if generation() != self.0 {
                    // SAFETY: ends the forked child at once, without unwinding.
                    unsafe { libc::_exit(3) };
                }
            }
        }
        let before = generation();
        let mut local = ProcessLocal::new(Some(Loud(before)));
        assert!(local.get_mut(|| None).is_some(), "same process: kept");
        let holder = ProcessLocal::new(Loud(before));
        // SAFETY: the child only reads atomics, replaces a value and exits without unwinding.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            drop(holder);
            let code = if generation() == before + 1 && local.get_mut(|| None).is_none() {
                0
            } else {
                1
            };
            // SAFETY: ends the child without unwinding into the test harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child did not exit");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child saw the wrong state");
        assert_eq!(generation(), before, "the parent's generation is unchanged");
        assert!(
            local.get_mut(|| None).is_some(),
            "the parent keeps its value"
        );
    }
}
