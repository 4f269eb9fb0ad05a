//! Worker placement on machines with 0, 1, 2 and 8 injected GPUs, under injected torchrun and SLURM
//! environments (the process environment is never touched), and its errors.

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::{Error, ErrorKind};
use sda_core::plan::{
    LauncherEnv, Plan, Strategy, StrategyRequest, DEFAULT_MASTER_PORT, MAX_WORKERS,
};
use sda_core::preference::DeviceKind;
use sda_testkit::{env, InjectedMachine};
use std::sync::Arc;

fn context(gpus: u32) -> Context {
    context_with(gpus, Config::default())
}

fn context_with(gpus: u32, config: Config) -> Context {
    Context::with_machine(config, Arc::new(InjectedMachine::with_gpus(gpus)))
}

fn plan(gpus: u32, strategy: &str, workers: u32) -> Result<Plan, Error> {
    context(gpus).plan_with_launcher(strategy, workers, &LauncherEnv::default())
}

fn launcher(pairs: &[(&str, &str)]) -> LauncherEnv {
    LauncherEnv::from_lookup(&env(pairs)).unwrap()
}

fn env_of(p: &Plan, worker: u32) -> Vec<(String, String)> {
    p.worker(worker).unwrap().env.clone()
}

fn var(p: &Plan, worker: u32, name: &str) -> Option<String> {
    env_of(p, worker)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn threads_for(workers: u32) -> String {
    (sda_core::host::static_facts().usable_cores.max(1) / workers)
        .max(1)
        .to_string()
}

const SIZES: [u32; 4] = [0, 1, 2, 8];

#[test]
fn cpu_puts_every_worker_on_the_cpu_whatever_the_gpus() {
    for gpus in SIZES {
        let p = plan(gpus, "cpu", 0).unwrap();
        assert_eq!(p.strategy, Strategy::Cpu);
        assert_eq!(p.workers, 1, "default: one process uses every core");
        assert_eq!(p.gpu_count, gpus);
        let p = plan(gpus, "cpu", 4).unwrap();
        assert_eq!(p.workers, 4);
        assert_eq!(p.distributed_backend, None);
        for w in 0..4 {
            let wp = p.worker(w).unwrap();
            assert_eq!(
                (wp.kind, wp.index, wp.device.as_str()),
                (DeviceKind::Cpu, 0, "cpu")
            );
            assert_eq!(wp.rank, None);
            assert_eq!(
                env_of(&p, w),
                vec![("OMP_NUM_THREADS".to_string(), threads_for(4))],
                "a pool worker gets only its share of the cores"
            );
        }
    }
}

#[test]
fn single_gpu_shares_one_gpu_and_needs_one() {
    for gpus in SIZES {
        let result = plan(gpus, "single_gpu", 3);
        if gpus == 0 {
            let err = result.unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidArgument, "{err:?}");
            assert!(
                err.message().contains("single_gpu needs a CUDA device"),
                "{err}"
            );
            assert!(
                err.message().contains("injected: no NVIDIA driver"),
                "{err}"
            );
            continue;
        }
        let p = result.unwrap();
        assert_eq!(p.strategy, Strategy::SingleGpu);
        assert_eq!(p.workers, 3);
        for w in 0..3 {
            assert_eq!(p.worker(w).unwrap().device, "cuda:0");
            assert_eq!(p.worker(w).unwrap().rank, None);
        }
        assert_eq!(plan(gpus, "single_gpu", 0).unwrap().workers, 1);
    }
}

#[test]
fn single_gpu_uses_the_gpu_the_config_names() {
    let mut config = Config::default();
    config.set("hardware.device", "cuda:1").unwrap();
    for gpus in [2, 8] {
        let p = context_with(gpus, config.clone())
            .plan_with_launcher("single_gpu", 2, &LauncherEnv::default())
            .unwrap();
        assert_eq!(p.worker(1).unwrap().device, "cuda:1");
    }
    let err = context_with(1, config)
        .plan_with_launcher("single_gpu", 2, &LauncherEnv::default())
        .unwrap_err();
    assert!(err.message().contains("cuda:1 is out of range"), "{err}");
    assert!(err.message().contains("cuda:0..=cuda:0"), "{err}");
}

#[test]
fn multi_gpu_places_one_rank_per_gpu_with_the_torch_distributed_env() {
    for gpus in SIZES {
        let result = plan(gpus, "multi_gpu", 0);
        if gpus == 0 {
            let err = result.unwrap_err();
            assert!(
                err.message().contains("multi_gpu needs a CUDA device"),
                "{err}"
            );
            continue;
        }
        let p = result.unwrap();
        assert_eq!(p.strategy, Strategy::MultiGpu);
        assert_eq!(p.workers, gpus, "default: one rank per GPU");
        assert_eq!(p.world_size, gpus);
        assert_eq!(p.distributed_backend, Some("nccl"));
        for w in 0..gpus {
            let wp = p.worker(w).unwrap();
            assert_eq!(wp.device, format!("cuda:{w}"));
            assert_eq!((wp.rank, wp.local_rank), (Some(w), Some(w)));
            let expected: Vec<(String, String)> = [
                ("RANK", w.to_string()),
                ("LOCAL_RANK", w.to_string()),
                ("WORLD_SIZE", gpus.to_string()),
                ("LOCAL_WORLD_SIZE", gpus.to_string()),
                ("MASTER_ADDR", "127.0.0.1".to_string()),
                ("MASTER_PORT", DEFAULT_MASTER_PORT.to_string()),
                ("OMP_NUM_THREADS", threads_for(gpus)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            assert_eq!(env_of(&p, w), expected);
            assert_eq!(
                wp.env_text(),
                expected
                    .iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect::<String>()
            );
        }
        // Fewer ranks than GPUs is allowed; more is not.
        if gpus >= 2 {
            assert_eq!(plan(gpus, "multi_gpu", 2).unwrap().workers, 2);
        }
        let err = plan(gpus, "multi_gpu", gpus + 1).unwrap_err();
        assert!(
            err.message()
                .contains(&format!("{} workers is out of range", gpus + 1)),
            "{err}"
        );
        assert!(
            err.message().contains(&format!("accepted: 1 to {gpus}")),
            "{err}"
        );
    }
}

#[test]
fn auto_chooses_by_the_number_of_gpus() {
    let expected = [
        (0, Strategy::Cpu, 1, "cpu"),
        (1, Strategy::SingleGpu, 1, "cuda:0"),
        (2, Strategy::MultiGpu, 2, "cuda:1"),
        (8, Strategy::MultiGpu, 8, "cuda:7"),
    ];
    for (gpus, strategy, workers, last_device) in expected {
        let p = plan(gpus, "auto", 0).unwrap();
        assert_eq!(p.requested, StrategyRequest::Auto);
        assert_eq!(p.strategy, strategy, "{gpus} GPUs");
        assert_eq!(p.workers, workers, "{gpus} GPUs");
        assert_eq!(p.worker(workers - 1).unwrap().device, last_device);
        assert!(p.reason.starts_with("auto:"), "{}", p.reason);
    }
    assert!(plan(0, "auto", 0)
        .unwrap()
        .reason
        .contains("injected: no NVIDIA driver"));
    // auto with an explicit worker count keeps it.
    assert_eq!(plan(0, "auto", 6).unwrap().workers, 6);
    assert_eq!(
        plan(1, "auto", 3).unwrap().worker(2).unwrap().device,
        "cuda:0"
    );
}

#[test]
fn strategy_names_are_case_insensitive_and_unknown_ones_are_errors() {
    assert_eq!(
        plan(2, " Multi-GPU ", 0).unwrap().strategy,
        Strategy::MultiGpu
    );
    assert_eq!(
        plan(2, "SINGLE_GPU", 0).unwrap().strategy,
        Strategy::SingleGpu
    );
    for bad in ["tpu", "", "ddp", "gpu"] {
        let err = plan(2, bad, 0).unwrap_err();
        assert!(err.kind() == ErrorKind::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        assert!(
            err.message().contains("auto, cpu, single_gpu, multi_gpu"),
            "{err}"
        );
    }
}

#[test]
fn out_of_range_worker_ids_and_counts_are_errors_naming_the_range() {
    for gpus in SIZES {
        let p = plan(gpus, "auto", 0).unwrap();
        let err = p.worker(p.workers).unwrap_err();
        assert!(err.kind() == ErrorKind::InvalidArgument);
        assert!(
            err.message()
                .contains(&format!("worker id {} is out of range", p.workers)),
            "{err}"
        );
        assert!(
            err.message().contains(&format!("0..={}", p.workers - 1)),
            "{err}"
        );
        assert!(p.worker(u32::MAX).is_err());
    }
    let err = plan(0, "cpu", MAX_WORKERS + 1).unwrap_err();
    assert!(
        err.message().contains(&format!("{}", MAX_WORKERS + 1)),
        "{err}"
    );
    assert!(err
        .message()
        .contains(&format!("0 (the strategy's default) to {MAX_WORKERS}")));
    assert!(plan(0, "cpu", MAX_WORKERS).is_ok());
}

#[test]
fn torchrun_variables_place_this_nodes_ranks_in_the_world() {
    // Node 1 of 2, four ranks per node, this process is local rank 2 (global 6).
    let torchrun = launcher(&[
        ("RANK", "6"),
        ("LOCAL_RANK", "2"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("MASTER_ADDR", "node0.cluster"),
        ("MASTER_PORT", "23456"),
    ]);
    assert_eq!(torchrun.launcher, sda_core::plan::Launcher::Torchrun);
    for gpus in [4, 8] {
        let p = context(gpus)
            .plan_with_launcher("auto", 0, &torchrun)
            .unwrap();
        assert_eq!(p.strategy, Strategy::MultiGpu);
        assert_eq!(
            p.workers, 4,
            "LOCAL_WORLD_SIZE decides the ranks of this node"
        );
        assert_eq!((p.rank_offset, p.world_size), (4, 8));
        assert_eq!(var(&p, 2, "RANK").as_deref(), Some("6"));
        assert_eq!(var(&p, 2, "LOCAL_RANK").as_deref(), Some("2"));
        assert_eq!(var(&p, 0, "RANK").as_deref(), Some("4"));
        assert_eq!(var(&p, 3, "WORLD_SIZE").as_deref(), Some("8"));
        assert_eq!(var(&p, 3, "MASTER_ADDR").as_deref(), Some("node0.cluster"));
        assert_eq!(var(&p, 3, "MASTER_PORT").as_deref(), Some("23456"));
        assert_eq!(p.worker(2).unwrap().device, "cuda:2");
        assert!(p.reason.contains("under torchrun"), "{}", p.reason);
    }
    // Eight ranks on this node cannot start at rank 4 of a world of 8.
    let no_local_world = launcher(&[("RANK", "6"), ("LOCAL_RANK", "2"), ("WORLD_SIZE", "8")]);
    let err = context(8)
        .plan_with_launcher("multi_gpu", 0, &no_local_world)
        .unwrap_err();
    assert!(err.message().contains("4..=11"), "{err}");
    assert!(err.message().contains("WORLD_SIZE=8"), "{err}");
    // A single-node torchrun job needs no MASTER_ADDR.
    let single = launcher(&[("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2")]);
    let p = context(2)
        .plan_with_launcher("multi_gpu", 0, &single)
        .unwrap();
    assert_eq!(var(&p, 1, "MASTER_ADDR").as_deref(), Some("127.0.0.1"));
}

#[test]
fn slurm_variables_are_understood_and_torchrun_wins_over_them() {
    // Task 9 of 16, local id 1: this node holds ranks 8..=15.
    let slurm_vars = [
        ("SLURM_PROCID", "9"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NTASKS", "16"),
        ("MASTER_ADDR", "10.0.0.1"),
    ];
    let slurm = launcher(&slurm_vars);
    assert_eq!(slurm.launcher, sda_core::plan::Launcher::Slurm);
    assert_eq!(
        (slurm.rank, slurm.local_rank, slurm.world_size),
        (Some(9), Some(1), Some(16))
    );
    let p = context(8).plan_with_launcher("auto", 0, &slurm).unwrap();
    assert_eq!((p.rank_offset, p.world_size, p.workers), (8, 16, 8));
    assert_eq!(var(&p, 1, "RANK").as_deref(), Some("9"));
    assert_eq!(var(&p, 7, "RANK").as_deref(), Some("15"));
    assert_eq!(var(&p, 7, "LOCAL_RANK").as_deref(), Some("7"));
    assert_eq!(var(&p, 0, "MASTER_ADDR").as_deref(), Some("10.0.0.1"));
    assert!(p.reason.contains("under slurm"), "{}", p.reason);

    // A multi-node job without MASTER_ADDR cannot rendezvous: an error that says what to set.
    let no_addr = launcher(&slurm_vars[..3]);
    let err = context(8)
        .plan_with_launcher("multi_gpu", 0, &no_addr)
        .unwrap_err();
    assert!(err.message().contains("set MASTER_ADDR"), "{err}");

    // SLURM_LOCALID beyond this node's ranks.
    let far = launcher(&[
        ("SLURM_PROCID", "3"),
        ("SLURM_LOCALID", "3"),
        ("SLURM_NTASKS", "4"),
    ]);
    let err = context(2)
        .plan_with_launcher("multi_gpu", 0, &far)
        .unwrap_err();
    assert!(
        err.message().contains("SLURM_LOCALID=3 is out of range"),
        "{err}"
    );

    // torchrun inside a SLURM allocation: torchrun's variables are the truth for the process.
    let mut both = slurm_vars.to_vec();
    both.extend([("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2")]);
    let l = launcher(&both);
    assert_eq!(l.launcher, sda_core::plan::Launcher::Torchrun);
    assert_eq!((l.rank, l.world_size), (Some(1), Some(2)));
}

#[test]
fn malformed_launcher_variables_are_errors_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RANK", "abc")], "RANK=\"abc\""),
        (&[("LOCAL_RANK", "-1")], "LOCAL_RANK=\"-1\""),
        (&[("SLURM_NTASKS", "many")], "SLURM_NTASKS=\"many\""),
        (&[("RANK", "8"), ("WORLD_SIZE", "8")], "RANK=8 is outside"),
        (
            &[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")],
            "SLURM_PROCID=4 is outside",
        ),
        (&[("MASTER_PORT", "0")], "MASTER_PORT"),
        (&[("MASTER_PORT", "70000")], "MASTER_PORT=\"70000\""),
        (&[("MASTER_ADDR", "a b")], "MASTER_ADDR"),
    ];
    for (pairs, needle) in cases {
        let err = LauncherEnv::from_lookup(&env(pairs)).unwrap_err();
        assert!(
            err.kind() == ErrorKind::InvalidArgument,
            "{pairs:?}: {err:?}"
        );
        assert!(err.message().contains(needle), "{needle}: {err}");
    }
    // Empty values count as unset.
    assert_eq!(
        LauncherEnv::from_lookup(&env(&[("RANK", ""), ("SLURM_PROCID", " ")])).unwrap(),
        LauncherEnv::default()
    );
}

#[test]
fn a_chosen_omp_num_threads_is_passed_on() {
    let l = launcher(&[("OMP_NUM_THREADS", "3")]);
    let p = context(2).plan_with_launcher("multi_gpu", 0, &l).unwrap();
    assert_eq!(var(&p, 1, "OMP_NUM_THREADS").as_deref(), Some("3"));
    let p = context(0)
        .plan_with_launcher("cpu", 64, &LauncherEnv::default())
        .unwrap();
    assert_eq!(
        var(&p, 63, "OMP_NUM_THREADS").as_deref(),
        Some("1"),
        "never 0 threads"
    );
}

#[test]
fn planning_on_the_real_machine_loads_no_libtorch() {
    let context = Context::new(Config::default());
    let p = context
        .plan_with_launcher("auto", 0, &LauncherEnv::default())
        .unwrap();
    assert!(p.workers >= 1);
    assert!(sda_core::backend::loaded().is_none());
}
