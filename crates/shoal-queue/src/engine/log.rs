//! One topic on disk and its subscriptions, synchronous: the writer thread of
//! [`super::Engine`] drives it, and the property test drives it directly.
//!
//! Layout of a topic's directory: `topic` (its limits), `subs` (each subscription's first
//! sequence and persisted ack floor, replaced atomically) and `<first seq>.seg` segments of
//! [`super::record`]s, the newest zeroed ahead of its records (see [`ZERO_AHEAD`]) and
//! written with direct writes of whole blocks over those zeros where the filesystem takes
//! them ([`super::direct`]): a segment's records end where its zeroed tail begins. A segment
//! is removed once every subscription's persisted ack floor is past its last record; the
//! newest segment's name keeps the next sequence number across a restart even when every
//! record has been removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::direct::{Blocks, DirectFile, BLOCK};
use super::record::{self, Decoded};
use super::{Error, Message, SubStats, TopicStats};

/// A topic's limits, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicLimits {
    /// Bytes of records on disk the topic may hold.
    pub max_bytes: u64,
    /// A new segment starts once the current one would pass this size.
    pub segment_bytes: u64,
}

/// Limits the engine applies to every topic.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// The largest single message.
    pub max_message: u64,
    /// How long a delivered message waits for its ack before it is delivered again.
    pub ack_timeout: Duration,
}

/// One topic's log and subscriptions.
#[derive(Debug)]
pub struct TopicLog {
    name: String,
    dir: PathBuf,
    limits: TopicLimits,
    options: LogOptions,
    /// Oldest first; the last one takes appends.
    segments: Vec<Segment>,
    next_seq: u64,
    bytes: u64,
    subs: BTreeMap<String, Sub>,
    /// Some subscription's ack floor moved since the `subs` file was written.
    subs_dirty: bool,
    /// fdatasyncs of appended records since it was opened.
    syncs: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    file: File,
    /// Byte offset of each record; record `i` holds `first_seq + i`.
    offsets: Vec<u64>,
    /// End of its records.
    size: u64,
    /// The file's length: `size..len` holds zeros (synced by the append that wrote them).
    len: u64,
    /// The newest segment's descriptor for direct writes, where the filesystem takes them.
    direct: Option<DirectFile>,
}

#[derive(Debug)]
struct Sub {
    /// The first sequence number it gets: the next one when it was registered.
    start: u64,
    /// Every sequence below it is acknowledged.
    floor: u64,
    /// The floor the `subs` file holds; only this one lets segments go.
    persisted_floor: u64,
    /// Acknowledged sequences above `floor`.
    acked: BTreeSet<u64>,
    /// Delivered, not yet acknowledged, and when each is due again.
    pending: BTreeMap<u64, Instant>,
    /// The lowest sequence never delivered (since the last reopen).
    next: u64,
    redelivered: u64,
}

/// A publish the newest segment takes as one direct write, planned without touching the
/// disk: [`TopicLog::plan_direct`], then the write, made by the caller, then
/// [`TopicLog::finish_direct`].
#[derive(Debug)]
pub struct DirectPlan {
    blocks: Blocks,
    records: Vec<u8>,
    /// Offset of each record in `records`.
    offsets: Vec<u64>,
}

impl DirectPlan {
    /// The memory to write, block-aligned.
    pub fn blocks(&self) -> &[u8] {
        self.blocks.as_slice()
    }

    /// Where in the segment's file it goes.
    pub fn offset(&self) -> u64 {
        self.blocks.offset
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SubRecord {
    name: String,
    start: u64,
    floor: u64,
}

/// How far ahead of its records the newest segment is zeroed (never past `segment_bytes`
/// unless one append is larger). A record written over zeros already on disk leaves the
/// file's size as it is, so its fdatasync flushes the data alone; an append that grows the
/// file also has to write the inode. The zeros are written by the append that reaches
/// their start, under its own fdatasync: one publish in about a thousand (1 KiB each) pays
/// for the next MiB.
const ZERO_AHEAD: u64 = 1 << 20;

const LIMITS_FILE: &str = "topic";
const SUBS_FILE: &str = "subs";
const SEGMENT_EXT: &str = "seg";

impl TopicLog {
    /// Creates the topic's directory and limits file.
    pub fn create(
        dir: &Path,
        name: &str,
        limits: TopicLimits,
        options: LogOptions,
    ) -> Result<TopicLog, Error> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let encoded = rmp_serde::to_vec_named(&limits).expect("limits encode");
        write_atomic(&dir.join(LIMITS_FILE), &encoded)?;
        TopicLog::open(dir, name, options)
    }

    /// Opens an existing topic, dropping a torn or garbled record at the tail of its newest
    /// segment (a publish that was never acknowledged).
    pub fn open(dir: &Path, name: &str, options: LogOptions) -> Result<TopicLog, Error> {
        let limits_path = dir.join(LIMITS_FILE);
        let raw = fs::read(&limits_path).map_err(Error::io(&limits_path))?;
        let limits: TopicLimits = rmp_serde::from_slice(&raw).map_err(|source| Error::State {
            path: limits_path.clone(),
            source,
        })?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
            let path = entry.map_err(Error::io(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            if let Some(first) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = Vec::with_capacity(firsts.len());
        for (i, first) in firsts.iter().enumerate() {
            let last = i + 1 == firsts.len();
            segments.push(Segment::open(dir, *first, last)?);
        }
        let next_seq = segments.last().map_or(1, |s| s.end_seq());
        let subs_path = dir.join(SUBS_FILE);
        let records: Vec<SubRecord> = match fs::read(&subs_path) {
            Ok(raw) => rmp_serde::from_slice(&raw).map_err(|source| Error::State {
                path: subs_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&subs_path)(e)),
        };
        let subs = records
            .into_iter()
            .map(|r| (r.name, Sub::new(r.start, r.floor.min(next_seq))))
            .collect();
        let mut log = TopicLog {
            name: name.to_owned(),
            dir: dir.to_owned(),
            limits,
            options,
            bytes: segments.iter().map(|s| s.size).sum(),
            segments,
            next_seq,
            subs,
            subs_dirty: false,
            syncs: 0,
        };
        if log.segments.is_empty() {
            log.roll()?;
        }
        Ok(log)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> TopicLimits {
        self.limits
    }

    /// The sequence number the next published message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Registers `sub`: it gets every message published from now on, connected or not.
    /// Registering again keeps what it has.
    pub fn register(&mut self, sub: &str) -> Result<(), Error> {
        if self.subs.contains_key(sub) {
            return Ok(());
        }
        self.subs
            .insert(sub.to_owned(), Sub::new(self.next_seq, self.next_seq));
        self.write_subs()
    }

    /// Unregisters `sub`; what only it still held is released.
    pub fn unregister(&mut self, sub: &str) -> Result<(), Error> {
        if self.subs.remove(sub).is_none() {
            return Err(self.no_sub(sub));
        }
        self.write_subs()?;
        self.compact()
    }

    /// Appends one message and syncs it; see [`TopicLog::publish_group`].
    pub fn publish(&mut self, payloads: &[Vec<u8>]) -> Result<Range<u64>, Error> {
        self.publish_group(&[payloads])
            .pop()
            .expect("one result per batch")
    }

    /// Appends several batches with one write and one fdatasync (group commit), answering
    /// each batch with its sequence numbers or why it was refused. A refused batch writes
    /// nothing; if the write fails, none of them is kept.
    pub fn publish_group(&mut self, batches: &[&[Vec<u8>]]) -> Vec<Result<Range<u64>, Error>> {
        let mut results = Vec::with_capacity(batches.len());
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        let mut seq = self.next_seq;
        let mut compacted = false;
        for batch in batches {
            let size: u64 = batch.iter().map(|p| record::size(p.len())).sum();
            if let Some(big) = batch
                .iter()
                .find(|p| p.len() as u64 > self.options.max_message)
            {
                results.push(Err(Error::TooLarge {
                    topic: self.name.clone(),
                    size: big.len() as u64,
                    max: self.options.max_message,
                }));
                continue;
            }
            if size > self.limits.max_bytes {
                results.push(Err(Error::TooLarge {
                    topic: self.name.clone(),
                    size,
                    max: self.limits.max_bytes,
                }));
                continue;
            }
            let pending = buf.len() as u64;
            if self.bytes + pending + size > self.limits.max_bytes && !compacted {
                compacted = true;
                if let Err(e) = self.sync() {
                    results.push(Err(e));
                    continue;
                }
            }
            if self.bytes + pending + size > self.limits.max_bytes {
                results.push(Err(self.full()));
                continue;
            }
            let start = seq;
            for payload in batch.iter() {
                offsets.push(buf.len() as u64);
                record::encode(seq, payload, &mut buf);
                seq += 1;
            }
            results.push(Ok(start..seq));
        }
        if buf.is_empty() {
            return results;
        }
        if let Err(e) = self.append(&buf, &offsets) {
            warn!(topic = %self.name, error = %e, "publish failed");
            // Nothing of the group is kept: every accepted batch gets the error.
            let message = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(Error::Io {
                    path: self.active().path.clone(),
                    source: std::io::Error::other(message.clone()),
                });
            }
        }
        results
    }

    /// Plans `payloads` as one direct write when nothing else has to happen first: each is
    /// within the limits, the topic has room without letting go of acknowledged segments,
    /// the newest segment takes them without a new segment, over zeros already on disk, and
    /// takes direct writes. `None` otherwise: [`TopicLog::publish`] does the rest.
    pub fn plan_direct(&self, payloads: &[Vec<u8>]) -> Option<DirectPlan> {
        let size: u64 = payloads.iter().map(|p| record::size(p.len())).sum();
        if payloads
            .iter()
            .any(|p| p.len() as u64 > self.options.max_message)
            || self.bytes + size > self.limits.max_bytes
        {
            return None;
        }
        let active = self.active();
        let end = active.size + size;
        if (active.size > 0 && end > self.limits.segment_bytes) || !active.takes_direct(end) {
            return None;
        }
        let mut records = Vec::with_capacity(size as usize);
        let mut offsets = Vec::with_capacity(payloads.len());
        for (seq, payload) in (self.next_seq..).zip(payloads) {
            offsets.push(records.len() as u64);
            record::encode(seq, payload, &mut records);
        }
        let blocks = active.direct.as_ref()?.blocks(active.size, &records);
        Some(DirectPlan {
            blocks,
            records,
            offsets,
        })
    }

    /// Goes on with write and fdatasync, until the next segment, after a planned direct
    /// write the device refused (see [`refused_direct`]) or that could not be submitted; it
    /// wrote nothing.
    pub fn stop_direct(&mut self) {
        self.segments
            .last_mut()
            .expect("a topic always has a segment")
            .stop_direct();
    }

    /// The descriptor a planned direct write goes through.
    pub fn direct_fd(&self) -> Option<BorrowedFd<'_>> {
        self.active().direct.as_ref().map(DirectFile::fd)
    }

    /// Takes in a planned direct write once it is done, `written` saying how it went: its
    /// records are kept, or, if it failed, whatever it left past the last record goes.
    pub fn finish_direct(
        &mut self,
        plan: DirectPlan,
        written: std::io::Result<usize>,
    ) -> Result<Range<u64>, Error> {
        self.syncs += 1;
        let segment = self
            .segments
            .last_mut()
            .expect("a topic always has a segment");
        if let Err(e) = written.and_then(|n| plan.blocks.check(n)) {
            warn!(topic = %self.name, error = %e, "publish failed");
            segment.cut_back();
            return Err(Error::io(&segment.path)(e));
        }
        if let Some(direct) = segment.direct.as_mut() {
            direct.follow(segment.size, &plan.records);
        }
        segment
            .offsets
            .extend(plan.offsets.iter().map(|o| o + segment.size));
        segment.size += plan.records.len() as u64;
        self.bytes += plan.records.len() as u64;
        let start = self.next_seq;
        self.next_seq += plan.offsets.len() as u64;
        Ok(start..self.next_seq)
    }

    /// Delivers up to `max` messages to `sub`: first those due again (ack timeout or nack
    /// delay passed), then new ones.
    pub fn fetch(&mut self, sub: &str, max: usize, now: Instant) -> Result<Vec<Message>, Error> {
        let ack_timeout = self.options.ack_timeout;
        let next_seq = self.next_seq;
        let Some(state) = self.subs.get_mut(sub) else {
            return Err(self.no_sub(sub));
        };
        let mut picked = Vec::new();
        for (seq, due) in state.pending.iter_mut() {
            if picked.len() == max {
                break;
            }
            if *due <= now {
                *due = now + ack_timeout;
                state.redelivered += 1;
                picked.push((*seq, true));
            }
        }
        while picked.len() < max && state.next < next_seq {
            let seq = state.next;
            state.next += 1;
            if state.acked.contains(&seq) {
                continue; // acked before it was (re)delivered
            }
            state.pending.insert(seq, now + ack_timeout);
            picked.push((seq, false));
        }
        picked
            .into_iter()
            .map(|(seq, redelivered)| {
                Ok(Message {
                    seq,
                    data: self.read(seq)?.expect("a pending message is kept"),
                    redelivered,
                })
            })
            .collect()
    }

    /// When `sub`'s earliest delivered message is due again, if it has one.
    pub fn next_due(&self, sub: &str) -> Option<Instant> {
        self.subs.get(sub)?.pending.values().min().copied()
    }

    /// True when a fetch by `sub` would deliver a new message.
    pub fn has_new(&self, sub: &str) -> bool {
        self.subs.get(sub).is_some_and(|s| s.next < self.next_seq)
    }

    /// Acknowledges `seqs` for `sub`. Acking again is harmless; a sequence published before
    /// it registered, or not yet published, is refused, and then none is acked.
    pub fn ack(&mut self, sub: &str, seqs: &[u64]) -> Result<(), Error> {
        self.check_its_own(sub, seqs)?;
        let state = self.subs.get_mut(sub).expect("checked");
        for &seq in seqs {
            if seq < state.floor {
                continue;
            }
            state.pending.remove(&seq);
            state.acked.insert(seq);
        }
        let before = state.floor;
        while state.acked.remove(&state.floor) {
            state.floor += 1;
        }
        self.subs_dirty |= state.floor != before;
        Ok(())
    }

    /// Hands `seqs` back: each is delivered again once `delay` has passed.
    pub fn nack(
        &mut self,
        sub: &str,
        seqs: &[u64],
        delay: Duration,
        now: Instant,
    ) -> Result<(), Error> {
        self.check_its_own(sub, seqs)?;
        let state = self.subs.get_mut(sub).expect("checked");
        for seq in seqs {
            if let Some(due) = state.pending.get_mut(seq) {
                *due = now + delay;
            }
        }
        Ok(())
    }

    /// Persists the ack floors that moved, then removes the segments every subscription has
    /// passed.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.subs_dirty {
            self.write_subs()?;
        }
        self.compact()
    }

    pub fn stats(&self) -> TopicStats {
        TopicStats {
            topic: self.name.clone(),
            bytes: self.bytes,
            max_bytes: self.limits.max_bytes,
            first_seq: self.first_stored(),
            last_seq: self.next_seq - 1,
            waiting: 0,
            syncs: self.syncs,
            subs: self
                .subs
                .iter()
                .map(|(name, s)| SubStats {
                    name: name.clone(),
                    lag: self.next_seq - s.floor - s.acked.len() as u64,
                    unacked: s.pending.len() as u64,
                    redelivered: s.redelivered,
                    ack_floor: s.floor,
                })
                .collect(),
        }
    }

    /// The payload of `seq` if it is still stored.
    pub fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, Error> {
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        let Some(segment) = index.checked_sub(1).map(|i| &self.segments[i]) else {
            return Ok(None);
        };
        let Some(&offset) = segment.offsets.get((seq - segment.first_seq) as usize) else {
            return Ok(None);
        };
        let end = segment
            .offsets
            .get((seq - segment.first_seq) as usize + 1)
            .copied()
            .unwrap_or(segment.size);
        let mut data = vec![0; (end - offset) as usize - record::HEADER];
        segment
            .file
            .read_exact_at(&mut data, offset + record::HEADER as u64)
            .map_err(Error::io(&segment.path))?;
        Ok(Some(data))
    }

    fn first_stored(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| !s.offsets.is_empty())
            .map_or(self.next_seq, |s| s.first_seq)
    }

    fn full(&self) -> Error {
        let holder = self
            .subs
            .iter()
            .min_by_key(|(_, s)| s.persisted_floor)
            .map(|(name, s)| (name.clone(), s.persisted_floor));
        let (holder, oldest) = holder.unwrap_or_else(|| ("(none)".to_owned(), self.first_stored()));
        Error::Full {
            topic: self.name.clone(),
            bytes: self.bytes,
            max_bytes: self.limits.max_bytes,
            holder,
            oldest,
        }
    }

    fn no_sub(&self, sub: &str) -> Error {
        Error::NoSubscription {
            topic: self.name.clone(),
            sub: sub.to_owned(),
        }
    }

    fn check_its_own(&self, sub: &str, seqs: &[u64]) -> Result<(), Error> {
        let Some(state) = self.subs.get(sub) else {
            return Err(self.no_sub(sub));
        };
        // Any message published for it may be acked, delivered since the last reopen or not:
        // a consumer that fetched before the queue restarted can still ack what it got.
        match seqs
            .iter()
            .find(|&&seq| seq < state.start || seq >= self.next_seq)
        {
            Some(&seq) => Err(Error::NotItsMessage {
                topic: self.name.clone(),
                sub: sub.to_owned(),
                seq,
            }),
            None => Ok(()),
        }
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a topic always has a segment")
    }

    fn append(&mut self, buf: &[u8], offsets: &[u64]) -> Result<(), Error> {
        let active = self.active();
        if active.size > 0 && active.size + buf.len() as u64 > self.limits.segment_bytes {
            self.roll()?;
        }
        let segment_bytes = self.limits.segment_bytes;
        let segment = self
            .segments
            .last_mut()
            .expect("a topic always has a segment");
        let written = segment.write_synced(buf, segment_bytes);
        self.syncs += 1;
        if let Err(e) = written {
            segment.cut_back();
            return Err(Error::io(&segment.path)(e));
        }
        segment
            .offsets
            .extend(offsets.iter().map(|o| o + segment.size));
        segment.size += buf.len() as u64;
        self.bytes += buf.len() as u64;
        self.next_seq += offsets.len() as u64;
        Ok(())
    }

    /// Starts a new, empty segment named by the next sequence number.
    fn roll(&mut self) -> Result<(), Error> {
        let path = segment_path(&self.dir, self.next_seq);
        // A file of that name holds nothing kept: no segment starts at the next sequence.
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let direct = DirectFile::open(&path, &[]).map_err(Error::io(&path))?;
        sync_dir(&self.dir)?;
        if let Some(old) = self.segments.last_mut() {
            old.trim();
        }
        self.segments.push(Segment {
            first_seq: self.next_seq,
            path,
            file,
            offsets: Vec::new(),
            size: 0,
            len: 0,
            direct,
        });
        Ok(())
    }

    /// Removes every segment below the lowest persisted ack floor (all of them when no
    /// subscription is registered). The newest one is replaced by an empty one first, so the
    /// next sequence number survives.
    fn compact(&mut self) -> Result<(), Error> {
        let floor = self
            .subs
            .values()
            .map(|s| s.persisted_floor)
            .min()
            .unwrap_or(self.next_seq);
        if self.active().first_seq < self.next_seq && self.next_seq <= floor {
            self.roll()?;
        }
        let done = self
            .segments
            .iter()
            .take(self.segments.len() - 1)
            .take_while(|s| s.end_seq() <= floor)
            .count();
        if done == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..done) {
            fs::remove_file(&segment.path).map_err(Error::io(&segment.path))?;
            self.bytes -= segment.size;
        }
        sync_dir(&self.dir)
    }

    fn write_subs(&mut self) -> Result<(), Error> {
        let records: Vec<SubRecord> = self
            .subs
            .iter()
            .map(|(name, s)| SubRecord {
                name: name.clone(),
                start: s.start,
                floor: s.floor,
            })
            .collect();
        let encoded = rmp_serde::to_vec_named(&records).expect("subscriptions encode");
        write_atomic(&self.dir.join(SUBS_FILE), &encoded)?;
        for s in self.subs.values_mut() {
            s.persisted_floor = s.floor;
        }
        self.subs_dirty = false;
        Ok(())
    }
}

impl Sub {
    fn new(start: u64, floor: u64) -> Sub {
        Sub {
            start,
            floor,
            persisted_floor: floor,
            acked: BTreeSet::new(),
            pending: BTreeMap::new(),
            next: floor,
            redelivered: 0,
        }
    }
}

impl Segment {
    /// Opens and checks a segment; in the newest one (`last`), a bad tail is cut off.
    fn open(dir: &Path, first_seq: u64, last: bool) -> Result<Segment, Error> {
        let path = segment_path(dir, first_seq);
        let data = fs::read(&path).map_err(Error::io(&path))?;
        let mut offsets = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let expected = first_seq + offsets.len() as u64;
            match record::decode(&data[at..]) {
                Decoded::Record { seq, payload } if seq == expected => {
                    offsets.push(at as u64);
                    at += record::HEADER + payload.len();
                }
                // The zeroed tail: no record has an all-zero header (sequences start at 1).
                _ if data[at..].iter().all(|&b| b == 0) => break,
                _ if last => {
                    warn!(
                        path = %path.display(),
                        offset = at,
                        dropped = data.len() - at,
                        "dropping a torn record at the tail (a publish never acknowledged)"
                    );
                    break;
                }
                _ => {
                    return Err(Error::Corrupt {
                        path,
                        offset: at as u64,
                    })
                }
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let mut len = data.len() as u64;
        let torn = data[at..].iter().any(|&b| b != 0);
        if torn {
            // Whatever lies past the last whole record goes, so that no stale record can
            // follow the next one written there.
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(Error::io(&path))?;
            len = at as u64;
        }
        let direct = match last {
            true => DirectFile::open(&path, DirectFile::tail_of(&data[..at]))
                .map_err(Error::io(&path))?,
            false => None,
        };
        let mut segment = Segment {
            first_seq,
            path,
            file,
            offsets,
            size: at as u64,
            len,
            direct,
        };
        if !last {
            segment.trim();
        }
        Ok(segment)
    }

    /// True when records up to `end` can go as a direct write: the segment takes them, and
    /// the blocks they land in are zeros on disk already.
    fn takes_direct(&self, end: u64) -> bool {
        self.direct.is_some() && end.next_multiple_of(BLOCK) <= self.len
    }

    /// Goes on with write and fdatasync: the device refused a direct write.
    fn stop_direct(&mut self) {
        warn!(path = %self.path.display(), "direct writes refused; writing and syncing instead");
        self.direct = None;
    }

    /// Cuts the file back to its records after a failed write. No partial record is left
    /// behind for the next publish to follow: a stale record past a shorter one written
    /// there later could read back as the next one.
    fn cut_back(&mut self) {
        let _ = self.file.set_len(self.size);
        self.len = self.size;
    }

    /// Writes `buf` at the end of its records and syncs it: directly where the blocks it
    /// lands in are zeros on disk already, else by write and fdatasync (which also syncs
    /// zeros written ahead now).
    fn write_synced(&mut self, buf: &[u8], segment_bytes: u64) -> std::io::Result<()> {
        let end = self.size + buf.len() as u64;
        let zeroed_now = self.zero_ahead(end, segment_bytes)?;
        let direct = !zeroed_now && self.takes_direct(end);
        if let Some(direct) = self.direct.as_mut().filter(|_| direct) {
            match direct.write(self.size, buf) {
                Err(e) if refused_direct(&e) => self.stop_direct(),
                written => return written,
            }
        }
        self.file.write_all_at(buf, self.size)?;
        self.file.sync_data()?;
        if let Some(direct) = self.direct.as_mut() {
            direct.follow(self.size, buf);
        }
        Ok(())
    }

    /// Makes sure `size..end` is zeros on disk (once synced), zeroing up to [`ZERO_AHEAD`]
    /// further, within `segment_bytes`, when it is not; true when it wrote zeros, which
    /// then wait for a sync.
    fn zero_ahead(&mut self, end: u64, segment_bytes: u64) -> std::io::Result<bool> {
        if end <= self.len {
            return Ok(false);
        }
        let target = end.max((self.len + ZERO_AHEAD).min(segment_bytes));
        let zeros = vec![0; (target - self.len) as usize];
        self.file.write_all_at(&zeros, self.len)?;
        // Counted as written now; a failed write or sync resets it to `size`.
        self.len = target;
        Ok(true)
    }

    /// Drops the zeroed tail, and the descriptor for direct writes, of a segment that takes
    /// no more appends. Not synced: the file reads the same with or without it.
    fn trim(&mut self) {
        self.direct = None;
        if self.len > self.size {
            if let Err(error) = self.file.set_len(self.size) {
                warn!(path = %self.path.display(), %error, "cannot trim a segment's zeroed tail");
                return;
            }
            self.len = self.size;
        }
    }

    /// One past its last record's sequence number.
    fn end_seq(&self) -> u64 {
        self.first_seq + self.offsets.len() as u64
    }
}

/// True for the error of a direct write the device refused whole, its blocks being smaller
/// than the device's: nothing was written.
pub fn refused_direct(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(nix::libc::EINVAL)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

/// Replaces `path` with `data` so that a crash leaves the old or the new file, whole.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(Error::io(&tmp))?;
    file.write_all(data)
        .and_then(|()| file.sync_data())
        .map_err(Error::io(&tmp))?;
    fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(path.parent().expect("a file in a directory"))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
