//! Worker placement (seed 002): which device each worker of a job uses, and for distributed ranks the
//! environment a launcher sets. libsda launches nothing: it fits torchrun and SLURM, it does not replace
//! them.
//!
//! Strategies:
//! - `cpu`: N workers on the CPU (a process pool; no process group).
//! - `single_gpu`: N workers share one GPU (a process pool on `cuda:K`).
//! - `multi_gpu`: one rank per GPU of this node, torch.distributed conventions (NCCL): `RANK`,
//!   `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`.
//! - `auto`: by the number of GPUs: none → `cpu`, one → `single_gpu`, two or more → `multi_gpu`.
//!
//! "GPUs" are the CUDA devices the driver lists (after `CUDA_VISIBLE_DEVICES`); planning asks the
//! driver only and never loads libtorch, so it stays cheap enough for any host to call at start-up.
//!
//! A launcher's environment is an *input*: under torchrun (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) or SLURM (`SLURM_PROCID`, `SLURM_LOCALID`,
//! `SLURM_NTASKS`, with torchrun's names first when both are set, because torchrun inside an
//! allocation sets the ranks its processes really have) the ranks of this node's workers are placed
//! within the job's world: the first local rank's global rank is `RANK - LOCAL_RANK`, and the world
//! size is the launcher's. SLURM variables are read as one task per rank (`srun --ntasks-per-node =
//! GPUs`), the convention PyTorch Lightning follows too. The environment is read through a lookup
//! function, so tests inject it and never touch the process's.

use crate::device::{device_string, CudaPresence, Machine};
use crate::error::{Error, Result};
use crate::preference::DeviceKind;
use std::fmt;

/// Most workers a plan accepts; more is a typo (or a fork bomb), not a job one node runs.
pub const MAX_WORKERS: u32 = 4096;
/// torch.distributed's default rendezvous port, used when `MASTER_PORT` is not set.
pub const DEFAULT_MASTER_PORT: u16 = 29500;
/// The rendezvous address of a single-node job when `MASTER_ADDR` is not set.
pub const LOCAL_MASTER_ADDR: &str = "127.0.0.1";

/// How the workers of a plan are placed on devices: the strategy in force, never "auto" (a
/// [`StrategyRequest`] is what a caller asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Every worker on the CPU.
    Cpu,
    /// Every worker on one GPU.
    SingleGpu,
    /// One rank per GPU.
    MultiGpu,
}

/// The strategy a caller asks for: a fixed one, or "auto" (chosen by the number of GPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyRequest {
    /// Chosen by the number of GPUs: none → cpu, one → single_gpu, more → multi_gpu.
    Auto,
    /// This strategy, or an error when the machine cannot run it.
    Fixed(Strategy),
}

/// The accepted strategy names, for messages.
pub const ACCEPTED_STRATEGIES: &str = "auto, cpu, single_gpu, multi_gpu";

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 3] = [Strategy::Cpu, Strategy::SingleGpu, Strategy::MultiGpu];

    /// The name as the CLI, the C ABI and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Cpu => "cpu",
            Strategy::SingleGpu => "single_gpu",
            Strategy::MultiGpu => "multi_gpu",
        }
    }
}

impl StrategyRequest {
    /// The name as the CLI and reports spell it (`auto`, or the fixed strategy's).
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyRequest::Auto => "auto",
            StrategyRequest::Fixed(s) => s.as_str(),
        }
    }

    /// Parses a strategy name: case-insensitive, trimmed, `-` accepted for `_` (`single-gpu`).
    /// Anything else is an error quoting the value and listing the accepted names.
    pub fn parse(text: &str) -> Result<StrategyRequest> {
        let wanted = text.trim().to_ascii_lowercase().replace('-', "_");
        if wanted == "auto" {
            return Ok(StrategyRequest::Auto);
        }
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .map(StrategyRequest::Fixed)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "unknown worker strategy {text:?}; accepted: {ACCEPTED_STRATEGIES}"
                ))
            })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for StrategyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which launcher's variables were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Launcher {
    /// No launcher: this process plans a single-node job itself.
    #[default]
    None,
    /// torchrun / torch.distributed.launch (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`).
    Torchrun,
    /// SLURM (`SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`).
    Slurm,
}

impl Launcher {
    /// `none`, `torchrun` or `slurm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Launcher::None => "none",
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "slurm",
        }
    }
}

/// What a launcher told this process, read from its environment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LauncherEnv {
    /// Which launcher's variables were found.
    pub launcher: Launcher,
    /// This process's global rank (`RANK` / `SLURM_PROCID`).
    pub rank: Option<u32>,
    /// This process's rank on its node (`LOCAL_RANK` / `SLURM_LOCALID`).
    pub local_rank: Option<u32>,
    /// Ranks in the whole job (`WORLD_SIZE` / `SLURM_NTASKS`).
    pub world_size: Option<u32>,
    /// Ranks on this node (`LOCAL_WORLD_SIZE`).
    pub local_world_size: Option<u32>,
    /// Rendezvous address (`MASTER_ADDR`).
    pub master_addr: Option<String>,
    /// Rendezvous port (`MASTER_PORT`).
    pub master_port: Option<u16>,
    /// Threads per process the user chose (`OMP_NUM_THREADS`), passed on unchanged.
    pub omp_num_threads: Option<String>,
}

fn read_number<T: std::str::FromStr>(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &str,
    what: &str,
) -> Result<Option<T>> {
    match lookup(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
            Error::invalid_argument(format!(
                "{var}={v:?} is not {what}; fix or unset it (set by a launcher such as torchrun or \
                 SLURM)"
            ))
        }),
    }
}

impl LauncherEnv {
    /// Reads the launcher variables through `lookup`. torchrun's names win over SLURM's, each read as
    /// a group (a process does not mix a torchrun rank with a SLURM world size). Values that are not
    /// numbers where numbers belong, a rank outside the world size, and a `MASTER_ADDR` with spaces are
    /// errors naming the variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<LauncherEnv> {
        let set = |var: &str| lookup(var).is_some_and(|v| !v.trim().is_empty());
        let mut env = LauncherEnv::default();
        let nonneg = "a non-negative integer";
        if ["RANK", "LOCAL_RANK", "WORLD_SIZE"].iter().any(|v| set(v)) {
            env.launcher = Launcher::Torchrun;
            env.rank = read_number(lookup, "RANK", nonneg)?;
            env.local_rank = read_number(lookup, "LOCAL_RANK", nonneg)?;
            env.world_size = read_number(lookup, "WORLD_SIZE", nonneg)?;
            env.local_world_size = read_number(lookup, "LOCAL_WORLD_SIZE", nonneg)?;
        } else if ["SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"]
            .iter()
            .any(|v| set(v))
        {
            env.launcher = Launcher::Slurm;
            env.rank = read_number(lookup, "SLURM_PROCID", nonneg)?;
            env.local_rank = read_number(lookup, "SLURM_LOCALID", nonneg)?;
            env.world_size = read_number(lookup, "SLURM_NTASKS", nonneg)?;
        }
        env.master_port = read_number(lookup, "MASTER_PORT", "a port number (1 to 65535)")?;
        if env.master_port == Some(0) {
            return Err(Error::invalid_argument(
                "MASTER_PORT=\"0\" is not a port number (1 to 65535); fix or unset it".to_string(),
            ));
        }
        if let Some(addr) = lookup("MASTER_ADDR").filter(|v| !v.trim().is_empty()) {
            if addr
                .trim()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid_argument(format!(
                    "MASTER_ADDR={addr:?} is not a host name or address; fix or unset it"
                )));
            }
            env.master_addr = Some(addr.trim().to_string());
        }
        env.omp_num_threads = lookup("OMP_NUM_THREADS").filter(|v| !v.trim().is_empty());
        if let (Some(rank), Some(world)) = (env.rank, env.world_size) {
            if rank >= world {
                let (r, w) = match env.launcher {
                    Launcher::Slurm => ("SLURM_PROCID", "SLURM_NTASKS"),
                    _ => ("RANK", "WORLD_SIZE"),
                };
                return Err(Error::invalid_argument(format!(
                    "{r}={rank} is outside the world of {w}={world} ranks (0..={}); the launcher's \
                     variables contradict each other",
                    world.saturating_sub(1)
                )));
            }
        }
        Ok(env)
    }

    /// Reads the real process environment.
    pub fn from_process() -> Result<LauncherEnv> {
        LauncherEnv::from_lookup(&|k| std::env::var(k).ok())
    }
}

/// What a plan is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRequest {
    /// The strategy (`Auto` chooses by GPU count).
    pub strategy: StrategyRequest,
    /// Number of workers on this node; 0 = the strategy's default (cpu and single_gpu: 1, because
    /// one torch process already uses every core through its intra-op threads; multi_gpu: one per GPU).
    pub workers: u32,
    /// The GPU `single_gpu` shares (the config's `hardware.device` when that is `cuda:N`, else 0).
    pub gpu_index: u32,
    /// Threads per worker on the host's CPUs (for `OMP_NUM_THREADS`), from the usable cores.
    pub usable_cores: u32,
}

/// The plan for one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlan {
    /// The worker's number on this node, `0..workers`.
    pub worker_id: u32,
    /// Its device kind.
    pub kind: DeviceKind,
    /// Its device index.
    pub index: u32,
    /// Its device as torch spells it (`cpu`, `cuda:3`).
    pub device: String,
    /// Global rank (multi_gpu only).
    pub rank: Option<u32>,
    /// Rank on this node (multi_gpu only).
    pub local_rank: Option<u32>,
    /// The environment to start the worker with, in a fixed order (`NAME`, `value`).
    pub env: Vec<(String, String)>,
}

impl WorkerPlan {
    /// The environment as `NAME=value` lines, each ending in a newline.
    pub fn env_text(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// A whole plan for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The strategy asked for.
    pub requested: StrategyRequest,
    /// The strategy in force (resolved: never "auto", by its type).
    pub strategy: Strategy,
    /// Why this strategy and this many workers.
    pub reason: String,
    /// Workers on this node.
    pub workers: u32,
    /// CUDA devices the driver lists.
    pub gpu_count: u32,
    /// Ranks in the whole job (multi_gpu), else `workers`.
    pub world_size: u32,
    /// Global rank of local worker 0 (multi_gpu; 0 otherwise).
    pub rank_offset: u32,
    /// The process-group backend (`nccl` for multi_gpu; `None` for the pools).
    pub distributed_backend: Option<&'static str>,
    /// Rendezvous address (multi_gpu).
    pub master_addr: Option<String>,
    /// Rendezvous port (multi_gpu).
    pub master_port: Option<u16>,
    /// `OMP_NUM_THREADS` for each worker.
    pub threads_per_worker: String,
    /// The launcher variables that were read.
    pub launcher: LauncherEnv,
    /// Every worker, in order.
    pub worker_plans: Vec<WorkerPlan>,
}

impl Plan {
    /// The plan of worker `worker_id`; an id outside `0..workers` is an error naming it and the range.
    pub fn worker(&self, worker_id: u32) -> Result<&WorkerPlan> {
        self.worker_plans
            .get(worker_id as usize)
            .ok_or_else(|| out_of_range(worker_id, self.workers, self.strategy))
    }
}

fn out_of_range(worker_id: u32, workers: u32, strategy: Strategy) -> Error {
    Error::invalid_argument(format!(
        "worker id {worker_id} is out of range: this {strategy} plan has {workers} worker{} (ids \
         0..={})",
        if workers == 1 { "" } else { "s" },
        workers.saturating_sub(1)
    ))
}

/// Plans the workers of this node on `machine`, with the launcher variables `launcher`.
pub fn plan(request: &PlanRequest, machine: &dyn Machine, launcher: &LauncherEnv) -> Result<Plan> {
    if request.workers > MAX_WORKERS {
        return Err(Error::invalid_argument(format!(
            "{} workers is out of range; accepted: 0 (the strategy's default) to {MAX_WORKERS}",
            request.workers
        )));
    }
    let (gpu_count, no_gpu_reason) = match machine.cuda() {
        CudaPresence::Present { devices, .. } => (devices.len() as u32, String::new()),
        CudaPresence::Absent(why) => (0, why),
    };
    let gpus_text = |n: u32| format!("{n} CUDA device{}", if n == 1 { "" } else { "s" });
    let (strategy, mut reason) = match request.strategy {
        StrategyRequest::Auto => match gpu_count {
            0 => (
                Strategy::Cpu,
                format!("auto: no CUDA device ({no_gpu_reason}), so every worker runs on the CPU"),
            ),
            1 => (
                Strategy::SingleGpu,
                "auto: one CUDA device, so the workers share it".to_string(),
            ),
            n => (
                Strategy::MultiGpu,
                format!("auto: {}, so one rank per GPU", gpus_text(n)),
            ),
        },
        StrategyRequest::Fixed(explicit) => (explicit, format!("{explicit} as requested")),
    };
    let needs_gpu = matches!(strategy, Strategy::SingleGpu | Strategy::MultiGpu);
    if needs_gpu && gpu_count == 0 {
        return Err(Error::invalid_argument(format!(
            "strategy {strategy} needs a CUDA device, but this machine has none ({no_gpu_reason}); \
             use cpu, or auto to choose by the devices present"
        )));
    }
    let workers = match (request.workers, strategy) {
        (0, Strategy::MultiGpu) => launcher.local_world_size.unwrap_or(gpu_count),
        (0, _) => 1,
        (n, _) => n,
    };
    if strategy == Strategy::MultiGpu && (workers == 0 || workers > gpu_count) {
        return Err(Error::invalid_argument(format!(
            "multi_gpu places one rank per GPU: {workers} workers is out of range on this machine's \
             {}; accepted: 1 to {gpu_count} (0 = one per GPU)",
            gpus_text(gpu_count)
        )));
    }
    if strategy == Strategy::SingleGpu && request.gpu_index >= gpu_count {
        return Err(Error::invalid_argument(format!(
            "single_gpu on cuda:{} is out of range: this machine has {} (cuda:0..=cuda:{})",
            request.gpu_index,
            gpus_text(gpu_count),
            gpu_count - 1
        )));
    }
    let threads = launcher.omp_num_threads.clone().unwrap_or_else(|| {
        // N processes that each default to every core oversubscribe the CPU; split the cores.
        (request.usable_cores.max(1) / workers.max(1))
            .max(1)
            .to_string()
    });

    let mut result = Plan {
        requested: request.strategy,
        strategy,
        reason: String::new(),
        workers,
        gpu_count,
        world_size: workers,
        rank_offset: 0,
        distributed_backend: None,
        master_addr: None,
        master_port: None,
        threads_per_worker: threads.clone(),
        launcher: launcher.clone(),
        worker_plans: Vec::with_capacity(workers as usize),
    };
    if strategy == Strategy::MultiGpu {
        let (rank_offset, world_size) = place_in_world(workers, launcher)?;
        let master_addr = match &launcher.master_addr {
            Some(a) => a.clone(),
            None if world_size == workers => LOCAL_MASTER_ADDR.to_string(),
            None => {
                return Err(Error::invalid_argument(format!(
                "a job of {world_size} ranks spans more than this node's {workers}, so the ranks \
                     need the rank-0 node's address: set MASTER_ADDR (and MASTER_PORT, default \
                     {DEFAULT_MASTER_PORT}) as torchrun's --master-addr would"
            )))
            }
        };
        let master_port = launcher.master_port.unwrap_or(DEFAULT_MASTER_PORT);
        result.rank_offset = rank_offset;
        result.world_size = world_size;
        result.distributed_backend = Some("nccl");
        result.master_addr = Some(master_addr.clone());
        result.master_port = Some(master_port);
        if launcher.launcher != Launcher::None {
            reason.push_str(&format!(
                "; under {} this node's ranks are {rank_offset}..={} of {world_size}",
                launcher.launcher.as_str(),
                rank_offset + workers - 1
            ));
        }
        for w in 0..workers {
            let env = vec![
                ("RANK".to_string(), (rank_offset + w).to_string()),
                ("LOCAL_RANK".to_string(), w.to_string()),
                ("WORLD_SIZE".to_string(), world_size.to_string()),
                ("LOCAL_WORLD_SIZE".to_string(), workers.to_string()),
                ("MASTER_ADDR".to_string(), master_addr.clone()),
                ("MASTER_PORT".to_string(), master_port.to_string()),
                ("OMP_NUM_THREADS".to_string(), threads.clone()),
            ];
            result.worker_plans.push(WorkerPlan {
                worker_id: w,
                kind: DeviceKind::Cuda,
                index: w,
                device: device_string(DeviceKind::Cuda, w),
                rank: Some(rank_offset + w),
                local_rank: Some(w),
                env,
            });
        }
    } else {
        let (kind, index) = match strategy {
            Strategy::SingleGpu => (DeviceKind::Cuda, request.gpu_index),
            _ => (DeviceKind::Cpu, 0),
        };
        for w in 0..workers {
            result.worker_plans.push(WorkerPlan {
                worker_id: w,
                kind,
                index,
                device: device_string(kind, index),
                rank: None,
                local_rank: None,
                env: vec![("OMP_NUM_THREADS".to_string(), threads.clone())],
            });
        }
    }
    reason.push_str(&format!(
        "; {workers} worker{}, {threads} thread{} each",
        if workers == 1 { "" } else { "s" },
        if threads == "1" { "" } else { "s" }
    ));
    result.reason = reason;
    Ok(result)
}

/// The global rank of this node's first worker and the job's world size, from the launcher's
/// variables (a single-node job of `workers` ranks without a launcher).
fn place_in_world(workers: u32, launcher: &LauncherEnv) -> Result<(u32, u32)> {
    let names = match launcher.launcher {
        Launcher::Slurm => ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
        _ => ("RANK", "LOCAL_RANK", "WORLD_SIZE"),
    };
    if let Some(local) = launcher.local_rank {
        if local >= workers {
            return Err(Error::invalid_argument(format!(
                "{}={local} is out of range for a node of {workers} ranks (0..={}); the launcher \
                 started more processes on this node than it has GPUs for this plan",
                names.1,
                workers - 1
            )));
        }
    }
    let offset = match (launcher.rank, launcher.local_rank) {
        (Some(rank), Some(local)) => rank.checked_sub(local).ok_or_else(|| {
            Error::invalid_argument(format!(
                "{}={rank} is smaller than {}={local}; the launcher's variables contradict each other",
                names.0, names.1
            ))
        })?,
        (Some(rank), None) => rank,
        _ => 0,
    };
    let world = launcher.world_size.unwrap_or(offset + workers);
    if offset + workers > world {
        return Err(Error::invalid_argument(format!(
            "this node's ranks {offset}..={} do not fit the world of {}={world} ranks; check the \
             launcher's variables or the number of workers",
            offset + workers - 1,
            names.2
        )));
    }
    Ok((offset, world))
}
