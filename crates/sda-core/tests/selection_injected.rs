//! Device selection on machines this computer is not: GPUs are injected through the core's `Machine`
//! trait (a test double, because this CI machine has no GPU). Nothing here is a GPU run; the real-
//! machine paths are covered by the C tests and `selection_on_this_machine`.

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::device::{self, CudaDevice, CudaPresence, LaunchEnv, Machine, SelectionPolicy};
use sda_core::error::{Error, ErrorKind, Result};
use sda_core::preference::{DeviceKind, Preference};
use std::sync::{Arc, Mutex};

/// A machine with `gpus` injected CUDA devices; `broken` lists indices whose smoke test fails.
struct InjectedMachine {
    gpus: u32,
    broken: Vec<u32>,
    mps: bool,
    smoke_tests: Mutex<Vec<(DeviceKind, u32, f64)>>,
}

impl InjectedMachine {
    fn new(gpus: u32) -> InjectedMachine {
        InjectedMachine {
            gpus,
            broken: vec![],
            mps: false,
            smoke_tests: Mutex::new(vec![]),
        }
    }
    fn tested(&self) -> Vec<(DeviceKind, u32, f64)> {
        self.smoke_tests.lock().unwrap().clone()
    }
}

impl Machine for InjectedMachine {
    fn cuda(&self) -> CudaPresence {
        if self.gpus == 0 {
            return CudaPresence::Absent("injected: no NVIDIA driver".into());
        }
        CudaPresence::Present {
            driver_version: "12.4".into(),
            devices: (0..self.gpus)
                .map(|i| CudaDevice {
                    index: i,
                    name: format!("Injected GPU {i}"),
                    total_memory: 16 << 30,
                    compute_capability: (8, 6),
                })
                .collect(),
        }
    }
    fn mps(&self) -> std::result::Result<(), String> {
        if self.mps {
            Ok(())
        } else {
            Err("injected: no MPS".into())
        }
    }
    fn prepare_and_smoke_test(&self, kind: DeviceKind, index: u32, fraction: f64) -> Result<()> {
        self.smoke_tests
            .lock()
            .unwrap()
            .push((kind, index, fraction));
        if self.broken.contains(&index) {
            Err(Error::torch(
                "injected: CUDA error: an illegal memory access".into(),
            ))
        } else {
            Ok(())
        }
    }
    fn cuda_memory(&self, _index: u32) -> Option<(u64, u64)> {
        Some((10 << 30, 16 << 30))
    }
    fn cuda_runtime_version(&self) -> Option<String> {
        Some("13.0".into())
    }
}

fn policy() -> SelectionPolicy {
    SelectionPolicy {
        priority: vec![DeviceKind::Cuda, DeviceKind::Mps, DeviceKind::Cpu],
        strict: false,
        memory_fraction: 0.75,
    }
}

fn pref(s: &str) -> Preference {
    Preference::parse(s).unwrap()
}

#[test]
fn injected_no_gpu_auto_is_cpu_without_fallback_and_without_smoke_test() {
    let m = InjectedMachine::new(0);
    let s = device::select(pref("auto"), &policy(), &LaunchEnv::default(), &m).unwrap();
    assert_eq!(
        (s.kind, s.fell_back, s.reason.as_str()),
        (DeviceKind::Cpu, false, "")
    );
    assert!(m.tested().is_empty());
}

#[test]
fn injected_no_gpu_explicit_cuda_falls_back_with_reason_or_errors_when_strict() {
    let m = InjectedMachine::new(0);
    let s = device::select(pref("cuda"), &policy(), &LaunchEnv::default(), &m).unwrap();
    assert!(s.fell_back && s.kind == DeviceKind::Cpu);
    assert!(s.reason.contains("no NVIDIA driver"), "{}", s.reason);
    let strict = SelectionPolicy {
        strict: true,
        ..policy()
    };
    let e = device::select(pref("cuda"), &strict, &LaunchEnv::default(), &m).unwrap_err();
    assert!(e.kind() == ErrorKind::DeviceUnavailable, "{e}");
}

#[test]
fn injected_one_gpu_auto_picks_it_after_a_smoke_test_with_the_budget_fraction() {
    let m = InjectedMachine::new(1);
    let s = device::select(pref("auto"), &policy(), &LaunchEnv::default(), &m).unwrap();
    assert_eq!((s.kind, s.index, s.fell_back), (DeviceKind::Cuda, 0, false));
    assert_eq!(m.tested(), vec![(DeviceKind::Cuda, 0, 0.75)]);
    assert_eq!(s.device_string(), "cuda:0");
}

#[test]
fn injected_one_gpu_index_out_of_range_is_an_error_naming_the_count() {
    let m = InjectedMachine::new(1);
    let e = device::select(pref("cuda:99"), &policy(), &LaunchEnv::default(), &m).unwrap_err();
    assert!(e.kind() == ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("cuda:99") && e.message().contains("1 visible"),
        "{e}"
    );
    assert!(
        m.tested().is_empty(),
        "no smoke test for a device that does not exist"
    );
}

#[test]
fn injected_broken_gpu_under_auto_warns_like_an_explicit_request_and_honours_strict() {
    let mut m = InjectedMachine::new(1);
    m.broken = vec![0];
    let warnings = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&warnings);
    sda_core::log::set_sink(Some(Arc::new(move |level, message: &str| {
        if level == sda_core::log::Level::Warn {
            seen.lock().unwrap().push(message.to_string());
        }
    })));
    let s = device::select(pref("auto"), &policy(), &LaunchEnv::default(), &m).unwrap();
    sda_core::log::set_sink(None);
    assert!(s.fell_back && s.kind == DeviceKind::Cpu);
    let warnings = warnings.lock().unwrap().clone();
    assert!(
        warnings.iter().any(|w| w.contains("smoke test")),
        "no fallback warning: {warnings:?}"
    );
    let strict = SelectionPolicy {
        strict: true,
        ..policy()
    };
    let e = device::select(pref("auto"), &strict, &LaunchEnv::default(), &m).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceUnavailable, "{e}");
    assert!(e.message().contains("smoke test"), "{e}");
}

#[test]
fn injected_broken_gpu_falls_back_to_cpu_and_says_why() {
    let mut m = InjectedMachine::new(1);
    m.broken = vec![0];
    for p in ["auto", "cuda", "cuda:0"] {
        let s = device::select(pref(p), &policy(), &LaunchEnv::default(), &m).unwrap();
        assert!(s.fell_back && s.kind == DeviceKind::Cpu, "{p}");
        assert!(
            s.reason.contains("smoke test") && s.reason.contains("illegal memory"),
            "{}",
            s.reason
        );
    }
}

#[test]
fn injected_local_rank_steers_auto_and_cuda_to_that_gpu() {
    let m = InjectedMachine::new(4);
    let launch = LaunchEnv::from_lookup(&|k| (k == "LOCAL_RANK").then(|| "2".to_string())).unwrap();
    let s = device::select(pref("auto"), &policy(), &launch, &m).unwrap();
    assert_eq!((s.kind, s.index), (DeviceKind::Cuda, 2));
    let slurm =
        LaunchEnv::from_lookup(&|k| (k == "SLURM_LOCALID").then(|| "3".to_string())).unwrap();
    let s = device::select(pref("cuda"), &policy(), &slurm, &m).unwrap();
    assert_eq!(s.index, 3);
    // An explicit index wins over the launcher's rank.
    let s = device::select(pref("cuda:1"), &policy(), &launch, &m).unwrap();
    assert_eq!(s.index, 1);
    // A rank beyond the GPUs is an error naming the variable.
    let far = LaunchEnv::from_lookup(&|k| (k == "LOCAL_RANK").then(|| "7".to_string())).unwrap();
    let e = device::select(pref("auto"), &policy(), &far, &m).unwrap_err();
    assert!(e.message().contains("LOCAL_RANK=7"), "{e}");
    let bad = LaunchEnv::from_lookup(&|k| (k == "LOCAL_RANK").then(|| "x".to_string()));
    assert!(bad.unwrap_err().message().contains("LOCAL_RANK"));
}

#[test]
fn injected_priority_list_is_honoured() {
    let mut m = InjectedMachine::new(1);
    m.mps = true;
    let cpu_first = SelectionPolicy {
        priority: vec![DeviceKind::Cpu, DeviceKind::Cuda],
        ..policy()
    };
    let s = device::select(pref("auto"), &cpu_first, &LaunchEnv::default(), &m).unwrap();
    assert_eq!(s.kind, DeviceKind::Cpu);
    let mps_first = SelectionPolicy {
        priority: vec![DeviceKind::Mps, DeviceKind::Cuda, DeviceKind::Cpu],
        ..policy()
    };
    let s = device::select(pref("auto"), &mps_first, &LaunchEnv::default(), &m).unwrap();
    assert_eq!(s.kind, DeviceKind::Mps);
    // Nothing usable and no cpu in the list: still the CPU, flagged as a fallback.
    let cuda_only = SelectionPolicy {
        priority: vec![DeviceKind::Cuda],
        ..policy()
    };
    let none = InjectedMachine::new(0);
    let s = device::select(pref("auto"), &cuda_only, &LaunchEnv::default(), &none).unwrap();
    assert!(s.fell_back && s.kind == DeviceKind::Cpu, "{s:?}");
}

#[test]
fn injected_gpu_is_described_with_cuda_facts_and_precision_support() {
    let m = Arc::new(InjectedMachine::new(2));
    let ctx = Context::with_machine(Config::default(), m.clone());
    let s = ctx.select(Some("cuda:1")).unwrap();
    assert_eq!(s.device_string(), "cuda:1");
    let info = ctx.device_info().unwrap();
    assert_eq!(info.name, "Injected GPU 1");
    assert_eq!(info.compute_capability, Some((8, 6)));
    assert!(info.bf16_supported && info.fp16_supported);
    assert_eq!(info.device_count, 2);
    assert_eq!(info.memory_free, 10 << 30);
    assert_eq!(info.cuda_driver_version.as_deref(), Some("12.4"));
    let listed = ctx.list_devices().unwrap();
    let names: Vec<_> = listed.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(names, ["cpu", "cuda:0", "cuda:1"]);
}

#[test]
fn injected_context_uses_the_config_strategy_fraction_for_the_smoke_test() {
    let m = Arc::new(InjectedMachine::new(1));
    let mut config = Config::default();
    config
        .set("hardware.memory_strategy", "conservative")
        .unwrap();
    let ctx = Context::with_machine(config, m.clone());
    ctx.select(None).unwrap();
    assert_eq!(m.tested(), vec![(DeviceKind::Cuda, 0, 0.60)]);
}
