//! Which SIMD kernels this CPU can run, found once at run time.
//!
//! `std::is_x86_feature_detected!` is not available in `no_std`, so this asks the
//! CPU itself: `cpuid` says whether AVX, FMA, AVX2, AVX-512F (and BW, VL,
//! VNNI) exist and whether
//! the OS uses `xsave` (OSXSAVE); `xgetbv` then says which register state the OS
//! saves on context switches (XCR0: bits 1–2 for XMM/YMM, bits 5–7 for the
//! AVX-512 opmask and ZMM registers). The answer is cached in an atomic.

/// The best kernels available, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// No usable SIMD extension (or not x86-64).
    Portable,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512F (which includes its FMA).
    Avx512,
    /// AVX-512F with BW, VL and VNNI (`vpdpbusd`): the int8 kernels.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512Vnni,
}

/// The best [`Level`] this CPU and this build support.
pub(crate) fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use core::sync::atomic::{AtomicU8, Ordering};
        const UNKNOWN: u8 = u8::MAX;
        static LEVEL: AtomicU8 = AtomicU8::new(UNKNOWN);
        let cached = LEVEL.load(Ordering::Relaxed);
        if cached != UNKNOWN {
            return from_u8(cached);
        }
        let level = detect();
        LEVEL.store(level as u8, Ordering::Relaxed);
        level
    }
    #[cfg(not(target_arch = "x86_64"))]
    Level::Portable
}

#[cfg(target_arch = "x86_64")]
fn from_u8(v: u8) -> Level {
    match v {
        3 => Level::Avx512Vnni,
        2 => Level::Avx512,
        1 => Level::Avx2,
        _ => Level::Portable,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // `__cpuid` became a safe function in newer Rust; older ones (the 1.89 this
    // crate supports) need `unsafe`.
    // SAFETY: every x86-64 CPU has `cpuid`, and leaves 0 and 1 always exist.
    #[allow(unused_unsafe)]
    let (max_leaf, leaf1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
    if max_leaf < 7 {
        return Level::Portable;
    }
    let fma = leaf1.ecx & (1 << 12) != 0;
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    if !(fma && osxsave && avx) {
        return Level::Portable;
    }
    // SAFETY: OSXSAVE is set, so `xgetbv` exists and is enabled by the OS.
    let xcr0 = unsafe { xgetbv0() };
    // SAFETY: `cpuid` exists (x86-64) and leaf 7 does (`max_leaf ≥ 7`, checked above).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let avx2 = leaf7.ebx & (1 << 5) != 0;
    let avx512f = leaf7.ebx & (1 << 16) != 0;
    let avx512bw = leaf7.ebx & (1 << 30) != 0;
    let avx512vl = leaf7.ebx & (1 << 31) != 0;
    let avx512vnni = leaf7.ecx & (1 << 11) != 0;
    let ymm_saved = xcr0 & 0b110 == 0b110;
    let zmm_saved = xcr0 & 0b1110_0110 == 0b1110_0110;
    // The AVX-512 levels also promise AVX2 and FMA (every such CPU has them;
    // GELU's loop is compiled for AVX2 under either).
    if avx512f && avx512bw && avx512vl && avx512vnni && avx2 && zmm_saved {
        Level::Avx512Vnni
    } else if avx512f && avx2 && zmm_saved {
        Level::Avx512
    } else if avx2 && ymm_saved {
        Level::Avx2
    } else {
        Level::Portable
    }
}

/// XCR0, the OS-enabled register-state mask.
///
/// # Safety
/// The CPU must support `xgetbv` (CPUID.1:ECX.OSXSAVE).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller guarantees `xgetbv` exists (and this function is
    // compiled with `xsave`); register 0 (XCR0) is always readable.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}
