//! `sda`: the command-line face of libsda. One file per subcommand in this directory; this file only
//! parses the command line and dispatches.
//!
//! `sda info [--device D] [--verbose] [--json]` prints the device report of this machine.

mod info;

use clap::{Parser, Subcommand};
use sda::config::Config;
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
}

fn load_config(path: Option<&PathBuf>) -> sda::error::Result<Config> {
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
fn run(cli: Cli) -> sda::error::Result<ExitCode> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Info {
            device,
            verbose,
            json,
        } => info::run(config, device.as_deref(), verbose, json).map(|()| ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sda: {} ({})", e, e.status().name());
            ExitCode::from(2)
        }
    }
}
