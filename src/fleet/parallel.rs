//! Work on every host, a bounded number at a time.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Run `f` on every item, at most `limit` at once (`fleet.concurrency`);
/// results in order. Each host gets at most one session at a time on its
/// master connection (sshd's `MaxSessions` is 10).
pub fn parallel<T: Sync, R: Send>(limit: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..limit.max(1).min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    **slots[i].lock().expect("not poisoned") = Some(r);
                }
            });
        }
    });
    drop(slots);
    results
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}
