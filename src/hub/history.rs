//! The bounded history of delivered notifications: one shared log that is at
//! once the replay buffer and every session's outbound queue.
//!
//! Each notification is serialized once, into a frame that already carries
//! its cursor, and stored here. A session holds only the sequence numbers of
//! the entries handed to it (its [`Mailbox`](super::mailbox::Mailbox)) and
//! reads the frames from this log, so fan-out costs no copy and no
//! allocation per client, a reconnecting client resumes by reading from its
//! cursor, and a session whose entries left the log before it read them
//! has, by construction, lost frames: it gets a `resync` instead of a
//! silent gap or an unbounded queue.
//!
//! Each appended entry is also queued for the fan-out task, in append
//! order. That queue is bounded (by [`FAN_OUT_QUEUE`], or the log's capacity
//! if larger): if the task falls so far behind that it overflows, every
//! session is told it may have lagged (and resyncs if anything it may see
//! changed), so no entry is ever dropped unseen.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{self, AtomicBool};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use super::frame::{Frame, OpenFrame, Outbox};
use crate::cursor::Kind;
use crate::filter::{Data, Fields};
use crate::{Cursor, Notification, SessionId};

/// One delivered notification, as sessions read it.
pub(crate) struct Entry {
    /// The local position, contiguous: what sessions count in.
    pub(crate) seq: u64,
    /// The frame sessions send, which carries the cursor clients see.
    pub(crate) frame: Frame,
    pub(crate) collection: Cow<'static, str>,
    pub(crate) audience: Option<Arc<str>>,
    /// The public id of the session that must not receive it.
    pub(crate) skip: Option<SessionId>,
    /// Where its `data` sits in the frame's text; `None`: it has none.
    data: Option<Range<usize>>,
    /// The fields of its `data`, read once for every session: by the
    /// fan-out task when a filtered session subscribes to its collection
    /// (before waking any), else by the first filtered reader. The `notify`
    /// path never parses, and an application that does not filter never
    /// does. `None` inside: the data is not a JSON object, or cannot be
    /// read.
    fields: OnceLock<Option<Box<Fields>>>,
    /// When the fan-out task took it: where the delivery latency is
    /// measured from (one clock read per batch, off the caller's path).
    emitted: OnceLock<Instant>,
}

impl Entry {
    /// What filters see of the data. Whether or not anyone filtered when
    /// the entry was appended (before any session existed, say), its
    /// fields are there to be read.
    pub(crate) fn data(&self) -> Data<'_> {
        let Some(range) = &self.data else { return Data::Absent };
        let fields =
            self.fields.get_or_init(|| Fields::parse(&self.frame.as_str()[range.clone()]).map(Box::new));
        fields.as_deref().map_or(Data::Unreadable, Data::Fields)
    }

    /// The cursor clients see: `<epoch>-<seq>`, or a backplane's stream id.
    pub(crate) fn cursor(&self) -> Cursor {
        self.frame.cursor().expect("a notification's frame is closed with its cursor")
    }

    /// Records when the fan-out task took the entry (the first time only).
    pub(crate) fn stamp(&self, now: Instant) {
        let _ = self.emitted.set(now);
    }

    /// When the fan-out task took the entry, if it has.
    pub(crate) fn emitted(&self) -> Option<Instant> {
        self.emitted.get().copied()
    }
}

/// How many entries the fan-out task may fall behind (at least): more than
/// the log holds, so that a burst from a caller that never yields (the task
/// cannot run meanwhile) still reaches exactly the sessions that want it,
/// and a quiet session does not resync for others' traffic.
pub(crate) const FAN_OUT_QUEUE: usize = 1 << 16;

/// How far ahead of this machine's clock a stream id may be (another
/// instance's clock, or Redis', may run ahead a little).
const FUTURE_SLACK_MS: u64 = 60_000;

/// Whether a stream id is far ahead of this machine's clock: stream ids are
/// millisecond timestamps (Redis'), or times in the past (the outbox's log
/// id), so such an id is not from this stream.
fn from_the_future(cursor: Cursor) -> bool {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    cursor.epoch_ms() > now_ms + FUTURE_SLACK_MS
}

/// A notification serialized outside the lock, waiting for its cursor.
struct Prepared {
    frame: OpenFrame,
    n: Notification,
    skip: Option<SessionId>,
    given: Option<Cursor>,
}

impl Prepared {
    fn new((n, given): (Notification, Option<Cursor>)) -> Self {
        Prepared { frame: OpenFrame::new(&n), skip: n.origin_to_skip(), n, given }
    }
}

pub(crate) struct History {
    epoch: u32,
    capacity: usize,
    ring: RwLock<Ring>,
    /// The entries appended since the fan-out task last took them. Apart
    /// from the ring, so that the task never takes the ring's write lock.
    unfanned: Mutex<Unfanned>,
    /// Something waits in `unfanned` (set under its lock, cleared by the
    /// task): the task finds out there is nothing without locking.
    waiting: AtomicBool,
}

/// What waits for the fan-out task.
#[derive(Default)]
struct Unfanned {
    /// At most [`FAN_OUT_QUEUE`] (or the log's capacity, if larger).
    entries: VecDeque<Arc<Entry>>,
    /// Entries were appended while `entries` was full: the task never saw
    /// them, so every session must be told it may have lagged.
    overflowed: bool,
}

struct Ring {
    /// Shared with the fan-out task, which reads them out of the lock.
    entries: VecDeque<Arc<Entry>>,
    /// The sequence number the next notification gets; the first is 1, so
    /// cursor `<epoch>-0` means "before everything".
    next_seq: u64,
    /// The cursor of the last notification, kept when entries are cleared.
    head: Cursor,
    /// The last sequence number before the latest interruption: a reader
    /// that lags from before it lags because of the interruption.
    interrupted_through: u64,
    /// For stream cursors: the newest id that is no longer held (evicted,
    /// or older than what was loaded). Resuming from before it is a gap.
    floor: Option<Cursor>,
    /// For stream cursors: false until the backplane has loaded the stream's
    /// tail; until then a stream id cannot be placed.
    loaded: bool,
    /// Which collections changed when: what a reader that lost part of the
    /// log is told to reload.
    changes: Changes,
    /// The fingerprints of the newest entries evicted, for logs whose
    /// cursors carry one: so that a cursor older than the log can still be
    /// told to name the entry this instance had at its position, and get a
    /// precise `resync`.
    gone: Gone,
}

/// How many times the capacity [`Gone`] keeps (4 bytes per position).
const GONE_KEPT: usize = 16;

/// The fingerprints of evicted entries, by position: a run of consecutive
/// positions of one log (outbox positions are dense). A position out of
/// the run (another log, a skipped row) starts a new run.
#[derive(Default)]
struct Gone {
    log: u64,
    /// The position of `fingerprints[0]`.
    first: u64,
    fingerprints: VecDeque<u32>,
}

impl Gone {
    /// Remembers an evicted entry's fingerprint, if it has one; keeps at
    /// most `limit`.
    fn push(&mut self, cursor: Cursor, limit: usize) {
        let Cursor::Stream { ms, seq, fingerprint } = cursor else { return };
        if fingerprint == 0 {
            return;
        }
        if ms != self.log || self.first + self.fingerprints.len() as u64 != seq {
            self.fingerprints.clear();
            (self.log, self.first) = (ms, seq);
        }
        if self.fingerprints.len() >= limit {
            self.fingerprints.pop_front();
            self.first += 1;
        }
        self.fingerprints.push_back(fingerprint);
    }

    /// The cursor of the evicted entry at `cursor`'s position, if known.
    fn holder(&self, cursor: &Cursor) -> Option<Cursor> {
        let Cursor::Stream { ms, seq, .. } = *cursor else { return None };
        let offset = seq.checked_sub(self.first).filter(|_| ms == self.log)?;
        self.fingerprints.get(usize::try_from(offset).ok()?).map(|f| Cursor::stream_of(ms, seq, *f))
    }

    fn clear(&mut self) {
        self.fingerprints.clear();
    }
}

impl Ring {
    /// The number of the oldest entry held (the next one's, when none is).
    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Whether `cursor`, a cursor a client sent, names the entry this
    /// history has (or had) at its position. A cursor without fingerprint
    /// names whatever is there. One with a fingerprint needs the entry that
    /// held the position to carry the same one: when this history does not
    /// know that entry any more, it cannot vouch for the cursor.
    fn vouches_for(&self, cursor: &Cursor) -> bool {
        if cursor.fingerprint() == 0 {
            return true;
        }
        let by_position = |c: &Cursor| c.stream_cmp(cursor).unwrap_or(Ordering::Less);
        let at = |c: &Cursor| by_position(c) == Ordering::Equal;
        let held = self
            .entries
            .binary_search_by(|e| by_position(&e.cursor()))
            .ok()
            .map(|i| self.entries[i].cursor());
        let gone = self.gone.holder(cursor);
        held.or(gone)
            .or(self.floor.filter(at))
            .or(Some(self.head).filter(at))
            .is_some_and(|holder| holder.is_named_by(cursor))
    }
}

/// Where a notification sits: its local sequence number and its cursor.
#[derive(Debug, Clone, Copy)]
struct Position {
    seq: u64,
    cursor: Cursor,
}

/// The last thing a reader saw, to ask [`History::changed_since`] about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seen {
    /// A session's own position: the local sequence number it read through.
    Seq(u64),
    /// A cursor a client brought back (on resume).
    Cursor(Cursor),
}

/// How many (collection, audience) pairs [`Changes`] remembers. Per-user
/// audiences (`user:42`) would otherwise grow it with every user ever
/// notified; past this, the older half is forgotten and readers from before
/// it get a full `resync`.
pub(crate) const MAX_CHANGE_PAIRS: usize = 4096;

/// For each (collection, audience) pair, the position of its last
/// notification, kept after the entry itself left the ring: a reader that
/// lost entries learns which collections it must reload, instead of all.
///
/// Nested maps rather than one map keyed by the pair, so that the update on
/// every append looks both names up by `&str` and allocates nothing for a
/// pair already present.
struct Changes {
    collections: HashMap<Cow<'static, str>, Audiences, NameHasher>,
    /// How many pairs `collections` holds, all audiences counted.
    pairs: usize,
    hasher: NameHasher,
    /// The index holds every change after this position (compared by `seq`
    /// for a session's own position, by `cursor` for a stream id): not
    /// before it, since pairs were forgotten, the backplane was interrupted,
    /// or the stream's older part was never loaded.
    known_after: Position,
}

/// The last changes of one collection, by audience.
struct Audiences {
    /// Notifications with no audience.
    everyone: Option<Position>,
    by_audience: HashMap<Arc<str>, Position, NameHasher>,
}

/// Hashes the index's names on every append, under the write lock:
/// foldhash (a few nanoseconds for a short name, where SipHash costs tens),
/// seeded at random per history. The names are the application's
/// collections and audiences, and the map holds at most
/// [`MAX_CHANGE_PAIRS`], which bounds what a crafted collision could cost.
type NameHasher = foldhash::fast::RandomState;

impl Audiences {
    /// Moves the pair's position to `at`; false if the pair is new here.
    fn update(&mut self, audience: Option<&Arc<str>>, at: Position) -> bool {
        let slot = match audience {
            None => self.everyone.as_mut(),
            Some(a) => self.by_audience.get_mut(&**a),
        };
        match slot {
            Some(position) => {
                *position = at;
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.everyone.is_some()) + self.by_audience.len()
    }
}

impl Changes {
    fn new(known_after: Position) -> Self {
        let hasher = NameHasher::default();
        Changes { collections: HashMap::with_hasher(hasher.clone()), pairs: 0, known_after, hasher }
    }

    /// Records that the pair changed at `at` (the newest position).
    // The `Cow` itself, not a `&str`: a new pair keeps a clone of it, which
    // for a `&'static str` name copies no bytes.
    #[allow(clippy::ptr_arg)]
    fn record(&mut self, collection: &Cow<'static, str>, audience: Option<&Arc<str>>, at: Position) {
        // The common case, a pair already known: two lookups by &str, no
        // allocation.
        if let Some(audiences) = self.collections.get_mut(collection.as_ref())
            && audiences.update(audience, at)
        {
            return;
        }
        if self.pairs >= MAX_CHANGE_PAIRS {
            self.forget_older_half();
        }
        let hasher = &self.hasher;
        let audiences = self.collections.entry(collection.clone()).or_insert_with(|| Audiences {
            everyone: None,
            by_audience: HashMap::with_hasher(hasher.clone()),
        });
        match audience {
            None => audiences.everyone = Some(at),
            Some(a) => {
                audiences.by_audience.insert(a.clone(), at);
            }
        }
        self.pairs += 1;
    }

    /// Drops the older half of the pairs and moves `known_after` past them.
    /// Halving (rather than dropping one) keeps this scan rare: once per
    /// `MAX_CHANGE_PAIRS / 2` new pairs.
    fn forget_older_half(&mut self) {
        let mut seqs: Vec<u64> = Vec::with_capacity(self.pairs);
        for audiences in self.collections.values() {
            seqs.extend(audiences.everyone.iter().chain(audiences.by_audience.values()).map(|p| p.seq));
        }
        let middle = seqs.len() / 2;
        let threshold = *seqs.select_nth_unstable(middle).1;
        let mut newest_dropped = self.known_after;
        let mut keep = |p: &Position| {
            if p.seq > threshold {
                return true;
            }
            if p.seq > newest_dropped.seq {
                newest_dropped = *p;
            }
            false
        };
        self.collections.retain(|_, audiences| {
            if audiences.everyone.as_ref().is_some_and(|p| !keep(p)) {
                audiences.everyone = None;
            }
            audiences.by_audience.retain(|_, p| keep(p));
            audiences.len() > 0
        });
        self.pairs = self.collections.values().map(Audiences::len).sum();
        self.known_after = newest_dropped;
    }

    /// What was lost before `at` cannot be known: nothing from before it can
    /// be answered precisely.
    fn forget_before(&mut self, at: Position) {
        self.known_after = at;
    }
}

/// What reading the log produced.
#[derive(Debug)]
pub(crate) enum Read {
    /// Frames were appended to the output (possibly none, when every entry
    /// read was filtered out).
    Read,
    /// Entries the reader had not seen were evicted: it must resync and read
    /// on from `next`, which is `head.seq() + 1`. `interrupted`: they were
    /// dropped by an interruption of the backplane, not for room.
    Lagged { head: Cursor, next: u64, interrupted: bool },
}

impl History {
    /// A history whose cursors it assigns itself (`<epoch>-<seq>`).
    pub(crate) fn new(epoch: u32, capacity: usize) -> Self {
        History::with_head(epoch, capacity, Cursor::new(epoch, 0), true)
    }

    /// A history whose cursors are a backplane's stream ids; its head starts
    /// at the beginning of the stream (`0-0`).
    pub(crate) fn for_stream(epoch: u32, capacity: usize) -> Self {
        History::with_head(epoch, capacity, Cursor::stream(0, 0), false)
    }

    fn with_head(epoch: u32, capacity: usize, head: Cursor, loaded: bool) -> Self {
        let capacity = capacity.max(1);
        History {
            epoch,
            capacity,
            unfanned: Mutex::default(),
            waiting: AtomicBool::new(false),
            ring: RwLock::new(Ring {
                entries: VecDeque::with_capacity(capacity.min(4096)),
                next_seq: 1,
                head,
                interrupted_through: 0,
                floor: None,
                loaded,
                changes: Changes::new(Position { seq: 0, cursor: head }),
                gone: Gone::default(),
            }),
        }
    }

    /// The backplane has loaded the stream's tail: stream ids can be placed.
    pub(crate) fn mark_loaded(&self) {
        self.ring.write().unwrap_or_else(|e| e.into_inner()).loaded = true;
    }

    /// Appends one notification: what [`append`](Self::append) does, without
    /// an iterator, on the path of every single `notify`.
    pub(crate) fn append_one(&self, n: Notification, given: Option<Cursor>) {
        let prepared = Prepared::new((n, given));
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let mut unfanned = self.lock_unfanned();
        let evicted = self.push(&mut ring, &mut unfanned, prepared);
        drop(unfanned);
        drop(ring);
        // Freed outside the lock.
        drop(evicted);
    }

    /// Appends notifications in order, each under the cursor the backplane
    /// gave it (a stream id, in stream order) or the next one of this
    /// history. Serialized outside the lock, appended under one lock (a
    /// committed batch: readers see all of it or none of it).
    pub(crate) fn append(&self, items: &mut dyn Iterator<Item = (Notification, Option<Cursor>)>) {
        let Some(first) = items.next().map(Prepared::new) else { return };
        // Empty, and so not allocated, for a single notification.
        let rest: Vec<Prepared> = items.map(Prepared::new).collect();
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let mut unfanned = self.lock_unfanned();
        let evicted = self.push(&mut ring, &mut unfanned, first);
        let evicted_rest: Vec<Arc<Entry>> =
            rest.into_iter().filter_map(|p| self.push(&mut ring, &mut unfanned, p)).collect();
        drop(unfanned);
        drop(ring);
        // Freed outside the lock.
        drop((evicted, evicted_rest));
    }

    /// The fan-out task's queue, locked (always after the ring, which its
    /// order follows).
    fn lock_unfanned(&self) -> std::sync::MutexGuard<'_, Unfanned> {
        self.unfanned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Assigns the cursor, closes the frame, stores it and queues it for the
    /// fan-out task; returns the entry evicted to make room, to be dropped
    /// unlocked.
    fn push(&self, ring: &mut Ring, unfanned: &mut Unfanned, p: Prepared) -> Option<Arc<Entry>> {
        let Prepared { frame, n, skip, given } = p;
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let cursor = given.unwrap_or(Cursor::new(self.epoch, seq));
        ring.head = cursor;
        // Only the cursor is written under the lock: the order of the log is
        // the order of the cursors, with no re-ordering step anywhere.
        let data = frame.data();
        let frame = frame.close(cursor);
        ring.changes.record(&n.collection, n.audience.as_ref(), Position { seq, cursor });
        let evicted = if ring.entries.len() == self.capacity { ring.entries.pop_front() } else { None };
        if let Some(gone) = &evicted {
            let cursor = gone.cursor();
            ring.floor = Some(cursor);
            ring.gone.push(cursor, self.capacity * GONE_KEPT);
        }
        let entry = Arc::new(Entry {
            seq,
            frame,
            collection: n.collection,
            audience: n.audience,
            skip,
            data,
            fields: OnceLock::new(),
            emitted: OnceLock::new(),
        });
        // Queued while the ring is locked: the task sees the log's order.
        if unfanned.entries.len() >= self.capacity.max(FAN_OUT_QUEUE) {
            // The task is that far behind: what it has not taken is as good
            // as lost to the sessions that wanted it.
            unfanned.entries.clear();
            unfanned.overflowed = true;
        }
        unfanned.entries.push_back(entry.clone());
        self.waiting.store(true, atomic::Ordering::Release);
        ring.entries.push_back(entry);
        evicted
    }

    /// Moves the entries appended since the last call into `into` (which
    /// must be empty; the two queues swap their storage, so this allocates
    /// nothing in the steady state). Returns true if some were appended
    /// that the fan-out task will never see (see [`Unfanned::overflowed`]).
    pub(crate) fn take_unfanned(&self, into: &mut VecDeque<Arc<Entry>>) -> bool {
        debug_assert!(into.is_empty(), "take only into an empty queue");
        if !self.waiting.load(atomic::Ordering::Acquire) {
            return false;
        }
        let mut unfanned = self.lock_unfanned();
        self.waiting.store(false, atomic::Ordering::Relaxed);
        std::mem::swap(&mut unfanned.entries, into);
        std::mem::take(&mut unfanned.overflowed)
    }

    /// Reads the fields of the entries numbered in `range` (for a filtered
    /// replay), outside the lock: a filtered reader then finds them read.
    pub(crate) fn read_fields(&self, range: Range<u64>) {
        let entries: Vec<Arc<Entry>> = {
            let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
            let first = ring.first_seq();
            let from = range.start.saturating_sub(first) as usize;
            let to = range.end.saturating_sub(first) as usize;
            ring.entries.range(from.min(ring.entries.len())..to.min(ring.entries.len())).cloned().collect()
        };
        for entry in &entries {
            entry.data();
        }
    }

    /// Declares that notifications may have been lost (the backplane
    /// connection broke): every session gets a `resync`, and no cursor from
    /// before this point can be resumed.
    ///
    /// Stream ids are not this history's to invent: for them the head stays
    /// the resume point, which is right only when nothing after it can have
    /// been lost (before the stream's tail is loaded). After a loss, a
    /// stream history is interrupted [at](Self::interrupt_at) an id past it.
    pub(crate) fn interrupt(&self) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let at = match ring.head.kind() {
            // The skipped position is the new head, so a cursor handed out
            // from now on (a hello, a resync) can be resumed.
            Kind::Local => Cursor::new(self.epoch, ring.next_seq),
            Kind::Stream => ring.head,
        };
        let old = Self::restart_at(&mut ring, at);
        drop(ring);
        drop(old);
    }

    /// Declares that notifications before the stream id `at` may have been
    /// lost (a gap marker in the stream, or a stream that lost entries):
    /// every session gets a `resync` with cursor `at`, and only `at` and
    /// later ids can be resumed, so a cursor from before the loss, the last
    /// one read included, gets a `resync` too.
    pub(crate) fn interrupt_at(&self, at: Cursor) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        // Ids only grow; one behind the head cannot fence off what was read.
        let at = if ring.head.stream_cmp(&at) == Some(Ordering::Greater) { ring.head } else { at };
        let old = Self::restart_at(&mut ring, at);
        drop(ring);
        drop(old);
    }

    /// Empties the log and makes `at` both its head and its floor; returns
    /// the old entries, to be dropped unlocked.
    fn restart_at(ring: &mut Ring, at: Cursor) -> VecDeque<Arc<Entry>> {
        let old = std::mem::take(&mut ring.entries);
        // Every reader's position is now before the first entry: it lags.
        ring.next_seq += 1;
        ring.interrupted_through = ring.next_seq - 1;
        ring.head = at;
        ring.floor = Some(at);
        ring.changes.forget_before(Position { seq: ring.next_seq - 1, cursor: at });
        ring.gone.clear();
        old
    }

    /// Sets the oldest stream id that is known to be missing from the history
    /// (when it was loaded from a longer stream).
    pub(crate) fn set_floor(&self, floor: Cursor) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.floor = Some(floor);
        // What the stream held up to the floor was never read here: a stream
        // id before it cannot be answered precisely.
        let known = &mut ring.changes.known_after;
        if known.cursor.stream_cmp(&floor) != Some(Ordering::Greater) {
            known.cursor = floor;
        }
    }

    /// The cursor of the last delivered notification.
    pub(crate) fn head(&self) -> Cursor {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).head
    }

    /// The head cursor and the position right after it, read together (a
    /// new session starts there: read apart, an append in between would
    /// fall in the gap).
    pub(crate) fn position(&self) -> (Cursor, u64) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        (ring.head, ring.next_seq)
    }

    /// The cursor of a reader that read everything before `next`: that of
    /// the entry numbered `next - 1` (the head, when nothing came after
    /// it). `None` when entries it has not read left the log: it lagged,
    /// and no cursor tells where it is.
    pub(crate) fn cursor_through(&self, next: u64) -> Option<Cursor> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let first = ring.first_seq();
        match next {
            _ if next >= ring.next_seq => Some(ring.head),
            _ if next > first => Some(ring.entries[(next - 1 - first) as usize].cursor()),
            // Just before the oldest entry held: the newest one gone, or the
            // point of an interruption, or the log's beginning.
            _ if next == first => Some(ring.floor.unwrap_or(match ring.head.kind() {
                Kind::Local => Cursor::new(self.epoch, next - 1),
                Kind::Stream => Cursor::stream(0, 0),
            })),
            _ => None,
        }
    }

    /// Whether `cursor` is a stream id beyond this instance's head: another
    /// instance may have read further (this one catches up), or it is beyond
    /// the log itself.
    pub(crate) fn is_behind(&self, cursor: Cursor) -> bool {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        ring.loaded && ring.head.stream_cmp(&cursor) == Some(Ordering::Less) && !from_the_future(cursor)
    }

    /// Where a client that last saw `cursor` reads on from, if the history
    /// still holds everything after it; `None` when the cursor is from another
    /// epoch, from the future, older than the history, or beyond its head
    /// (the caller has given this instance time to catch up first: see
    /// `Hub::wait_to_open`).
    pub(crate) fn resume_from(&self, cursor: Cursor) -> Option<u64> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let first = ring.first_seq();
        match cursor.kind() {
            Kind::Local => {
                if cursor.epoch() != self.epoch || ring.head.kind() != Kind::Local {
                    return None;
                }
                let next = cursor.seq().checked_add(1)?;
                (next >= first && next <= ring.next_seq).then_some(next)
            }
            Kind::Stream => {
                if !ring.loaded {
                    return None;
                }
                if from_the_future(cursor) {
                    return None;
                }
                // Before the oldest id held, only the floor itself (the id
                // just before it, or the newest trimmed one) leaves no gap;
                // with no floor, only the stream's beginning, 0-0.
                let oldest = ring.entries.front().map_or(ring.head, |e| e.cursor());
                let floor = ring.floor.unwrap_or(Cursor::stream(0, 0));
                if cursor.stream_cmp(&oldest) == Some(Ordering::Less) && !floor.is_named_by(&cursor) {
                    return None;
                }
                // A position given again (a restored outbox) to another
                // entry than the one the client saw: what it missed is not
                // what comes after it here.
                if !ring.vouches_for(&cursor) {
                    return None;
                }
                match ring.head.stream_cmp(&cursor) {
                    // Nothing was read from the stream, or the id is beyond
                    // what this instance holds: it cannot be placed, and a
                    // gap must not be silent.
                    None | Some(Ordering::Less) => None,
                    Some(_) => {
                        let after = ring
                            .entries
                            .partition_point(|e| e.cursor().stream_cmp(&cursor) != Some(Ordering::Greater));
                        Some(first + after as u64)
                    }
                }
            }
        }
    }

    /// The collections with a change after `seen` that pass `may_see`
    /// (given each pair's collection and audience), sorted, each once; `None`
    /// when that cannot be told: `seen` is a cursor of another epoch or
    /// stream, from the future, or from before what the index knows.
    ///
    /// A change made after the reader's resync point may be listed too (the
    /// caller reads its head apart): one reload too many, never one missed.
    pub(crate) fn changed_since(
        &self,
        seen: Seen,
        mut may_see: impl FnMut(&str, Option<&str>) -> bool,
    ) -> Option<Vec<String>> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let known = ring.changes.known_after;
        let seen = match seen {
            // A local cursor of this epoch is a sequence number.
            Seen::Cursor(c @ Cursor::Local { .. }) => {
                if c.epoch() != self.epoch || ring.head.kind() != Kind::Local {
                    return None;
                }
                Seen::Seq(c.seq())
            }
            other => other,
        };
        let placeable = match seen {
            Seen::Seq(seq) => known.seq <= seq && seq < ring.next_seq,
            Seen::Cursor(c) => {
                ring.loaded
                    && known.cursor.stream_cmp(&c).is_some_and(Ordering::is_le)
                    && ring.head.stream_cmp(&c).is_some_and(Ordering::is_ge)
                    && ring.vouches_for(&c)
            }
        };
        if !placeable {
            return None;
        }
        let after = |p: &Position| match seen {
            Seen::Seq(seq) => p.seq > seq,
            Seen::Cursor(c) => p.cursor.stream_cmp(&c) == Some(Ordering::Greater),
        };
        let mut changed = BTreeSet::new();
        for (collection, audiences) in &ring.changes.collections {
            // Seeing a collection's notifications for an audience needs
            // seeing the collection at all: one check skips all its pairs
            // (this runs under the read lock, which appends wait for).
            if !may_see(collection, None) {
                continue;
            }
            if audiences.everyone.as_ref().is_some_and(after)
                || audiences.by_audience.iter().any(|(a, p)| after(p) && may_see(collection, Some(a)))
            {
                changed.insert(collection.as_ref());
            }
        }
        Some(changed.into_iter().map(str::to_owned).collect())
    }

    /// Reads the entries numbered in `runs`, up to `max` of them, from
    /// `*next` on (numbers before it were read already), and appends to
    /// `out` the frames of those that pass `wanted`. Moves `*next` past what
    /// it read and takes it out of `runs`.
    ///
    /// `Lagged` when an entry to read has left the log: the reader lost it.
    pub(crate) fn read(
        &self,
        next: &mut u64,
        runs: &mut VecDeque<Range<u64>>,
        max: usize,
        mut wanted: impl FnMut(&Entry) -> bool,
        out: &mut impl Outbox,
    ) -> Read {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let first = ring.first_seq();
        let mut budget = max;
        while let Some(run) = runs.front_mut() {
            run.start = run.start.max(*next);
            // Never past what is stored (a run is only ever handed out
            // after its entries were appended).
            run.end = run.end.min(ring.next_seq);
            if run.is_empty() {
                runs.pop_front();
                continue;
            }
            if budget == 0 {
                break;
            }
            if run.start < first {
                let interrupted = run.start <= ring.interrupted_through;
                return Read::Lagged { head: ring.head, next: ring.next_seq, interrupted };
            }
            let from = (run.start - first) as usize;
            let count = ((run.end - run.start) as usize).min(budget);
            for entry in ring.entries.range(from..from + count) {
                if wanted(entry) {
                    // A reference-count bump: the frame is shared, never copied.
                    out.put(&entry.frame);
                }
            }
            run.start += count as u64;
            *next = run.start;
            budget -= count;
        }
        Read::Read
    }

    /// Where a reader that lagged (its mailbox overflowed, or the backplane
    /// was interrupted) resyncs: the head, the position after it, and
    /// whether the reader, whose next entry was `next`, lost entries to an
    /// interruption.
    pub(crate) fn lag_point(&self, next: u64) -> (Cursor, u64, bool) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        (ring.head, ring.next_seq, next <= ring.interrupted_through)
    }
}

#[cfg(test)]
// Runs of sequence numbers are ranges: a list of one run is not a typo.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::Op;

    impl History {
        fn append_new(&self, n: Notification) -> Cursor {
            self.append(&mut std::iter::once((n, None)));
            self.head()
        }

        fn append_new_at(&self, n: Notification, cursor: Cursor) -> Cursor {
            self.append_one(n, Some(cursor));
            self.head()
        }

        /// Reads up to `max` entries from `next` on, as a session whose
        /// mailbox holds everything does; returns where it reads on.
        fn read_from(&self, next: u64, max: usize, out: &mut Vec<Frame>) -> (Read, u64) {
            let mut next = next;
            let mut runs = VecDeque::from([next..u64::MAX]);
            let read = self.read(&mut next, &mut runs, max, |_| true, out);
            (read, next)
        }
    }

    fn collect(h: &History, next: u64) -> (Vec<String>, Read, u64) {
        let mut out: Vec<Frame> = Vec::new();
        let (r, next) = h.read_from(next, 100, &mut out);
        (out.into_iter().map(|f| f.as_str().to_owned()).collect(), r, next)
    }

    #[test]
    fn frames_carry_their_cursor() {
        let h = History::new(0xabc, 4);
        let c = h.append_new(Notification::new("forums", Op::Insert));
        assert_eq!(c.seq(), 1);
        let (frames, ..) = collect(&h, 1);
        assert_eq!(frames, [r#"{"collection":"forums","op":"insert","cursor":"00000abc-1"}"#]);
    }

    #[test]
    fn evicted_entries_make_readers_lag() {
        let h = History::new(1, 2);
        for _ in 0..3 {
            h.append_new(Notification::new("a", Op::Update));
        }
        match collect(&h, 1).1 {
            Read::Lagged { head, next, interrupted } => {
                assert_eq!(head.seq(), 3);
                assert_eq!(next, 4);
                assert!(!interrupted, "evicted for room");
            }
            Read::Read => panic!("reader at 1 must lag once 1 is evicted"),
        }
        let (frames, r, next) = collect(&h, 2);
        assert_eq!(frames.len(), 2);
        assert!(matches!(r, Read::Read));
        assert_eq!(next, 4);
    }

    #[test]
    fn the_cursor_through_a_position_is_that_of_the_entry_before_it() {
        let h = History::new(7, 2);
        assert_eq!(h.cursor_through(1), Some(Cursor::new(7, 0)), "nothing read yet");
        let stream = History::for_stream(7, 2);
        stream.mark_loaded();
        let ids: Vec<Cursor> = (1..=3)
            .map(|i| stream.append_new_at(Notification::new("a", Op::Update), Cursor::stream(100, i)))
            .collect();
        // Entries 2 and 3 are held; 1 is gone (the floor).
        assert_eq!(stream.cursor_through(4), Some(ids[2]), "read everything: the head");
        assert_eq!(stream.cursor_through(3), Some(ids[1]));
        assert_eq!(stream.cursor_through(2), Some(ids[0]), "just before the oldest held: the floor");
        assert_eq!(stream.cursor_through(1), None, "lagged: entry 1 is gone unread");
    }

    #[test]
    fn resume_accepts_only_cursors_the_log_covers() {
        let h = History::new(7, 2);
        assert_eq!(h.resume_from(Cursor::new(7, 0)), Some(1));
        for _ in 0..3 {
            h.append_new(Notification::new("a", Op::Update));
        }
        assert_eq!(h.resume_from(Cursor::new(7, 0)), None, "entry 1 is gone");
        assert_eq!(h.resume_from(Cursor::new(7, 1)), Some(2));
        assert_eq!(h.resume_from(Cursor::new(7, 3)), Some(4));
        assert_eq!(h.resume_from(Cursor::new(7, 4)), None, "from the future");
        assert_eq!(h.resume_from(Cursor::new(8, 1)), None, "foreign epoch");
    }

    #[test]
    fn stream_cursors_resume_by_id() {
        let h = History::for_stream(7, 2);
        let id = |n| Cursor::stream(100, n);
        assert_eq!(h.resume_from(id(5)), None, "the tail is not loaded yet: cannot tell");
        h.mark_loaded();
        assert_eq!(h.head(), Cursor::stream(0, 0), "an empty stream starts at 0-0");
        assert_eq!(h.resume_from(Cursor::stream(0, 0)), Some(1));
        for n in [1, 2, 3] {
            h.append_new_at(Notification::new("a", Op::Update), id(n));
        }
        assert_eq!(h.head(), id(3));
        assert_eq!(h.resume_from(id(0)), None, "1 was evicted: 0 is before the floor");
        assert_eq!(h.resume_from(id(1)), Some(2), "the floor itself was seen");
        assert_eq!(h.resume_from(id(2)), Some(3));
        assert_eq!(h.resume_from(id(3)), Some(4));
        assert!(h.is_behind(id(9)) && !h.is_behind(id(3)));
        assert_eq!(h.resume_from(id(9)), None, "beyond this instance's head: not placed");
        assert_eq!(h.resume_from(Cursor::new(7, 1)), None, "a local cursor means nothing here");
    }

    #[test]
    fn an_interruption_makes_everyone_lag() {
        let h = History::new(1, 8);
        h.append_new(Notification::new("a", Op::Update));
        h.interrupt();
        let mut out: Vec<Frame> = Vec::new();
        assert!(matches!(h.read_from(2, 10, &mut out).0, Read::Lagged { next: 3, interrupted: true, .. }));
        assert!(h.resume_from(Cursor::new(1, 1)).is_none());
        assert_eq!(h.head(), Cursor::new(1, 2), "the resync cursor");
        assert_eq!(h.resume_from(h.head()), Some(3), "is resumable");
        h.append_new(Notification::new("a", Op::Update));
        assert!(matches!(h.read_from(3, 10, &mut out), (Read::Read, 4)));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_reader_lagging_after_an_interruption_lags_for_room() {
        let h = History::new(1, 2);
        h.append_new(Notification::new("a", Op::Update));
        h.interrupt();
        let after = h.head().seq() + 1;
        for _ in 0..3 {
            h.append_new(Notification::new("a", Op::Update));
        }
        let mut out: Vec<Frame> = Vec::new();
        assert!(matches!(h.read_from(after, 10, &mut out).0, Read::Lagged { interrupted: false, .. }));
        assert!(matches!(h.read_from(1, 10, &mut out).0, Read::Lagged { interrupted: true, .. }));
    }

    #[test]
    fn a_stream_interrupted_at_an_id_resumes_only_from_that_id_on() {
        let h = History::for_stream(7, 8);
        h.mark_loaded();
        let id = |n| Cursor::stream(100, n);
        for n in [1, 2] {
            h.append_new_at(Notification::new("a", Op::Update), id(n));
        }
        h.interrupt_at(id(5));
        let mut out: Vec<Frame> = Vec::new();
        match h.read_from(3, 10, &mut out).0 {
            Read::Lagged { head, next, interrupted } => {
                assert_eq!((head, next, interrupted), (id(5), 4, true), "resync with the fence")
            }
            Read::Read => panic!("a reader from before the interruption must lag"),
        }
        assert_eq!(h.resume_from(id(2)), None, "the last id read before the loss");
        assert_eq!(h.resume_from(id(4)), None);
        assert_eq!(h.resume_from(id(5)), Some(4), "the resync cursor resumes");
        h.append_new_at(Notification::new("a", Op::Update), id(6));
        assert_eq!(h.resume_from(id(5)), Some(4));
        assert_eq!(h.resume_from(id(6)), Some(5));
        assert_eq!(h.resume_from(id(2)), None);
        h.interrupt_at(id(3));
        assert_eq!(h.head(), id(6), "a fence behind the head does not move it back");
        assert_eq!(h.resume_from(id(5)), None);
    }

    #[test]
    fn the_fan_out_queue_holds_more_than_the_log_and_says_when_it_overflowed() {
        let h = History::new(1, 2);
        let seqs = |q: &VecDeque<Arc<Entry>>| q.iter().map(|e| e.seq).collect::<Vec<_>>();
        let mut queue = VecDeque::new();
        for _ in 0..100 {
            h.append_new(Notification::new("a", Op::Update));
        }
        assert!(!h.take_unfanned(&mut queue));
        assert_eq!(seqs(&queue), (1..=100).collect::<Vec<_>>(), "more than the log holds waits for the task");
        queue.clear();
        for _ in 0..FAN_OUT_QUEUE + 1 {
            h.append_new(Notification::new("a", Op::Update));
        }
        assert!(h.take_unfanned(&mut queue), "one more than fits: the task must say so");
        assert_eq!(seqs(&queue), [100 + FAN_OUT_QUEUE as u64 + 1], "what came after the overflow");
        queue.clear();
        assert!(!h.take_unfanned(&mut queue), "said once");
        assert!(queue.is_empty());
    }

    #[test]
    fn a_reader_reads_only_the_runs_handed_to_it() {
        let h = History::new(1, 16);
        for i in 0..6 {
            h.append_new(Notification::new(if i % 2 == 0 { "even" } else { "odd" }, Op::Update));
        }
        let mut out: Vec<Frame> = Vec::new();
        let mut next = 1;
        let mut runs = VecDeque::from([1..2, 3..4, 5..7]);
        assert!(matches!(h.read(&mut next, &mut runs, 2, |_| true, &mut out), Read::Read));
        assert_eq!((out.len(), next), (2, 4), "two entries read, up to the budget");
        assert!(matches!(h.read(&mut next, &mut runs, 10, |_| true, &mut out), Read::Read));
        assert_eq!((out.len(), next), (4, 7));
        assert!(runs.is_empty());
        assert!(out.iter().all(|f| f.as_str().contains("even") || f.cursor().unwrap().seq() == 6));
    }

    fn everything(_: &str, _: Option<&str>) -> bool {
        true
    }

    #[test]
    fn changes_name_each_collection_changed_after_a_position_once() {
        let h = History::new(3, 2);
        let start = h.head();
        h.append_new(Notification::new("forums", Op::Insert));
        let middle = h.head();
        for _ in 0..3 {
            h.append_new(Notification::new("posts", Op::Insert));
        }
        h.append_new(Notification::new("inbox", Op::Insert).to("user:1"));
        assert_eq!(h.changed_since(Seen::Cursor(start), everything).unwrap(), ["forums", "inbox", "posts"]);
        assert_eq!(h.changed_since(Seen::Seq(middle.seq()), everything).unwrap(), ["inbox", "posts"]);
        let not_user_1 = |_: &str, a: Option<&str>| a.is_none();
        assert_eq!(h.changed_since(Seen::Cursor(middle), not_user_1).unwrap(), ["posts"]);
        assert_eq!(h.changed_since(Seen::Cursor(h.head()), everything).unwrap(), Vec::<String>::new());
        let future = Cursor::new(3, h.head().seq() + 1);
        assert_eq!(h.changed_since(Seen::Cursor(future), everything), None, "from the future");
        assert_eq!(h.changed_since(Seen::Cursor(Cursor::new(4, 1)), everything), None, "foreign epoch");
        assert_eq!(h.changed_since(Seen::Cursor(Cursor::stream(9, 1)), everything), None);
    }

    #[test]
    fn an_interruption_hides_what_came_before_it() {
        let h = History::new(1, 8);
        let before = h.head();
        h.append_new(Notification::new("a", Op::Update));
        h.interrupt();
        assert_eq!(h.changed_since(Seen::Cursor(before), everything), None);
        let after = h.head();
        h.append_new(Notification::new("b", Op::Update));
        assert_eq!(h.changed_since(Seen::Cursor(after), everything).unwrap(), ["b"]);
    }

    #[test]
    fn stream_changes_compare_by_id_and_start_at_the_floor() {
        let h = History::for_stream(7, 2);
        let id = |n| Cursor::stream(100, n);
        h.append_new_at(Notification::new("a", Op::Update), id(4));
        assert_eq!(h.changed_since(Seen::Cursor(id(3)), everything), None, "not loaded");
        h.set_floor(id(3));
        h.mark_loaded();
        for (n, c) in [(5, "b"), (6, "c"), (7, "c")] {
            h.append_new_at(Notification::new(c, Op::Update), id(n));
        }
        assert_eq!(h.changed_since(Seen::Cursor(id(2)), everything), None, "before the floor");
        assert_eq!(h.changed_since(Seen::Cursor(id(3)), everything).unwrap(), ["a", "b", "c"]);
        assert_eq!(h.changed_since(Seen::Cursor(id(5)), everything).unwrap(), ["c"]);
        assert_eq!(h.changed_since(Seen::Cursor(id(8)), everything), None, "ahead of the head");
        h.interrupt_at(id(9));
        assert_eq!(h.changed_since(Seen::Cursor(id(7)), everything), None, "before the fence");
        h.append_new_at(Notification::new("d", Op::Update), id(10));
        assert_eq!(h.changed_since(Seen::Cursor(id(9)), everything).unwrap(), ["d"]);
    }

    #[test]
    fn gone_keeps_a_bounded_run_of_fingerprints() {
        let mut gone = Gone::default();
        for seq in 1..=5 {
            gone.push(Cursor::stream_of(9, seq, seq as u32 * 10), 3);
        }
        let at = |seq| gone.holder(&Cursor::stream(9, seq)).map(|c| c.fingerprint());
        assert_eq!([at(2), at(3), at(4), at(5), at(6)], [None, Some(30), Some(40), Some(50), None]);
        assert_eq!(gone.holder(&Cursor::stream(8, 4)), None, "another log");
        gone.push(Cursor::stream_of(9, 9, 90), 3);
        assert_eq!(gone.holder(&Cursor::stream(9, 5)), None, "a skipped position starts a new run");
        assert_eq!(gone.holder(&Cursor::stream(9, 9)).map(|c| c.fingerprint()), Some(90));
        gone.push(Cursor::stream(9, 10), 3);
        assert_eq!(gone.holder(&Cursor::stream(9, 10)), None, "no fingerprint: nothing kept");
    }

    #[test]
    fn a_fingerprinted_cursor_places_only_where_its_row_is() {
        let h = History::for_stream(7, 2);
        h.mark_loaded();
        // Position n held by the row with fingerprint 100 + n.
        let row = |n: u64| Cursor::stream_of(100, n, 100 + n as u32);
        let other = |n: u64| Cursor::stream_of(100, n, 999);
        for n in 1..=4 {
            h.append_new_at(Notification::new(if n == 4 { "b" } else { "a" }, Op::Update), row(n));
        }
        // Held: 3 and 4; 2 is the floor; 1 was evicted before it.
        assert_eq!(h.resume_from(row(3)), Some(4));
        assert_eq!(h.resume_from(other(3)), None, "another row at position 3");
        assert_eq!(h.resume_from(row(2)), Some(3), "the floor vouches for itself");
        assert_eq!(h.resume_from(other(2)), None);
        assert_eq!(h.resume_from(Cursor::stream(100, 3)), Some(4), "no fingerprint: the position alone");
        // Evicted, but remembered: a precise answer for the row it was.
        assert_eq!(h.changed_since(Seen::Cursor(row(1)), everything).unwrap(), ["a", "b"]);
        assert_eq!(h.changed_since(Seen::Cursor(other(1)), everything), None, "not the row it was");
        assert_eq!(h.changed_since(Seen::Cursor(other(4)), everything), None);
    }

    #[test]
    fn the_index_is_bounded_and_forgets_the_oldest_pairs_first() {
        let h = History::new(1, 4);
        let start = h.head();
        h.append_new(Notification::new("old", Op::Update));
        for user in 0..MAX_CHANGE_PAIRS {
            h.append_new(Notification::new("inbox", Op::Update).to(format!("user:{user}")));
        }
        let ring = h.ring.read().unwrap();
        assert!(ring.changes.pairs <= MAX_CHANGE_PAIRS, "{}", ring.changes.pairs);
        assert!(ring.changes.pairs > MAX_CHANGE_PAIRS / 3, "{}", ring.changes.pairs);
        assert!(!ring.changes.collections.contains_key("old"), "the oldest pair went first");
        let known = ring.changes.known_after.seq;
        drop(ring);
        assert_eq!(h.changed_since(Seen::Cursor(start), everything), None, "from before what it knows");
        assert_eq!(h.changed_since(Seen::Seq(known), everything).unwrap(), ["inbox"]);
        h.append_new(Notification::new("late", Op::Update));
        let only_user_0 = |_: &str, a: Option<&str>| a.is_none_or(|a| a == "user:0");
        assert_eq!(
            h.changed_since(Seen::Seq(known), only_user_0).unwrap(),
            ["late"],
            "other users' inboxes are not named"
        );
    }

    #[test]
    fn fields_are_read_once_and_only_when_a_filter_asks() {
        let h = History::new(1, 8);
        let with = |data: &str| {
            let raw = serde_json::value::RawValue::from_string(data.to_owned()).unwrap();
            Notification::new("posts", Op::Insert).with_raw_data(raw)
        };
        h.append_one(with(r#"{"forum_id":3}"#), None);
        h.append(&mut [(with("[3]"), None), (Notification::new("posts", Op::Delete), None)].into_iter());
        let ring = h.ring.read().unwrap();
        let e = &ring.entries;
        assert!(e.iter().all(|e| e.fields.get().is_none()), "appending reads no fields");
        let Data::Fields(first) = e[0].data() else { panic!("an object has fields") };
        let Data::Fields(again) = e[0].data() else { panic!("an object has fields") };
        assert!(std::ptr::eq(first, again), "read once");
        assert!(matches!(e[1].data(), Data::Unreadable), "not an object");
        assert!(matches!(e[2].data(), Data::Absent), "no data");
    }
}
