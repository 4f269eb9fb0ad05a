//! A context: one configuration, one selected device, and the cached facts about it. Shared freely
//! across threads.

use crate::backend;
use crate::config::Config;
use crate::device::{
    self, DeviceInfo, LaunchEnv, Machine, Selection, SelectionPolicy, SystemMachine,
};
use crate::environment;
use crate::error::{Error, Result};
use crate::memory::{self, MemoryInfo};
use crate::plan::{self, LauncherEnv, Plan, PlanRequest, StrategyRequest};
use crate::preference::{DeviceKind, Preference};
use crate::recommend::{self, Recommendation};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The selected device and its static description.
pub struct SelectedDevice {
    /// How the device was chosen.
    pub selection: Selection,
    /// Its static description (free memory as of the selection).
    pub info: DeviceInfo,
    /// The memory strategy's budget as of the selection, for reports on hot paths that must not
    /// read `/proc` (fresh figures come from [`Context::memory_info`]).
    pub budget: u64,
}

/// Holds a configuration and the device selected under it.
pub struct Context {
    config: Config,
    machine: Arc<dyn Machine>,
    // An Arc so that hot paths (guarded runs) take the selection without copying its strings.
    selected: Mutex<Option<Arc<SelectedDevice>>>,
    /// Bytes per sample that successful guarded runs measured, by work key (see
    /// [`crate::guard::GuardOptions::work_id`]).
    work_costs: Mutex<HashMap<u64, f64>>,
    /// Why the last load of the backend failed, kept so that hot paths (every guarded run, every
    /// workload run) do not search for and `dlopen` the module again; cleared only by an explicit
    /// [`Context::load_backend`]. A context's configuration never changes, so nothing else can make
    /// a retry succeed.
    backend_failure: Mutex<Option<Error>>,
}

impl Context {
    /// A context on the real machine.
    ///
    /// This is the moment the configuration's `[environment]` is applied to the process (see
    /// [`crate::environment`]): on the caller's thread, before the context selects a device (which
    /// starts the CUDA driver) or loads the backend (which starts libtorch). Create the first context
    /// at start-up, before other threads read the environment.
    pub fn new(config: Config) -> Context {
        environment::apply(&config.environment);
        let machine = Arc::new(
            SystemMachine::new(&config.hardware.backend).with_libtorch(&config.hardware.libtorch),
        );
        Context::with_machine(config, machine)
    }

    /// A context on an injected machine (tests use this to model GPUs that do not exist here).
    pub fn with_machine(config: Config, machine: Arc<dyn Machine>) -> Context {
        Context {
            config,
            machine,
            selected: Mutex::new(None),
            work_costs: Mutex::new(HashMap::new()),
            backend_failure: Mutex::new(None),
        }
    }

    /// The configuration this context was created with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Selects a device. `preference` `None` uses the config's `hardware.device`. Replaces any earlier
    /// selection of this context.
    pub fn select(&self, preference: Option<&str>) -> Result<Selection> {
        let text = preference.unwrap_or(&self.config.hardware.device);
        let preference = Preference::parse(text)?;
        let policy = SelectionPolicy {
            priority: self.config.hardware.platform_priority.clone(),
            strict: self.config.hardware.strict,
            memory_fraction: self.config.hardware.budget_fraction(),
        };
        let launch = LaunchEnv::from_process()?;
        let selection = device::select(preference, &policy, &launch, self.machine.as_ref())?;
        let info = device::describe(selection.kind, selection.index, self.machine.as_ref())?;
        let budget = memory::memory_info(&selection, policy.memory_fraction, self.machine.as_ref())
            .map(|m| m.budget)
            .unwrap_or(0);
        let mut slot = self.selected.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(SelectedDevice {
            selection: selection.clone(),
            info,
            budget,
        }));
        Ok(selection)
    }

    /// The current selection, selecting with the config's preference first if nothing was selected.
    pub fn selected(&self) -> Result<Arc<SelectedDevice>> {
        if let Some(s) = self
            .selected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(s);
        }
        self.select(None)?;
        self.selected()
    }

    /// The current selection (selects with the config's preference first if needed).
    pub fn selection(&self) -> Result<Selection> {
        Ok(self.selected()?.selection.clone())
    }

    /// The selected device's description: cached static facts, fresh free memory.
    pub fn device_info(&self) -> Result<DeviceInfo> {
        let mut info = self.selected()?.info.clone();
        device::refresh_free_memory(&mut info, self.machine.as_ref());
        Ok(info)
    }

    /// Memory figures of the selected device, budget from the config's memory strategy.
    pub fn memory_info(&self) -> Result<MemoryInfo> {
        let selected = self.selected()?;
        memory::memory_info(
            &selected.selection,
            self.config.hardware.budget_fraction(),
            self.machine.as_ref(),
        )
    }

    /// Empties the selected device's allocator cache.
    pub fn clear_cache(&self) -> Result<()> {
        let selected = self.selected()?;
        memory::clear_cache(selected.selection.kind, selected.selection.index)
    }

    /// Resets the selected device's peak memory figure.
    pub fn reset_peak(&self) -> Result<()> {
        let selected = self.selected()?;
        memory::reset_peak(selected.selection.kind, selected.selection.index)
    }

    /// Records what one sample of a work cost in a successful run (the latest figure wins: inputs
    /// change over a session, and the latest run is the best guide to the next).
    pub fn remember_work_cost(&self, work_id: u64, bytes_per_sample: f64) {
        let mut costs = self.work_costs.lock().unwrap_or_else(|e| e.into_inner());
        costs.insert(work_id, bytes_per_sample);
    }

    /// What one sample of a work cost when it last ran successfully, if it has (key 0: unknown).
    pub fn work_cost(&self, work_id: u64) -> Option<f64> {
        if work_id == 0 {
            return None;
        }
        let costs = self.work_costs.lock().unwrap_or_else(|e| e.into_inner());
        costs.get(&work_id).copied()
    }

    /// The machine this context selects on.
    pub fn machine(&self) -> &dyn Machine {
        self.machine.as_ref()
    }

    /// Every device of the machine.
    pub fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        device::list(self.machine.as_ref())
    }

    /// Plans `workers` workers (0 = the strategy's default) under `strategy` (`auto`, `cpu`,
    /// `single_gpu`, `multi_gpu`) on this context's machine, with the launcher variables of the
    /// process environment. Asks the CUDA driver only; loads no libtorch.
    pub fn plan(&self, strategy: &str, workers: u32) -> Result<Plan> {
        self.plan_with_launcher(strategy, workers, &LauncherEnv::from_process()?)
    }

    /// [`Context::plan`] with launcher variables given by the caller (tests inject torchrun and SLURM
    /// environments through this).
    pub fn plan_with_launcher(
        &self,
        strategy: &str,
        workers: u32,
        launcher: &LauncherEnv,
    ) -> Result<Plan> {
        let strategy = StrategyRequest::parse(strategy)?;
        // single_gpu shares the GPU the config names (`cuda:N`), else the first.
        let gpu_index = match Preference::parse(&self.config.hardware.device) {
            Ok(Preference::Device {
                kind: DeviceKind::Cuda,
                index: Some(i),
            }) => i,
            _ => 0,
        };
        let request = PlanRequest {
            strategy,
            workers,
            gpu_index,
            usable_cores: crate::host::static_facts().usable_cores,
        };
        plan::plan(&request, self.machine.as_ref(), launcher)
    }

    /// The auto-configuration for the selected device (selecting with the config's preference first
    /// if needed): its tier, the batch size (a stored probe result beats the tier), and with
    /// `parameters` > 0 memory-strategy advice for a model of that many parameters.
    pub fn recommend(&self, parameters: u64) -> Result<Recommendation> {
        let info = self.device_info()?;
        recommend::recommend(
            &self.config,
            recommend::DeviceFacts {
                kind: info.kind,
                device: info.device,
                name: info.name,
                memory_total: info.memory_total,
            },
            parameters,
        )
    }

    /// Loads the torch backend now (the host chooses when to pay for libtorch's start-up).
    ///
    /// This is the explicit load (the host asked: `sda_backend_load`, `sda doctor`): it always tries
    /// again after an earlier failure. Work that needs the backend implicitly uses
    /// [`Context::backend`], which does not.
    pub fn load_backend(&self) -> Result<&'static backend::Backend> {
        let result = backend::load_with(
            &self.config.hardware.backend,
            &self.config.hardware.libtorch,
        );
        *self
            .backend_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = result.as_ref().err().cloned();
        result
    }

    /// The backend for work that needs it implicitly (workload runs, probes, measuring a guarded
    /// run): the loaded one; else the failure of this context's last attempt, without searching
    /// again; else a first attempt, whose failure is kept until [`Context::load_backend`].
    pub fn backend(&self) -> Result<&'static backend::Backend> {
        if let Some(loaded) = backend::loaded() {
            return Ok(loaded);
        }
        let failure = self
            .backend_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match failure {
            Some(error) => Err(error),
            None => self.load_backend(),
        }
    }
}
