//! The `class_names` metadata value ([`crate::KEY_CLASS_NAMES`]), read
//! without a heap.
//!
//! Writers store the names, in label order, as a **JSON array of strings**
//! (`["airplane","automobile",…]`), so a name may hold any character — a comma
//! (`"tench, Tinca tinca"`), quotes, any Unicode. Files written before this
//! held the names joined by commas (`airplane,automobile,…`); readers accept
//! both: a value that begins with `[` is the array form.
//!
//! A safetensors header is itself JSON, so the value reaches a zero-copy
//! reader still *escaped as a JSON string*: the array `["a","b"]` appears in
//! the file as the bytes `[\"a\",\"b\"]`. [`ClassNames::parse_escaped`] reads
//! those bytes as they lie in the file. A name that needs no escape sequence
//! (the usual case, including commas and non-ASCII UTF-8) comes back as a
//! `&str` into the file; one that does (a quote, a backslash, a control
//! character, or a `\u` escape written by another tool) cannot be returned
//! without copying, and comes back as [`Name::Escaped`]. (The trainer, which
//! has a heap, decodes the value with a JSON parser instead.)

/// One class name as it lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// The name, borrowed from the file.
    Plain(&'a str),
    /// The name holds JSON escape sequences: no borrowed form exists.
    Escaped,
}

impl<'a> Name<'a> {
    /// The borrowed name, `None` for [`Name::Escaped`].
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Name::Plain(s) => Some(s),
            Name::Escaped => None,
        }
    }
}

/// A checked `class_names` value: iterate it for the names in label order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassNames<'a> {
    raw: &'a str,
    array: bool,
    len: usize,
}

/// Why a `class_names` value was refused.
pub type Problem = &'static str;

impl<'a> ClassNames<'a> {
    /// Checks `raw`, the value's bytes between its quotes in the safetensors
    /// header (still JSON-string-escaped), in either form.
    pub fn parse_escaped(raw: &'a [u8]) -> Result<Self, Problem> {
        let raw = core::str::from_utf8(raw).map_err(|_| "class_names is not UTF-8")?;
        let array = raw.trim_start().starts_with('[');
        let mut names = ClassNames { raw, array, len: 0 };
        let mut iter = names.iter();
        while iter.next_checked()?.is_some() {
            names.len += 1;
        }
        Ok(names)
    }

    /// The number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the value lists no names.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The names in label order.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            rest: self.raw,
            array: self.array,
            state: State::Start,
        }
    }

    /// Name `i`, `None` when out of range.
    pub fn get(&self, i: usize) -> Option<Name<'a>> {
        self.iter().nth(i)
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    Start,
    Between,
    Done,
}

/// The names of a [`ClassNames`], in label order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    rest: &'a str,
    array: bool,
    state: State,
}

/// The escaped quote that opens and closes each string of the array form.
const QUOTE: &str = "\\\"";

impl<'a> Iter<'a> {
    fn next_checked(&mut self) -> Result<Option<Name<'a>>, Problem> {
        if self.array {
            self.next_array()
        } else {
            Ok(self.next_commas())
        }
    }

    /// The comma-joined form of older files: no name holds a comma.
    fn next_commas(&mut self) -> Option<Name<'a>> {
        if matches!(self.state, State::Done) {
            return None;
        }
        let (name, rest) = match self.rest.find(',') {
            Some(at) => (&self.rest[..at], Some(&self.rest[at + 1..])),
            None => (self.rest, None),
        };
        match rest {
            Some(rest) => self.rest = rest,
            None => self.state = State::Done,
        }
        Some(if name.contains('\\') {
            Name::Escaped
        } else {
            Name::Plain(name)
        })
    }

    /// The array form, escaped once more as a JSON string:
    /// `[` `\"name\"` (`,` `\"name\"`)* `]`, spaces allowed between tokens.
    fn next_array(&mut self) -> Result<Option<Name<'a>>, Problem> {
        let malformed = "class_names is neither a JSON array of strings nor comma-separated";
        let mut s = self.rest.trim_start();
        match self.state {
            State::Done => return Ok(None),
            State::Start => {
                s = s.strip_prefix('[').ok_or(malformed)?.trim_start();
                if let Some(rest) = s.strip_prefix(']') {
                    return self.end(rest, malformed);
                }
            }
            State::Between => {
                if let Some(rest) = s.strip_prefix(']') {
                    return self.end(rest, malformed);
                }
                s = s.strip_prefix(',').ok_or(malformed)?.trim_start();
            }
        }
        let body = s.strip_prefix(QUOTE).ok_or(malformed)?;
        // Scan to the closing `\"`. In the file, `\\` is a backslash of the
        // inner string, i.e. the start of one of its escape sequences, whose
        // next character may itself be escaped (`\\\"` is an inner `\"`).
        let bytes = body.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        loop {
            match bytes.get(i) {
                None => return Err(malformed),
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'"') => break,
                    Some(b'\\') => {
                        escaped = true;
                        i += if bytes.get(i + 2) == Some(&b'\\') {
                            4
                        } else {
                            3
                        };
                    }
                    Some(_) => {
                        escaped = true;
                        i += 2;
                    }
                    None => return Err(malformed),
                },
                Some(b'"') => return Err(malformed),
                Some(_) => i += 1,
            }
        }
        let name = if escaped {
            Name::Escaped
        } else {
            // `i` sits on an ASCII `\`, so this is a character boundary.
            Name::Plain(&body[..i])
        };
        self.rest = &body[i + QUOTE.len()..];
        self.state = State::Between;
        Ok(Some(name))
    }

    fn end(&mut self, rest: &'a str, malformed: Problem) -> Result<Option<Name<'a>>, Problem> {
        if !rest.trim().is_empty() {
            return Err(malformed);
        }
        self.rest = rest;
        self.state = State::Done;
        Ok(None)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Name<'a>;

    /// The next name; a value that passed [`ClassNames::parse_escaped`] never
    /// fails here.
    fn next(&mut self) -> Option<Name<'a>> {
        self.next_checked().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &str) -> Result<[Option<Name<'_>>; 4], Problem> {
        let n = ClassNames::parse_escaped(raw.as_bytes())?;
        let mut it = n.iter();
        Ok([it.next(), it.next(), it.next(), it.next()])
    }

    #[test]
    fn array_form_as_it_lies_in_the_header() {
        use Name::*;
        // `["tench, Tinca tinca","café"]`, escaped once more by the header.
        let raw = r#"[\"tench, Tinca tinca\",\"café\"]"#;
        let n = ClassNames::parse_escaped(raw.as_bytes()).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(
            names(raw).unwrap(),
            [
                Some(Plain("tench, Tinca tinca")),
                Some(Plain("café")),
                None,
                None
            ]
        );
        assert_eq!(n.get(1).and_then(Name::as_str), Some("café"));
        assert_eq!(n.get(2), None);
        // Python's `json.dumps` puts a space after each comma.
        assert_eq!(
            names(r#"[ \"a\", \"b\" ] "#).unwrap(),
            [Some(Plain("a")), Some(Plain("b")), None, None]
        );
        assert_eq!(ClassNames::parse_escaped(b"[]").unwrap().len(), 0);
    }

    #[test]
    fn names_with_escapes_are_counted_but_not_borrowed() {
        use Name::*;
        // Inner strings `say "hi"`, `back\slash`, `tab\t`, and `é` as `\u00e9`
        // written by an ASCII-only tool: each escaped once more.
        let raw = r#"[\"say \\\"hi\\\"\",\"back\\\\slash\",\"tab\\t\",\"\u00e9\"]"#;
        assert_eq!(
            names(raw).unwrap(),
            [Some(Escaped), Some(Escaped), Some(Escaped), Some(Escaped)]
        );
        assert_eq!(ClassNames::parse_escaped(raw.as_bytes()).unwrap().len(), 4);
    }

    #[test]
    fn comma_form_of_older_files() {
        use Name::*;
        assert_eq!(
            names("cat,dog").unwrap(),
            [Some(Plain("cat")), Some(Plain("dog")), None, None]
        );
        assert_eq!(ClassNames::parse_escaped(b"cat").unwrap().len(), 1);
        assert_eq!(ClassNames::parse_escaped(b"").unwrap().len(), 1);
    }

    #[test]
    fn malformed_arrays_are_refused() {
        for raw in [
            "[",
            r#"[\"a\""#,
            r#"[\"a\" \"b\"]"#,
            r#"[\"a\",]"#,
            r#"[\"a\"] x"#,
            r#"[a]"#,
            r#"[\"a"\"]"#,
            r#"[\"a\\"#,
        ] {
            assert!(
                ClassNames::parse_escaped(raw.as_bytes()).is_err(),
                "{raw} accepted"
            );
        }
        assert!(ClassNames::parse_escaped(&[b'[', 0xff, b']']).is_err());
    }
}
