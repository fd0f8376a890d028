//! Data-parallel training across processes and machines on MPI (rsmpi on
//! Open MPI), behind the `mpi` feature: `mpirun -np N trainer train …`.
//!
//! The engine's [`Replicas`] are implemented here on `MPI_COMM_WORLD`: the
//! gradients of a step are summed in a few buckets, each an
//! `MPI_Iallreduce` started as soon as backward has produced it and driven
//! on by `MPI_Test` after every layer's backward, so that communication
//! overlaps the rest of backward (see `trainer::train::replicas` for the
//! arithmetic and the buckets). Only the main thread calls MPI
//! (`MPI_THREAD_FUNNELED`): rayon's threads compute, the batch thread
//! gathers images.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use trainer::train::replicas::{PendingSum, Replicas};

/// This process's place in an MPI job. MPI is finalised when it is dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    /// Processes of the job on this machine (they share its cores).
    local_size: usize,
    // Dropped last: MPI_Finalize.
    _universe: mpi::environment::Universe,
}

impl Mpi {
    /// Initialises MPI (a program started without `mpirun` is a job of one).
    pub fn start() -> anyhow::Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        if threading < mpi::Threading::Funneled {
            anyhow::bail!(
                "this MPI library cannot be used from a multi-threaded program ({threading:?})"
            );
        }
        let world = universe.world();
        let local_size = world.split_shared(world.rank()).size() as usize;
        Ok(Mpi {
            world,
            local_size,
            _universe: universe,
        })
    }

    /// Processes of this job running on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// Ends the whole job with `code` (every process, on every machine): what a
    /// process that cannot go on does, so that the others do not wait for it
    /// forever inside a collective call.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Replicas for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, values: &mut [f32]) {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn start_sum_f32<'a>(&'a self, values: &'a mut [f32]) -> Box<dyn PendingSum + 'a> {
        let send = values.to_vec();
        let count =
            i32::try_from(values.len()).expect("a gradient bucket of fewer than 2^31 values");
        let mut request = unsafe { mpi::ffi::RSMPI_REQUEST_NULL };
        // SAFETY: `send` (owned by the returned value, its heap block never
        // moved) and `values` (borrowed by it for 'a) stay valid and
        // untouched until MPI_Wait, which `wait` or `drop` calls; the
        // datatype and operation are MPI's own constants.
        let code = unsafe {
            mpi::ffi::MPI_Iallreduce(
                send.as_ptr().cast(),
                values.as_mut_ptr().cast(),
                count,
                mpi::ffi::RSMPI_FLOAT,
                mpi::ffi::RSMPI_SUM,
                self.world.as_raw(),
                &mut request,
            )
        };
        // MPI's default error handler aborts the job on an error; a return
        // here with another code would be an MPI library set to return errors.
        assert_eq!(code, 0, "MPI_Iallreduce failed with code {code}");
        Box::new(Iallreduce {
            request,
            _send: send,
            _values: std::marker::PhantomData,
        })
    }

    fn sum_f64(&self, values: &mut [f64]) {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn agree(&self, value: u64) -> bool {
        let (mut min, mut max) = (0u64, 0u64);
        self.world
            .all_reduce_into(&value, &mut min, SystemOperation::min());
        self.world
            .all_reduce_into(&value, &mut max, SystemOperation::max());
        min == max
    }

    fn barrier(&self) {
        self.world.barrier();
    }
}

/// An `MPI_Iallreduce` in flight: its send buffer, its request, and the
/// borrow of the buffer receiving the sum.
struct Iallreduce<'a> {
    request: mpi::ffi::MPI_Request,
    _send: Vec<f32>,
    _values: std::marker::PhantomData<&'a mut [f32]>,
}

impl Iallreduce<'_> {
    fn finish(&mut self) {
        // SAFETY: a request from MPI_Iallreduce (or MPI_REQUEST_NULL once
        // complete, for which MPI_Wait returns at once).
        unsafe {
            mpi::ffi::MPI_Wait(&mut self.request, mpi::ffi::RSMPI_STATUS_IGNORE);
        }
    }
}

impl PendingSum for Iallreduce<'_> {
    fn progress(&mut self) {
        let mut done = 0;
        // SAFETY: as in `finish`; MPI_Test sets the request to
        // MPI_REQUEST_NULL when it completes.
        unsafe {
            mpi::ffi::MPI_Test(&mut self.request, &mut done, mpi::ffi::RSMPI_STATUS_IGNORE);
        }
    }

    fn wait(mut self: Box<Self>) {
        self.finish();
    }
}

impl Drop for Iallreduce<'_> {
    /// The buffers may not be freed or reused while MPI still uses them.
    fn drop(&mut self) {
        self.finish();
    }
}
