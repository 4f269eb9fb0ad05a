//! `sda doctor`: validation and the report, with an exit code that reflects the worst problem.
//!
//! Exit codes: 0 when nothing worse than information was found, 1 for warnings, 2 for errors (a
//! configuration file that does not load is an error, reported like any other problem, with the key
//! named). The configuration is loaded here rather than by `main`, so that a broken file is a
//! finding of the doctor instead of the end of it.

use crate::out;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::Result;
use sda_core::report::{self, Verbosity};
use sda_core::validate::{self, Problem, Severity, ValidateOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sda doctor`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Device preference to check: auto, cpu, cuda, cuda:N, mps (default: the config's
    /// hardware.device).
    #[arg(long)]
    device: Option<String>,
    /// The verbose report, not only the essentials.
    #[arg(long, short)]
    verbose: bool,
    /// The report as JSON (docs/report.schema.json); the exit code is the same.
    #[arg(long)]
    json: bool,
    /// Do not load the torch backend: skips the libtorch checks (and libtorch's start-up).
    #[arg(long)]
    no_backend: bool,
}

/// The configuration to examine, and the problem of loading it when it does not load (then the
/// defaults stand in, so that everything else is still checked).
fn load(path: Option<&Path>) -> (Config, Option<Problem>) {
    let env = |name: &str| std::env::var(name).ok();
    let file = path
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(sda_core::config::ENV_CONFIG).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    let mut config = match &file {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                let mut problem = Problem::config_not_loaded(p, &e);
                problem.message = format!(
                    "{} (the checks below use the built-in defaults instead)",
                    problem.message
                );
                return (Config::default(), Some(problem));
            }
        },
        None => Config::default(),
    };
    if let Err(e) = config.apply_env_overrides(&env) {
        let problem = Problem {
            severity: Severity::Error,
            code: "config.invalid",
            message: e.message().to_string(),
            fix: format!("fix or unset {}", sda_core::config::ENV_DEVICE),
        };
        return (config, Some(problem));
    }
    (config, None)
}

fn exit_code(problems: &[Problem]) -> ExitCode {
    match validate::worst(problems) {
        None | Some(Severity::Info) => ExitCode::SUCCESS,
        Some(Severity::Warning) => ExitCode::from(1),
        Some(Severity::Error) => ExitCode::from(2),
    }
}

fn summary(problems: &[Problem]) -> String {
    let count = |s: Severity| problems.iter().filter(|p| p.severity == s).count();
    let code = match validate::worst(problems) {
        None | Some(Severity::Info) => 0,
        Some(Severity::Warning) => 1,
        Some(Severity::Error) => 2,
    };
    format!(
        "Doctor: {} error(s), {} warning(s), {} note(s); exit code {code}\n",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    )
}

fn problem_text(p: &Problem) -> String {
    format!(
        "Problem ({}, {}): {}\n  Fix: {}\n",
        p.severity, p.code, p.message, p.fix
    )
}

/// Runs the doctor; `config_path` is `--config`.
pub fn run(config_path: Option<&Path>, args: Args) -> Result<ExitCode> {
    // A malformed --device is a mistake on this command line, not a finding about the machine.
    if let Some(d) = &args.device {
        sda_core::preference::Preference::parse(d)?;
    }
    let (config, load_problem) = load(config_path);
    let context = Context::new(config);
    let options = ValidateOptions {
        load_backend: !args.no_backend,
    };
    let verbosity = Verbosity::from_flag(args.verbose);
    let (mut r, selection_problem) = match report::gather(&context, args.device.as_deref(), options)
    {
        Ok(r) => (r, None),
        Err(e) => {
            // Selection itself failed (e.g. hardware.strict with the device missing): report the
            // machine as seen from the CPU, with the failure as a problem, instead of only the failure.
            let problem = Problem {
                severity: Severity::Error,
                code: "device.selection_failed",
                message: format!(
                    "selecting {} failed: {} (the report below is for the cpu)",
                    args.device
                        .as_deref()
                        .unwrap_or(&context.config().hardware.device),
                    e.message()
                ),
                fix: "see the message; `sda doctor --device cpu` checks the rest".to_string(),
            };
            (
                report::gather(&context, Some("cpu"), options)?,
                Some(problem),
            )
        }
    };
    r.problems.extend(load_problem);
    r.problems.extend(selection_problem);
    r.problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    if args.json {
        out::print_json(&r.render_json(verbosity));
    } else {
        let mut text = r.render_text(verbosity);
        if verbosity == Verbosity::Essential {
            // The essential report lists what needs attention; the doctor lists everything.
            for p in r.problems.iter().filter(|p| p.severity == Severity::Info) {
                text.push_str(&problem_text(p));
            }
        }
        text.push_str(&summary(&r.problems));
        out::print(&text);
    }
    Ok(exit_code(&r.problems))
}
