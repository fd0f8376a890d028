//! The few transcendental functions inference needs.
//!
//! `core` has no `f32::exp` or `f32::sqrt` (they live in `std`, backed by the
//! platform's libm), so `no_std` code brings its own. Both are computed in `f64`
//! and rounded once to `f32`, which makes them as good as the `std` versions for
//! our purposes (error well below one `f32` ulp in all but rare rounding ties).

/// `e^x`.
///
/// Range reduction: `x = n·ln 2 + r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`;
/// then `e^x = 2^n · e^r`, with `e^r` from its Taylor series to degree 12
/// (truncation error `< 0.35^13 / 13! ≈ 2e-16`) and `2^n` built from its bits.
pub(crate) fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 88.73 {
        return f32::INFINITY;
    }
    if x < -103.98 {
        return 0.0;
    }
    let x = f64::from(x);
    let t = x * core::f64::consts::LOG2_E;
    // Round to nearest (`as` truncates towards zero); |t| < 151 so this is exact.
    let n = (if t < 0.0 { t - 0.5 } else { t + 0.5 }) as i64;
    let r = x - n as f64 * core::f64::consts::LN_2;
    // Horner: 1 + r(1 + r/2(1 + r/3(1 + …))).
    let mut p = 1.0;
    for k in (1..=12).rev() {
        p = 1.0 + p * r / f64::from(k);
    }
    // 2^n for n in [-151, 129]: well inside f64's normal range.
    let scale = f64::from_bits(((n + 1023) as u64) << 52);
    (p * scale) as f32
}

/// `√x` (NaN for negative `x`).
///
/// Newton's iteration `y ← (y + x/y) / 2` in `f64`, from a first guess that
/// halves the exponent (relative error under 6%); each step squares the
/// relative error, so six steps reach full `f64` precision.
pub(crate) fn sqrt(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 || x == f32::INFINITY {
        return x;
    }
    let xd = f64::from(x);
    let mut y = f64::from_bits((xd.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + xd / y);
    }
    y as f32
}

/// `p[i] = e^(z[i] − max z) / Σ_j e^(z[j] − max z)`: the softmax, shifted by the
/// maximum so that no `exp` overflows, computed in place (`p` holds the
/// logits on entry). Returns the index of the largest logit (the first one
/// on ties; NaN logits never win).
pub(crate) fn softmax_in_place(p: &mut [f32]) -> usize {
    let mut top = 0;
    for (i, &z) in p.iter().enumerate() {
        if z > p[top] || p[top].is_nan() {
            top = i;
        }
    }
    let max = p.get(top).copied().unwrap_or(0.0);
    let mut sum = 0.0f32;
    for v in p.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    for v in p.iter_mut() {
        *v /= sum;
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.0 {
            let want = (f64::from(x)).exp();
            let got = f64::from(exp(x));
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.0137;
        }
        // Half an f32 ulp is 6e-8.
        assert!(worst < 6.1e-8, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn sqrt_matches_std() {
        for bits in (0..u32::MAX).step_by(9_973) {
            let x = f32::from_bits(bits);
            if x.is_finite() && x >= 0.0 {
                assert_eq!(sqrt(x), x.sqrt(), "{x}");
            }
        }
        assert!(sqrt(-1.0).is_nan());
        assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut p = [1.0, 3.0, -2.0, 3.0];
        assert_eq!(softmax_in_place(&mut p), 1);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[1], p[3]);
    }
}
