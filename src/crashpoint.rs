//! Named points where a test build of shipit kills itself with SIGKILL, so
//! the test suite can prove that a crash at each step leaves a state the
//! next command reads correctly (SPEC §10). A signal sent from outside
//! cannot hit a window of a few microseconds, such as the one between
//! moving `run/app.sock` and swapping `current`; these points can.
//!
//! Only debug builds read `SHIPIT_TEST_CRASH_AT`; in a release build
//! [`hit`] is empty.

/// Die here (SIGKILL, no clean-up, no history) when a debug build runs with
/// `SHIPIT_TEST_CRASH_AT=<point>`.
#[inline]
pub fn hit(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("SHIPIT_TEST_CRASH_AT").is_some_and(|v| v == point) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this only waits for it to land.
        loop {
            std::thread::park();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
