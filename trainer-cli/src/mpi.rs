//! Data-parallel training across processes and machines on MPI (rsmpi on
//! Open MPI), behind the `mpi` feature: `mpirun -np N trainer train …`.
//!
//! The engine's [`Replicas`] are implemented here with `MPI_Allreduce` on
//! `MPI_COMM_WORLD`: one call per training step, on one flat buffer of every
//! gradient (see `trainer::train::replicas` for the arithmetic). Only the
//! main thread calls MPI (`MPI_THREAD_FUNNELED`): rayon's threads compute,
//! the batch thread gathers images.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use trainer::train::replicas::Replicas;

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
