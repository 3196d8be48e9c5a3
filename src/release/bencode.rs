//! A bounded structural scan of bencode, run before any decoding.
//!
//! `serde_bencode` decodes typed values but neither limits nesting (a hostile torrent of
//! a million `l`s overflows the stack) nor tells where the `info` dictionary starts and
//! ends, and the infohash is the SHA-1 of exactly those bytes as they appear in the file
//! (re-encoding would drop fields we do not model and change the hash). This scan does
//! both: it checks that the whole input is one well-formed value no deeper than
//! [`MAX_DEPTH`] and returns the byte range of the top-level `info` value.

use std::ops::Range;

/// Deepest nesting accepted. A torrent needs 4 (dict > info dict > files list > file dict
/// > path list is 5); 32 leaves room for extensions and refuses recursion bombs.
pub const MAX_DEPTH: usize = 32;

/// What is wrong with the bytes, with the offset where it was noticed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("malformed bencode at byte {0}")]
    Malformed(usize),
    #[error("bencode nested deeper than {MAX_DEPTH} levels at byte {0}")]
    TooDeep(usize),
    #[error("trailing bytes after the bencode value at byte {0}")]
    Trailing(usize),
    #[error("the top-level value is not a dictionary")]
    NotADict,
    #[error("the torrent has no `info` dictionary")]
    NoInfo,
}

/// Checks `buf` and returns the byte range of the top-level dictionary's `info` value.
pub fn info_span(buf: &[u8]) -> Result<Range<usize>, ScanError> {
    if buf.first() != Some(&b'd') {
        return Err(ScanError::NotADict);
    }
    let mut scanner = Scanner { buf, pos: 1 };
    let mut info = None;
    loop {
        match scanner.peek()? {
            b'e' => {
                scanner.pos += 1;
                break;
            }
            _ => {
                let key = scanner.string()?;
                let start = scanner.pos;
                scanner.value(2)?;
                if key == b"info" {
                    info = Some(start..scanner.pos);
                }
            }
        }
    }
    if scanner.pos != buf.len() {
        return Err(ScanError::Trailing(scanner.pos));
    }
    let info = info.ok_or(ScanError::NoInfo)?;
    if buf[info.start] != b'd' {
        return Err(ScanError::Malformed(info.start));
    }
    Ok(info)
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Result<u8, ScanError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(ScanError::Malformed(self.pos))
    }

    /// Skips one value; iterative over siblings, recursive only into children, so the
    /// recursion depth is the nesting depth, which is bounded.
    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep(self.pos));
        }
        match self.peek()? {
            b'i' => self.integer(),
            b'l' => {
                self.pos += 1;
                while self.peek()? != b'e' {
                    self.value(depth + 1)?;
                }
                self.pos += 1;
                Ok(())
            }
            b'd' => {
                self.pos += 1;
                while self.peek()? != b'e' {
                    self.string()?;
                    self.value(depth + 1)?;
                }
                self.pos += 1;
                Ok(())
            }
            b'0'..=b'9' => self.string().map(|_| ()),
            _ => Err(ScanError::Malformed(self.pos)),
        }
    }

    fn integer(&mut self) -> Result<(), ScanError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.peek()?.is_ascii_digit() {
            self.pos += 1;
        }
        if self.pos == digits || self.peek()? != b'e' {
            return Err(ScanError::Malformed(start));
        }
        self.pos += 1;
        Ok(())
    }

    fn string(&mut self) -> Result<&'a [u8], ScanError> {
        let start = self.pos;
        let mut len: usize = 0;
        while self.peek()?.is_ascii_digit() {
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add((self.buf[self.pos] - b'0') as usize))
                .ok_or(ScanError::Malformed(start))?;
            self.pos += 1;
        }
        if self.pos == start || self.peek()? != b':' {
            return Err(ScanError::Malformed(start));
        }
        self.pos += 1;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ScanError::Malformed(start))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_info_span() {
        let t = b"d8:announce3:abc4:infod4:name1:xee";
        let span = info_span(t).unwrap();
        assert_eq!(&t[span], b"d4:name1:xe");
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        let mut t = b"d4:info".to_vec();
        t.extend(std::iter::repeat_n(b'l', 1_000_000));
        t.extend(std::iter::repeat_n(b'e', 1_000_000));
        t.push(b'e');
        assert!(matches!(info_span(&t), Err(ScanError::TooDeep(_))));
    }

    #[test]
    fn refuses_malformed_and_trailing() {
        assert!(info_span(b"d4:infod").is_err());
        assert!(info_span(b"d4:infodee").is_ok());
        assert_eq!(info_span(b"d4:infodeex"), Err(ScanError::Trailing(10)));
        assert_eq!(info_span(b"d3:abci1ee"), Err(ScanError::NoInfo));
        assert_eq!(info_span(b"le"), Err(ScanError::NotADict));
        assert!(info_span(b"d4:info99999999999999999999999:e").is_err());
        assert!(info_span(b"d4:infoi12xee").is_err());
    }
}
