//! When to signal a running hook's process group and when to stop waiting
//! for it: the decision alone, with the clock and the facts handed in, so
//! every path (a timeout, an interrupt, what a build hook left running, a
//! daemon that holds the output pipe) is tested without a process. The
//! loop in [`super::run_with_stdin`] carries the decisions out.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::clock::deadline as deadline_from;

/// Why a hook was stopped before it exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Interrupted,
    TimedOut,
}

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for a line, the end of output or the exit until then.
    Wake(Instant),
    /// The shell is reaped, its output is over, and its group needs no
    /// more signals: it was never to be stopped, it got its SIGKILL, or
    /// nothing is left in it.
    Done,
    /// The shell is reaped, but something it started still holds the
    /// output pipe past the grace: stop waiting (and hand the pipe on).
    Abandon,
}

/// The waits the decision uses.
#[derive(Clone, Copy, Debug)]
pub struct Graces {
    /// How long to keep reading output after the hook's process exited.
    pub output: Duration,
    /// How long a process group gets between SIGTERM and SIGKILL.
    pub kill: Duration,
    /// How often to wake with nothing to do, to notice an interrupt.
    pub tick: Duration,
}

pub struct Supervisor {
    deadline: Instant,
    /// Nothing the hook starts may outlive it (build, migrate).
    contained: bool,
    graces: Graces,
    stopped: Option<Stop>,
    exited: Option<Instant>,
    eof: bool,
    term_sent: Option<Instant>,
    kill_sent: Option<Instant>,
}

impl Supervisor {
    pub fn new(deadline: Instant, contained: bool, graces: Graces) -> Supervisor {
        Supervisor {
            deadline,
            contained,
            graces,
            stopped: None,
            exited: None,
            eof: false,
            term_sent: None,
            kill_sent: None,
        }
    }

    /// The hook's shell was reaped at `at`.
    pub fn exited(&mut self, at: Instant) {
        self.exited.get_or_insert(at);
    }

    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// Its output pipe reached its end.
    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// Why it was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// The signals to send the group now, in order, once an interrupt
    /// (`interrupted`) or the deadline is noted.
    pub fn signals(&mut self, now: Instant, interrupted: bool) -> Vec<Signal> {
        if self.stopped.is_none() && self.exited.is_none() {
            if interrupted {
                self.stopped = Some(Stop::Interrupted);
            } else if now >= self.deadline {
                self.stopped = Some(Stop::TimedOut);
            }
        }
        let mut signals = Vec::new();
        // Stop the group when told to, and a contained hook's leftovers
        // once its shell is done.
        let stop = self.stopped.is_some() || (self.contained && self.exited.is_some());
        if stop && self.term_sent.is_none() {
            signals.push(Signal::SIGTERM);
            self.term_sent = Some(now);
        }
        if let Some(termed) = self.term_sent
            && self.kill_sent.is_none()
        {
            let due = match (self.exited, self.stopped) {
                // The shell is gone; make sure its children are too.
                (Some(_), Some(_)) => now,
                (Some(at), None) => deadline_from(at, self.graces.output),
                (None, _) => deadline_from(termed, self.graces.kill),
            };
            if now >= due {
                signals.push(Signal::SIGKILL);
                self.kill_sent = Some(now);
            }
        }
        signals
    }

    /// After [`Supervisor::signals`]: whether the wait is over, or when to
    /// wake next. `group_empty` is asked only when the answer depends on
    /// it.
    pub fn next(&self, now: Instant, group_empty: impl FnOnce() -> bool) -> Next {
        let group_done = self.term_sent.is_none() || self.kill_sent.is_some() || group_empty();
        if self.exited.is_some() && self.eof && group_done {
            return Next::Done;
        }
        let mut wake = deadline_from(now, self.graces.tick);
        if let Some(at) = self.exited {
            let waited_from = self.kill_sent.map_or(at, |k| k.max(at));
            let give_up = deadline_from(waited_from, self.graces.output);
            if now >= give_up {
                return Next::Abandon;
            }
            wake = wake.min(give_up);
        }
        if self.stopped.is_none() && self.exited.is_none() {
            wake = wake.min(self.deadline);
        }
        Next::Wake(wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACES: Graces = Graces {
        output: Duration::from_secs(2),
        kill: Duration::from_secs(5),
        tick: Duration::from_millis(50),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const EMPTY: fn() -> bool = || true;
    const NOT_EMPTY: fn() -> bool = || false;

    #[test]
    fn a_hook_that_exits_and_closes_its_output_is_done_without_a_signal() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(60), false, GRACES);
        assert_eq!(s.signals(t0, false), vec![]);
        assert_eq!(s.next(t0, NOT_EMPTY), Next::Wake(t0 + ms(50)));
        s.exited(t0 + secs(1));
        s.eof();
        let now = t0 + secs(1);
        assert_eq!(s.signals(now, false), vec![]);
        // Never signalled: whatever is left in the group is not asked about.
        assert_eq!(
            s.next(now, || panic!("the group is not asked about")),
            Next::Done
        );
        assert_eq!(s.stopped(), None);
    }

    #[test]
    fn the_deadline_sends_sigterm_then_sigkill_after_the_kill_grace() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(10), false, GRACES);
        // The wait never runs past the deadline.
        assert_eq!(s.next(t0 + ms(9_990), NOT_EMPTY), Next::Wake(t0 + secs(10)));
        assert_eq!(s.signals(t0 + secs(10), false), vec![Signal::SIGTERM]);
        assert_eq!(s.stopped(), Some(Stop::TimedOut));
        assert_eq!(s.signals(t0 + secs(14), false), vec![]);
        assert_eq!(s.signals(t0 + secs(15), false), vec![Signal::SIGKILL]);
        assert_eq!(s.signals(t0 + secs(16), false), vec![]);
        // Killed, reaped, output over: done, with the group not asked.
        s.exited(t0 + secs(16));
        s.eof();
        assert_eq!(
            s.next(t0 + secs(16), || panic!("not asked after SIGKILL")),
            Next::Done
        );
    }

    #[test]
    fn an_interrupt_stops_the_group_at_once_and_a_late_exit_does_not_undo_it() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(600), false, GRACES);
        assert_eq!(s.signals(t0 + secs(1), true), vec![Signal::SIGTERM]);
        assert_eq!(s.stopped(), Some(Stop::Interrupted));
        // The shell exits on SIGTERM: its children get SIGKILL at once.
        s.exited(t0 + secs(2));
        assert_eq!(s.signals(t0 + secs(2), true), vec![Signal::SIGKILL]);
        assert_eq!(s.stopped(), Some(Stop::Interrupted));
    }

    #[test]
    fn a_shell_that_exited_while_stopped_gets_both_signals_in_one_turn() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(600), false, GRACES);
        // The exit and the interrupt arrive together: the exit wins (a
        // hook that finished is not called interrupted), nothing to send.
        s.exited(t0);
        assert_eq!(s.signals(t0, true), vec![]);
        assert_eq!(s.stopped(), None);
        let mut s = Supervisor::new(t0 + secs(1), false, GRACES);
        assert_eq!(s.signals(t0 + secs(1), false), vec![Signal::SIGTERM]);
        let mut fresh = Supervisor::new(t0, false, GRACES);
        fresh.stopped = Some(Stop::TimedOut);
        fresh.exited(t0);
        assert_eq!(
            fresh.signals(t0, false),
            vec![Signal::SIGTERM, Signal::SIGKILL]
        );
    }

    #[test]
    fn what_a_contained_hook_leaves_is_stopped_when_its_shell_exits() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(600), true, GRACES);
        s.exited(t0 + secs(1));
        assert_eq!(s.signals(t0 + secs(1), false), vec![Signal::SIGTERM]);
        assert_eq!(s.stopped(), None, "a build that finished was not stopped");
        // A leftover holds the pipe: no end yet, the group is there.
        assert_eq!(
            s.next(t0 + secs(1), NOT_EMPTY),
            Next::Wake(t0 + secs(1) + ms(50))
        );
        // It ignored SIGTERM: SIGKILL once the output grace is over.
        assert_eq!(s.signals(t0 + ms(2_999), false), vec![]);
        assert_eq!(s.signals(t0 + secs(3), false), vec![Signal::SIGKILL]);
        s.eof();
        assert_eq!(s.next(t0 + secs(3), NOT_EMPTY), Next::Done);
    }

    #[test]
    fn a_contained_hook_whose_group_is_empty_after_sigterm_is_done() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(600), true, GRACES);
        s.exited(t0);
        s.eof();
        assert_eq!(s.signals(t0, false), vec![Signal::SIGTERM]);
        assert_eq!(s.next(t0, NOT_EMPTY), Next::Wake(t0 + ms(50)));
        assert_eq!(s.next(t0 + ms(50), EMPTY), Next::Done);
    }

    #[test]
    fn a_daemon_holding_the_pipe_is_abandoned_after_the_output_grace() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(600), false, GRACES);
        s.exited(t0 + secs(1));
        assert_eq!(s.signals(t0 + secs(1), false), vec![]);
        // Waiting for the rest of the output, never past the grace.
        assert_eq!(s.next(t0 + ms(2_980), NOT_EMPTY), Next::Wake(t0 + secs(3)));
        assert_eq!(s.next(t0 + secs(3), NOT_EMPTY), Next::Abandon);
    }

    #[test]
    fn the_output_grace_restarts_at_sigkill() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0 + secs(1), false, GRACES);
        assert_eq!(s.signals(t0 + secs(1), false), vec![Signal::SIGTERM]);
        assert_eq!(s.signals(t0 + secs(6), false), vec![Signal::SIGKILL]);
        s.exited(t0 + secs(4));
        // Exited at 4 s, killed at 6 s: output is awaited until 8 s.
        assert_eq!(s.next(t0 + ms(7_990), NOT_EMPTY), Next::Wake(t0 + secs(8)));
        assert_eq!(s.next(t0 + secs(8), NOT_EMPTY), Next::Abandon);
    }
}
