//! Loading a model and classifying images must not touch the heap. A counting
//! global allocator watches this thread while it does both.

mod common;

use common::int8::{without_batchnorm, Int8Model};
use common::{model1, Rng, Shape, TestModel, L};
use infer::{Backend, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` initialisation and no destructor: reading it never allocates.
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn loading_and_classifying_never_allocate() {
    // Everything the test needs is allocated up front.
    let other = TestModel::random(
        Shape { h: 11, w: 9, c: 3 },
        vec![
            L::Conv {
                filters: 20,
                k: 3,
                stride: 2,
                same: false,
            },
            L::Bn { eps: 1e-3 },
            L::Relu,
            L::MaxPool {
                size: 2,
                stride: 2,
                same: true,
            },
            L::Gap,
            L::Dense { units: 5 },
        ],
        2,
    );
    // With residual adds: stashes, and a relu that is not fused into the conv
    // whose output an add reads.
    let conv = || L::Conv {
        filters: 8,
        k: 3,
        stride: 1,
        same: true,
    };
    let residual = TestModel::random(
        Shape { h: 8, w: 8, c: 3 },
        vec![
            conv(),
            L::Bn { eps: 1e-3 },
            L::Relu,
            conv(),
            L::Relu,
            conv(),
            L::Add { from: 2 },
            L::Add { from: 3 },
            L::MaxPool {
                size: 2,
                stride: 2,
                same: false,
            },
            L::Gap,
            L::Dense { units: 4 },
        ],
        3,
    );
    // Int8 versions of model 1 and of the residual net (batchnorm folded away).
    let mut rng = Rng::new(9);
    let int8 = |tm: &TestModel, rng: &mut Rng| {
        let tm = TestModel::random(tm.input, without_batchnorm(tm.layers.clone()), 4);
        let calib = vec![rng.bytes(tm.input_len()), rng.bytes(tm.input_len())];
        Int8Model::quantize(&tm, &calib, true).to_bytes()
    };
    let files = [
        model1(1).to_bytes(),
        other.to_bytes(),
        residual.to_bytes(),
        int8(&model1(1), &mut rng),
        int8(&residual, &mut rng),
    ];
    let mut broken = files[0].clone();
    broken.truncate(broken.len() - 1);
    let images = [
        rng.bytes(32 * 32 * 3),
        rng.bytes(11 * 9 * 3),
        rng.bytes(8 * 8 * 3),
        rng.bytes(32 * 32 * 3),
        rng.bytes(8 * 8 * 3),
    ];
    let mut scratch = vec![0f32; 1 << 17];
    let mut probs = [0f32; 16];
    let mut classes = Vec::with_capacity(20);

    let n = allocations_in(|| {
        for (file, image) in files.iter().zip(&images) {
            for backend in [
                Backend::Auto,
                Backend::Avx512,
                Backend::Avx2,
                Backend::Portable,
            ] {
                let model = Model::from_bytes(file).unwrap().with_backend(backend);
                let top = model.classify(image, &mut scratch, &mut probs).unwrap();
                classes.push((top.class, model.class_name(top.class).is_some()));
            }
        }
        // Rejections do not allocate either.
        assert!(Model::from_bytes(&broken).is_err());
        assert!(Model::from_bytes(&files[0][..100]).is_err());
    });
    assert_eq!(n, 0, "infer allocated {n} times");
    assert_eq!(classes.len(), 20);
    assert!(classes.iter().all(|&(_, named)| named));

    // The counter does see allocations made while watching.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(Box::new(1u64)))),
        1
    );
}
