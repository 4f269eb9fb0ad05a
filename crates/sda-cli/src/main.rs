//! `sda`: the command-line face of libsda. One file per subcommand in this directory; this file only
//! parses the command line and dispatches.
//!
//! `sda info [--device D] [--verbose] [--json]` prints the device report of this machine.
//! `sda doctor`, `sda plan`, `sda recommend` and `sda config init|get|set|show`: see their files.

mod config;
mod doctor;
mod info;
mod out;
mod plan;
mod probe;
mod recommend;

use clap::{Parser, Subcommand};
use sda_core::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sda",
    version,
    about = "libsda: which device, does it work, how much memory"
)]
struct Cli {
    /// Configuration file (default: $SDA_CONFIG, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the environment and print the report; the exit code is the worst problem found
    /// (0: nothing worse than information, 1: warnings, 2: errors).
    Doctor(doctor::Args),
    /// Where each worker of a job runs (cpu, single_gpu, multi_gpu, auto) and its launcher env.
    Plan(plan::Args),
    /// Auto-configuration for the device (tier, batch, checkpointing, model size) and memory advice.
    Recommend(recommend::Args),
    /// The configuration file: init (first run), get, set, show.
    Config(config::Args),
    /// Select a device and print its report.
    Info {
        /// Device preference: auto, cpu, cuda, cuda:N, mps (default: the config's hardware.device).
        #[arg(long)]
        device: Option<String>,
        /// Everything, not only the essentials.
        #[arg(long, short)]
        verbose: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Find the largest batch of the built-in workload (or of a model file, --model) that fits the
    /// memory budget.
    Probe {
        /// Device preference: auto, cpu, cuda, cuda:N, mps (default: the config's hardware.device).
        #[arg(long)]
        device: Option<String>,
        /// Memory budget, e.g. 512MiB or 2GiB (default: the memory strategy's share).
        #[arg(long, value_parser = probe::parse_size)]
        budget: Option<u64>,
        /// Smallest batch.
        #[arg(long, default_value_t = 1)]
        min: u32,
        /// Largest batch; reaching it is reported as capped.
        #[arg(long, default_value_t = 65536)]
        max: u32,
        /// The first batch to run, one known to fit (default: --min); the search grows from there.
        #[arg(long)]
        start: Option<u32>,
        /// JSON with every field of the result.
        #[arg(long)]
        json: bool,
        /// Store the recommended batch as hardware.max_batch_size in the config file (--config, else
        /// $SDA_CONFIG).
        #[arg(long)]
        save: bool,
        /// Probe this model file instead of the built-in workload: a TorchScript module
        /// (torch.jit.save) or an AOTInductor package (.pt2, inference only).
        #[arg(long, requires = "input")]
        model: Option<PathBuf>,
        /// Shape of one input sample of --model, e.g. 2,88200 (the batch dimension is added in
        /// front).
        #[arg(long, requires = "model", value_parser = probe::parse_input)]
        input: Option<probe::Shape>,
        /// Element type of the model's input: f32, f16 or bf16.
        #[arg(long, requires = "model", default_value = "f32", value_parser = probe::parse_dtype)]
        dtype: sda_core::model::ModelDtype,
        /// Run one training step per trial (forward, mean of the outputs as the loss, backward)
        /// instead of inference.
        #[arg(long, requires = "model")]
        train: bool,
    },
}

fn load_config(path: Option<&PathBuf>) -> sda_core::error::Result<Config> {
    let lookup = |name: &str| std::env::var(name).ok();
    match path {
        Some(p) => {
            let mut config = Config::load(p)?;
            config.apply_env_overrides(&lookup)?;
            Ok(config)
        }
        None => Config::from_environment(&lookup),
    }
}

/// Runs the subcommand; its exit code is the subcommand's to choose (`doctor` reports severities).
fn run(cli: Cli) -> sda_core::error::Result<ExitCode> {
    // `doctor` and `config` read the file themselves: a file that does not load is what the doctor
    // reports, and what `config init` must not need.
    let command = match cli.command {
        Command::Doctor(args) => return doctor::run(cli.config.as_deref(), args),
        Command::Config(args) => return config::run(cli.config.as_deref(), args),
        other => other,
    };
    let config = load_config(cli.config.as_ref())?;
    match command {
        Command::Plan(args) => plan::run(config, args).map(|()| ExitCode::SUCCESS),
        Command::Recommend(args) => recommend::run(config, args).map(|()| ExitCode::SUCCESS),
        Command::Doctor(_) | Command::Config(_) => unreachable!("dispatched above"),
        Command::Info {
            device,
            verbose,
            json,
        } => info::run(config, device.as_deref(), verbose, json).map(|()| ExitCode::SUCCESS),
        Command::Probe {
            device,
            budget,
            min,
            max,
            start,
            json,
            save,
            model,
            input,
            dtype,
            train,
        } => {
            let save = match (
                save,
                cli.config
                    .clone()
                    .or_else(|| std::env::var_os("SDA_CONFIG").map(PathBuf::from)),
            ) {
                (false, _) => None,
                (true, Some(path)) => Some(path),
                (true, None) => {
                    return Err(sda_core::error::Error::invalid_argument(
                        "--save needs a config file: pass --config FILE or set SDA_CONFIG".into(),
                    ))
                }
            };
            let args = probe::Args {
                device,
                budget,
                min,
                max,
                start: start.unwrap_or(0),
                json,
                save,
                model: model.map(|path| sda_core::model::ModelWorkload {
                    path,
                    input_shape: input.map(|s| s.0).unwrap_or_default(),
                    dtype,
                    train,
                }),
            };
            probe::run(config, args).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sda: {} ({})", e, e.kind());
            ExitCode::from(2)
        }
    }
}
