//! Once buffers have reached their size, a training step (forward, backward,
//! Adam, SGD or Muon) allocates nothing of its own. The only heap allocations left are the
//! packing buffers that the GEMM backend (`gemm` or `matrixmultiply`)
//! allocates inside its calls; those are told apart by `trainer::kernels::gemm::in_gemm`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts allocations made outside the GEMM backend.
fn count() {
    if !trainer::kernels::gemm::in_gemm() {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_training_step_allocates_nothing_outside_gemm() {
    // Run inside a rayon pool: work submitted from outside one goes through
    // rayon's global injector queue, which allocates a block every 63 jobs.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(check_models);
}

fn check_models() {
    use trainer::optim::{Muon, Optimizer, Sgd};
    let mut sgd = Sgd::new(0.1, 0.9, true);
    sgd.weight_decay = 5e-4;
    sgd.decay_bn_bias = false;
    // Muon on the filters (its scratch grown by the first steps).
    let muon = Sgd {
        muon: Some(Muon {
            lr: 0.2,
            momentum: 0.6,
            nesterov: true,
            steps: 3,
        }),
        ..sgd.clone()
    };
    for (model, mut opt) in [
        ("model1", Optimizer::default()),
        ("model3", Optimizer::default()),
        ("model3", Optimizer::Sgd(sgd.clone())),
        ("fast", Optimizer::Sgd(sgd)),
        ("fast", Optimizer::Sgd(muon)),
    ] {
        // fast: a residual network (add layers, skip gradients).
        let spec = trainer::train::spec_file::SpecFile::builtin(model)
            .unwrap()
            .model;
        let mut net = trainer::model::network::Network::new(&spec, 1).unwrap();
        let batch = 8;
        let images: Vec<u8> = (0..batch * spec.input.len())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let labels: Vec<u8> = (0..batch as u8).map(|i| i % 10).collect();
        let mut step = |net: &mut trainer::model::network::Network| {
            net.set_input_u8(&images, batch);
            net.forward_backward(&labels);
            opt.step(net, 0.5);
        };
        step(&mut net);
        step(&mut net);
        let (allocs, gemms) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            trainer::kernels::gemm::calls(),
        );
        step(&mut net);
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs;
        let gemms = trainer::kernels::gemm::calls() - gemms;
        assert!(gemms > 0, "the step ran GEMMs");
        assert_eq!(
            allocs, 0,
            "{model}: allocations outside the GEMM backend in a steady-state step"
        );
    }
}
