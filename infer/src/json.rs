//! A small pull parser for JSON: `no_std`, no allocation, no recursion beyond
//! a fixed depth.
//!
//! The model file needs JSON twice over: the safetensors header is a JSON object,
//! and its `architecture` metadata value is a JSON *string* whose contents are
//! themselves JSON (so every `"` inside appears as `\"` in the file). Both are read
//! by the same [`Parser`], over one of two byte [`Source`]s:
//!
//! - [`Bytes`]: the header bytes as they are in the file;
//! - [`Unescape`]: the raw contents of a JSON string, decoded on the fly
//!   (`\"` → `"`, `\u00e9` → the UTF-8 bytes of `é`, …), so the architecture is
//!   parsed where it lies, without an unescaped copy.
//!
//! The parser is a pull parser: the caller says what it expects next (an object
//! key, an integer, …) and the parser checks and consumes it. Strings are decoded
//! into small caller-provided buffers. Every error carries a byte offset in the file.

/// Where a JSON problem was found (a byte offset in the file) and what it was.
/// Callers turn it into [`crate::Error::Header`] or [`crate::Error::Architecture`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub offset: usize,
    pub problem: &'static str,
}

pub(crate) type Result<T> = core::result::Result<T, JsonError>;

/// Values nested deeper than this are rejected rather than risk the stack
/// ([`Parser::skip_value`] is recursive).
const MAX_DEPTH: usize = 32;

/// A stream of bytes with one byte of look-ahead.
pub(crate) trait Source {
    /// The next byte, without consuming it; `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>>;
    /// Consumes the byte that [`Source::peek`] returned.
    fn bump(&mut self);
    /// Current byte offset in the file, for error messages.
    fn offset(&self) -> usize;
}

/// Bytes as they are: the safetensors header.
pub(crate) struct Bytes<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// File offset of `bytes[0]`.
    base: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Bytes {
            bytes,
            pos: 0,
            base,
        }
    }
}

impl Source for Bytes<'_> {
    #[inline]
    fn peek(&mut self) -> Result<Option<u8>> {
        Ok(self.bytes.get(self.pos).copied())
    }
    #[inline]
    fn bump(&mut self) {
        self.pos += 1;
    }
    fn offset(&self) -> usize {
        self.base + self.pos
    }
}

/// The raw contents of a JSON string (what lies between its quotes, escapes
/// intact), yielding the decoded bytes. A `\uXXXX` escape (or a surrogate pair of
/// them) yields the 1–4 UTF-8 bytes of its character, held in `buf` until consumed.
pub(crate) struct Unescape<'a> {
    raw: &'a [u8],
    pos: usize,
    base: usize,
    buf: [u8; 4],
    len: u8,
    idx: u8,
}

impl<'a> Unescape<'a> {
    /// `raw` starts at file offset `base`.
    pub fn new(raw: &'a [u8], base: usize) -> Self {
        Unescape {
            raw,
            pos: 0,
            base,
            buf: [0; 4],
            len: 0,
            idx: 0,
        }
    }

    fn err(&self, problem: &'static str) -> JsonError {
        JsonError {
            offset: self.base + self.pos,
            problem,
        }
    }
}

impl Source for Unescape<'_> {
    fn peek(&mut self) -> Result<Option<u8>> {
        if self.idx < self.len {
            return Ok(Some(self.buf[usize::from(self.idx)]));
        }
        let Some(&c) = self.raw.get(self.pos) else {
            return Ok(None);
        };
        let ch = if c == b'\\' {
            let mut i = self.pos + 1;
            let raw = self.raw;
            let ch = decode_escape(|| {
                let b = raw.get(i).copied();
                i += 1;
                b
            })
            .ok_or_else(|| self.err("invalid escape sequence in string"))?;
            self.pos = i;
            ch
        } else if c < 0x20 {
            return Err(self.err("control character in string"));
        } else {
            // Plain byte (ASCII or part of a UTF-8 sequence): passes through.
            self.pos += 1;
            self.buf[0] = c;
            self.len = 1;
            self.idx = 0;
            return Ok(Some(c));
        };
        let n = ch.encode_utf8(&mut self.buf).len();
        self.len = n as u8;
        self.idx = 0;
        Ok(Some(self.buf[0]))
    }

    fn bump(&mut self) {
        self.idx += 1;
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }
}

/// Decodes one escape sequence, given a reader positioned just after the `\`.
/// Handles `\" \\ \/ \b \f \n \r \t \uXXXX` and UTF-16 surrogate pairs
/// (`\uD83D\uDE00`). `None` for anything invalid, including a lone surrogate.
fn decode_escape(mut next: impl FnMut() -> Option<u8>) -> Option<char> {
    let hex4 = |next: &mut dyn FnMut() -> Option<u8>| -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            v = v * 16 + char::from(next()?).to_digit(16)?;
        }
        Some(v)
    };
    let c = match next()? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(&mut next)?;
            if (0xD800..0xDC00).contains(&hi) {
                // High surrogate: a `\uDC00`..`\uDFFF` low surrogate must follow.
                if next()? != b'\\' || next()? != b'u' {
                    return None;
                }
                let lo = hex4(&mut next)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
            } else {
                // A lone low surrogate fails here.
                char::from_u32(hi)?
            }
        }
        _ => return None,
    };
    Some(c)
}

/// A pull parser over a [`Source`].
pub(crate) struct Parser<S> {
    src: S,
}

impl<S: Source> Parser<S> {
    pub fn new(src: S) -> Self {
        Parser { src }
    }

    /// An error at the current position.
    pub fn error(&self, problem: &'static str) -> JsonError {
        JsonError {
            offset: self.src.offset(),
            problem,
        }
    }

    /// The current byte offset in the file.
    pub fn offset(&self) -> usize {
        self.src.offset()
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek_token(&mut self) -> Result<Option<u8>> {
        loop {
            match self.src.peek()? {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.src.bump(),
                other => return Ok(other),
            }
        }
    }

    /// Consumes `byte` (after optional whitespace) or fails with `problem`.
    pub fn expect(&mut self, byte: u8, problem: &'static str) -> Result<()> {
        if self.peek_token()? == Some(byte) {
            self.src.bump();
            Ok(())
        } else {
            Err(self.error(problem))
        }
    }

    /// Consumes `{`.
    pub fn begin_object(&mut self) -> Result<()> {
        self.expect(b'{', "expected an object")
    }

    /// Consumes `[`.
    pub fn begin_array(&mut self) -> Result<()> {
        self.expect(b'[', "expected an array")
    }

    /// Moves to the next element of an object or array: consumes the `,` between
    /// elements or the closing `close`. `first` is true before the first element
    /// and is cleared here. Returns whether an element follows.
    fn next_element(&mut self, first: &mut bool, close: u8) -> Result<bool> {
        let c = self.peek_token()?;
        if c == Some(close) {
            // `{}` / `[]`, or the end after an element. (In `[1,]` the `,` was
            // consumed by the previous call, and the `]` then fails as a value.)
            self.src.bump();
            return Ok(false);
        }
        if !*first {
            if c != Some(b',') {
                return Err(self.error("expected `,` or the end of the object/array"));
            }
            self.src.bump();
        }
        *first = false;
        Ok(true)
    }

    /// Reads the next key of an object (and the `:` after it), decoded into
    /// `buf`. `Ok(None)` at the closing `}`; a key longer than `buf` is consumed
    /// and reported as `Ok(Some(None))`.
    #[allow(clippy::type_complexity)]
    pub fn next_key<'b>(
        &mut self,
        first: &mut bool,
        buf: &'b mut [u8],
    ) -> Result<Option<Option<&'b [u8]>>> {
        if !self.next_element(first, b'}')? {
            return Ok(None);
        }
        if self.peek_token()? != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let key = self.string(buf)?;
        self.expect(b':', "expected `:` after the key")?;
        Ok(Some(key))
    }

    /// Moves to the next item of an array (after [`Parser::begin_array`]);
    /// `false` at the closing `]`.
    pub fn next_item(&mut self, first: &mut bool) -> Result<bool> {
        self.next_element(first, b']')
    }

    /// Reads a string, decoding escapes into `buf`. `Ok(None)` when the decoded
    /// string does not fit in `buf` (the string is consumed all the same).
    pub fn string<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>> {
        let mut len = 0;
        let mut fits = true;
        self.string_with(|b| {
            if len < buf.len() {
                buf[len] = b;
                len += 1;
            } else {
                fits = false;
            }
        })?;
        Ok(if fits { Some(&buf[..len]) } else { None })
    }

    /// Reads a string and throws it away.
    pub fn skip_string(&mut self) -> Result<()> {
        self.string_with(|_| {})
    }

    /// Reads a string token, passing each decoded byte to `sink`.
    fn string_with(&mut self, mut sink: impl FnMut(u8)) -> Result<()> {
        self.expect(b'"', "expected a string")?;
        loop {
            let Some(c) = self.src.peek()? else {
                return Err(self.error("unterminated string"));
            };
            self.src.bump();
            match c {
                b'"' => return Ok(()),
                b'\\' => {
                    let mut bad = false;
                    let src = &mut self.src;
                    let ch = decode_escape(|| match src.peek() {
                        Ok(Some(b)) => {
                            src.bump();
                            Some(b)
                        }
                        Ok(None) => None,
                        Err(_) => {
                            bad = true;
                            None
                        }
                    });
                    let Some(ch) = ch else {
                        return Err(self.error(if bad {
                            "invalid escape sequence in the enclosing string"
                        } else {
                            "invalid escape sequence in string"
                        }));
                    };
                    let mut utf8 = [0u8; 4];
                    for &b in ch.encode_utf8(&mut utf8).as_bytes() {
                        sink(b);
                    }
                }
                0..=0x1f => return Err(self.error("control character in string")),
                _ => sink(c),
            }
        }
    }

    /// Reads a number token into `buf` and checks it against JSON's grammar
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. Returns the text and
    /// whether it is an integer (no fraction, no exponent).
    fn number<'b>(&mut self, buf: &'b mut [u8; 40]) -> Result<(&'b [u8], bool)> {
        self.peek_token()?;
        let mut len = 0;
        while let Some(c @ (b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) = self.src.peek()? {
            if len == buf.len() {
                return Err(self.error("number too long"));
            }
            buf[len] = c;
            len += 1;
            self.src.bump();
        }
        let text = &buf[..len];
        match check_number(text) {
            Some(integer) => Ok((text, integer)),
            None => Err(self.error("expected a number")),
        }
    }

    /// Reads a non-negative integer (no sign, fraction or exponent).
    pub fn u64(&mut self) -> Result<u64> {
        let mut buf = [0u8; 40];
        let (text, integer) = self.number(&mut buf)?;
        if !integer || text.first() == Some(&b'-') {
            return Err(self.error("expected a non-negative integer"));
        }
        let mut v = 0u64;
        for &d in text {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.error("integer too large"))?;
        }
        Ok(v)
    }

    /// Reads a finite number as `f32` (correctly rounded, by `core`'s parser).
    pub fn f32(&mut self) -> Result<f32> {
        let mut buf = [0u8; 40];
        let (text, _) = self.number(&mut buf)?;
        // The grammar check above guarantees ASCII.
        let v: f32 = core::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.error("expected a number"))?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.error("number out of range"))
        }
    }

    /// Consumes any JSON value.
    pub fn skip_value(&mut self) -> Result<()> {
        self.skip_value_at(0)
    }

    fn skip_value_at(&mut self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.error("JSON nested too deeply"));
        }
        match self.peek_token()? {
            Some(b'{') => {
                self.src.bump();
                let mut first = true;
                let mut key = [0u8; 0];
                while self.next_key(&mut first, &mut key)?.is_some() {
                    self.skip_value_at(depth + 1)?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.src.bump();
                let mut first = true;
                while self.next_item(&mut first)? {
                    self.skip_value_at(depth + 1)?;
                }
                Ok(())
            }
            Some(b'"') => self.skip_string(),
            Some(b'-' | b'0'..=b'9') => self.number(&mut [0; 40]).map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.error("expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        for &b in word {
            if self.src.peek()? != Some(b) {
                return Err(self.error("invalid literal"));
            }
            self.src.bump();
        }
        Ok(())
    }

    /// Checks that only whitespace remains.
    pub fn finish(&mut self) -> Result<()> {
        match self.peek_token()? {
            None => Ok(()),
            Some(_) => Err(self.error("unexpected data after the JSON value")),
        }
    }
}

impl<'a> Parser<Bytes<'a>> {
    /// Reads a string token *without* decoding it: returns the file offset and the
    /// raw bytes between the quotes (escapes intact), ready for [`Unescape`].
    pub fn raw_string(&mut self) -> Result<(usize, &'a [u8])> {
        self.expect(b'"', "expected a string")?;
        let bytes = self.src.bytes;
        let start = self.src.pos;
        let mut i = start;
        loop {
            match bytes.get(i) {
                None => {
                    self.src.pos = i;
                    return Err(self.error("unterminated string"));
                }
                Some(b'"') => break,
                // Skip the escaped byte, so `\"` does not end the string.
                // (The escape itself is checked when the contents are decoded.)
                Some(b'\\') => i += 2,
                Some(_) => i += 1,
            }
        }
        self.src.pos = i + 1;
        Ok((self.src.base + start, &bytes[start..i]))
    }
}

/// JSON number grammar; `Some(is_integer)` when `t` is a valid number.
fn check_number(t: &[u8]) -> Option<bool> {
    let digits = |t: &[u8], i: &mut usize| {
        let start = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    if t.first() == Some(&b'-') {
        i += 1;
    }
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(t, &mut i);
        }
        _ => return None,
    }
    let mut integer = true;
    if t.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if !digits(t, &mut i) {
            return None;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        integer = false;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(t, &mut i) {
            return None;
        }
    }
    (i == t.len()).then_some(integer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parser<Bytes<'_>> {
        Parser::new(Bytes::new(s.as_bytes(), 0))
    }

    #[test]
    fn numbers() {
        assert_eq!(p(" 42").u64(), Ok(42));
        assert_eq!(p("18446744073709551615").u64(), Ok(u64::MAX));
        assert!(p("18446744073709551616").u64().is_err());
        assert!(p("01").u64().is_err());
        assert!(p("-1").u64().is_err());
        assert!(p("1.0").u64().is_err());
        assert_eq!(p("0.001").f32(), Ok(0.001));
        assert_eq!(p("-2.5e-3").f32(), Ok(-2.5e-3));
        assert!(p("1e99").f32().is_err());
        assert!(p(".5").f32().is_err());
        assert!(p("1.").f32().is_err());
        assert!(p("1e").f32().is_err());
    }

    #[test]
    fn strings_and_escapes() {
        let mut buf = [0u8; 16];
        assert_eq!(
            p(r#""a\"b\\\u00e9\ud83d\ude00""#).string(&mut buf),
            Ok(Some("a\"b\\é😀".as_bytes()))
        );
        assert_eq!(p(r#""0123456789abcdefX""#).string(&mut buf), Ok(None));
        assert!(p(r#""\ud83d""#).string(&mut buf).is_err());
        assert!(p(r#""\x""#).string(&mut buf).is_err());
        assert!(p("\"a\nb\"").string(&mut buf).is_err());
        assert!(p("\"abc").string(&mut buf).is_err());
    }

    #[test]
    fn unescaping_source_reads_nested_json() {
        // The file holds `"{\"k\": [1, \"x\\\"y\"]}"`; its raw contents are below.
        let raw = br#"{\"k\": [1, \"x\\\"y\"]}"#;
        let mut q = Parser::new(Unescape::new(raw, 0));
        q.begin_object().unwrap();
        let mut first = true;
        let mut key = [0u8; 8];
        assert_eq!(q.next_key(&mut first, &mut key), Ok(Some(Some(&b"k"[..]))));
        q.begin_array().unwrap();
        let mut f = true;
        assert!(q.next_item(&mut f).unwrap());
        assert_eq!(q.u64(), Ok(1));
        assert!(q.next_item(&mut f).unwrap());
        let mut s = [0u8; 8];
        assert_eq!(q.string(&mut s), Ok(Some(&b"x\"y"[..])));
        assert!(!q.next_item(&mut f).unwrap());
        assert_eq!(q.next_key(&mut first, &mut key), Ok(None));
        q.finish().unwrap();
    }

    #[test]
    fn skipping_and_structure_errors() {
        assert!(p(r#"{"a": [1, {"b": null}, true, false, "s"], "c": {}}"#)
            .skip_value()
            .is_ok());
        for bad in [
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{,}",
            "[",
            "tru",
            "{1:2}",
            "",
        ] {
            assert!(p(bad).skip_value().is_err(), "{bad}");
        }
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(p(&deep).skip_value().is_err());
        let ok = "[".repeat(20) + &"]".repeat(20);
        assert!(p(&ok).skip_value().is_ok());
    }

    #[test]
    fn raw_string_keeps_escapes() {
        let mut q = p(r#"  "a\"b" x"#);
        assert_eq!(q.raw_string(), Ok((3, &br#"a\"b"#[..])));
        assert!(q.finish().is_err());
    }
}
