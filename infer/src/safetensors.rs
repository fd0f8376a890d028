//! The safetensors container, read in place.
//!
//! ```text
//! [8 bytes: N, u64 little-endian][N bytes: JSON header][tensor data]
//! ```
//!
//! [`split`] checks the length prefix; [`walk`] goes through the header's JSON
//! object once, reporting `__metadata__` string values (as raw, still-escaped
//! byte ranges of the file) and each tensor entry (name, dtype, shape, offsets)
//! to the caller, who decides what they mean. Nothing is copied or allocated.

use crate::json::{Bytes, JsonError, Parser, Source, Unescape};
use crate::Error;
use model_format::quant::KEY_QUANTIZATION;
use model_format::{Dtype, KEY_ARCHITECTURE, KEY_CLASS_NAMES, KEY_FORMAT};

/// Most dimensions a tensor entry may have; our tensors have 1 (bias, batchnorm),
/// 2 (dense) or 4 (conv2d), int8 weights 3 (dense) or 5 (conv2d).
pub(crate) use model_format::MAX_RANK;

/// Longest tensor name we decode. Layer names are at most
/// [`crate::arch::MAX_NAME`] bytes, plus `.moving_variance`; a longer key cannot
/// belong to any layer.
const MAX_KEY: usize = 64;

/// The three parts of a model file.
#[derive(Clone, Copy)]
pub(crate) struct File<'a> {
    /// The JSON header.
    pub header: &'a [u8],
    /// Everything after the header: the tensor data.
    pub data: &'a [u8],
}

/// File offset of the header's first byte.
pub(crate) const HEADER_START: usize = 8;

/// Splits a model file into header and data, checking the length prefix.
pub(crate) fn split(file: &[u8]) -> Result<File<'_>, Error> {
    let (len, rest) = file.split_first_chunk::<8>().ok_or(Error::Truncated)?;
    let n = u64::from_le_bytes(*len);
    // `n` may be anything; compare in u64 so a 32-bit usize cannot wrap.
    if n > rest.len() as u64 {
        return Err(Error::Truncated);
    }
    let (header, data) = rest.split_at(n as usize);
    Ok(File { header, data })
}

/// `__metadata__` values we use: raw contents of JSON strings, with the file
/// offset of their first byte.
#[derive(Clone, Copy, Default)]
pub(crate) struct Metadata<'a> {
    pub format: Option<(usize, &'a [u8])>,
    pub architecture: Option<(usize, &'a [u8])>,
    pub class_names: Option<(usize, &'a [u8])>,
    pub quantization: Option<(usize, &'a [u8])>,
}

/// One tensor entry of the header, as written.
pub(crate) struct TensorEntry<'k> {
    /// The decoded key; `None` if longer than we care to decode (so it names no
    /// layer's tensor).
    pub key: Option<&'k [u8]>,
    /// File offset of the key.
    pub key_offset: usize,
    /// The `dtype`, `None` for one the format never uses.
    pub dtype: Option<Dtype>,
    /// Dimensions; `None` when there are more than [`MAX_RANK`].
    pub shape: Option<([u64; MAX_RANK], usize)>,
    /// `data_offsets`: `[begin, end)` relative to the start of the data.
    pub offsets: (u64, u64),
}

fn header_err(e: JsonError) -> Error {
    Error::Header {
        offset: e.offset,
        problem: e.problem,
    }
}

/// Goes through the header. With `meta`, records the `__metadata__` entries
/// (rejecting a second `__metadata__`); `on_tensor` sees every other entry.
pub(crate) fn walk<'a>(
    file: &File<'a>,
    mut meta: Option<&mut Metadata<'a>>,
    on_tensor: &mut dyn FnMut(&TensorEntry<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut p = Parser::new(Bytes::new(file.header, HEADER_START));
    p.begin_object().map_err(header_err)?;
    let mut first = true;
    let mut key = [0u8; MAX_KEY];
    let mut seen_metadata = false;
    loop {
        let key_offset = p.offset();
        let Some(k) = p.next_key(&mut first, &mut key).map_err(header_err)? else {
            break;
        };
        if k == Some(b"__metadata__") {
            if core::mem::replace(&mut seen_metadata, true) {
                return Err(header_err(p.error("duplicate __metadata__")));
            }
            match meta.as_deref_mut() {
                Some(m) => parse_metadata(&mut p, m)?,
                None => p.skip_value().map_err(header_err)?,
            }
        } else {
            let entry = parse_tensor(&mut p, k, key_offset)?;
            on_tensor(&entry)?;
        }
    }
    // safetensors pads the header with spaces; anything else is an error.
    p.finish().map_err(header_err)
}

fn parse_metadata<'a>(p: &mut Parser<Bytes<'a>>, m: &mut Metadata<'a>) -> Result<(), Error> {
    p.begin_object().map_err(header_err)?;
    let mut first = true;
    let mut key = [0u8; 16];
    while let Some(k) = p.next_key(&mut first, &mut key).map_err(header_err)? {
        let slot = match k {
            Some(k) if k == KEY_FORMAT.as_bytes() => &mut m.format,
            Some(k) if k == KEY_ARCHITECTURE.as_bytes() => &mut m.architecture,
            Some(k) if k == KEY_CLASS_NAMES.as_bytes() => &mut m.class_names,
            Some(k) if k == KEY_QUANTIZATION.as_bytes() => &mut m.quantization,
            _ => {
                p.skip_value().map_err(header_err)?;
                continue;
            }
        };
        let value = p.raw_string().map_err(header_err)?;
        if slot.replace(value).is_some() {
            return Err(header_err(p.error("duplicate metadata key")));
        }
    }
    Ok(())
}

fn parse_tensor<'k>(
    p: &mut Parser<Bytes<'_>>,
    key: Option<&'k [u8]>,
    key_offset: usize,
) -> Result<TensorEntry<'k>, Error> {
    let mut dtype = None;
    let mut shape = None;
    let mut offsets = None;
    p.begin_object().map_err(header_err)?;
    let mut first = true;
    let mut field = [0u8; 16];
    while let Some(k) = p.next_key(&mut first, &mut field).map_err(header_err)? {
        let dup = match k {
            Some(b"dtype") => {
                let mut buf = [0u8; 8];
                let d = p.string(&mut buf).map_err(header_err)?;
                dtype.replace(d.and_then(Dtype::from_tag)).is_some()
            }
            Some(b"shape") => {
                let mut dims = [0u64; MAX_RANK];
                let mut rank = 0;
                p.begin_array().map_err(header_err)?;
                let mut f = true;
                while p.next_item(&mut f).map_err(header_err)? {
                    let d = p.u64().map_err(header_err)?;
                    if let Some(slot) = dims.get_mut(rank) {
                        *slot = d;
                    }
                    rank += 1;
                }
                shape
                    .replace((rank <= MAX_RANK).then_some((dims, rank)))
                    .is_some()
            }
            Some(b"data_offsets") => {
                p.begin_array().map_err(header_err)?;
                let mut f = true;
                let mut pair = [0u64; 2];
                for v in &mut pair {
                    if !p.next_item(&mut f).map_err(header_err)? {
                        return Err(header_err(p.error("data_offsets needs two numbers")));
                    }
                    *v = p.u64().map_err(header_err)?;
                }
                if p.next_item(&mut f).map_err(header_err)? {
                    return Err(header_err(p.error("data_offsets needs two numbers")));
                }
                offsets.replace((pair[0], pair[1])).is_some()
            }
            _ => {
                p.skip_value().map_err(header_err)?;
                false
            }
        };
        if dup {
            return Err(header_err(p.error("duplicate field in a tensor entry")));
        }
    }
    match (dtype, shape, offsets) {
        (Some(dtype), Some(shape), Some(offsets)) => Ok(TensorEntry {
            key,
            key_offset,
            dtype,
            shape,
            offsets,
        }),
        _ => Err(header_err(
            p.error("tensor entry needs dtype, shape and data_offsets"),
        )),
    }
}

/// Whether the raw JSON string contents `raw` (at file offset `base`) decode to `want`.
pub(crate) fn unescaped_eq(raw: &[u8], base: usize, want: &[u8]) -> Result<bool, Error> {
    let mut u = Unescape::new(raw, base);
    for &b in want {
        if u.peek().map_err(header_err)? != Some(b) {
            return Ok(false);
        }
        u.bump();
    }
    Ok(u.peek().map_err(header_err)?.is_none())
}
