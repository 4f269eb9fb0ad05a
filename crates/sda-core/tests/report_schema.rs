//! The report's JSON validates against `docs/report.schema.json`, and the text and the JSON agree on
//! every fact: the text is rebuilt here from the JSON alone (so the text holds nothing the JSON lacks),
//! and every value of the JSON is used to rebuild it (so the JSON holds nothing the text lacks).

use sda_core::backend::BackendInfo;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::device::{DeviceInfo, Selection};
use sda_core::environment::{EnvApplication, EnvOutcome};
use sda_core::libtorch_discovery::Source;
use sda_core::memory::MemoryInfo;
use sda_core::preference::DeviceKind;
use sda_core::recommend::{self, DeviceFacts};
use sda_core::report::{self, DeviceReport, HostSummary, Verbosity};
use sda_core::validate::{Problem, Severity, ValidateOptions};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/report.schema.json"
    ))
    .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::meta::validate(&schema).expect("the schema is a valid 2020-12 schema");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, v: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{errors:#?}\n{}",
        serde_json::to_string_pretty(v).unwrap()
    );
}

fn device(kind: DeviceKind, index: u32, name: &str, total: u64) -> DeviceInfo {
    DeviceInfo {
        kind,
        index,
        device: sda_core::device::device_string(kind, index),
        name: name.to_string(),
        memory_total: total,
        memory_free: total / 3,
        compute_capability: (kind == DeviceKind::Cuda).then_some((9, 0)),
        cuda_runtime_version: (kind == DeviceKind::Cuda).then(|| "13.0".to_string()),
        cuda_driver_version: (kind == DeviceKind::Cuda).then(|| "12.8".to_string()),
        bf16_supported: true,
        fp16_supported: kind != DeviceKind::Cpu,
        device_count: if kind == DeviceKind::Cuda { 2 } else { 1 },
    }
}

fn problem(severity: Severity, code: &'static str) -> Problem {
    Problem {
        severity,
        code,
        message: format!("{code} happened"),
        fix: format!("undo {code}"),
    }
}

/// A report of a GPU machine with a loaded backend, applied environment and problems of every
/// severity: values this machine cannot produce.
fn gpu_report() -> DeviceReport {
    let gpu = device(DeviceKind::Cuda, 1, "NVIDIA H100 80GB HBM3", 85_000_000_000);
    let mut config = Config::default();
    config.set("hardware.max_batch_size", "700").unwrap();
    let recommendation = recommend::recommend(
        &config,
        DeviceFacts {
            kind: DeviceKind::Cuda,
            device: gpu.device.clone(),
            name: gpu.name.clone(),
            memory_total: gpu.memory_total,
        },
        0,
    )
    .unwrap();
    DeviceReport {
        selection: Selection {
            kind: DeviceKind::Cuda,
            index: 1,
            fell_back: false,
            reason: String::new(),
            requested: "cuda:1".into(),
        },
        memory: MemoryInfo {
            allocated: 1 << 20,
            reserved: 3 << 20,
            peak: 5 << 20,
            free: gpu.memory_free,
            total: gpu.memory_total,
            budget: 51_000_000_000,
            process_resident: 900 << 20,
        },
        devices: vec![
            device(DeviceKind::Cpu, 0, "AMD EPYC", 512 << 30),
            device(DeviceKind::Cuda, 0, "NVIDIA H100 80GB HBM3", 85_000_000_000),
            gpu.clone(),
        ],
        device: gpu,
        backend: Some(BackendInfo {
            module_path: PathBuf::from("/opt/sda/lib/libsda_torch.so"),
            built_libtorch_version: "2.13.0".into(),
            built_libtorch_dir: PathBuf::from("/build/torch/lib"),
            loaded_libtorch_path: PathBuf::from("/opt/torch/lib/libtorch_cpu.so"),
            loaded_libtorch_version: Some("2.13.0".into()),
            libtorch_cuda_version: Some("13.0".into()),
            cuda_build: true,
            libtorch_preloaded: false,
            libtorch_found_by: Some(Source::Env),
        }),
        strategy: ("custom".into(), 0.6),
        host: HostSummary {
            cpu_brand: "AMD EPYC".into(),
            logical_cores: 64,
            physical_cores: Some(32),
        },
        problems: vec![
            problem(Severity::Error, "cuda.driver_too_old"),
            problem(Severity::Warning, "device.fallback"),
            problem(Severity::Info, "paths.missing"),
        ],
        environment: vec![
            EnvApplication {
                name: "PYTORCH_CUDA_ALLOC_CONF".into(),
                value: "expandable_segments:True".into(),
                outcome: EnvOutcome::Applied,
                process_value: None,
            },
            EnvApplication {
                name: "OMP_NUM_THREADS".into(),
                value: "4".into(),
                outcome: EnvOutcome::ProcessValueKept,
                process_value: Some("8".into()),
            },
            EnvApplication {
                name: "SAME".into(),
                value: "1".into(),
                outcome: EnvOutcome::AlreadySet,
                process_value: None,
            },
        ],
        recommendation: Some(recommendation),
    }
}

/// A CPU fallback with an unloaded backend, no recommendation and no physical core count.
fn fallback_report() -> DeviceReport {
    let cpu = device(DeviceKind::Cpu, 0, "Some CPU", 16 << 30);
    DeviceReport {
        selection: Selection {
            kind: DeviceKind::Cpu,
            index: 0,
            fell_back: true,
            reason: "cuda unavailable, using cpu: cuda:0 (X) failed its smoke test".into(),
            requested: "cuda".into(),
        },
        memory: MemoryInfo {
            free: cpu.memory_free,
            total: cpu.memory_total,
            budget: 1 << 30,
            ..MemoryInfo::default()
        },
        devices: vec![cpu.clone()],
        device: cpu,
        backend: None,
        strategy: ("conservative".into(), 0.6),
        host: HostSummary {
            cpu_brand: "Some CPU".into(),
            logical_cores: 4,
            physical_cores: None,
        },
        problems: vec![problem(Severity::Info, "cuda.no_driver")],
        environment: vec![],
        recommendation: None,
    }
}

/// The report of this machine, with data directories that exist.
fn this_machine_report(dir: &std::path::Path) -> DeviceReport {
    let mut config = Config::default();
    for key in ["datasets", "models", "generated"] {
        let p = dir.join(key);
        std::fs::create_dir_all(&p).unwrap();
        config
            .set(&format!("paths.{key}"), p.to_str().unwrap())
            .unwrap();
    }
    let context = Context::new(config);
    report::gather(&context, Some("cpu"), ValidateOptions::default()).unwrap()
}

fn all_reports() -> Vec<(&'static str, DeviceReport)> {
    let dir = tempfile::tempdir().unwrap();
    vec![
        ("gpu", gpu_report()),
        ("gpu, libtorch already in the process", {
            let mut r = gpu_report();
            let b = r.backend.as_mut().unwrap();
            b.libtorch_preloaded = true;
            b.libtorch_found_by = Some(Source::Mapped);
            r
        }),
        ("gpu, a module that records no libtorch", {
            let mut r = gpu_report();
            r.backend.as_mut().unwrap().libtorch_found_by = None;
            r
        }),
        ("fallback", fallback_report()),
        ("this machine", this_machine_report(dir.path())),
    ]
}

#[test]
fn every_report_validates_against_the_schema() {
    let validator = schema();
    for (name, r) in all_reports() {
        for verbosity in [Verbosity::Essential, Verbosity::Verbose] {
            let v = r.render_json(verbosity);
            assert_eq!(v["verbosity"], verbosity.as_str(), "{name}");
            assert_valid(&validator, &v);
        }
    }
}

#[test]
fn the_schema_rejects_what_it_does_not_describe() {
    let validator = schema();
    let r = gpu_report();
    let essential = r.render_json(Verbosity::Essential);
    let verbose = r.render_json(Verbosity::Verbose);
    let mutations: Vec<(&str, Value)> = vec![
        ("wrong version", {
            let mut v = essential.clone();
            v["schema_version"] = 1.into();
            v
        }),
        ("essential with verbose facts", {
            let mut v = essential.clone();
            v["memory"] = verbose["memory"].clone();
            v
        }),
        ("essential with an info problem", {
            let mut v = essential.clone();
            v["problems"] = verbose["problems"].clone();
            v
        }),
        ("verbose without devices", {
            let mut v = verbose.clone();
            v.as_object_mut().unwrap().remove("devices");
            v
        }),
        ("an unknown field", {
            let mut v = verbose.clone();
            v["device"]["colour"] = "green".into();
            v
        }),
        ("a bad severity", {
            let mut v = verbose.clone();
            v["problems"][0]["severity"] = "fatal".into();
            v
        }),
        ("an unknown discovery step", {
            let mut v = verbose.clone();
            v["backend"]["libtorch_found_by"] = "elsewhere".into();
            v
        }),
        ("a loaded backend without its discovery step", {
            let mut v = verbose.clone();
            v["backend"]
                .as_object_mut()
                .unwrap()
                .remove("libtorch_found_by");
            v
        }),
        ("bytes as a string", {
            let mut v = verbose.clone();
            v["memory"]["budget"] = "51 GB".into();
            v
        }),
    ];
    for (what, v) in mutations {
        assert!(!validator.is_valid(&v), "the schema accepted {what}");
    }
}

/// Reads a report's JSON and remembers every value read.
struct Reader<'a> {
    root: &'a Value,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Reader<'a> {
    fn new(root: &'a Value) -> Reader<'a> {
        Reader {
            root,
            used: RefCell::new(BTreeSet::new()),
        }
    }
    fn get(&self, path: &str) -> &'a Value {
        let pointer = format!("/{}", path.replace('.', "/"));
        self.used.borrow_mut().insert(pointer.clone());
        self.root.pointer(&pointer).unwrap_or(&Value::Null)
    }
    fn has(&self, path: &str) -> bool {
        self.root
            .pointer(&format!("/{}", path.replace('.', "/")))
            .is_some()
    }
    fn str(&self, path: &str) -> String {
        match self.get(path) {
            Value::String(s) => s.clone(),
            other => panic!("{path} is {other}, not a string"),
        }
    }
    fn u64(&self, path: &str) -> u64 {
        self.get(path).as_u64().unwrap_or_else(|| panic!("{path}"))
    }
    fn bool(&self, path: &str) -> bool {
        self.get(path).as_bool().unwrap_or_else(|| panic!("{path}"))
    }
    fn bytes(&self, path: &str) -> String {
        sda_core::bytes::human_bytes(self.u64(path))
    }
    fn yes_no(&self, path: &str) -> &'static str {
        if self.bool(path) {
            "yes"
        } else {
            "no"
        }
    }
    fn len(&self, path: &str) -> usize {
        self.get(path).as_array().map_or(0, Vec::len)
    }
    /// Every leaf of the JSON that was never read.
    fn unread(&self) -> Vec<String> {
        let mut leaves = Vec::new();
        collect_leaves(self.root, String::new(), &mut leaves);
        let used = self.used.borrow();
        leaves
            .into_iter()
            .filter(|l| !used.iter().any(|u| u == l))
            .filter(|l| l != "/schema_version" && l != "/verbosity")
            .collect()
    }
}

fn collect_leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                collect_leaves(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                collect_leaves(child, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

fn range_text(min: f64, max: Option<f64>) -> String {
    match max {
        None if min == 0.0 => "any memory".to_string(),
        None => format!("{min} GB and more"),
        Some(max) if min == 0.0 => format!("under {max} GB"),
        Some(max) => format!("{min}–{max} GB"),
    }
}

/// The text a report must have, built from its JSON alone.
fn text_from_json(j: &Reader<'_>) -> String {
    let verbose = j.str("verbosity") == "verbose";
    let mut out = format!(
        "Device:  {} ({})\nMemory:  {} free of {}\n",
        j.str("device.device"),
        j.str("device.name"),
        j.bytes("device.memory_free"),
        j.bytes("device.memory_total")
    );
    let reason = j.str("selection.reason");
    if j.bool("selection.fell_back") {
        out.push_str(&format!("Warning: {reason}\n"));
    } else {
        assert!(reason.is_empty());
    }
    if verbose {
        let count = j.u64("device.device_count");
        out.push_str(&format!(
            "Kind:    {}, index {}, {count} device{} of this kind\n",
            j.str("device.kind"),
            j.u64("device.index"),
            if count == 1 { "" } else { "s" }
        ));
        out.push_str(&format!(
            "Requested: {} (selected {})\n",
            j.str("selection.requested"),
            j.str("selection.device")
        ));
        // memory.free and memory.total are the figures of the Memory line.
        assert_eq!(j.u64("memory.free"), j.u64("device.memory_free"));
        assert_eq!(j.u64("memory.total"), j.u64("device.memory_total"));
        let of = if j.str("device.kind") == "cpu" {
            "available memory"
        } else {
            "device memory"
        };
        out.push_str(&format!(
            "Budget:  {} ({} strategy, {} of {of})\n",
            j.bytes("memory.budget"),
            j.str("memory.strategy"),
            report::percent(j.get("memory.fraction").as_f64().unwrap())
        ));
        out.push_str(&format!(
            "Torch:   allocated {}, reserved {}, peak {}\n",
            j.bytes("memory.allocated"),
            j.bytes("memory.reserved"),
            j.bytes("memory.peak")
        ));
        out.push_str(&format!(
            "Process: {} resident\n",
            j.bytes("memory.process_resident")
        ));
        out.push_str(&format!(
            "Precision: bf16 {}, fp16 {}\n",
            j.yes_no("device.bf16_supported"),
            j.yes_no("device.fp16_supported")
        ));
        for (path, label) in [
            ("device.compute_capability", "Compute capability"),
            ("device.cuda_driver_version", "CUDA driver"),
            ("device.cuda_runtime_version", "CUDA runtime (torch build)"),
        ] {
            if let Value::String(s) = j.get(path) {
                out.push_str(&format!("{label}: {s}\n"));
            }
        }
        out.push_str(&format!(
            "CPU:     {} ({} logical cores{})\n",
            j.str("host.cpu_brand"),
            j.u64("host.logical_cores"),
            j.get("host.physical_cores")
                .as_u64()
                .map(|p| format!(", {p} physical"))
                .unwrap_or_default()
        ));
        if j.bool("backend.loaded") {
            let cuda = if j.bool("backend.cuda_build") {
                format!(
                    "CUDA build {}",
                    j.get("backend.libtorch_cuda_version")
                        .as_str()
                        .unwrap_or("of unknown version")
                )
            } else {
                "CPU build".to_string()
            };
            let preloaded = if j.bool("backend.libtorch_preloaded") {
                ", already in the process"
            } else {
                ""
            };
            out.push_str(&format!(
                "Torch backend: {} (libtorch {} at {}{preloaded}, built against {}, {cuda})\n",
                j.str("backend.module_path"),
                j.get("backend.libtorch_version")
                    .as_str()
                    .unwrap_or("of unknown version"),
                j.str("backend.libtorch_path"),
                j.str("backend.built_libtorch_version"),
            ));
            let found = match j.get("backend.libtorch_found_by") {
                Value::String(name) => {
                    let step = Source::from_name(name).expect("a discovery step's name");
                    format!("{name} ({})", step.describe())
                }
                Value::Null => {
                    "not known (the module records no libtorch; its own run path found one)"
                        .to_string()
                }
                other => panic!("libtorch_found_by is {other}"),
            };
            out.push_str(&format!("Libtorch found by: {found}\n"));
        } else {
            out.push_str("Torch backend: not loaded (loaded on first torch work)\n");
        }
        for i in 0..j.len("environment") {
            let at = |k: &str| format!("environment.{i}.{k}");
            let outcome = match j.str(&at("outcome")).as_str() {
                "applied" => "applied".to_string(),
                "already_set" => "already set".to_string(),
                "process_value_kept" => {
                    format!("kept the process's value {}", j.str(&at("process_value")))
                }
                other => panic!("unknown outcome {other}"),
            };
            j.get(&at("process_value"));
            out.push_str(&format!(
                "Environment: {}={} ({outcome})\n",
                j.str(&at("name")),
                j.str(&at("value"))
            ));
        }
        if !j.get("recommendation").is_null() {
            out.push_str(&format!(
                "Auto-configuration: batch {} (from the {}), gradient checkpointing {}, {} blocks \
                 of {} channels\n",
                j.u64("recommendation.batch_size"),
                j.str("recommendation.batch_source"),
                j.yes_no("recommendation.gradient_checkpointing"),
                j.u64("recommendation.blocks"),
                j.u64("recommendation.channels")
            ));
            out.push_str(&format!(
                "Tier:    {} ({}, {}; {})\n",
                j.str("recommendation.tier.label"),
                j.str("recommendation.tier.device"),
                range_text(
                    j.get("recommendation.tier.min_memory_gb").as_f64().unwrap(),
                    j.get("recommendation.tier.max_memory_gb").as_f64()
                ),
                if j.bool("recommendation.tier.from_config") {
                    "from the configuration"
                } else {
                    "built in"
                }
            ));
        }
        out.push_str("Devices:\n");
        for i in 0..j.len("devices") {
            let at = |k: &str| format!("devices.{i}.{k}");
            let dev = j.str(&at("device"));
            assert!(dev.starts_with(&j.str(&at("kind"))));
            out.push_str(&format!(
                "  {dev:<8} {} ({} total{})\n",
                j.str(&at("name")),
                j.bytes(&at("memory_total")),
                j.get(&at("compute_capability"))
                    .as_str()
                    .map(|c| format!(", compute capability {c}"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!("libsda:  {}\n", j.str("libsda_version")));
    } else {
        for absent in ["memory", "host", "backend", "devices", "libsda_version"] {
            assert!(!j.has(absent), "essential JSON has {absent}");
        }
    }
    for i in 0..j.len("problems") {
        let at = |k: &str| format!("problems.{i}.{k}");
        out.push_str(&format!(
            "Problem ({}, {}): {}\n  Fix: {}\n",
            j.str(&at("severity")),
            j.str(&at("code")),
            j.str(&at("message")),
            j.str(&at("fix"))
        ));
    }
    out
}

#[test]
fn text_and_json_agree_on_every_fact() {
    for (name, r) in all_reports() {
        for verbosity in [Verbosity::Essential, Verbosity::Verbose] {
            let json = r.render_json(verbosity);
            let reader = Reader::new(&json);
            let expected = text_from_json(&reader);
            assert_eq!(
                r.render_text(verbosity),
                expected,
                "{name} {}: the text differs from what the JSON says",
                verbosity.as_str()
            );
            assert_eq!(
                reader.unread(),
                Vec::<String>::new(),
                "{name} {}: JSON facts the text does not show",
                verbosity.as_str()
            );
        }
    }
}

#[test]
fn essential_shows_only_problems_that_need_attention() {
    let r = gpu_report();
    let essential = r.render_text(Verbosity::Essential);
    assert!(essential.contains("Problem (error, cuda.driver_too_old)"));
    assert!(essential.contains("Problem (warning, device.fallback)"));
    assert!(!essential.contains("paths.missing"));
    assert!(r
        .render_text(Verbosity::Verbose)
        .contains("Problem (info, paths.missing)"));
    let fallback = fallback_report().render_text(Verbosity::Essential);
    assert!(
        fallback.contains("Warning: cuda unavailable, using cpu"),
        "{fallback}"
    );
    // The compatible entry points are the same views.
    assert_eq!(r.to_text(true), r.render_text(Verbosity::Verbose));
    assert_eq!(r.to_json(false), r.render_json(Verbosity::Essential));
}

#[test]
fn this_machine_reports_no_cuda_driver_as_information() {
    let dir = tempfile::tempdir().unwrap();
    let r = this_machine_report(dir.path());
    let no_driver = r.problems.iter().find(|p| p.code == "cuda.no_driver");
    if let Some(p) = no_driver {
        assert_eq!(p.severity, Severity::Info);
    }
    assert!(
        r.problems.iter().all(|p| p.severity == Severity::Info),
        "{:#?}",
        r.problems
    );
    assert!(r.render_json(Verbosity::Essential)["problems"]
        .as_array()
        .unwrap()
        .is_empty());
}
