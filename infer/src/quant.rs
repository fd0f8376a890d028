//! The `quantization` metadata of an int8 model (FORMAT.md, "Int8 models"),
//! parsed where it lies: the scheme and one `[scale, zero_point]` pair per
//! activation tensor (the input image, then each layer's output).

use crate::json::{JsonError, Parser, Unescape};
use crate::Error;
use model_format::quant::{ActQuant, SCHEME};

/// The activations' quantization for a model of at most `N` layers: the
/// input's, then each layer's output's ([`Activations::pair`]).
pub(crate) struct Activations<const N: usize> {
    input: ActQuant,
    outputs: [ActQuant; N],
    /// Pairs read, the input's included.
    pub len: usize,
}

impl<const N: usize> Activations<N> {
    /// The pair of activation `a`: 0 the input, `i + 1` layer `i`'s output.
    pub fn pair(&self, a: usize) -> ActQuant {
        match a {
            0 => self.input,
            a => self.outputs[a - 1],
        }
    }

    fn slot(&mut self, a: usize) -> Option<&mut ActQuant> {
        match a {
            0 => Some(&mut self.input),
            a => self.outputs.get_mut(a - 1),
        }
    }
}

fn quant_err(e: JsonError) -> Error {
    Error::Quantization {
        offset: e.offset,
        problem: e.problem,
    }
}

/// Parses the raw (still escaped) JSON string value at file offset `base`.
// Not inlined: its locals would otherwise add to `Model::from_bytes`'s stack
// frame for the whole load, which matters on a microcontroller.
#[inline(never)]
pub(crate) fn parse<const N: usize>(raw: &[u8], base: usize) -> Result<Activations<N>, Error> {
    let mut p = Parser::new(Unescape::new(raw, base));
    let mut acts = Activations {
        input: ActQuant::INPUT,
        outputs: [ActQuant::INPUT; N],
        len: 0,
    };
    let (mut seen_scheme, mut seen_acts) = (false, false);
    p.begin_object().map_err(quant_err)?;
    let mut first = true;
    let mut key = [0u8; 12];
    while let Some(k) = p.next_key(&mut first, &mut key).map_err(quant_err)? {
        let seen = match k {
            Some(b"scheme") => {
                let mut buf = [0u8; 8];
                if p.string(&mut buf).map_err(quant_err)? != Some(SCHEME.as_bytes()) {
                    return Err(quant_err(
                        p.error("unknown scheme (this reader knows int8/1)"),
                    ));
                }
                &mut seen_scheme
            }
            Some(b"activations") => {
                parse_pairs(&mut p, &mut acts)?;
                &mut seen_acts
            }
            _ => return Err(quant_err(p.error("unknown field"))),
        };
        if core::mem::replace(seen, true) {
            return Err(quant_err(p.error("duplicate field")));
        }
    }
    p.finish().map_err(quant_err)?;
    if !(seen_scheme && seen_acts) {
        return Err(quant_err(p.error("needs `scheme` and `activations`")));
    }
    Ok(acts)
}

fn parse_pairs<const N: usize>(
    p: &mut Parser<Unescape<'_>>,
    acts: &mut Activations<N>,
) -> Result<(), Error> {
    p.begin_array().map_err(quant_err)?;
    let mut first = true;
    while p.next_item(&mut first).map_err(quant_err)? {
        p.begin_array().map_err(quant_err)?;
        let mut f = true;
        let pair_err =
            |p: &Parser<Unescape<'_>>| quant_err(p.error("expected [scale, zero_point]"));
        if !p.next_item(&mut f).map_err(quant_err)? {
            return Err(pair_err(p));
        }
        let scale = p.f32().map_err(quant_err)?;
        if !p.next_item(&mut f).map_err(quant_err)? {
            return Err(pair_err(p));
        }
        let zp = p.u64().map_err(quant_err)?;
        if p.next_item(&mut f).map_err(quant_err)? {
            return Err(pair_err(p));
        }
        let q = ActQuant {
            scale,
            zero_point: u8::try_from(zp).map_err(|_| quant_err(p.error("zero point above 255")))?,
        };
        if !q.is_valid() {
            return Err(quant_err(p.error("scale must be a positive normal number")));
        }
        let slot = acts
            .slot(acts.len)
            .ok_or_else(|| quant_err(p.error("more pairs than layers")))?;
        *slot = q;
        acts.len += 1;
    }
    Ok(())
}
