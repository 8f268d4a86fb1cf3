//! A session's mailbox: which entries of the history are for it, and the
//! signal that wakes its writer.
//!
//! The fan-out task puts into a session's mailbox the sequence numbers of
//! the entries that may concern it (see [`fanout`](super::fanout)); the
//! session's writer takes them out and reads those entries from the
//! history. So a session is woken only for what it may receive, and a
//! session that receives nothing costs nothing, however busy the others
//! are: the entries it never wanted are never in its mailbox, so they
//! never make it lag.
//!
//! Runs of consecutive numbers are kept as one range: a session that
//! receives everything holds one range however long the burst, and the
//! fan-out hands it a whole burst with one [`push_run`](Mailbox::push_run).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;

use tokio::sync::{Notify, futures::Notified};

/// Why a session must resync before it reads on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lag {
    /// More entries were waiting than the history holds: the session fell
    /// behind (its client reads too slowly).
    Overflow,
    /// The backplane may have lost notifications: every session resyncs.
    Interrupted,
}

/// What [`Mailbox::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The runs waiting were moved into the caller's queue (none: it stays
    /// empty).
    Runs,
    /// The session lagged: what was waiting is dropped, and it must resync.
    Lagged(Lag),
}

pub(crate) struct Mailbox {
    pending: Mutex<Pending>,
    /// Wakes the session's writer when its mailbox stops being empty.
    wake: Notify,
    /// The most entries that may wait: past it the session has lagged (the
    /// history's capacity, which is also how far a session may fall behind).
    capacity: usize,
}

#[derive(Default)]
struct Pending {
    /// Sequence numbers waiting, as increasing, non-overlapping ranges.
    runs: VecDeque<Range<u64>>,
    /// How many numbers `runs` holds in all.
    len: usize,
    /// Set when the session must resync; `runs` is then empty.
    lagged: Option<Lag>,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Mailbox { pending: Mutex::default(), wake: Notify::new(), capacity: capacity.max(1) }
    }

    /// Adds one entry's number; wakes the writer if the mailbox was empty.
    /// A number at or before the last one added is already covered: it is
    /// ignored (a session that several keys of the index lead to is handed
    /// the same entry more than once).
    pub(crate) fn push(&self, seq: u64) {
        self.push_run(seq..seq + 1);
    }

    /// Adds a run of numbers (a burst for a session that receives
    /// everything); the part at or before the last number added is ignored.
    pub(crate) fn push_run(&self, mut run: Range<u64>) {
        let mut pending = self.lock();
        if pending.lagged.is_some() {
            return;
        }
        let was_empty = pending.runs.is_empty();
        match pending.runs.back_mut() {
            Some(last) if run.start <= last.end => {
                run.start = last.end;
                if run.is_empty() {
                    return;
                }
                last.end = run.end;
            }
            _ if run.is_empty() => return,
            _ => pending.runs.push_back(run.clone()),
        }
        pending.len += (run.end - run.start) as usize;
        if pending.len > self.capacity {
            // It would only fall further behind: drop what waits (and the
            // room it took), and tell it to resync.
            pending.runs = VecDeque::new();
            pending.len = 0;
            pending.lagged = Some(Lag::Overflow);
        }
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Tells the session to resync before anything else it reads.
    pub(crate) fn lag(&self, why: Lag) {
        let mut pending = self.lock();
        pending.runs.clear();
        pending.len = 0;
        // An interruption outranks an overflow: it says why more was lost.
        if pending.lagged != Some(Lag::Interrupted) {
            pending.lagged = Some(why);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Moves what waits into `into`, which must be empty. The two queues
    /// swap their storage, so a writer that drains its queue and takes
    /// again allocates nothing in the steady state.
    pub(crate) fn take(&self, into: &mut VecDeque<Range<u64>>) -> Taken {
        debug_assert!(into.is_empty(), "take only into an empty queue");
        let mut pending = self.lock();
        if let Some(lag) = pending.lagged.take() {
            return Taken::Lagged(lag);
        }
        std::mem::swap(&mut pending.runs, into);
        pending.len = 0;
        // A queue that grew for a burst gives its room back once drained.
        if pending.runs.capacity() > SPARE_RUNS {
            pending.runs = VecDeque::new();
        }
        Taken::Runs
    }

    /// Resolves after the next wake-up (see [`Notify::notified`]).
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.wake.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding it leaves the queue consistent: every
        // update above is complete before anything can panic.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many runs a drained queue may keep room for (a few dozen bytes).
const SPARE_RUNS: usize = 8;

#[cfg(test)]
// Runs of sequence numbers are ranges: a list of one run is not a typo.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn drain(m: &Mailbox) -> Vec<Range<u64>> {
        let mut runs = VecDeque::new();
        assert_eq!(m.take(&mut runs), Taken::Runs);
        runs.into()
    }

    #[test]
    fn consecutive_numbers_form_one_run_and_repeats_are_ignored() {
        let m = Mailbox::new(100);
        for seq in [3, 4, 4, 5, 9, 2, 10] {
            m.push(seq);
        }
        m.push_run(8..12);
        assert_eq!(drain(&m), [3..6, 9..12]);
        assert_eq!(drain(&m), []);
    }

    #[test]
    fn more_than_the_capacity_waiting_is_a_lag() {
        let m = Mailbox::new(4);
        m.push_run(1..4);
        m.push(7);
        let mut runs = VecDeque::new();
        assert_eq!(m.take(&mut runs), Taken::Runs, "four fit");
        assert_eq!(runs.len(), 2);
        m.push_run(10..15);
        m.push(20);
        let mut runs = VecDeque::new();
        assert_eq!(m.take(&mut runs), Taken::Lagged(Lag::Overflow));
        assert!(runs.is_empty());
        m.push(21);
        assert_eq!(drain(&m), [21..22], "reads on after the lag");
    }

    #[test]
    fn an_interruption_is_reported_over_an_overflow() {
        let m = Mailbox::new(1);
        m.push_run(1..3);
        m.lag(Lag::Interrupted);
        m.lag(Lag::Overflow);
        let mut runs = VecDeque::new();
        assert_eq!(m.take(&mut runs), Taken::Lagged(Lag::Interrupted));
    }

    #[tokio::test]
    async fn the_first_number_wakes_the_writer() {
        let m = Mailbox::new(8);
        let woken = m.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        m.push(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), woken).await.expect("woken");
    }
}
