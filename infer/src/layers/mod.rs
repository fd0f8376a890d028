//! The layer computations, one concept per module. Each works on NHWC `f32`
//! activations in caller-provided slices; parameters stay in the file's bytes.

pub(crate) mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_avx2;
#[cfg(target_arch = "x86_64")]
mod conv_avx512;
pub(crate) mod conv_i8;
#[cfg(target_arch = "x86_64")]
mod conv_i8_avx2;
#[cfg(any(infer_arm_dsp, test))]
mod conv_i8_dsp;
#[cfg(target_arch = "x86_64")]
mod conv_i8_vnni;
pub(crate) mod norm;
pub(crate) mod pool;
#[cfg(target_arch = "x86_64")]
mod quant_avx512;
// Without the `winograd` feature the planning half (`applies`,
// `workspace_len`) is still used, the rest is not compiled into anything.
#[cfg_attr(not(feature = "winograd"), allow(dead_code))]
pub(crate) mod winograd;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "winograd"), allow(dead_code))]
mod winograd_avx512;

/// `relu`: `x = max(x, 0)`, in place.
pub(crate) fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `gelu`: `x = x · Φ(x)`, in place (`model_format::gelu`, as the trainer).
/// With an x86 SIMD `kernel` the same loop runs compiled for AVX2 and FMA
/// (8 lanes; the same operations in the same order, so the same values).
pub(crate) fn gelu(x: &mut [f32], kernel: conv::Kernel) {
    #[cfg(target_arch = "x86_64")]
    if kernel != conv::Kernel::Portable {
        // SAFETY: a SIMD kernel is chosen only where the CPU has AVX2 and FMA
        // (`cpu::level`'s AVX-512 levels require them too).
        return unsafe { gelu_avx2(x) };
    }
    let _ = kernel;
    gelu_portable(x);
}

#[inline(always)]
fn gelu_portable(x: &mut [f32]) {
    for v in x {
        *v = model_format::gelu::gelu(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_portable(x)
}

/// `add` (a residual connection): `x[i] = x[i] + skip[i]`, in place, where
/// `skip` is the stashed output of an earlier layer, of the same shape; then
/// `max(x[i], 0)` when a relu is fused into it (one pass instead of two).
/// Compiled for the widest registers `kernel` allows ([`simd`]).
pub(crate) fn add(x: &mut [f32], skip: &[f32], relu: bool, kernel: conv::Kernel) {
    debug_assert_eq!(x.len(), skip.len());
    simd(kernel, Add { x, skip, relu });
}

struct Add<'a> {
    x: &'a mut [f32],
    skip: &'a [f32],
    relu: bool,
}

impl Pass for Add<'_> {
    #[inline(always)]
    fn run(self) {
        if self.relu {
            for (v, &s) in self.x.iter_mut().zip(self.skip) {
                *v = (*v + s).max(0.0);
            }
        } else {
            for (v, &s) in self.x.iter_mut().zip(self.skip) {
                *v += s;
            }
        }
    }
}

/// An element-wise pass over activations, plain Rust that the compiler
/// vectorises by itself, run by [`simd`].
pub(crate) trait Pass {
    /// The pass. Every impl marks it `#[inline(always)]`, so that it is
    /// compiled into each of [`simd`]'s target-feature copies (a closure
    /// would not be: measured, one ran compiled for the baseline).
    fn run(self);
}

/// Runs `pass` compiled for the instructions `kernel` stands for (AVX-512F
/// or AVX2 on x86-64; unchanged elsewhere): the same operations in the same
/// order, in wider registers, so the same values (Rust never contracts a
/// multiply and an add into an FMA).
#[inline(always)]
pub(crate) fn simd(kernel: conv::Kernel, pass: impl Pass) {
    match kernel {
        // SAFETY: `Kernel::Avx512` is only chosen on CPUs with AVX-512F,
        // `Kernel::Avx2` on CPUs with AVX2 and FMA (`cpu::level`).
        #[cfg(target_arch = "x86_64")]
        conv::Kernel::Avx512 => unsafe { in_avx512(pass) },
        #[cfg(target_arch = "x86_64")]
        conv::Kernel::Avx2 => unsafe { in_avx2(pass) },
        conv::Kernel::Portable => pass.run(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn in_avx512(pass: impl Pass) {
    pass.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn in_avx2(pass: impl Pass) {
    pass.run()
}

/// `relu` in an int8 model: `x = max(x, z)`, in place (`z` is real 0).
pub(crate) fn relu_i8(x: &mut [u8], zero_point: u8) {
    for v in x {
        *v = (*v).max(zero_point);
    }
}

/// `gelu` in an int8 model, in place: `x = table[x]`, the table of
/// `model_format::quant::gelu_table` (256 bytes on the stack, made per call).
pub(crate) fn gelu_i8(
    x: &mut [u8],
    input: model_format::quant::ActQuant,
    output: model_format::quant::ActQuant,
) {
    let table = model_format::quant::gelu_table(input, output);
    for v in x {
        *v = table[usize::from(*v)];
    }
}

/// `add` in an int8 model, in place: `x[i] = x[i] + skip[i]` with each side's
/// quantization and the output's (`model_format::quant::add`). With the VNNI
/// `kernel` (so AVX-512), 16 bytes at a time, the terms computed in 32-bit
/// lanes (`quant_avx512::add`). The portable loop does the rest: each side's
/// rescaled term depends on its byte only, so it comes from a table of 256
/// made once per call, `quant::add`'s arithmetic evaluated ahead. Both give
/// the same bytes.
pub(crate) fn add_i8(
    x: &mut [u8],
    skip: &[u8],
    z: [u8; 3],
    m: &model_format::quant::AddMultipliers,
    kernel: conv_i8::KernelI8,
) {
    use model_format::quant::{add_output, add_term};
    debug_assert_eq!(x.len(), skip.len());
    let done = match kernel {
        // SAFETY: `KernelI8::Vnni` is only chosen on CPUs with AVX-512F, BW
        // and VL.
        #[cfg(target_arch = "x86_64")]
        conv_i8::KernelI8::Vnni => unsafe { quant_avx512::add(x, skip, z, m) },
        _ => 0,
    };
    let (x, skip) = (&mut x[done..], skip.get(done..).unwrap_or_default());
    if x.is_empty() {
        return;
    }
    let [za, zb, zo] = z;
    let mut ta = [0i32; 256];
    let mut tb = [0i32; 256];
    for q in 0..=255u8 {
        ta[usize::from(q)] = add_term(q, za, m.a);
        tb[usize::from(q)] = add_term(q, zb, m.b);
    }
    for (v, &s) in x.iter_mut().zip(skip) {
        *v = add_output(ta[usize::from(*v)] + tb[usize::from(s)], zo, m.out);
    }
}

/// The offsets `[lo, hi)` within a window of `k` cells starting at input index
/// `start` (negative in the padding) whose input index `start + j` lies in
/// `[0, len)`: the part of the window inside the image.
pub(crate) fn in_image(start: isize, k: usize, len: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, k as isize) as usize;
    let hi = (len as isize - start).clamp(lo as isize, k as isize) as usize;
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GELU's AVX2 copy gives the portable loop's values bit for bit.
    #[test]
    fn gelu_simd_matches_portable() {
        let x: [f32; 777] = core::array::from_fn(|i| (i as f32 - 388.0) / 61.0);
        let mut want = x;
        gelu(&mut want, conv::Kernel::Portable);
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::level() >= crate::cpu::Level::Avx2 {
            let mut got = x;
            gelu(&mut got, conv::Kernel::Avx2);
            assert_eq!(got, want);
        }
        assert!((want[388] - 0.0).abs() < 1e-9 && want[776] > 6.3);
    }

    /// The f32 add (and add + relu) gives the plain sums with every kernel,
    /// bit for bit, at lengths with and without a tail past the vectors.
    #[test]
    fn add_every_kernel_gives_the_plain_sums() {
        let kernels = conv::tests::kernels();
        for len in [1, 15, 64, 200, 1027] {
            let x: std::vec::Vec<f32> = (0..len)
                .map(|i| ((i * 31) % 97) as f32 / 9.0 - 5.0)
                .collect();
            let skip: std::vec::Vec<f32> = (0..len)
                .map(|i| ((i * 17) % 89) as f32 / 11.0 - 4.0)
                .collect();
            for relu in [false, true] {
                let want: std::vec::Vec<f32> = x
                    .iter()
                    .zip(&skip)
                    .map(|(&a, &b)| if relu { (a + b).max(0.0) } else { a + b })
                    .collect();
                for &kernel in &kernels {
                    let mut got = x.clone();
                    add(&mut got, &skip, relu, kernel);
                    assert_eq!(got, want, "length {len}, relu {relu}, {kernel:?}");
                }
            }
        }
    }

    /// The integer add's AVX-512 loop gives the portable loop's bytes: any
    /// length (a tail after the runs of 16), any zero points and input
    /// scales (their ratio up to 2^21, past the 32-bit terms' range), output
    /// multipliers on both sides of 1/4 (below: in 32-bit lanes; at or above:
    /// left to the portable loop).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn add_i8_simd_matches_portable() {
        use model_format::quant::{ActQuant, AddMultipliers};
        if crate::cpu::level() < crate::cpu::Level::Avx512Vnni {
            std::eprintln!("no AVX-512 VNNI on this CPU: the int8 add's SIMD loop is not tested");
            return;
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for case in 0..60 {
            let len = 1 + next(200) as usize;
            // Output multiplier 2·max(sa, sb) / (2^20 · so): about 2^−20,
            // in [1/8, 1/4), in [1/4, 1/2), or above 1.
            let m_out = if case % 5 == 0 {
                0.13
            } else {
                [2f32.powi(-20), 0.13, 0.26, 3.0][case % 4]
            };
            // Multipliers near 1/4 saturate every output unless the sums
            // are small: then `b` is at its zero point throughout, and `a`'s
            // scale 2^−18 of `b`'s (each step of `a` adds 2 to the sum).
            // Every fifth case, `a`'s scale 2^−20 of `b`'s (its multiplier
            // 2^−21, the smallest the 32-bit terms take) or 2^−21 (left to the
            // portable loop), with an output multiplier that shows a term's
            // last unit.
            let small_sums = case % 4 == 1 || case % 4 == 2 || case % 5 == 0;
            let sa = 0.001 + next(1000) as f32 * 1e-4;
            let sb = if case % 5 == 0 {
                sa * if case % 10 == 0 { 2097152.0 } else { 1048576.0 }
            } else if small_sums {
                sa * 262144.0
            } else {
                0.001 + next(1000) as f32 * 1e-4
            };
            let so = 2.0 * sa.max(sb) / (1048576.0 * m_out);
            let q = |scale: f32, z: u64| ActQuant {
                scale,
                zero_point: z as u8,
            };
            let (a, b, o) = (q(sa, next(256)), q(sb, next(256)), q(so, next(256)));
            let m = AddMultipliers::new(a, b, o).unwrap();
            let x: std::vec::Vec<u8> = (0..len).map(|_| next(256) as u8).collect();
            let skip: std::vec::Vec<u8> = (0..len)
                .map(|_| {
                    if small_sums {
                        b.zero_point
                    } else {
                        next(256) as u8
                    }
                })
                .collect();
            let z = [a.zero_point, b.zero_point, o.zero_point];
            let (mut want, mut got) = (x.clone(), x);
            add_i8(&mut want, &skip, z, &m, conv_i8::KernelI8::Portable);
            add_i8(&mut got, &skip, z, &m, conv_i8::KernelI8::Vnni);
            assert_eq!(got, want, "case {case}: {len} bytes, {m:?}");
        }
    }
}
