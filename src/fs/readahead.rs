//! Sequential-read detection: a file read front to back gets its next pieces asked for
//! before the reads reach them, so that its pieces stream at the link's rate instead of
//! one round trip per piece. Reads that jump about (page faults of a binary) get none;
//! the first jump in a file says it is paged (a mapped binary or library, an index), and
//! the caller can have it fetched whole soon ([`Access::paged`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Ino;

/// The first window of a sequential reader.
pub const MIN_WINDOW: u64 = 1 << 20;
/// The widest window: 2 MiB, 160 ms of a 100 Mbit/s link. Everything asked for ahead of
/// where a reader stops is fetched before what it reads next: a fleet booting without a
/// profile read a binary's 4.4 MB head and then its libraries, and with an 8 MiB window
/// the libraries' reads waited behind 7 MB of the binary asked for ahead
/// (8 x 128 MB, 256 KiB pieces, 2026-12-06).
pub const MAX_WINDOW: u64 = 2 << 20;
/// A read this close to where the last one ended still counts as sequential (the kernel
/// has several reads of a file in flight and they arrive out of order).
const SLACK: u64 = 512 << 10;

#[derive(Default)]
pub struct Readahead {
    files: Mutex<HashMap<Ino, Stream>>,
}

struct Stream {
    /// Where the furthest read so far ended.
    end: u64,
    window: u64,
    /// Whether a read of this file jumped already.
    jumped: bool,
}

/// What a read says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// How many bytes after the read to ask for ahead (0: not a sequential reader).
    pub window: u64,
    /// True for the first read of the file that jumped (neither at its start nor near
    /// where the last read ended): the file is read in pages, here and on every host
    /// that starts the same program.
    pub paged: bool,
    /// True for the first read of the file.
    pub first: bool,
}

impl Readahead {
    /// Records a read of `len` bytes at `offset`.
    pub fn on_read(&self, ino: Ino, offset: u64, len: u64) -> Access {
        let mut files = self.files.lock().expect("not poisoned");
        let (s, first) = match files.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => (o.into_mut(), false),
            std::collections::hash_map::Entry::Vacant(v) => (
                v.insert(Stream {
                    end: 0,
                    window: 0,
                    jumped: false,
                }),
                true,
            ),
        };
        let sequential = offset == 0 || (offset <= s.end + SLACK && offset + SLACK >= s.end);
        let paged = !sequential && !std::mem::replace(&mut s.jumped, true);
        s.window = match (sequential, s.window) {
            (false, _) => 0,
            (true, 0) => MIN_WINDOW,
            (true, w) => (w * 2).min(MAX_WINDOW),
        };
        s.end = if sequential {
            s.end.max(offset + len)
        } else {
            offset + len
        };
        Access {
            window: s.window,
            paged,
            first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_front_to_back_reader_gets_a_growing_window_a_jumping_one_none() {
        let r = Readahead::default();
        let w = |ino, off, len| r.on_read(ino, off, len).window;
        let k = 128 << 10;
        assert_eq!(w(1, 0, k), MIN_WINDOW);
        assert_eq!(w(1, k, k), 2 * MIN_WINDOW);
        // Out of order, within the slack: still sequential.
        assert_eq!(w(1, 3 * k, k), MAX_WINDOW);
        assert_eq!(w(1, 2 * k, k), MAX_WINDOW);
        assert_eq!(w(1, 4 * k, k), MAX_WINDOW);
        // A jump ends it; reading on from the new place starts again.
        assert_eq!(w(1, 100 << 20, 64 << 10), 0);
        assert_eq!(w(1, (100 << 20) + (64 << 10), k), MIN_WINDOW);
        // Page faults all over another file: never a window.
        for off in [90u64 << 20, 3 << 20, 50 << 20, 7 << 20] {
            assert_eq!(w(2, off, 64 << 10), 0);
        }
    }

    #[test]
    fn the_first_jump_in_a_file_says_it_is_paged_once() {
        let r = Readahead::default();
        let paged = |ino, off| r.on_read(ino, off, 64 << 10).paged;
        // A head, then on from it: not paged.
        assert!(!paged(1, 0));
        assert!(!paged(1, 64 << 10));
        // A page far off: paged, once.
        assert!(paged(1, 40 << 20));
        assert!(!paged(1, 3 << 20));
        // A file whose first read is a page: paged at once.
        assert!(paged(2, 9 << 20));
        // A file read front to back never is.
        for i in 0..64 {
            assert!(!paged(3, i * (64 << 10)));
        }
    }
}
