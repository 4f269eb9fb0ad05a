//! `sda`: the command-line face of libsda.
//!
//! `sda info [--device D] [--verbose] [--json]` prints the device report of this machine.

use clap::{Parser, Subcommand};
use sda::config::Config;
use sda::context::Context;
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

fn run(cli: Cli) -> sda::error::Result<()> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Info {
            device,
            verbose,
            json,
        } => {
            // Warnings are part of the report itself; keep the log quiet unless SDA_LOG asks.
            let context = Context::new(config);
            let report = sda::report::device_report(&context, device.as_deref())?;
            if json {
                let text = serde_json::to_string_pretty(&report.to_json(verbose))
                    .map_err(|e| sda::error::Error::Io(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", report.to_text(verbose));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sda: {} ({})", e, e.status().name());
            ExitCode::from(2)
        }
    }
}
