//! `sda config init | get | set | show`.
//!
//! The file is `--config`, else `$SDA_CONFIG`; `init` writes `sda.toml` in the current directory when
//! neither is given. `init` is the seeds' first run: it writes a configuration with the defaults (or
//! the answers given), creates the data directories and detects the device. On a terminal it asks,
//! showing each default; otherwise (a pipe, a script, CI) it takes the flags and defaults and never
//! waits for input.

use crate::out;
use sda_core::config::{Config, ENV_CONFIG};
use sda_core::context::Context;
use sda_core::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sda config`'s subcommands.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// First run: write a configuration, create the data directories, detect the device.
    Init(InitArgs),
    /// Print one value (dotted key, e.g. hardware.device).
    Get {
        /// The dotted key.
        key: String,
    },
    /// Set one value in the file (checked for type and range; the file is replaced atomically).
    Set {
        /// The dotted key.
        key: String,
        /// The value as text (booleans also 1/0/yes/no; lists comma-separated).
        value: String,
    },
    /// Print the whole configuration in force.
    Show {
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// `sda config init`'s options; each one is also a question on a terminal.
#[derive(clap::Args)]
struct InitArgs {
    /// Directory of the datasets.
    #[arg(long)]
    datasets: Option<String>,
    /// Directory of the models.
    #[arg(long)]
    models: Option<String>,
    /// Directory for generated output.
    #[arg(long)]
    generated: Option<String>,
    /// Device preference: auto, cpu, cuda, cuda:N, mps.
    #[arg(long)]
    device: Option<String>,
    /// Memory strategy: conservative, balanced, aggressive.
    #[arg(long)]
    memory_strategy: Option<String>,
    /// Ask nothing, even on a terminal: flags and defaults.
    #[arg(long, short)]
    yes: bool,
    /// Replace an existing (valid) file; a file that does not parse is never replaced.
    #[arg(long)]
    force: bool,
    /// Skip device detection (which may load libtorch to smoke-test a GPU).
    #[arg(long)]
    no_detect: bool,
}

/// The file these commands work on: `--config`, else `$SDA_CONFIG`.
fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    path.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The configuration in force: the file's, or the defaults, with `SDA_DEVICE` applied.
fn effective(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    let file = config_file(path);
    let mut config = match &file {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.apply_env_overrides(&|name| std::env::var(name).ok())?;
    Ok((config, file))
}

/// Runs `sda config ...`; `config_path` is `--config`.
pub fn run(config_path: Option<&Path>, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Get { key } => {
            let (config, _) = effective(config_path)?;
            out::print(&format!("{}\n", config.get(&key)?));
        }
        Command::Show { json } => {
            let (config, file) = effective(config_path)?;
            if json {
                out::print_json(&config.to_json());
            } else {
                let source = match &file {
                    Some(p) => format!("# source: {}\n", p.display()),
                    None => {
                        "# source: built-in defaults (no --config, no SDA_CONFIG)\n".to_string()
                    }
                };
                out::print(&format!("{source}{}", config.to_toml_string()));
            }
        }
        Command::Set { key, value } => {
            let file = config_file(config_path).ok_or_else(|| {
                Error::invalid_argument(
                    "no configuration file to change: pass --config FILE or set SDA_CONFIG \
                     (`sda config init` creates one)"
                        .into(),
                )
            })?;
            // The file as written, without SDA_DEVICE: an override for one run must not end up in it.
            let mut config = Config::load(&file)?;
            config.set(&key, &value)?;
            config.save(&file)?;
            out::print(&format!("{key} = {}\n", config.get(&key)?));
        }
        Command::Init(init) => {
            let file = config_file(config_path).unwrap_or_else(|| PathBuf::from("sda.toml"));
            let stdin = std::io::stdin();
            let interactive = !init.yes && stdin.is_terminal();
            let mut input = stdin.lock();
            let mut prompt_out = std::io::stderr();
            let asker: Option<(&mut dyn BufRead, &mut dyn Write)> = if interactive {
                Some((&mut input, &mut prompt_out))
            } else {
                None
            };
            let cwd = std::env::current_dir()
                .map_err(|e| Error::io(format!("cannot tell the current directory: {e}")))?;
            first_run(&file, &init, asker, &cwd)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks one question with a default; an empty answer (or the end of input) takes the default. The
/// answer is checked by `apply`; a bad one is explained and asked again, three times at most.
fn ask(
    io: &mut (&mut dyn BufRead, &mut dyn Write),
    question: &str,
    default: &str,
    apply: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    for _ in 0..3 {
        let _ = write!(io.1, "{question} [{default}]: ");
        let _ = io.1.flush();
        let mut line = String::new();
        let read =
            io.0.read_line(&mut line)
                .map_err(|e| Error::io(format!("reading the answer: {e}")))?;
        let answer = line.trim();
        let answer = if read == 0 || answer.is_empty() {
            default
        } else {
            answer
        };
        match apply(answer) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = writeln!(io.1, "  {e}");
                if read == 0 {
                    return Err(e);
                }
            }
        }
    }
    Err(Error::invalid_argument(format!(
        "no valid answer to \"{question}\" after three tries"
    )))
}

/// The first run: answers (flags, or questions on a terminal), directories, detection, save.
/// Relative data directories are created under `cwd` (the application's current directory, against
/// which it will open them); the file keeps them relative.
fn first_run(
    file: &Path,
    init: &InitArgs,
    mut asker: Option<(&mut dyn BufRead, &mut dyn Write)>,
    cwd: &Path,
) -> Result<()> {
    if cwd.join(file).exists() && !init.force {
        return Err(Error::invalid_argument(format!(
            "{} already exists; `sda config set` changes one value, `sda config init --force` \
             starts it over",
            file.display()
        )));
    }
    let mut config = Config::default();
    let questions: [(&str, &str, &Option<String>); 5] = [
        (
            "paths.datasets",
            "Directory of the datasets",
            &init.datasets,
        ),
        ("paths.models", "Directory of the models", &init.models),
        (
            "paths.generated",
            "Directory for generated output",
            &init.generated,
        ),
        (
            "hardware.device",
            "Device (auto, cpu, cuda, cuda:N, mps)",
            &init.device,
        ),
        (
            "hardware.memory_strategy",
            "Memory strategy (conservative, balanced, aggressive)",
            &init.memory_strategy,
        ),
    ];
    for (key, question, flag) in questions {
        match (flag, asker.as_mut()) {
            (Some(value), _) => config.set(key, value)?,
            (None, Some(io)) => {
                let default = config.get(key)?;
                ask(io, question, &default, &mut |answer| {
                    config.set(key, answer)
                })?;
            }
            (None, None) => {}
        }
    }

    let mut report = String::new();
    for (key, dir) in [
        ("paths.datasets", &config.paths.datasets),
        ("paths.models", &config.paths.models),
        ("paths.generated", &config.paths.generated),
    ] {
        let path = cwd.join(dir);
        let existed = path.is_dir();
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("cannot create {key} = {dir}: {e}")))?;
        report.push_str(&format!(
            "{} {dir} ({key}{})\n",
            if existed { "Exists: " } else { "Created:" },
            if Path::new(dir).is_relative() {
                ", relative to the current directory"
            } else {
                ""
            }
        ));
    }

    if !init.no_detect {
        let context = Context::new(config.clone());
        match context.select(None) {
            Ok(selection) => {
                let info = context.device_info()?;
                report.push_str(&format!(
                    "Device:  {} ({}, {} total)\n",
                    info.device,
                    info.name,
                    sda_core::bytes::human_bytes(info.memory_total)
                ));
                if selection.fell_back {
                    report.push_str(&format!("Warning: {}\n", selection.reason));
                }
            }
            // Written anyway: the file is what the user asked for, and `sda doctor` explains.
            Err(e) => report.push_str(&format!("Warning: device detection failed: {e}\n")),
        }
    }

    config.general.first_run_complete = true;
    // The first run creates what it needs, the file's directory included (~/.config/sda/...).
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(cwd.join(parent)).map_err(|e| {
            Error::io(format!(
                "cannot create the directory of {}: {e}",
                file.display()
            ))
        })?;
    }
    config.save(cwd.join(file))?;
    report.push_str(&format!(
        "Wrote:   {}\nUse it:  export {ENV_CONFIG}={} (or --config); `sda probe --save` measures the \
         largest batch, `sda doctor` checks everything\n",
        file.display(),
        std::fs::canonicalize(cwd.join(file))
            .unwrap_or_else(|_| cwd.join(file))
            .display()
    ));
    out::print(&report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_args() -> InitArgs {
        InitArgs {
            datasets: None,
            models: None,
            generated: None,
            device: Some("cpu".into()),
            memory_strategy: None,
            yes: false,
            force: false,
            no_detect: true,
        }
    }

    #[test]
    fn questions_take_answers_defaults_and_retry_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let file = dir.path().join("sda.toml");
        // datasets and models answered, generated left at its default (an empty line), the memory
        // strategy first wrong, then right; the device comes from its flag and is not asked.
        let answers = format!("{base}/d\n{base}/m\n\n greedy\naggressive\n");
        let mut input = std::io::Cursor::new(answers.into_bytes());
        let mut prompts: Vec<u8> = Vec::new();
        first_run(
            &file,
            &init_args(),
            Some((&mut input, &mut prompts)),
            dir.path(),
        )
        .unwrap();
        let prompts = String::from_utf8(prompts).unwrap();
        assert!(
            prompts.contains("Directory of the datasets [data/datasets]: "),
            "{prompts}"
        );
        assert!(prompts.contains("Memory strategy"), "{prompts}");
        assert!(
            prompts.contains("greedy"),
            "the bad answer is explained: {prompts}"
        );
        assert!(
            !prompts.contains("Device ("),
            "a flag is not asked: {prompts}"
        );
        let c = Config::load(&file).unwrap();
        assert_eq!(c.paths.datasets, format!("{base}/d"));
        assert_eq!(c.paths.models, format!("{base}/m"));
        assert_eq!(
            c.paths.generated, "data/generated",
            "kept relative in the file"
        );
        assert_eq!(c.hardware.device, "cpu");
        assert_eq!(c.hardware.memory_strategy.as_str(), "aggressive");
        assert!(c.general.first_run_complete);
        assert!(dir.path().join("d").is_dir() && dir.path().join("data/generated").is_dir());
        // A second init refuses without --force.
        let err = first_run(&file, &init_args(), None, dir.path()).unwrap_err();
        assert!(err.message().contains("already exists"), "{err}");
    }

    #[test]
    fn the_end_of_input_takes_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sda.toml");
        let mut args = init_args();
        for (slot, name) in [
            (&mut args.datasets, "d"),
            (&mut args.models, "m"),
            (&mut args.generated, "g"),
        ] {
            *slot = Some(dir.path().join(name).display().to_string());
        }
        let mut input = std::io::Cursor::new(Vec::new());
        let mut prompts: Vec<u8> = Vec::new();
        first_run(&file, &args, Some((&mut input, &mut prompts)), dir.path()).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.hardware.memory_strategy.as_str(), "balanced");
    }
}
