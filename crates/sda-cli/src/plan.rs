//! `sda plan`: where each worker of a job runs, and the environment to start it with.

use crate::out;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::{Error, Result};
use sda_core::plan::{Plan, WorkerPlan};
use serde_json::{json, Map, Value};

/// `sda plan`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// auto (by the number of GPUs), cpu, single_gpu or multi_gpu.
    #[arg(long, default_value = "auto")]
    strategy: String,
    /// Workers on this node; 0 = the strategy's default (cpu, single_gpu: 1; multi_gpu: one per GPU).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    /// Show only this worker.
    #[arg(long)]
    worker: Option<u32>,
    /// Print only the worker's environment as NAME=value lines (with --worker), e.g. for
    /// `env $(sda plan --worker 1 --env) python train.py`.
    #[arg(long, requires = "worker")]
    env: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn worker_json(w: &WorkerPlan) -> Value {
    let env: Map<String, Value> = w
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "worker_id": w.worker_id,
        "device": w.device,
        "rank": w.rank,
        "local_rank": w.local_rank,
        "env": env,
    })
}

fn plan_json(p: &Plan, workers: &[&WorkerPlan]) -> Value {
    json!({
        "requested": p.requested.as_str(),
        "strategy": p.strategy.as_str(),
        "reason": p.reason,
        "workers": p.workers,
        "gpu_count": p.gpu_count,
        "world_size": p.world_size,
        "rank_offset": p.rank_offset,
        "distributed_backend": p.distributed_backend,
        "master_addr": p.master_addr,
        "master_port": p.master_port,
        "launcher": p.launcher.launcher.as_str(),
        "worker_plans": workers.iter().map(|w| worker_json(w)).collect::<Vec<_>>(),
    })
}

fn plan_text(p: &Plan, workers: &[&WorkerPlan]) -> String {
    let mut out = format!("Strategy: {} ({})\n", p.strategy, p.reason);
    out.push_str(&format!(
        "Workers:  {} on this node, {} CUDA device{} visible",
        p.workers,
        p.gpu_count,
        if p.gpu_count == 1 { "" } else { "s" }
    ));
    if let (Some(backend), Some(addr), Some(port)) =
        (p.distributed_backend, &p.master_addr, p.master_port)
    {
        out.push_str(&format!(
            "; world size {}, backend {backend}, rendezvous {addr}:{port}",
            p.world_size
        ));
    }
    out.push('\n');
    for w in workers {
        out.push_str(&format!("Worker {}: {}\n", w.worker_id, w.device));
        for (k, v) in &w.env {
            out.push_str(&format!("  {k}={v}\n"));
        }
    }
    out
}

/// Plans with the real machine and the process's launcher variables, and prints the plan.
pub fn run(config: Config, args: Args) -> Result<()> {
    let context = Context::new(config);
    let plan = context.plan(&args.strategy, args.workers)?;
    let workers: Vec<&WorkerPlan> = match args.worker {
        Some(id) => vec![plan.worker(id)?],
        None => plan.worker_plans.iter().collect(),
    };
    if args.env {
        let worker = workers
            .first()
            .ok_or_else(|| Error::invalid_argument("--env needs --worker".into()))?;
        out::print(&worker.env_text());
    } else if args.json {
        out::print_json(&plan_json(&plan, &workers));
    } else {
        out::print(&plan_text(&plan, &workers));
    }
    Ok(())
}
