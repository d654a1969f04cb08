//! The agent's one lock-poisoning policy: recover. A panic in one request handler (a bug) must not turn
//! every later call on the sandbox into a panic too, so a poisoned mutex is used as it is, the same way
//! the daemon treats its own. Every `Mutex` in the agent is locked through [`lock`].

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, recovering the guard if a thread panicked while holding it. The data is whatever that
/// thread left: every structure the agent locks stays valid between its statements (counters and
/// queues updated together, disk I/O outside the locks), so this is safe to continue from.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mutex_poisoned_by_a_panicking_thread_still_locks() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.push(2);
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(r.is_err());
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), vec![1, 2]);
    }
}
