//! The configuration's `[environment]`: variables that libtorch and the CUDA driver read once, when
//! they start (`PYTORCH_CUDA_ALLOC_CONF`, `CUDA_VISIBLE_DEVICES`, `OMP_NUM_THREADS`, ...).
//!
//! They are applied at one documented moment: when a context is created from the configuration
//! (`Context::new`, `sda_context_new`), on the thread the host chose for that, before anything of
//! libsda's reads them (device selection calls `cuInit`; the backend starts libtorch). Never later
//! and never implicitly: a guarded run or a probe on a host's worker thread sets nothing, because
//! `setenv` races with any `getenv` of the host's other threads (glibc). An entry that comes after the
//! CUDA driver or libtorch started in this process can no longer take effect; it is not set, and it
//! is reported as [`EnvOutcome::TooLate`] rather than as applied.

use crate::backend;
use crate::cuda_driver;
use crate::log;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What became of one `[environment]` entry of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvOutcome {
    /// libsda set the variable (it was not set in the process).
    Applied,
    /// The process already had the variable with the same value.
    AlreadySet,
    /// The process already had the variable with another value, which was kept: the environment the
    /// user or launcher started the process with wins over the file.
    ProcessValueKept,
    /// The variable was not set: the CUDA driver or libtorch had already started in this process, so
    /// it could no longer take effect.
    TooLate,
}

impl EnvOutcome {
    /// `applied`, `already_set`, `process_value_kept` or `too_late`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvOutcome::Applied => "applied",
            EnvOutcome::AlreadySet => "already_set",
            EnvOutcome::ProcessValueKept => "process_value_kept",
            EnvOutcome::TooLate => "too_late",
        }
    }
}

/// One `[environment]` entry and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvApplication {
    /// Variable name.
    pub name: String,
    /// The configuration's value.
    pub value: String,
    /// What happened.
    pub outcome: EnvOutcome,
    /// The process's own value when it was kept.
    pub process_value: Option<String>,
}

/// Decides what to do with each `[environment]` entry, given the process environment seen through
/// `lookup` and whether the CUDA driver or libtorch has started (`late`): set only the names that are
/// not set yet, and only while they can still take effect. Pure, so that tests need not touch the
/// process environment.
pub fn plan_environment(
    wanted: &BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    late: bool,
) -> Vec<EnvApplication> {
    wanted
        .iter()
        .map(|(name, value)| {
            let (outcome, process_value) = match lookup(name) {
                None if late => (EnvOutcome::TooLate, None),
                None => (EnvOutcome::Applied, None),
                Some(v) if v == *value => (EnvOutcome::AlreadySet, None),
                Some(v) => (EnvOutcome::ProcessValueKept, Some(v)),
            };
            EnvApplication {
                name: name.clone(),
                value: value.clone(),
                outcome,
                process_value,
            }
        })
        .collect()
}

/// Every entry any context of this process applied or tried to, by name (the first outcome of a name
/// stays: the variable libsda set is still libsda's doing when a later context finds it set).
static APPLIED: Mutex<Vec<EnvApplication>> = Mutex::new(Vec::new());

/// Whether something that reads these variables at start-up has already started in this process.
fn too_late_now() -> bool {
    backend::loaded().is_some() || cuda_driver::initialized()
}

/// Applies a configuration's `[environment]` to the process, now. Called when a context is created;
/// only names that are not set yet are set, so the process's own environment always wins, and none
/// once the CUDA driver or libtorch has started. Returns what became of each entry.
pub fn apply(wanted: &BTreeMap<String, String>) -> Vec<EnvApplication> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut messages = log::Deferred::new();
    let mut record = APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    let plan = plan_environment(
        wanted,
        &|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        too_late_now(),
    );
    for entry in &plan {
        match entry.outcome {
            EnvOutcome::Applied => {
                std::env::set_var(&entry.name, &entry.value);
                messages.push(
                    log::Level::Info,
                    format!(
                        "set {}={} from the configuration's [environment]",
                        entry.name, entry.value
                    ),
                );
            }
            EnvOutcome::TooLate => messages.push(
                log::Level::Warn,
                format!(
                    "[environment] {}={} was not set: the CUDA driver or libtorch already started \
                     in this process, and they read it only at start-up; create the context \
                     before any device or torch work, or export it before the program starts",
                    entry.name, entry.value
                ),
            ),
            EnvOutcome::ProcessValueKept => messages.push(
                log::Level::Info,
                format!(
                    "kept {}={} from the process environment (the configuration says {})",
                    entry.name,
                    entry.process_value.as_deref().unwrap_or(""),
                    entry.value
                ),
            ),
            EnvOutcome::AlreadySet => {}
        }
        if !record.iter().any(|r| r.name == entry.name) {
            record.push(entry.clone());
        }
    }
    drop(record);
    plan
}

/// What became of the `[environment]` entries of every context created in this process so far (the
/// first outcome of each name); empty when none listed any.
pub fn applied() -> Vec<EnvApplication> {
    APPLIED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_entries_are_set_only_when_the_process_lacks_them() {
        let wanted: BTreeMap<String, String> = [
            ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
            ("OMP_NUM_THREADS", "4"),
            ("SAME", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let lookup = |name: &str| match name {
            "OMP_NUM_THREADS" => Some("8".to_string()),
            "SAME" => Some("1".to_string()),
            _ => None,
        };
        let plan = plan_environment(&wanted, &lookup, false);
        let by_name = |n: &str| plan.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(
            by_name("PYTORCH_CUDA_ALLOC_CONF").outcome,
            EnvOutcome::Applied
        );
        let kept = by_name("OMP_NUM_THREADS");
        assert_eq!(kept.outcome, EnvOutcome::ProcessValueKept);
        assert_eq!(kept.process_value.as_deref(), Some("8"));
        assert_eq!(kept.value, "4");
        assert_eq!(by_name("SAME").outcome, EnvOutcome::AlreadySet);
        assert!(plan_environment(&BTreeMap::new(), &lookup, false).is_empty());
        // Once the CUDA driver or libtorch has started, a missing variable is too late to set; the
        // process's own values are reported as before.
        let late = plan_environment(&wanted, &lookup, true);
        let by_name = |n: &str| late.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(
            by_name("PYTORCH_CUDA_ALLOC_CONF").outcome,
            EnvOutcome::TooLate
        );
        assert_eq!(
            by_name("OMP_NUM_THREADS").outcome,
            EnvOutcome::ProcessValueKept
        );
        assert_eq!(by_name("SAME").outcome, EnvOutcome::AlreadySet);
    }
}
