//! Worker placement for C hosts: `sda_plan_workers`.

use crate::context::{context_of, sda_context};
use crate::device::sda_device_kind;
use crate::sized::{self, growable, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::{fill_fixed, guard, opt_str_arg, write_string};
use sda_core::plan::{Launcher, Plan, Strategy, WorkerPlan};
use std::os::raw::c_char;

/// The strategy a plan resolved to (`auto` becomes one of these).
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_plan_strategy {
    /// Every worker on the CPU.
    Cpu = 0,
    /// Every worker shares one GPU.
    SingleGpu = 1,
    /// One rank per GPU (torch.distributed, NCCL).
    MultiGpu = 2,
}

/// Which launcher's variables the plan read from the process environment.
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_launcher {
    /// None: the plan is a single-node job of its own.
    None = 0,
    /// torchrun (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`).
    Torchrun = 1,
    /// SLURM (`SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`).
    Slurm = 2,
}

/// The plan of one worker. Initialise it with `SDA_WORKER_PLAN_INIT(&plan)` so that `struct_size` is
/// set.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_worker_plan {
    /// `sizeof(sda_worker_plan)` as the caller was compiled; set by `sda_worker_plan_init`.
    pub struct_size: u32,
    /// The strategy in force.
    pub strategy: sda_plan_strategy,
    /// The worker's device kind.
    pub kind: sda_device_kind,
    /// The worker's device index.
    pub index: i32,
    /// The worker's device as torch spells it (`cpu`, `cuda:3`), NUL-terminated.
    pub device: [c_char; 32],
    /// Workers on this node.
    pub workers: u32,
    /// This worker's number, `0 .. workers-1`.
    pub worker_id: u32,
    /// CUDA devices the driver lists.
    pub gpu_count: u32,
    /// Global rank (`RANK`); -1 when the strategy has no ranks (cpu, single_gpu).
    pub rank: i32,
    /// Rank on this node (`LOCAL_RANK`); -1 when the strategy has no ranks.
    pub local_rank: i32,
    /// Ranks in the whole job (`WORLD_SIZE`); equals `workers` without ranks.
    pub world_size: u32,
    /// Rendezvous port (`MASTER_PORT`); 0 without ranks.
    pub master_port: u32,
    /// Rendezvous address (`MASTER_ADDR`), empty without ranks; NUL-terminated.
    pub master_addr: [c_char; 256],
    /// Process-group backend (`nccl`), empty for the process pools; NUL-terminated.
    pub distributed_backend: [c_char; 16],
    /// Whose variables were read.
    pub launcher: sda_launcher,
    /// Number of `NAME=value` lines of the worker's environment.
    pub env_count: u32,
    /// Why this strategy and this many workers; NUL-terminated, truncated to fit.
    pub reason: [c_char; 512],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_worker_plan {
    struct_size, strategy, kind, index, device, workers, worker_id, gpu_count, rank, local_rank,
    world_size, master_port, master_addr, distributed_backend, launcher, env_count, reason,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_worker_plan is repr(C) of integers, c_char arrays (0 = empty string) and three
    // enums whose 0 is a variant (sda_plan_strategy Cpu, sda_device_kind Cpu, sda_launcher None):
    // all-zero bytes are a valid value of every field.
    unsafe { zeroed_with_size() }
});

/// Initialises an empty worker plan (`struct_size` = `size`, the caller's `sizeof(sda_worker_plan)`;
/// `SDA_WORKER_PLAN_INIT(&plan)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_worker_plan_init(plan: *mut sda_worker_plan, size: usize) -> Status {
    guard(|| sized::init(plan, size, "plan"))
}

fn to_c(plan: &Plan, worker: &WorkerPlan) -> sda_worker_plan {
    let mut p = sda_worker_plan::defaults();
    p.strategy = match plan.strategy {
        Strategy::SingleGpu => sda_plan_strategy::SingleGpu,
        Strategy::MultiGpu => sda_plan_strategy::MultiGpu,
        Strategy::Cpu => sda_plan_strategy::Cpu,
    };
    p.kind = worker.kind.into();
    p.index = worker.index as i32;
    fill_fixed(&mut p.device, &worker.device);
    p.workers = plan.workers;
    p.worker_id = worker.worker_id;
    p.gpu_count = plan.gpu_count;
    p.rank = worker.rank.map_or(-1, |r| r as i32);
    p.local_rank = worker.local_rank.map_or(-1, |r| r as i32);
    p.world_size = plan.world_size;
    p.master_port = plan.master_port.map_or(0, u32::from);
    fill_fixed(
        &mut p.master_addr,
        plan.master_addr.as_deref().unwrap_or(""),
    );
    fill_fixed(
        &mut p.distributed_backend,
        plan.distributed_backend.unwrap_or(""),
    );
    p.launcher = match plan.launcher.launcher {
        Launcher::None => sda_launcher::None,
        Launcher::Torchrun => sda_launcher::Torchrun,
        Launcher::Slurm => sda_launcher::Slurm,
    };
    p.env_count = worker.env.len() as u32;
    fill_fixed(&mut p.reason, &plan.reason);
    p
}

/// Plans where worker `worker_id` of a job runs, and the environment to start it with. libsda
/// launches nothing: a host that starts its own worker processes (or writes a launcher script) uses
/// this; under torchrun or SLURM the launcher's variables are read as inputs.
///
/// `strategy`: `auto` (or NULL), `cpu`, `single_gpu`, `multi_gpu` (case-insensitive; `-` for `_`).
/// `auto` chooses by the CUDA devices the driver lists: none → cpu, one → single_gpu, more →
/// multi_gpu. `workers`: workers on this node, 0 = the strategy's default (cpu and single_gpu: 1;
/// multi_gpu: one per GPU, or `LOCAL_WORLD_SIZE`). single_gpu uses the GPU of `hardware.device` when
/// that is `cuda:N`, else `cuda:0`. multi_gpu gives each worker one GPU (`cuda:LOCAL_RANK`) and the
/// torch.distributed variables; under torchrun (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
/// `LOCAL_WORLD_SIZE`) or SLURM (`SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`, one task per rank)
/// this node's ranks are placed in the launcher's world, and a job that spans nodes needs
/// `MASTER_ADDR`.
///
/// `out_plan` (initialised by `SDA_WORKER_PLAN_INIT`) receives the plan. The environment goes into
/// `env_buf` as `NAME=value` lines, each ending in `\n`, NUL-terminated, in a fixed order: for ranks
/// `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, then for every
/// worker `OMP_NUM_THREADS` (the usable cores shared out, or the process's own `OMP_NUM_THREADS`).
/// Values never contain a newline. Buffer rules as `sda_config_get` (`*env_needed` always receives
/// the size, `SDA_ERR_BUFFER_TOO_SMALL` when it does not fit, and then `out_plan` is not written),
/// except that `env_buf = NULL` with `env_capacity = 0` means "no environment wanted": the call then
/// succeeds and only `*env_needed` (when not NULL) tells the size.
///
/// Errors: `SDA_ERR_INVALID_ARGUMENT` for an unknown strategy, a `worker_id` outside
/// `0 .. workers-1`, a worker count outside the strategy's range (multi_gpu: 1 to the GPU count),
/// single_gpu or multi_gpu without a CUDA device, and malformed or contradictory launcher variables;
/// each message names the value and the accepted range. `SDA_ERR_INVALID_ARGUMENT` also when
/// `out_plan->struct_size` breaks the header's rule for structs that grow.
///
/// Thread safety: [thread-safe]. Loads no libtorch; the first call in a process initialises the CUDA
/// driver when one is installed (tens to hundreds of milliseconds).
#[no_mangle]
pub extern "C" fn sda_plan_workers(
    context: *const sda_context,
    strategy: *const c_char,
    workers: u32,
    worker_id: u32,
    out_plan: *mut sda_worker_plan,
    env_buf: *mut c_char,
    env_capacity: usize,
    env_needed: *mut usize,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let strategy = opt_str_arg(strategy, "strategy")?.unwrap_or("auto");
        let slot = Out::new(out_plan, "out_plan")?;
        let plan = context.plan(strategy, workers)?;
        let worker = plan.worker(worker_id)?;
        let env = worker.env_text();
        if env_buf.is_null() && env_capacity == 0 {
            if !env_needed.is_null() {
                // SAFETY: `env_needed` is non-null (checked just above), and sda_plan_workers follows
                // sda_config_get's buffer rules, under which a non-null `*needed` is a writable size_t.
                unsafe { *env_needed = env.len() + 1 };
            }
        } else {
            write_string(&env, env_buf, env_capacity, env_needed)?;
        }
        slot.write(&to_c(&plan, worker));
        Ok(())
    })
}
