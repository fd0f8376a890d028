//! Which kernels this CPU can run, found once at run time.
//!
//! `std::is_x86_feature_detected!` is not available in `no_std`, so this asks the
//! CPU itself: `cpuid` says whether AVX, FMA and AVX2 exist and whether the OS
//! saves the wide registers (OSXSAVE), and `xgetbv` says whether it saves the
//! YMM state (XCR0 bits 1 and 2). The answer is cached in an atomic.

/// True when the AVX2 + FMA kernels can run.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    if cfg!(all(target_feature = "avx2", target_feature = "fma")) {
        return true;
    }
    match STATE.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let yes = detect_avx2_fma();
            STATE.store(if yes { YES } else { NO }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_avx2_fma() -> bool {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // `__cpuid` became a safe function in newer Rust; older ones need `unsafe`.
    #[allow(unused_unsafe)]
    let (max_leaf, leaf1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
    if max_leaf < 7 {
        return false;
    }
    let fma = leaf1.ecx & (1 << 12) != 0;
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    if !(fma && osxsave && avx) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so `xgetbv` exists and is enabled by the OS.
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 & 0b110 != 0b110 {
        return false; // the OS does not save XMM+YMM state
    }
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    leaf7.ebx & (1 << 5) != 0
}

/// XCR0, the OS-enabled register-state mask.
///
/// # Safety
/// The CPU must support `xgetbv` (CPUID.1:ECX.OSXSAVE).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    core::arch::x86_64::_xgetbv(0)
}
