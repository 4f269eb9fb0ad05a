//! A context: one configuration, one selected device, and the cached facts about it. Shared freely
//! across threads.

use crate::backend;
use crate::config::Config;
use crate::device::{
    self, DeviceInfo, LaunchEnv, Machine, Selection, SelectionPolicy, SystemMachine,
};
use crate::error::Result;
use crate::memory::{self, MemoryInfo};
use crate::preference::Preference;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The selected device and its static description.
pub struct Selected {
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
    selected: Mutex<Option<Arc<Selected>>>,
    /// Bytes per sample that successful guarded runs measured, by work key (see
    /// [`crate::guard::GuardOptions::work_key`]).
    work_costs: Mutex<HashMap<u64, f64>>,
}

impl Context {
    /// A context on the real machine.
    pub fn new(config: Config) -> Context {
        let machine = Arc::new(SystemMachine::new(&config.hardware.backend));
        Context::with_machine(config, machine)
    }

    /// A context on an injected machine (tests use this to model GPUs that do not exist here).
    pub fn with_machine(config: Config, machine: Arc<dyn Machine>) -> Context {
        Context {
            config,
            machine,
            selected: Mutex::new(None),
            work_costs: Mutex::new(HashMap::new()),
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
        *slot = Some(Arc::new(Selected {
            selection: selection.clone(),
            info,
            budget,
        }));
        Ok(selection)
    }

    /// The current selection, selecting with the config's preference first if nothing was selected.
    pub fn selected(&self) -> Result<Arc<Selected>> {
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
        memory::clear_cache(&self.selected()?.selection)
    }

    /// Resets the selected device's peak memory figure.
    pub fn reset_peak(&self) -> Result<()> {
        memory::reset_peak(&self.selected()?.selection)
    }

    /// Records what one sample of a work cost in a successful run (the latest figure wins: inputs
    /// change over a session, and the latest run is the best guide to the next).
    pub fn remember_work_cost(&self, work_key: u64, bytes_per_sample: f64) {
        let mut costs = self.work_costs.lock().unwrap_or_else(|e| e.into_inner());
        costs.insert(work_key, bytes_per_sample);
    }

    /// What one sample of a work cost when it last ran successfully, if it has (key 0: unknown).
    pub fn work_cost(&self, work_key: u64) -> Option<f64> {
        if work_key == 0 {
            return None;
        }
        let costs = self.work_costs.lock().unwrap_or_else(|e| e.into_inner());
        costs.get(&work_key).copied()
    }

    /// The machine this context selects on.
    pub fn machine(&self) -> &dyn Machine {
        self.machine.as_ref()
    }

    /// Every device of the machine.
    pub fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        device::list(self.machine.as_ref())
    }

    /// Loads the torch backend now (the host chooses when to pay for libtorch's start-up).
    pub fn load_backend(&self) -> Result<&'static backend::Backend> {
        backend::load(&self.config.hardware.backend)
    }
}
