//! Winograd F(4×4, 3×3): 3×3 stride-1 convolutions with 4× fewer multiplies.
//!
//! The output is cut into 4×4 tiles. Tile `t` reads the 6×6 input patch `d`
//! that covers its receptive field (zero outside the image), and per pair of
//! channels (ci, co), with `g` the 3×3 kernel,
//!
//! ```text
//! Y = Aᵀ [ U ⊙ V ] A,    U = G g Gᵀ (6×6),    V = Bᵀ d B (6×6)
//!
//! Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4     0     0 ]    Aᵀ = [1  1  1  1  1  0]
//!      [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
//!      [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
//!      [0 −2 −1  2  1  0]        [1/24  1/12   1/6 ]         [0  1 −1  8 −8  1]
//!      [0  2 −1 −2  1  0]        [1/24 −1/12   1/6 ]
//!      [0  4  0 −5  0  1]        [   0     0     1 ]
//! ```
//!
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016;
//! interpolation points 0, ±1, ±2, ∞), summed over input channels. At each of
//! the 36 positions ξ of the 6×6 transformed tile that sum is a matrix product
//! over a block of tiles:
//!
//! ```text
//! M_ξ[tiles×Cout] = V_ξ[tiles×Cin] · U_ξ[Cin×Cout]          (36 GEMMs)
//! ```
//!
//! so a 4×4 output tile costs 36·Cin·Cout multiply-adds instead of im2col's
//! 16·9·Cin·Cout, and the transformed input is 2.25× the input where im2col's
//! matrix is 9×. Every step is linear, so backward is the same pipeline
//! transposed, in the same tiles:
//!
//! ```text
//! dM_ξ = A dY Aᵀ,   dU_ξ = Σ_tiles V_ξᵀ dM_ξ,   dV_ξ = dM_ξ U_ξᵀ,
//! dd = B dV Bᵀ (added into dx: neighbouring patches overlap),   dg = Gᵀ dU G
//! ```
//!
//! Layouts: `U` is 36 `Cin×Cout` matrices (`ξ = 6·i + j`); in a block of `nb`
//! tiles, `V` is 36 `nb×Cin` matrices and `M` 36 `nb×Cout` matrices, each
//! row-major and contiguous, as the GEMMs want them. The small transforms work
//! on `N` channels at once (`[f32; N]` lanes, contiguous in NHWC) so that the
//! compiler vectorises them; on AVX-512 CPUs hand-written versions
//! (`winograd/avx512.rs`) keep a tile in registers, which is what makes this
//! route faster than im2col, and why it is the default only there.

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::kernels::gemm::{Backend, Op};
use crate::kernels::tensor::ImageShape;
use std::array;
use std::ops::Range;

/// Target size of one block's `V` plus `M`, in floats (1 MiB, as for the
/// im2col tiles; 256 KiB to 1 MiB measured the same on a model-1 step).
const BLOCK_FLOATS: usize = 1 << 18;

type Lanes<const N: usize> = [f32; N];

/// Output tile side.
const TILE: usize = 4;
/// Input patch side: the tile plus the kernel's reach.
const PATCH: usize = TILE + 2;
/// Positions of a transformed tile: the number of GEMMs per block.
const XI: usize = PATCH * PATCH;

/// The geometry of a Winograd convolution: input, output, padding and tiles.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub input: ImageShape,
    pub out: ImageShape,
    pub pad_top: usize,
    pub pad_left: usize,
    /// Whether a relu after the convolution is fused into it: forward stores
    /// `max(0, ·)`, backward masks `dy` by `y > 0` (`y` being that output).
    pub relu: bool,
    /// The SGEMM backend of the convolution.
    pub gemm: Backend,
    /// Tiles per image down and across: `⌈out/4⌉`.
    tiles_y: usize,
    tiles_x: usize,
}

/// What one thread needs for its chunk of the batch.
#[derive(Default)]
pub(super) struct Scratch {
    /// `V` of one block (reused for `dV` in backward).
    v: Vec<f32>,
    /// `M` of one block (or `dM` in backward).
    m: Vec<f32>,
    /// This chunk's partial `dU`.
    pub du: Vec<f32>,
    /// This chunk's partial bias gradient.
    pub dbias: Vec<f32>,
}

impl Geometry {
    pub fn new(input: ImageShape, out: ImageShape, pad_top: usize, pad_left: usize) -> Self {
        Self {
            input,
            out,
            pad_top,
            pad_left,
            relu: false,
            gemm: Backend::default(),
            tiles_y: out.height.div_ceil(TILE),
            tiles_x: out.width.div_ceil(TILE),
        }
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles_y * self.tiles_x
    }

    /// Tiles per block: so that a block's `V` and `M` are about
    /// [`BLOCK_FLOATS`], but at least `2·Cin·Cout / (Cin + Cout)`. Each block
    /// reads all of `U` (and backward updates all of `dU`), `XI·Cin·Cout`
    /// floats, against `XI·nb·(Cin + Cout)` of `V` and `M`: the floor keeps
    /// that traffic at most half of the block's own, which matters for small
    /// images with many channels (8×8×128: 4 tiles per image, `U` 2.4 MB).
    fn block_tiles(&self) -> usize {
        let (cin, cout) = (self.input.channels, self.out.channels);
        (BLOCK_FLOATS / (XI * (cin + cout)))
            .max(2 * cin * cout / (cin + cout))
            .clamp(8, 4096)
    }

    /// Floats of transformed weights: 36 `Cin×Cout` matrices.
    pub fn u_len(&self) -> usize {
        XI * self.input.channels * self.out.channels
    }

    pub fn ensure_scratch(&self, s: &mut Scratch) {
        let nb = self.block_tiles();
        let (cin, cout) = (self.input.channels, self.out.channels);
        s.v.resize(XI * stride(nb, cin), 0.0);
        s.m.resize(XI * stride(nb, cout), 0.0);
        s.du.resize(self.u_len(), 0.0);
        s.dbias.resize(cout, 0.0);
    }

    /// Image, first input row and column of the 6×6 patch of tile `t` of a
    /// chunk (negative: starts in the padding).
    fn patch_origin(&self, t: usize) -> (usize, isize, isize) {
        let (img, r) = (t / self.tiles_per_image(), t % self.tiles_per_image());
        let (ty, tx) = (r / self.tiles_x, r % self.tiles_x);
        let iy = (TILE * ty) as isize - self.pad_top as isize;
        let ix = (TILE * tx) as isize - self.pad_left as isize;
        (img, iy, ix)
    }

    /// The end, in a chunk's input, of the last row that the patches of
    /// tiles `0..=t` reach: tiles go image by image, row by row, so tile `t`'s
    /// patch reaches lowest. Backward's `dx` is written up to there.
    fn patch_rows_end(&self, t: usize) -> usize {
        let (img, iy, _) = self.patch_origin(t);
        let h = self.input.height;
        let bottom = (iy + PATCH as isize).clamp(0, h as isize) as usize;
        (img * h + bottom) * self.input.width * self.input.channels
    }

    /// Offsets into a chunk's input of the 36 pixels of tile `t`'s patch
    /// (`None`: outside the image, i.e. zero).
    fn patch(&self, t: usize) -> [[Option<usize>; PATCH]; PATCH] {
        let (img, iy, ix) = self.patch_origin(t);
        let (h, w, c) = (self.input.height, self.input.width, self.input.channels);
        array::from_fn(|r| {
            array::from_fn(|col| {
                let (y, x) = (iy + r as isize, ix + col as isize);
                (y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w)
                    .then(|| ((img * h + y as usize) * w + x as usize) * c)
            })
        })
    }

    /// Offsets into a chunk's output of the 4×4 pixels of tile `t` (`None`:
    /// past the bottom or right edge of an odd-sized output).
    fn outputs(&self, t: usize) -> [[Option<usize>; TILE]; TILE] {
        let (img, r) = (t / self.tiles_per_image(), t % self.tiles_per_image());
        let (ty, tx) = (r / self.tiles_x, r % self.tiles_x);
        let (h, w, c) = (self.out.height, self.out.width, self.out.channels);
        array::from_fn(|a| {
            array::from_fn(|b| {
                let (y, x) = (TILE * ty + a, TILE * tx + b);
                (y < h && x < w).then(|| ((img * h + y) * w + x) * c)
            })
        })
    }

    /// Forward for one chunk of whole images: `y = conv(x, g) + bias` (then
    /// relu if fused), with
    /// `u` the transformed weights ([`transform_weights`]).
    pub fn forward_chunk(
        &self,
        x: &[f32],
        y: &mut [f32],
        u: &[f32],
        bias: &[f32],
        s: &mut Scratch,
    ) {
        let (cin, cout) = (self.input.channels, self.out.channels);
        let tiles = x.len() / self.input.len() * self.tiles_per_image();
        for t0 in (0..tiles).step_by(self.block_tiles()) {
            let t1 = (t0 + self.block_tiles()).min(tiles);
            let nb = t1 - t0;
            let (sv, sm) = (stride(nb, cin), stride(nb, cout));
            let (v, m) = (&mut s.v[..XI * sv], &mut s.m[..XI * sm]);
            self.transform_input(x, t0..t1, v);
            for xi in 0..XI {
                // M_ξ[nb×Cout] = V_ξ[nb×Cin] · U_ξ[Cin×Cout]
                self.gemm.sgemm(
                    nb,
                    cin,
                    cout,
                    &v[xi * sv..],
                    Op::N,
                    &u[xi * cin * cout..],
                    Op::N,
                    0.0,
                    &mut m[xi * sm..][..nb * cout],
                );
            }
            self.transform_output(m, t0..t1, bias, y);
        }
    }

    /// Backward for one chunk: partial `dU` and bias gradient into the
    /// scratch; `dx` if asked. `y` is the forward output; `u` must be the
    /// transform of the weights the forward pass used.
    pub fn backward_chunk(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        u: &[f32],
        s: &mut Scratch,
    ) {
        let (cin, cout) = (self.input.channels, self.out.channels);
        let tiles = x.len() / self.input.len() * self.tiles_per_image();
        s.dbias.fill(0.0);
        // db = Σ dy (masked by y > 0 with a fused relu; y is read only then).
        for (i, row) in dy.chunks_exact(cout).enumerate() {
            if self.relu {
                let y = &y[i * cout..(i + 1) * cout];
                for ((d, &g), &y) in s.dbias.iter_mut().zip(row).zip(y) {
                    // (A select, not a branch: the sign of y is a coin flip.)
                    *d += if y > 0.0 { g } else { 0.0 };
                }
            } else {
                for (d, &g) in s.dbias.iter_mut().zip(row) {
                    *d += g;
                }
            }
        }
        // dx is zeroed a block's rows at a time, just before the adjoint adds
        // into them (while they are in cache), up to `zeroed`.
        let mut zeroed = 0;
        for t0 in (0..tiles).step_by(self.block_tiles()) {
            let t1 = (t0 + self.block_tiles()).min(tiles);
            let nb = t1 - t0;
            let (sv, sm) = (stride(nb, cin), stride(nb, cout));
            let (v, dm) = (&mut s.v[..XI * sv], &mut s.m[..XI * sm]);
            self.transform_output_adjoint(dy, y, t0..t1, dm);
            self.transform_input(x, t0..t1, v);
            for xi in 0..XI {
                // dU_ξ[Cin×Cout] (+)= V_ξᵀ[Cin×nb] · dM_ξ[nb×Cout]
                self.gemm.sgemm(
                    cin,
                    nb,
                    cout,
                    &v[xi * sv..],
                    Op::T,
                    &dm[xi * sm..],
                    Op::N,
                    if t0 == 0 { 0.0 } else { 1.0 },
                    &mut s.du[xi * cin * cout..(xi + 1) * cin * cout],
                );
            }
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            // V is spent: its buffer takes dV.
            for xi in 0..XI {
                // dV_ξ[nb×Cin] = dM_ξ[nb×Cout] · U_ξᵀ[Cout×Cin]
                self.gemm.sgemm(
                    nb,
                    cout,
                    cin,
                    &dm[xi * sm..],
                    Op::N,
                    &u[xi * cin * cout..],
                    Op::T,
                    0.0,
                    &mut v[xi * sv..][..nb * cin],
                );
            }
            let end = self.patch_rows_end(t1 - 1);
            dx[zeroed..end].fill(0.0);
            zeroed = end;
            self.transform_input_adjoint(v, t0..t1, dx);
        }
        // The last tile's patch reaches the last input row (with padding 0
        // or 1 and a 3×3 kernel), so all of dx is written.
        if let Some(dx) = dx {
            assert_eq!(zeroed, dx.len(), "the patches reach every input row");
        }
    }

    /// `V_ξ[t − t0, ci] = (Bᵀ d B)_ξ` for the tiles `t0..t1` of a chunk.
    ///
    /// (This and the three loops below, and their AVX-512 twins, are written
    /// out: one shared helper taking a closure measured 15 % slower on a whole
    /// model-1 step.)
    #[inline(always)]
    fn transform_input_n<const N: usize>(&self, x: &[f32], tiles: Range<usize>, v: &mut [f32]) {
        let (c, nb) = (self.input.channels, tiles.len());
        for (j, t) in tiles.enumerate() {
            let patch = self.patch(t);
            let mut c0 = 0;
            while c0 < c {
                // N channels at a time, then the last ones one at a time.
                if c - c0 >= N {
                    self.input_lanes::<N>(x, &patch, c0, &mut v[j * c..], stride(nb, c));
                    c0 += N;
                } else {
                    self.input_lanes::<1>(x, &patch, c0, &mut v[j * c..], stride(nb, c));
                    c0 += 1;
                }
            }
        }
    }

    #[inline(always)]
    fn input_lanes<const N: usize>(
        &self,
        x: &[f32],
        patch: &[[Option<usize>; PATCH]; PATCH],
        c0: usize,
        v: &mut [f32],
        xi_stride: usize,
    ) {
        let d: [[Lanes<N>; PATCH]; PATCH] = array::from_fn(|r| {
            array::from_fn(|c| match patch[r][c] {
                Some(i) => load(&x[i + c0..]),
                None => [0.0; N],
            })
        });
        let out = sandwich(&d, bt);
        for (xi, lanes) in out.iter().flatten().enumerate() {
            v[xi * xi_stride + c0..][..N].copy_from_slice(lanes);
        }
    }

    /// `dx[patch of t] += (B dV Bᵀ)` for the tiles `t0..t1` of a chunk (the
    /// adjoint of [`Self::transform_input`]; the padding part is dropped).
    #[inline(always)]
    fn transform_input_adjoint_n<const N: usize>(
        &self,
        dv: &[f32],
        tiles: Range<usize>,
        dx: &mut [f32],
    ) {
        let (c, nb) = (self.input.channels, tiles.len());
        for (j, t) in tiles.enumerate() {
            let patch = self.patch(t);
            let mut c0 = 0;
            while c0 < c {
                if c - c0 >= N {
                    input_adjoint_lanes::<N>(&dv[j * c..], stride(nb, c), &patch, c0, dx);
                    c0 += N;
                } else {
                    input_adjoint_lanes::<1>(&dv[j * c..], stride(nb, c), &patch, c0, dx);
                    c0 += 1;
                }
            }
        }
    }

    /// `y[tile t] = (Aᵀ M A) + bias` for the tiles `t0..t1` of a chunk.
    #[inline(always)]
    fn transform_output_n<const N: usize>(
        &self,
        m: &[f32],
        tiles: Range<usize>,
        bias: &[f32],
        y: &mut [f32],
    ) {
        let (c, nb) = (self.out.channels, tiles.len());
        for (j, t) in tiles.enumerate() {
            let outputs = self.outputs(t);
            let mut c0 = 0;
            while c0 < c {
                if c - c0 >= N {
                    output_lanes::<N>(&m[j * c..], stride(nb, c), &outputs, bias, self.relu, c0, y);
                    c0 += N;
                } else {
                    output_lanes::<1>(&m[j * c..], stride(nb, c), &outputs, bias, self.relu, c0, y);
                    c0 += 1;
                }
            }
        }
    }

    /// `dM = A dY Aᵀ` for the tiles `t0..t1` of a chunk (the adjoint of
    /// [`Self::transform_output`]; outputs past an odd edge count as zero).
    #[inline(always)]
    fn transform_output_adjoint_n<const N: usize>(
        &self,
        dy: &[f32],
        y: &[f32],
        tiles: Range<usize>,
        dm: &mut [f32],
    ) {
        let (c, nb) = (self.out.channels, tiles.len());
        for (j, t) in tiles.enumerate() {
            let outputs = self.outputs(t);
            let mut c0 = 0;
            while c0 < c {
                if c - c0 >= N {
                    output_adjoint_lanes::<N>(
                        dy,
                        y,
                        self.relu,
                        &outputs,
                        c0,
                        &mut dm[j * c..],
                        stride(nb, c),
                    );
                    c0 += N;
                } else {
                    output_adjoint_lanes::<1>(
                        dy,
                        y,
                        self.relu,
                        &outputs,
                        c0,
                        &mut dm[j * c..],
                        stride(nb, c),
                    );
                    c0 += 1;
                }
            }
        }
    }
}

/// Which SIMD instructions the transforms are compiled for, by CPU (checked at
/// run time, so that the default build runs on any x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Simd {
    Avx512,
    Avx2,
    Baseline,
}

fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let limit = limit();
        if limit <= Simd::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if limit <= Simd::Avx2 && std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Tests cap the SIMD level to run every version of the transforms on one
/// machine (a process-wide setting: a test that compares two computations
/// bit for bit takes [`at_each_level`]'s lock, so that another test cannot
/// switch the version between them; others just run another version, with
/// the same results up to rounding).
#[cfg(test)]
static LIMIT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(test)]
static LIMIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
fn set_limit(level: Simd) {
    LIMIT.store(level as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `case` once at each SIMD level this CPU has (AVX-512, AVX2,
/// baseline), holding the level for the whole call; AVX-512 is the level
/// left behind.
#[cfg(test)]
pub(super) fn at_each_level(mut case: impl FnMut()) {
    let _held = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for level in [Simd::Avx512, Simd::Avx2, Simd::Baseline] {
        set_limit(level);
        case();
    }
    set_limit(Simd::Avx512);
}

#[cfg(test)]
fn limit() -> Simd {
    match LIMIT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Simd::Avx512,
        1 => Simd::Avx2,
        _ => Simd::Baseline,
    }
}

#[cfg(not(test))]
fn limit() -> Simd {
    Simd::Avx512
}

/// For each `name => generic`, a method `name` that runs `generic::<N>`
/// compiled for this CPU's widest vectors: `N` = 16 lanes with AVX-512 (one
/// register), 8 with AVX2, 4 otherwise (SSE2). Lanes that fit in registers
/// are what make the transforms fast: a row of a 6×6 tile in 16-lane
/// vectors is 6 AVX-512 registers but 24 SSE ones.
macro_rules! simd_dispatch {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) => $generic:ident $(| $wide:ident)?;)*) => {
        impl Geometry {
            $(
                fn $name(&self $(, $arg: $ty)*) {
                    #[cfg(target_arch = "x86_64")]
                    {
                        #[target_feature(enable = "avx512f")]
                        fn avx512(g: &Geometry $(, $arg: $ty)*) {
                            simd_dispatch!(@avx512 g, $generic, [$($wide)?], ($($arg),*))
                        }
                        #[target_feature(enable = "avx2")]
                        fn avx2(g: &Geometry $(, $arg: $ty)*) {
                            g.$generic::<8>($($arg),*)
                        }
                        match simd() {
                            // SAFETY: the CPU has the features (checked at run time).
                            Simd::Avx512 => return unsafe { avx512(self $(, $arg)*) },
                            Simd::Avx2 => return unsafe { avx2(self $(, $arg)*) },
                            _ => {}
                        }
                    }
                    self.$generic::<4>($($arg),*)
                }
            )*
        }
    };
    // AVX-512: the hand-written version when there is one, else the generic code.
    (@avx512 $g:ident, $generic:ident, [], ($($arg:ident),*)) => { $g.$generic::<16>($($arg),*) };
    (@avx512 $g:ident, $generic:ident, [$wide:ident], ($($arg:ident),*)) => { $g.$wide($($arg),*) };
}

simd_dispatch! {
    fn transform_input(&self, x: &[f32], tiles: Range<usize>, v: &mut [f32])
        => transform_input_n | transform_input_avx512;
    fn transform_input_adjoint(&self, dv: &[f32], tiles: Range<usize>, dx: &mut [f32])
        => transform_input_adjoint_n | transform_input_adjoint_avx512;
    fn transform_output(&self, m: &[f32], tiles: Range<usize>, bias: &[f32], y: &mut [f32])
        => transform_output_n | transform_output_avx512;
    fn transform_output_adjoint(&self, dy: &[f32], y: &[f32], tiles: Range<usize>, dm: &mut [f32])
        => transform_output_adjoint_n | transform_output_adjoint_avx512;
}

#[inline(always)]
fn input_adjoint_lanes<const N: usize>(
    dv: &[f32],
    xi_stride: usize,
    patch: &[[Option<usize>; PATCH]; PATCH],
    c0: usize,
    dx: &mut [f32],
) {
    let dv: [[Lanes<N>; PATCH]; PATCH] = load_xi(dv, xi_stride, c0);
    let dd = sandwich(&dv, b);
    for (r, row) in dd.iter().enumerate() {
        for (col, lanes) in row.iter().enumerate() {
            if let Some(i) = patch[r][col] {
                for (d, &g) in dx[i + c0..][..N].iter_mut().zip(lanes) {
                    *d += g;
                }
            }
        }
    }
}

#[inline(always)]
fn output_lanes<const N: usize>(
    m: &[f32],
    xi_stride: usize,
    outputs: &[[Option<usize>; TILE]; TILE],
    bias: &[f32],
    relu: bool,
    c0: usize,
    y: &mut [f32],
) {
    let m: [[Lanes<N>; PATCH]; PATCH] = load_xi(m, xi_stride, c0);
    let out = sandwich(&m, at);
    let bias: Lanes<N> = load(&bias[c0..]);
    for (a, row) in out.iter().enumerate() {
        for (b, lanes) in row.iter().enumerate() {
            if let Some(o) = outputs[a][b] {
                for ((y, &v), &bias) in y[o + c0..][..N].iter_mut().zip(lanes).zip(&bias) {
                    *y = if relu { (v + bias).max(0.0) } else { v + bias };
                }
            }
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_adjoint_lanes<const N: usize>(
    dy: &[f32],
    y: &[f32],
    relu: bool,
    outputs: &[[Option<usize>; TILE]; TILE],
    c0: usize,
    dm: &mut [f32],
    xi_stride: usize,
) {
    let mut d = [[[0.0; N]; TILE]; TILE];
    for (d, o) in d.iter_mut().flatten().zip(outputs.iter().flatten()) {
        *d = match o {
            Some(o) if relu => {
                let (g, y): (Lanes<N>, Lanes<N>) = (load(&dy[o + c0..]), load(&y[o + c0..]));
                let mut d = [0.0; N];
                for ((d, g), y) in d.iter_mut().zip(g).zip(y) {
                    *d = if y > 0.0 { g } else { 0.0 };
                }
                d
            }
            Some(o) => load(&dy[o + c0..]),
            None => [0.0; N],
        };
    }
    let out = sandwich(&d, a);
    for (xi, lanes) in out.iter().flatten().enumerate() {
        dm[xi * xi_stride + c0..][..N].copy_from_slice(lanes);
    }
}

impl Geometry {
    /// `U = G g Gᵀ` for every (ci, co): `w` is `[3][3][Cin][Cout]`, `u` is
    /// `[36][Cin][Cout]`. In parallel over parts of the (ci, co) entries
    /// ([`for_parts`]), each entry's 36 values from its 9 weights at once.
    pub fn transform_weights(&self, w: &[f32], u: &mut [f32]) {
        let e = self.input.channels * self.out.channels;
        assert_eq!((w.len(), u.len()), (9 * e, XI * e), "weight shapes");
        for_parts::<XI>(u, e, |k0, part| self.weight_part(w, k0, part));
    }

    /// `dg = Gᵀ dU G` for every (ci, co), the adjoint of
    /// [`Self::transform_weights`]; in parallel over parts of the entries.
    pub fn weight_gradient(&self, du: &[f32], dw: &mut [f32]) {
        let e = self.input.channels * self.out.channels;
        assert_eq!((du.len(), dw.len()), (XI * e, 9 * e), "weight shapes");
        for_parts::<9>(dw, e, |k0, part| self.weight_gradient_part(du, k0, part));
    }

    /// `U` of the entries `k0..k0 + len` (`part[ξ]` is `U_ξ` there).
    #[inline(always)]
    fn weight_part_n<const N: usize>(&self, w: &[f32], k0: usize, part: &mut [&mut [f32]]) {
        let (e, len) = (w.len() / 9, part[0].len());
        let mut k = 0;
        while k + N <= len {
            weight_lanes::<N>(w, e, k0 + k, part, k);
            k += N;
        }
        for k in k..len {
            weight_lanes::<1>(w, e, k0 + k, part, k);
        }
    }

    /// `dg` of the entries `k0..k0 + len` (`part[3a + b]` is tap (a, b) there).
    #[inline(always)]
    fn weight_gradient_part_n<const N: usize>(
        &self,
        du: &[f32],
        k0: usize,
        part: &mut [&mut [f32]],
    ) {
        let (e, len) = (du.len() / XI, part[0].len());
        let mut k = 0;
        while k + N <= len {
            weight_adjoint_lanes::<N>(du, e, k0 + k, part, k);
            k += N;
        }
        for k in k..len {
            weight_adjoint_lanes::<1>(du, e, k0 + k, part, k);
        }
    }
}

simd_dispatch! {
    fn weight_part(&self, w: &[f32], k0: usize, part: &mut [&mut [f32]]) => weight_part_n;
    fn weight_gradient_part(&self, du: &[f32], k0: usize, part: &mut [&mut [f32]])
        => weight_gradient_part_n;
}

/// Calls `f(k0, part)` in parallel over parts of the columns of `m`, a
/// `ROWS × e` row-major matrix: `part[r]` is row `r`'s columns
/// `k0..k0 + len`, about one part per thread (halved until at most
/// `⌈e / threads⌉`, cut at multiples of 16 columns), without allocating
/// (a training step allocates nothing outside the GEMMs:
/// `tests/no_alloc_step.rs`). The weight transforms go this way, each entry's
/// rows at once, rather than a row of the result per task: that computed the
/// shared first half of each transform once per row, and gave 2 threads 3
/// tasks (dg's kernel rows).
fn for_parts<const ROWS: usize>(
    m: &mut [f32],
    e: usize,
    f: impl Fn(usize, &mut [&mut [f32]]) + Sync,
) {
    let mut rows = m.chunks_mut(e);
    let part: [&mut [f32]; ROWS] = array::from_fn(|_| rows.next().unwrap_or_default());
    debug_assert!(rows.next().is_none() && part.iter().all(|r| r.len() == e));
    let most = e.div_ceil(rayon::current_num_threads()).max(16);
    split(part, 0, most, &f);
}

/// [`for_parts`]' recursion: `part` holds columns `k0..` of each row.
fn split<const ROWS: usize>(
    mut part: [&mut [f32]; ROWS],
    k0: usize,
    most: usize,
    f: &(impl Fn(usize, &mut [&mut [f32]]) + Sync),
) {
    let len = part[0].len();
    if len <= most || len < 32 {
        return f(k0, &mut part);
    }
    let mid = (len / 2).next_multiple_of(16);
    let mut halves = part.map(|row| row.split_at_mut(mid));
    let left: [&mut [f32]; ROWS] = array::from_fn(|r| std::mem::take(&mut halves[r].0));
    let right: [&mut [f32]; ROWS] = array::from_fn(|r| std::mem::take(&mut halves[r].1));
    rayon::join(
        || split(left, k0, most, f),
        || split(right, k0 + mid, most, f),
    );
}

/// `U_ξ` of entries `kw..kw + N` (of `w`), into `part[ξ][k..k + N]`.
#[inline(always)]
fn weight_lanes<const N: usize>(w: &[f32], e: usize, kw: usize, part: &mut [&mut [f32]], k: usize) {
    let at = |a: usize, b: usize| -> Lanes<N> { load(&w[(3 * a + b) * e + kw..]) };
    let g = [
        [at(0, 0), at(0, 1), at(0, 2)],
        [at(1, 0), at(1, 1), at(1, 2)],
        [at(2, 0), at(2, 1), at(2, 2)],
    ];
    for (xi, lanes) in sandwich(&g, gm).iter().flatten().enumerate() {
        part[xi][k..][..N].copy_from_slice(lanes);
    }
}

/// `dg = Gᵀ dU G` of entries `kw..kw + N` (of `du`), into `part[3a + b][k..k + N]`.
#[inline(always)]
fn weight_adjoint_lanes<const N: usize>(
    du: &[f32],
    e: usize,
    kw: usize,
    part: &mut [&mut [f32]],
    k: usize,
) {
    let du: [[Lanes<N>; PATCH]; PATCH] = load_xi(du, e, kw);
    for (tap, lanes) in sandwich(&du, gt).iter().flatten().enumerate() {
        part[tap][k..][..N].copy_from_slice(lanes);
    }
}

/// Floats from `V_ξ` (or `M_ξ`) to `V_ξ₊₁` in a block of `nb` tiles × `c`
/// channels: the matrix plus one cache line, so that the 36 streams a tile
/// writes do not fall in the same cache set (`nb·c` is often a multiple of
/// 4 KiB, and that many streams in one cache set thrash an 8-way L1).
fn stride(nb: usize, c: usize) -> usize {
    nb * c + 16
}

/// The 6×6 lanes `s[ξ·stride + c0 ..][..N]`, `ξ = 6·i + j`.
#[inline(always)]
fn load_xi<const N: usize>(s: &[f32], stride: usize, c0: usize) -> [[Lanes<N>; PATCH]; PATCH] {
    // (Built whole, written out: zero-filled first it was a `memset` call,
    // and `array::from_fn` here was called, not inlined.)
    let at = |i: usize, j: usize| -> Lanes<N> { load(&s[(PATCH * i + j) * stride + c0..]) };
    macro_rules! row {
        ($i:expr) => {
            [
                at($i, 0),
                at($i, 1),
                at($i, 2),
                at($i, 3),
                at($i, 4),
                at($i, 5),
            ]
        };
    }
    [row!(0), row!(1), row!(2), row!(3), row!(4), row!(5)]
}

/// The first `N` values of `s` as lanes.
#[inline(always)]
fn load<const N: usize>(s: &[f32]) -> Lanes<N> {
    s[..N].try_into().expect("N values")
}

/// `L X Lᵀ` for a square `X` of lanes, with `f(v) = L v` (one matrix along
/// the columns, then along the rows): `f` is one of the 1-D transforms below.
#[inline(always)]
fn sandwich<const N: usize, const I: usize, const O: usize>(
    x: &[[Lanes<N>; I]; I],
    f: impl Fn(&[Lanes<N>; I]) -> [Lanes<N>; O],
) -> [[Lanes<N>; O]; O] {
    // t = L X: column c of t is f(column c of X); cols[c] holds it.
    // (Built with `from_fn`, not zero-filled then written: a 6×6 tile of
    // 16-lane vectors is 2.3 KB, and the zero-fill would be a `memset` call.)
    let cols: [[Lanes<N>; O]; I] = array::from_fn(|c| f(&array::from_fn(|r| x[r][c])));
    // L X Lᵀ = t Lᵀ: row o is f(row o of t).
    array::from_fn(|o| f(&array::from_fn(|c| cols[c][o])))
}

/// `Bᵀ d`.
#[inline(always)]
fn bt<const N: usize>(d: &[Lanes<N>; PATCH]) -> [Lanes<N>; PATCH] {
    let mut o = [[0.0; N]; PATCH];
    for i in 0..N {
        let (p, q) = (d[4][i] - 4.0 * d[2][i], d[3][i] - 4.0 * d[1][i]);
        let (r, s) = (d[4][i] - d[2][i], 2.0 * (d[3][i] - d[1][i]));
        o[0][i] = 4.0 * d[0][i] - 5.0 * d[2][i] + d[4][i];
        o[1][i] = p + q;
        o[2][i] = p - q;
        o[3][i] = r + s;
        o[4][i] = r - s;
        o[5][i] = 4.0 * d[1][i] - 5.0 * d[3][i] + d[5][i];
    }
    o
}

/// `B v` (the adjoint of [`bt`]).
#[inline(always)]
fn b<const N: usize>(v: &[Lanes<N>; PATCH]) -> [Lanes<N>; PATCH] {
    let mut o = [[0.0; N]; PATCH];
    for i in 0..N {
        let (p, q) = (v[1][i] + v[2][i], v[3][i] + v[4][i]);
        let (r, s) = (v[2][i] - v[1][i], v[3][i] - v[4][i]);
        o[0][i] = 4.0 * v[0][i];
        o[1][i] = 4.0 * (r + v[5][i]) - 2.0 * s;
        o[2][i] = -5.0 * v[0][i] - 4.0 * p - q;
        o[3][i] = 2.0 * s - r - 5.0 * v[5][i];
        o[4][i] = v[0][i] + p + q;
        o[5][i] = v[5][i];
    }
    o
}

/// `Aᵀ m`.
#[inline(always)]
fn at<const N: usize>(m: &[Lanes<N>; PATCH]) -> [Lanes<N>; TILE] {
    let mut o = [[0.0; N]; TILE];
    for i in 0..N {
        let (p, q) = (m[1][i] + m[2][i], m[3][i] + m[4][i]);
        let (r, s) = (m[1][i] - m[2][i], m[3][i] - m[4][i]);
        o[0][i] = m[0][i] + p + q;
        o[1][i] = r + 2.0 * s;
        o[2][i] = p + 4.0 * q;
        o[3][i] = r + 8.0 * s + m[5][i];
    }
    o
}

/// `A y` (the adjoint of [`at`]).
#[inline(always)]
fn a<const N: usize>(y: &[Lanes<N>; TILE]) -> [Lanes<N>; PATCH] {
    let mut o = [[0.0; N]; PATCH];
    for i in 0..N {
        let (p, q) = (y[0][i] + y[2][i], y[1][i] + y[3][i]);
        let (r, s) = (y[0][i] + 4.0 * y[2][i], 2.0 * y[1][i] + 8.0 * y[3][i]);
        o[0][i] = y[0][i];
        o[1][i] = p + q;
        o[2][i] = p - q;
        o[3][i] = r + s;
        o[4][i] = r - s;
        o[5][i] = y[3][i];
    }
    o
}

/// `G g`.
#[inline(always)]
fn gm<const N: usize>(g: &[Lanes<N>; 3]) -> [Lanes<N>; PATCH] {
    let mut o = [[0.0; N]; PATCH];
    for i in 0..N {
        let (p, q) = (g[0][i] + g[2][i], g[1][i]);
        let (r, s) = (g[0][i] / 24.0 + g[2][i] / 6.0, g[1][i] / 12.0);
        o[0][i] = g[0][i] / 4.0;
        o[1][i] = -(p + q) / 6.0;
        o[2][i] = -(p - q) / 6.0;
        o[3][i] = r + s;
        o[4][i] = r - s;
        o[5][i] = g[2][i];
    }
    o
}

/// `Gᵀ u` (the adjoint of [`gm`]).
#[inline(always)]
fn gt<const N: usize>(u: &[Lanes<N>; PATCH]) -> [Lanes<N>; 3] {
    let mut o = [[0.0; N]; 3];
    for i in 0..N {
        let (p, q) = (u[1][i] + u[2][i], u[3][i] + u[4][i]);
        let (r, s) = (u[2][i] - u[1][i], u[3][i] - u[4][i]);
        o[0][i] = u[0][i] / 4.0 - p / 6.0 + q / 24.0;
        o[1][i] = r / 6.0 + s / 12.0;
        o[2][i] = -p / 6.0 + q / 6.0 + u[5][i];
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix<const I: usize, const O: usize>(
        f: impl Fn(&[Lanes<1>; I]) -> [Lanes<1>; O],
    ) -> [[f32; I]; O] {
        let cols: [[Lanes<1>; O]; I] =
            array::from_fn(|c| f(&array::from_fn(|r| [f32::from(r == c)])));
        array::from_fn(|o| array::from_fn(|c| cols[c][o][0]))
    }

    fn assert_close<const I: usize, const O: usize>(got: [[f32; I]; O], want: [[f32; I]; O]) {
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// The 1-D transforms are the matrices in the module comment, and each
    /// adjoint is the transpose.
    #[test]
    fn transforms_are_the_documented_matrices_and_adjoints_transpose() {
        let bt_m = matrix(bt::<1>);
        assert_close(
            bt_m,
            [
                [4., 0., -5., 0., 1., 0.],
                [0., -4., -4., 1., 1., 0.],
                [0., 4., -4., -1., 1., 0.],
                [0., -2., -1., 2., 1., 0.],
                [0., 2., -1., -2., 1., 0.],
                [0., 4., 0., -5., 0., 1.],
            ],
        );
        let at_m = matrix(at::<1>);
        assert_close(
            at_m,
            [
                [1., 1., 1., 1., 1., 0.],
                [0., 1., -1., 2., -2., 0.],
                [0., 1., 1., 4., 4., 0.],
                [0., 1., -1., 8., -8., 1.],
            ],
        );
        let g_m = matrix(gm::<1>);
        let (s, t, w) = (1. / 6., 1. / 12., 1. / 24.);
        assert_close(
            g_m,
            [
                [0.25, 0., 0.],
                [-s, -s, -s],
                [-s, s, -s],
                [w, t, s],
                [w, -t, s],
                [0., 0., 1.],
            ],
        );
        let (b_m, a_m, gt_m) = (matrix(b::<1>), matrix(a::<1>), matrix(gt::<1>));
        assert_close(b_m, array::from_fn(|i| array::from_fn(|j| bt_m[j][i])));
        assert_close(a_m, array::from_fn(|i| array::from_fn(|j| at_m[j][i])));
        assert_close(gt_m, array::from_fn(|i| array::from_fn(|j| g_m[j][i])));
    }

    /// One channel pair, one tile: `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` is the 4×4
    /// valid correlation of the 6×6 patch `d` with the 3×3 kernel `g`.
    #[test]
    fn one_tile_is_a_correlation() {
        let d: [[Lanes<1>; PATCH]; PATCH] =
            array::from_fn(|r| array::from_fn(|c| [((r * 7 + c * 3) % 11) as f32 * 0.37 - 2.0]));
        let g: [[Lanes<1>; 3]; 3] =
            array::from_fn(|r| array::from_fn(|c| [((r * 3 + c) as f32).sin()]));
        let (u, v) = (sandwich(&g, gm), sandwich(&d, bt));
        let prod: [[Lanes<1>; PATCH]; PATCH] =
            array::from_fn(|i| array::from_fn(|j| [u[i][j][0] * v[i][j][0]]));
        let y = sandwich(&prod, at);
        for oy in 0..TILE {
            for ox in 0..TILE {
                let mut want = 0.0;
                for ky in 0..3 {
                    for kx in 0..3 {
                        want += d[oy + ky][ox + kx][0] * g[ky][kx][0];
                    }
                }
                assert!(
                    (y[oy][ox][0] - want).abs() < 1e-4,
                    "{oy},{ox}: {} vs {want}",
                    y[oy][ox][0]
                );
            }
        }
    }
}
