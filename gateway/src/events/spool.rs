//! The local spool: events the broker has not confirmed, in append-only segment files of JSON
//! lines under `gateway.spool_dir`, bounded by `gateway.spool_max_bytes`.
//!
//! Files: `seg-<seq>.jsonl` (one `Event::to_json` per line, oldest segment first) and, while a
//! segment is being replayed, `seg-<seq>.offset` (the byte offset up to which its events are
//! confirmed or moved to a newer segment). New events go to the one active segment; the
//! replayer only reads sealed segments, which never change again, and deletes a segment once
//! every event in it is accounted for. Writes go to the kernel at once (a crash of the process
//! loses nothing) and are fsync'd in batches by the publisher task (a crash of the machine
//! loses at most the last batch interval).
//!
//! One spool directory belongs to one gateway process: two instances must not share it.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// A new segment is started past this size, so replayed events free disk space in steps.
const SEGMENT_MAX_BYTES: u64 = 16 * 1024 * 1024;

pub(super) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max_bytes: u64,
    /// The size of every segment file on disk.
    total_bytes: u64,
    /// Segments no longer written to, oldest first.
    sealed: VecDeque<u64>,
    active: Option<Active>,
    next_seq: u64,
    /// Sealed segments written since the last fsync.
    unsynced: Vec<File>,
    /// A segment file was created or removed since the last fsync of the directory.
    dir_unsynced: bool,
}

struct Active {
    seq: u64,
    file: File,
    bytes: u64,
    /// Written since the last fsync.
    dirty: bool,
}

/// What the publisher task must fsync, taken from the spool so the fsync runs without its lock.
pub(super) struct Unsynced {
    files: Vec<File>,
    dir: Option<PathBuf>,
}

impl Unsynced {
    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// Blocking: run it on a blocking thread.
    pub(super) fn sync(self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Spool {
    /// Opens (creating) the directory and finds the segments a previous run left. Returns the
    /// spool and the number of events waiting in it. Blocking.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, u64)> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(seq) = name.to_str().and_then(parse_segment_name) {
                segments.push(seq);
            }
        }
        segments.sort_unstable();
        let mut total_bytes = 0;
        let mut pending = 0;
        for &seq in &segments {
            let path = segment_path(dir, seq);
            total_bytes += fs::metadata(&path)?.len();
            pending += count_lines_from(&path, read_offset(dir, seq)?)?;
        }
        let next_seq = segments.last().map_or(1, |last| last + 1);
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_max_bytes: SEGMENT_MAX_BYTES.min(max_bytes / 8).max(64 * 1024),
            total_bytes,
            sealed: segments.into(),
            active: None,
            next_seq,
            unsynced: Vec::new(),
            dir_unsynced: false,
        };
        Ok((spool, pending))
    }

    /// Appends whole lines (each one event's JSON, without its newline) with one write.
    /// With `enforce_cap`, stops before the line that would take the spool past its size
    /// bound; events moved from an older segment skip the check, as their old copy is about
    /// to be freed. Returns how many lines were written; the rest were not.
    pub(super) fn append<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a [u8]>,
        enforce_cap: bool,
    ) -> io::Result<usize> {
        let mut buf = Vec::new();
        let mut count = 0;
        for line in lines {
            let size = line.len() as u64 + 1;
            if enforce_cap && self.total_bytes + buf.len() as u64 + size > self.max_bytes {
                break;
            }
            buf.extend_from_slice(line);
            buf.push(b'\n');
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let segment_max_bytes = self.segment_max_bytes;
        let active = self.active()?;
        if let Err(error) = active.file.write_all(&buf) {
            // A partial write leaves a torn line; the replayer skips it. Later events go to a
            // fresh segment so they are not glued onto it.
            self.seal_active();
            return Err(error);
        }
        active.bytes += buf.len() as u64;
        let full = active.bytes >= segment_max_bytes;
        active.dirty = true;
        self.total_bytes += buf.len() as u64;
        if full {
            self.seal_active();
        }
        Ok(count)
    }

    /// Closes the active segment so the replayer may read it.
    pub(super) fn seal_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.sealed.push_back(active.seq);
            if active.dirty {
                self.unsynced.push(active.file);
            }
        }
    }

    pub(super) fn has_active_events(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.bytes > 0)
    }

    /// The oldest sealed segment: its sequence number and path.
    pub(super) fn oldest_sealed(&self) -> Option<(u64, PathBuf)> {
        self.sealed
            .front()
            .map(|&seq| (seq, segment_path(&self.dir, seq)))
    }

    pub(super) fn offset_of(&self, seq: u64) -> io::Result<u64> {
        read_offset(&self.dir, seq)
    }

    /// Records that the events of segment `seq` before `offset` are accounted for.
    pub(super) fn save_offset(&self, seq: u64, offset: u64) -> io::Result<()> {
        let tmp = self.dir.join(format!("seg-{seq:020}.offset.tmp"));
        fs::write(&tmp, offset.to_string())?;
        fs::rename(tmp, offset_path(&self.dir, seq))
    }

    /// Deletes a replayed segment: every event in it was confirmed or moved.
    pub(super) fn remove_sealed(&mut self, seq: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, seq);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path)?;
        match fs::remove_file(offset_path(&self.dir, seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.sealed.retain(|&s| s != seq);
        self.total_bytes = self.total_bytes.saturating_sub(size);
        self.dir_unsynced = true;
        Ok(())
    }

    pub(super) fn take_unsynced(&mut self) -> Unsynced {
        if let Some(active) = self.active.as_mut().filter(|a| a.dirty) {
            match active.file.try_clone() {
                Ok(handle) => {
                    active.dirty = false;
                    self.unsynced.push(handle);
                }
                Err(error) => {
                    tracing::error!(%error, "a spool segment handle could not be cloned for fsync")
                }
            }
        }
        Unsynced {
            files: std::mem::take(&mut self.unsynced),
            dir: std::mem::take(&mut self.dir_unsynced).then(|| self.dir.clone()),
        }
    }

    fn active(&mut self) -> io::Result<&mut Active> {
        if self.active.is_none() {
            let seq = self.next_seq;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            self.next_seq += 1;
            self.dir_unsynced = true;
            self.active = Some(Active {
                seq,
                file,
                bytes: 0,
                dirty: false,
            });
        }
        self.active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active segment"))
    }
}

/// Reads a sealed segment line by line from a byte offset.
pub(super) struct SegmentReader {
    pub(super) seq: u64,
    reader: BufReader<File>,
    /// The offset just past the last line returned.
    pub(super) offset: u64,
}

impl SegmentReader {
    pub(super) fn open(seq: u64, path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            seq,
            reader: BufReader::new(file),
            offset,
        })
    }

    /// Up to `max` lines (without their newline), each with the offset just past it. A torn
    /// last line (no newline: a write cut short) is returned as it is; it will not parse.
    pub(super) fn next_lines(&mut self, max: usize) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let mut lines = Vec::new();
        while lines.len() < max {
            let mut line = Vec::new();
            let read = self.reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            self.offset += read as u64;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if !line.is_empty() {
                lines.push((line, self.offset));
            }
        }
        Ok(lines)
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.jsonl"))
}

fn offset_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.offset"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn read_offset(dir: &Path, seq: u64) -> io::Result<u64> {
    match fs::read_to_string(offset_path(dir, seq)) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The number of non-empty lines of a file past `offset` (a torn last line counts).
fn count_lines_from(path: &Path, offset: u64) -> io::Result<u64> {
    let mut reader = SegmentReader::open(0, path, offset)?;
    let mut count = 0;
    loop {
        let batch = reader.next_lines(4096)?;
        if batch.is_empty() {
            return Ok(count);
        }
        count += batch.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn appends_seals_reads_and_removes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 0);
        assert_eq!(spool.append([&b"a"[..], b"b"], true).unwrap(), 2);
        spool.seal_active();
        assert_eq!(spool.append([&b"c"[..]], true).unwrap(), 1);
        spool.seal_active();

        let (seq, path) = spool.oldest_sealed().unwrap();
        let mut reader = SegmentReader::open(seq, &path, 0).unwrap();
        let lines = reader.next_lines(10).unwrap();
        assert_eq!(lines, vec![(b"a".to_vec(), 2), (b"b".to_vec(), 4)]);
        spool.save_offset(seq, 2).unwrap();

        // A restart sees both segments and skips what the offset says is done.
        let (_, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 2);

        spool.remove_sealed(seq).unwrap();
        let (seq2, _) = spool.oldest_sealed().unwrap();
        assert!(seq2 > seq);
        let (_, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 1);
    }

    #[test]
    fn the_size_bound_holds_except_for_moved_events() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(
            spool.append([&b"1234"[..], b"5678", b"9"], true).unwrap(),
            2
        );
        assert_eq!(spool.append([&b"x"[..]], true).unwrap(), 0);
        assert_eq!(spool.append([&b"moved"[..]], false).unwrap(), 1);
    }
}
