//! Panic containment: a bug hit while handling one connection's input ends that
//! connection, not the process or an executor thread.
//!
//! Nothing a peer sends should panic (bounded nesting, checked short strings, checked
//! sizes), but if a bug does, the connection task catches it: the frame loop closes the
//! connection with 541 INTERNAL_ERROR and the usual teardown runs (unacked deliveries
//! requeued, consumers removed, exclusive queues deleted, the registry entry dropped).
//! Locks ignore poisoning, so the state a panic interrupted stays usable; code that has
//! taken a message off a queue puts it back if it unwinds (`util::OnUnwind`, used by
//! the classic queue's `get`). Without this, a panic unwound out of the task into the executor
//! thread, which died with every connection it was polling at that moment.

use std::any::Any;

/// The text of a panic payload (`panic!` with a literal or with format arguments).
pub fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic payload)"
    }
}

/// Queues whose name starts with this make basic.get panic after taking the message,
/// in debug builds only: no real input reaches a panic any more, and the integration
/// tests need one to check containment. Release builds never panic here.
pub const TEST_PANIC_QUEUE_PREFIX: &str = "haremq-test-panic-";

/// The test-only panic of basic.get (see [`TEST_PANIC_QUEUE_PREFIX`]).
#[inline]
pub fn test_trigger(queue: &str) {
    if cfg!(debug_assertions) && queue.starts_with(TEST_PANIC_QUEUE_PREFIX) {
        panic!("test-only panic in basic.get on queue '{queue}'");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::OnUnwind;

    #[test]
    fn on_unwind_runs_only_when_unwinding() {
        let mut hit = false;
        {
            let _g = OnUnwind::new(|| hit = true);
        }
        assert!(!hit);
        let r = std::panic::catch_unwind(|| {
            let mut put_back = Vec::new();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _g = OnUnwind::new(|| put_back.push(1));
                panic!("boom {}", 1);
            }));
            assert_eq!(message(&*r.unwrap_err()), "boom 1");
            put_back
        });
        assert_eq!(r.unwrap(), vec![1]);
    }
}
