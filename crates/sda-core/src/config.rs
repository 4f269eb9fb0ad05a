//! The one TOML configuration file: built-in defaults, validation, dotted-key get/set, environment
//! overrides and an atomic save.
//!
//! Every section and key is optional in a file; a missing key keeps its default. Unknown keys are
//! rejected with the full dotted key named, because a typo that silently does nothing (`hardware.devcie
//! = "cpu"`) is worse than an error. Paths are plain strings kept exactly as written: the library never
//! canonicalises them, so a config that says `data/models` still says `data/models` after a save.
//!
//! The file is parsed into a generic TOML table and walked by hand instead of through
//! `#[serde(deny_unknown_fields)]`: serde's messages name only the leaf field and its own type words,
//! while ours must name the dotted key, the bad value and what would have been accepted.

use crate::error::{Error, ErrorKind, Result};
use crate::preference::{DeviceKind, Preference};
use crate::recommend::{self, Tier};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Lowest accepted `hardware.memory_fraction`: below 5 % no useful workload fits, so a smaller value
/// is almost certainly a typo (`0.0075` for `0.75`).
pub const MIN_MEMORY_FRACTION: f64 = 0.05;
/// Highest accepted `hardware.memory_fraction` (the whole device).
pub const MAX_MEMORY_FRACTION: f64 = 1.0;
/// Highest accepted `hardware.max_batch_size`; larger values come from corrupted files, not probes.
pub const MAX_BATCH_SIZE: u64 = 1_048_576;

/// Environment variable that names a config file to load instead of the built-in defaults.
pub const ENV_CONFIG: &str = "SDA_CONFIG";
/// Environment variable that replaces `hardware.device` (for one run, without editing the file).
pub const ENV_DEVICE: &str = "SDA_DEVICE";

/// The sections of the file, in the order they are written.
const SECTIONS: [&str; 4] = ["general", "paths", "hardware", "environment"];
/// The array of tables (`[[tiers]]`) that overrides the auto-configuration tiers; not a section of
/// keys, so `get`/`set` cannot reach it and the file is where it is edited.
const TIERS: &str = "tiers";

/// How much of a device's memory probes and the CUDA allocator may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemoryStrategy {
    /// 60 %: leaves room for other programs sharing the device.
    Conservative,
    /// 75 %: the default.
    #[default]
    Balanced,
    /// 90 %: for a device dedicated to this process.
    Aggressive,
    /// `hardware.memory_fraction` decides.
    Custom,
}

/// The accepted strategy names, for error messages.
const ACCEPTED_STRATEGIES: &str = "conservative (60 %), balanced (75 %), aggressive (90 %), custom";

impl MemoryStrategy {
    /// Every strategy, in the order of their fractions.
    pub const ALL: [MemoryStrategy; 4] = [
        MemoryStrategy::Conservative,
        MemoryStrategy::Balanced,
        MemoryStrategy::Aggressive,
        MemoryStrategy::Custom,
    ];

    /// Lower-case name as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryStrategy::Conservative => "conservative",
            MemoryStrategy::Balanced => "balanced",
            MemoryStrategy::Aggressive => "aggressive",
            MemoryStrategy::Custom => "custom",
        }
    }

    /// The fixed budget fraction of the strategy. `Custom` has none of its own and reports the
    /// balanced 0.75; use [`Hardware::budget_fraction`] to get the configured custom value.
    pub fn fraction(self) -> f64 {
        match self {
            MemoryStrategy::Conservative => 0.60,
            MemoryStrategy::Balanced | MemoryStrategy::Custom => 0.75,
            MemoryStrategy::Aggressive => 0.90,
        }
    }

    /// Parses a strategy name (case-insensitive, trimmed).
    pub fn parse(text: &str) -> Result<MemoryStrategy> {
        let wanted = text.trim().to_ascii_lowercase();
        MemoryStrategy::ALL
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "unknown memory strategy {text:?}; accepted: {ACCEPTED_STRATEGIES}"
                ))
            })
    }
}

impl fmt::Display for MemoryStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[general]`: application state that is not about hardware.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct General {
    /// Set once the application's first-run setup has finished.
    pub first_run_complete: bool,
}

/// `[paths]`: where the application keeps its data. Kept exactly as written; relative paths are
/// resolved by the application, never by libsda.
#[derive(Clone, Debug, PartialEq)]
pub struct Paths {
    /// Directory of the datasets.
    pub datasets: String,
    /// Directory of the models.
    pub models: String,
    /// Directory for generated output.
    pub generated: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            datasets: "data/datasets".to_owned(),
            models: "data/models".to_owned(),
            generated: "data/generated".to_owned(),
        }
    }
}

/// `[hardware]`: device choice, memory budget and the backend module.
#[derive(Clone, Debug, PartialEq)]
pub struct Hardware {
    /// Device preference (`auto | cpu | cuda | cuda:N | mps`), stored in its canonical lower-case form.
    pub device: String,
    /// The order in which `auto` tries device kinds: non-empty, no duplicates.
    pub platform_priority: Vec<DeviceKind>,
    /// The memory budget strategy.
    pub memory_strategy: MemoryStrategy,
    /// Budget fraction in `[0.05, 1.0]`; used only when `memory_strategy` is `Custom`.
    pub memory_fraction: f64,
    /// Largest batch the last probe found, `0..=1048576`; 0 means not probed yet.
    pub max_batch_size: u64,
    /// `true`: a missing or broken device is an error instead of a fallback to the CPU.
    pub strict: bool,
    /// Path of the torch backend module; empty means "beside libsda".
    pub backend: String,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            device: "auto".to_owned(),
            platform_priority: vec![DeviceKind::Cuda, DeviceKind::Mps, DeviceKind::Cpu],
            memory_strategy: MemoryStrategy::Balanced,
            memory_fraction: 0.75,
            max_batch_size: 0,
            strict: false,
            backend: String::new(),
        }
    }
}

impl Hardware {
    /// The fraction of device memory that probes and the allocator may use: the strategy's fixed
    /// fraction, or `memory_fraction` for `Custom`.
    pub fn budget_fraction(&self) -> f64 {
        match self.memory_strategy {
            MemoryStrategy::Custom => self.memory_fraction,
            other => other.fraction(),
        }
    }

    /// The parsed device preference. `device` is validated on every way in, so this fails only if a
    /// caller wrote an invalid string into the public field directly.
    pub fn preference(&self) -> Result<Preference> {
        Preference::parse(&self.device)
    }
}

/// The whole configuration. Build it with [`Config::default`], [`Config::from_toml_str`],
/// [`Config::load`] or [`Config::from_environment`]; change it with [`Config::set`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// `[general]`.
    pub general: General,
    /// `[paths]`.
    pub paths: Paths,
    /// `[hardware]`.
    pub hardware: Hardware,
    /// `[environment]`: `NAME = "value"` pairs applied to the process environment before the torch
    /// backend starts (e.g. `PYTORCH_CUDA_ALLOC_CONF`, which libtorch reads only once, at start-up).
    pub environment: BTreeMap<String, String>,
    /// `[[tiers]]`: auto-configuration tiers that replace the built-in ones of their device kind
    /// (empty: the built-in table, [`recommend::builtin_tiers`]). Checked by
    /// [`recommend::validate_tiers`]: sorted, starting at 0 GB, no gaps, no overlaps.
    pub tiers: Vec<Tier>,
}

/// Documentation of one configuration key, for the CLI (`sda config keys`) and generated docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted key, e.g. `hardware.device`.
    pub name: &'static str,
    /// Value type as a user would write it: `bool`, `string`, `path`, `list`, `float`, `integer`.
    pub value_type: &'static str,
    /// The built-in default, in the plain-text form [`Config::get`] returns.
    pub default: &'static str,
    /// One line saying what the key does.
    pub description: &'static str,
}

/// Every known key (the free `[environment]` table excluded), in file order.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "general.first_run_complete",
        value_type: "bool",
        default: "false",
        description: "set once the application's first-run setup has finished",
    },
    KeyDoc {
        name: "paths.datasets",
        value_type: "path",
        default: "data/datasets",
        description: "directory of the datasets (kept as written; relative stays relative)",
    },
    KeyDoc {
        name: "paths.models",
        value_type: "path",
        default: "data/models",
        description: "directory of the models (kept as written; relative stays relative)",
    },
    KeyDoc {
        name: "paths.generated",
        value_type: "path",
        default: "data/generated",
        description: "directory for generated output (kept as written; relative stays relative)",
    },
    KeyDoc {
        name: "hardware.device",
        value_type: "string",
        default: "auto",
        description: "device preference: auto, cpu, cuda, cuda:N or mps (SDA_DEVICE overrides it)",
    },
    KeyDoc {
        name: "hardware.platform_priority",
        value_type: "list",
        default: "cuda,mps,cpu",
        description: "order in which `auto` tries device kinds (cuda, mps, cpu; no duplicates)",
    },
    KeyDoc {
        name: "hardware.memory_strategy",
        value_type: "string",
        default: "balanced",
        description: "memory budget: conservative 60 %, balanced 75 %, aggressive 90 %, custom",
    },
    KeyDoc {
        name: "hardware.memory_fraction",
        value_type: "float",
        default: "0.75",
        description: "budget fraction from 0.05 to 1.0, used only when memory_strategy = custom",
    },
    KeyDoc {
        name: "hardware.max_batch_size",
        value_type: "integer",
        default: "0",
        description: "largest batch found by the last probe (0 to 1048576; 0 = not probed yet)",
    },
    KeyDoc {
        name: "hardware.strict",
        value_type: "bool",
        default: "false",
        description: "true: a missing or broken device is an error instead of a CPU fallback",
    },
    KeyDoc {
        name: "hardware.backend",
        value_type: "path",
        default: "",
        description: "path of the torch backend module; empty = the one beside libsda",
    },
];

/// A value on its way in: from a parsed file, or plain text from `set`.
#[derive(Clone, Copy)]
enum Input<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

impl Input<'_> {
    /// The value as the user wrote it, for error messages.
    fn shown(&self) -> String {
        match self {
            Input::Toml(v) => v.to_string(),
            Input::Text(t) => format!("{t:?}"),
        }
    }
}

fn toml_type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn invalid(key: &str, input: Input<'_>, why: &str) -> Error {
    Error::invalid_value(format!("invalid value {} for {key}: {why}", input.shown()))
}

fn wrong_type(key: &str, input: Input<'_>, expected: &str) -> Error {
    let got = match input {
        Input::Toml(v) => toml_type_name(v),
        Input::Text(_) => "text",
    };
    invalid(key, input, &format!("expected {expected}, got {got}"))
}

fn to_bool(key: &str, input: Input<'_>) -> Result<bool> {
    match input {
        Input::Toml(toml::Value::Boolean(b)) => Ok(*b),
        Input::Toml(_) => Err(wrong_type(key, input, "a boolean (true or false)")),
        Input::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(invalid(key, input, "accepted: true, false, 1, 0, yes, no")),
        },
    }
}

fn to_string(key: &str, input: Input<'_>) -> Result<String> {
    match input {
        Input::Toml(toml::Value::String(s)) => Ok(s.clone()),
        Input::Toml(_) => Err(wrong_type(key, input, "a string")),
        Input::Text(t) => Ok(t.to_owned()),
    }
}

fn to_f64(key: &str, input: Input<'_>) -> Result<f64> {
    match input {
        Input::Toml(toml::Value::Float(f)) => Ok(*f),
        // `memory_fraction = 1` is a natural way to write 1.0.
        Input::Toml(toml::Value::Integer(i)) => Ok(*i as f64),
        Input::Toml(_) => Err(wrong_type(key, input, "a number")),
        Input::Text(t) => t
            .trim()
            .parse::<f64>()
            .map_err(|_| invalid(key, input, "expected a decimal number such as 0.75")),
    }
}

fn to_u64(key: &str, input: Input<'_>) -> Result<u64> {
    let range = || format!("accepted: an integer from 0 to {MAX_BATCH_SIZE}");
    match input {
        Input::Toml(toml::Value::Integer(i)) => {
            u64::try_from(*i).map_err(|_| invalid(key, input, &range()))
        }
        Input::Toml(_) => Err(wrong_type(key, input, "an integer")),
        Input::Text(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(key, input, &range())),
    }
}

fn to_kinds(key: &str, input: Input<'_>) -> Result<Vec<DeviceKind>> {
    let names: Vec<String> = match input {
        Input::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(invalid(
                    key,
                    input,
                    &format!(
                        "every entry must be a string, {other} is {}",
                        toml_type_name(other)
                    ),
                )),
            })
            .collect::<Result<_>>()?,
        Input::Toml(_) => {
            return Err(wrong_type(
                key,
                input,
                "an array of device kinds such as [\"cuda\", \"mps\", \"cpu\"]",
            ))
        }
        Input::Text(t) if t.trim().is_empty() => Vec::new(),
        Input::Text(t) => t.split(',').map(|s| s.trim().to_owned()).collect(),
    };
    let mut kinds = Vec::with_capacity(names.len());
    for name in &names {
        let kind = DeviceKind::parse(name).map_err(|_| {
            invalid(
                key,
                input,
                &format!("{name:?} is not a device kind; accepted kinds: cpu, cuda, mps"),
            )
        })?;
        kinds.push(kind);
    }
    check_priority(&kinds).map_err(|why| invalid(key, input, &why))?;
    Ok(kinds)
}

fn check_priority(kinds: &[DeviceKind]) -> std::result::Result<(), String> {
    if kinds.is_empty() {
        return Err("the list is empty; name at least one of cuda, mps, cpu".to_owned());
    }
    for (i, k) in kinds.iter().enumerate() {
        if kinds[..i].contains(k) {
            return Err(format!("{k} is listed twice; each kind may appear once"));
        }
    }
    Ok(())
}

fn check_fraction(f: f64) -> std::result::Result<(), String> {
    // `contains` is false for NaN, so NaN is rejected too.
    if (MIN_MEMORY_FRACTION..=MAX_MEMORY_FRACTION).contains(&f) {
        Ok(())
    } else {
        Err(format!(
            "out of range; accepted: a number from {MIN_MEMORY_FRACTION:?} to {MAX_MEMORY_FRACTION:?}"
        ))
    }
}

fn check_batch(n: u64) -> std::result::Result<(), String> {
    if n <= MAX_BATCH_SIZE {
        Ok(())
    } else {
        Err(format!(
            "out of range; accepted: an integer from 0 to {MAX_BATCH_SIZE} (0 = not probed yet)"
        ))
    }
}

/// A path must name something and must be passable to the OS (no NUL byte).
fn check_path(text: &str, may_be_empty: bool) -> std::result::Result<(), String> {
    if text.is_empty() && !may_be_empty {
        return Err("the path is empty; give a directory such as \"data/models\"".to_owned());
    }
    if text.contains('\0') {
        return Err("a path cannot contain a NUL character".to_owned());
    }
    Ok(())
}

fn canonical_device(text: &str) -> std::result::Result<String, String> {
    Preference::parse(text)
        .map(|p| p.to_string())
        .map_err(|e| e.message().to_owned())
}

/// Names that a process environment and every shell accept.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_env_entry(name: &str, value: &str) -> Result<()> {
    if !is_env_name(name) {
        return Err(Error::invalid_value(format!(
            "invalid environment variable name {name:?} in [environment]: names must match \
             [A-Za-z_][A-Za-z0-9_]*"
        )));
    }
    if value.contains('\0') {
        return Err(Error::invalid_value(format!(
            "invalid value for environment.{name}: an environment value cannot contain a NUL \
             character"
        )));
    }
    Ok(())
}

/// Keys of one section, without the section prefix.
fn section_keys(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|k| k.name.strip_prefix(section)?.strip_prefix('.'))
        .collect()
}

/// The UnknownKey error for `key`, naming it, listing what the section knows and suggesting the
/// right section when only the section was wrong.
fn unknown_key(key: &str, env: &BTreeMap<String, String>) -> Error {
    let (section, leaf) = match key.split_once('.') {
        Some((s, l)) => (s, Some(l)),
        None => (key, None),
    };
    let suggestion = |leaf: &str| {
        KEYS.iter()
            .find(|k| k.name.rsplit('.').next() == Some(leaf))
            .map(|k| format!("; did you mean {}?", k.name))
            .unwrap_or_default()
    };
    let message = if section == TIERS {
        format!(
            "\"{key}\" cannot be read or set as a key: [[tiers]] is a list of tables that replaces \
             the built-in auto-configuration tiers of its device kind; edit it in the file (`sda \
             recommend --tiers` prints the table in force)"
        )
    } else if section == "environment" {
        match leaf {
            None => "\"environment\" is a table, not a key; use environment.NAME".to_owned(),
            Some(name) => {
                let set: Vec<&str> = env.keys().map(String::as_str).collect();
                let set = if set.is_empty() {
                    "none".to_owned()
                } else {
                    set.join(", ")
                };
                format!("unknown configuration key \"{key}\": {name} is not in [environment] (set there: {set})")
            }
        }
    } else if SECTIONS.contains(&section) {
        let known = section_keys(section).join(", ");
        match leaf {
            None => {
                format!("\"{section}\" is a section, not a key; known keys in [{section}]: {known}")
            }
            Some(l) => format!(
                "unknown configuration key \"{key}\"; known keys in [{section}]: {known}{}",
                suggestion(l)
            ),
        }
    } else {
        let hint = suggestion(leaf.unwrap_or(section));
        format!(
            "unknown configuration key \"{key}\": there is no section \"{section}\"; known \
             sections: {}{hint}",
            SECTIONS.join(", ")
        )
    };
    Error::unknown_key(message)
}

/// Builds an error of the same kind with more context in front of its message.
fn with_context(e: Error, context: &str) -> Error {
    let m = format!("{context}{}", e.message());
    match e.kind() {
        kind @ (ErrorKind::UnknownKey
        | ErrorKind::InvalidValue
        | ErrorKind::Io
        | ErrorKind::InvalidArgument) => Error::new(kind, m),
        _ => Error::parse(m),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn syntax_error(text: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            Error::parse(format!(
                "TOML syntax error at line {line}, column {column}: {message}"
            ))
        }
        None => Error::parse(format!("TOML syntax error: {message}")),
    }
}

/// TOML text of a string value (quoted and escaped as TOML requires).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl Config {
    /// Every known dotted key (the `[environment]` table excluded), in file order.
    pub fn keys() -> Vec<String> {
        KEYS.iter().map(|k| k.name.to_owned()).collect()
    }

    /// Checks every invariant. Values coming through [`Config::from_toml_str`] and [`Config::set`] are
    /// already checked; this also catches invalid values written into the public fields directly, and
    /// [`Config::save`] runs it so that such a value never reaches a file.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, shown: String, why: String| {
            Error::invalid_value(format!("invalid value {shown} for {key}: {why}"))
        };
        for (key, value) in [
            ("paths.datasets", &self.paths.datasets),
            ("paths.models", &self.paths.models),
            ("paths.generated", &self.paths.generated),
        ] {
            check_path(value, false).map_err(|why| bad(key, format!("{value:?}"), why))?;
        }
        check_path(&self.hardware.backend, true).map_err(|why| {
            bad(
                "hardware.backend",
                format!("{:?}", self.hardware.backend),
                why,
            )
        })?;
        canonical_device(&self.hardware.device).map_err(|why| {
            bad(
                "hardware.device",
                format!("{:?}", self.hardware.device),
                why,
            )
        })?;
        check_priority(&self.hardware.platform_priority).map_err(|why| {
            bad(
                "hardware.platform_priority",
                format!("{:?}", self.kinds_text()),
                why,
            )
        })?;
        check_fraction(self.hardware.memory_fraction).map_err(|why| {
            bad(
                "hardware.memory_fraction",
                self.hardware.memory_fraction.to_string(),
                why,
            )
        })?;
        check_batch(self.hardware.max_batch_size).map_err(|why| {
            bad(
                "hardware.max_batch_size",
                self.hardware.max_batch_size.to_string(),
                why,
            )
        })?;
        for (name, value) in &self.environment {
            check_env_entry(name, value)?;
        }
        recommend::validate_tiers(&self.tiers)?;
        Ok(())
    }

    fn kinds_text(&self) -> String {
        self.hardware
            .platform_priority
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stores one known key's value after checking its type and range. `key` must be a known key.
    fn assign(&mut self, key: &str, input: Input<'_>) -> Result<()> {
        let h = &mut self.hardware;
        match key {
            "general.first_run_complete" => self.general.first_run_complete = to_bool(key, input)?,
            "paths.datasets" | "paths.models" | "paths.generated" => {
                let path = to_string(key, input)?;
                check_path(&path, false).map_err(|why| invalid(key, input, &why))?;
                let slot = match key {
                    "paths.datasets" => &mut self.paths.datasets,
                    "paths.models" => &mut self.paths.models,
                    _ => &mut self.paths.generated,
                };
                *slot = path;
            }
            "hardware.device" => {
                let text = to_string(key, input)?;
                h.device = canonical_device(&text).map_err(|why| invalid(key, input, &why))?;
            }
            "hardware.platform_priority" => h.platform_priority = to_kinds(key, input)?,
            "hardware.memory_strategy" => {
                let text = to_string(key, input)?;
                h.memory_strategy = MemoryStrategy::parse(&text).map_err(|_| {
                    invalid(key, input, &format!("accepted: {ACCEPTED_STRATEGIES}"))
                })?;
            }
            "hardware.memory_fraction" => {
                let f = to_f64(key, input)?;
                check_fraction(f).map_err(|why| invalid(key, input, &why))?;
                h.memory_fraction = f;
            }
            "hardware.max_batch_size" => {
                let n = to_u64(key, input)?;
                check_batch(n).map_err(|why| invalid(key, input, &why))?;
                h.max_batch_size = n;
            }
            "hardware.strict" => h.strict = to_bool(key, input)?,
            "hardware.backend" => {
                let path = to_string(key, input)?;
                check_path(&path, true).map_err(|why| invalid(key, input, &why))?;
                h.backend = path;
            }
            _ => return Err(unknown_key(key, &self.environment)),
        }
        Ok(())
    }

    /// Parses a config from TOML text, starting from the defaults. Syntax errors are
    /// [`Error::Parse`] with line and column; a wrong type or an out-of-range value is
    /// [`Error::InvalidValue`] naming the dotted key, the value and what is accepted; an unknown
    /// section or key is [`Error::UnknownKey`] naming the dotted key and the known ones.
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let table: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
        let mut config = Config::default();
        for (section, value) in &table {
            if section == TIERS {
                let items = value.as_array().ok_or_else(|| {
                    Error::invalid_value(format!(
                        "invalid value {value} for {TIERS}: expected a list of tables; write each \
                         tier as a [[tiers]] table"
                    ))
                })?;
                for (i, item) in items.iter().enumerate() {
                    config
                        .tiers
                        .push(recommend::tier_from_toml(&format!("{TIERS}[{i}]"), item)?);
                }
                continue;
            }
            if !SECTIONS.contains(&section.as_str()) {
                return Err(unknown_key(section, &config.environment));
            }
            let entries = value.as_table().ok_or_else(|| {
                Error::invalid_value(format!(
                    "invalid value {value} for {section}: expected a table ([{section}]), got {}",
                    toml_type_name(value)
                ))
            })?;
            for (name, item) in entries {
                if section == "environment" {
                    let text = item.as_str().ok_or_else(|| {
                        wrong_type(
                            &format!("environment.{name}"),
                            Input::Toml(item),
                            "a string",
                        )
                    })?;
                    check_env_entry(name, text)?;
                    config.environment.insert(name.clone(), text.to_owned());
                } else {
                    config.assign(&format!("{section}.{name}"), Input::Toml(item))?;
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Loads a config file. An unreadable file is [`Error::Io`] naming the path; every parse error
    /// names the path in front of the message from [`Config::from_toml_str`].
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let bytes = read_config_file(path)
            .map_err(|e| Error::io(format!("cannot read config file {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::parse(format!(
                "config file {}: not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        Config::from_toml_str(&text)
            .map_err(|e| with_context(e, &format!("config file {}: ", path.display())))
    }

    /// The config as TOML text that [`Config::from_toml_str`] reads back to an equal config: a short
    /// header, then every section and key with its one-line description as a comment.
    pub fn to_toml_string(&self) -> String {
        let h = &self.hardware;
        let values: [(&str, String); 11] = [
            (
                "general.first_run_complete",
                self.general.first_run_complete.to_string(),
            ),
            ("paths.datasets", toml_str(&self.paths.datasets)),
            ("paths.models", toml_str(&self.paths.models)),
            ("paths.generated", toml_str(&self.paths.generated)),
            ("hardware.device", toml_str(&h.device)),
            (
                "hardware.platform_priority",
                format!(
                    "[{}]",
                    h.platform_priority
                        .iter()
                        .map(|k| toml_str(k.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "hardware.memory_strategy",
                toml_str(h.memory_strategy.as_str()),
            ),
            (
                "hardware.memory_fraction",
                // Value's Display always writes a float with a point or exponent, so it reads back
                // as a float (plain `{}` would write 1.0 as `1`).
                toml::Value::Float(h.memory_fraction).to_string(),
            ),
            ("hardware.max_batch_size", h.max_batch_size.to_string()),
            ("hardware.strict", h.strict.to_string()),
            ("hardware.backend", toml_str(&h.backend)),
        ];
        let mut out = String::from(
            "# libsda configuration.\n\
             # Every key is optional (a missing key takes its built-in default); unknown keys are \
             rejected.\n",
        );
        let mut current_section = "";
        for (key, value) in &values {
            let (section, leaf) = key.split_once('.').unwrap_or(("", key));
            if section != current_section {
                out.push_str(&format!("\n[{section}]\n"));
                current_section = section;
            }
            if let Some(doc) = KEYS.iter().find(|d| d.name == *key) {
                out.push_str(&format!("# {}\n", doc.description));
            }
            out.push_str(&format!("{leaf} = {value}\n"));
        }
        out.push_str(
            "\n[environment]\n\
             # NAME = \"value\" pairs set before the torch backend starts (e.g. \
             PYTORCH_CUDA_ALLOC_CONF)\n",
        );
        for (name, value) in &self.environment {
            out.push_str(&format!("{name} = {}\n", toml_str(value)));
        }
        out.push_str(
            "\n# [[tiers]] tables replace the built-in auto-configuration tiers of their device kind\n\
             # (device, min_memory_gb, max_memory_gb, batch_size, gradient_checkpointing, blocks,\n\
             # channels, label); `sda recommend --tiers` prints the table in force.\n",
        );
        for tier in &self.tiers {
            out.push('\n');
            out.push_str(&recommend::tier_to_toml(tier));
        }
        out
    }

    /// Writes the config to `path` atomically: a temporary file in the same directory is written and
    /// flushed to disk, renamed over the target, and the directory is flushed, so a crash leaves either
    /// the old file or the new one, never a torn one.
    ///
    /// If the target exists but does not parse as a valid config, nothing is written and the parse
    /// error comes back ("refusing to overwrite ..."): a file someone hand-edited into a broken state
    /// may still hold the only copy of their settings. An existing file keeps its permission bits; a
    /// symbolic link is followed and the file it points to is replaced. The target's directory must
    /// exist.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate()
            .map_err(|e| with_context(e, &format!("not saving {}: ", path.display())))?;
        let target = resolve_save_target(path)?;
        let existing_permissions = check_overwritable(&target, path)?;

        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |what: &str, e: std::io::Error| {
            Error::io(format!(
                "cannot save config file {}: {what}: {e}",
                path.display()
            ))
        };
        if !dir.is_dir() {
            return Err(Error::io(format!(
                "cannot save config file {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }

        let mut builder = tempfile::Builder::new();
        builder.prefix(".sda-config-").suffix(".tmp");
        #[cfg(unix)]
        {
            // A new file gets 0666 minus the umask, as any editor would create it (tempfile's own
            // default is 0600).
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder
            .tempfile_in(&dir)
            .map_err(|e| io("cannot create a temporary file beside it", e))?;
        if let Some(permissions) = existing_permissions {
            tmp.as_file()
                .set_permissions(permissions)
                .map_err(|e| io("cannot copy the existing file's permissions", e))?;
        }
        tmp.write_all(self.to_toml_string().as_bytes())
            .map_err(|e| io("write failed", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io("flushing to disk failed", e))?;
        // On error the temporary file is deleted when `PersistError` (which owns it) is dropped.
        tmp.persist(&target)
            .map_err(|e| io("renaming the temporary file over it failed", e.error))?;
        sync_dir(&dir).map_err(|e| {
            io(
                "the file was replaced but flushing its directory to disk failed",
                e,
            )
        })?;
        Ok(())
    }

    /// The value of a dotted key as plain text: strings without quotes, lists comma-separated
    /// (`cuda,mps,cpu`), numbers in decimal, booleans `true`/`false`. `environment.NAME` reads the
    /// environment table; a name that is not set there is [`Error::UnknownKey`].
    pub fn get(&self, key: &str) -> Result<String> {
        let h = &self.hardware;
        let value = match key {
            "general.first_run_complete" => self.general.first_run_complete.to_string(),
            "paths.datasets" => self.paths.datasets.clone(),
            "paths.models" => self.paths.models.clone(),
            "paths.generated" => self.paths.generated.clone(),
            "hardware.device" => h.device.clone(),
            "hardware.platform_priority" => self.kinds_text(),
            "hardware.memory_strategy" => h.memory_strategy.as_str().to_owned(),
            "hardware.memory_fraction" => h.memory_fraction.to_string(),
            "hardware.max_batch_size" => h.max_batch_size.to_string(),
            "hardware.strict" => h.strict.to_string(),
            "hardware.backend" => h.backend.clone(),
            _ => {
                return key
                    .strip_prefix("environment.")
                    .and_then(|name| self.environment.get(name))
                    .cloned()
                    .ok_or_else(|| unknown_key(key, &self.environment));
            }
        };
        Ok(value)
    }

    /// Sets a dotted key from plain text, parsed by the key's type: booleans accept
    /// `true/false/1/0/yes/no` (any case), lists are comma-separated and trimmed, numbers are decimal,
    /// strings and paths are taken exactly as given. `environment.NAME` sets an entry of the
    /// environment table (an empty value sets an empty string). On any error `self` is unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        match key.strip_prefix("environment.") {
            Some(name) => {
                check_env_entry(name, value)?;
                next.environment.insert(name.to_owned(), value.to_owned());
            }
            None => next.assign(key, Input::Text(value))?,
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Applies the environment overrides, read through `lookup` (so that callers and tests decide
    /// where the environment comes from). `SDA_DEVICE`, when set and not empty, replaces
    /// `hardware.device`; an invalid value is [`Error::InvalidValue`] naming `SDA_DEVICE`, never a
    /// silent fallback. On error `self` is unchanged.
    pub fn apply_env_overrides(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(device) = lookup(ENV_DEVICE).filter(|v| !v.is_empty()) {
            self.hardware.device = canonical_device(&device).map_err(|why| {
                Error::invalid_value(format!(
                    "invalid {ENV_DEVICE} environment variable {device:?}: {why}"
                ))
            })?;
        }
        Ok(())
    }

    /// The effective configuration of a process: the file named by `SDA_CONFIG` when it is set and not
    /// empty (an unreadable or invalid file is an error naming `SDA_CONFIG`), the defaults otherwise;
    /// then [`Config::apply_env_overrides`]. The environment is read through `lookup`.
    pub fn from_environment(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut config = match lookup(ENV_CONFIG).filter(|v| !v.is_empty()) {
            Some(path) => Config::load(&path)
                .map_err(|e| with_context(e, &format!("{ENV_CONFIG}={path}: ")))?,
            None => Config::default(),
        };
        config.apply_env_overrides(lookup)?;
        Ok(config)
    }

    /// [`Config::from_environment`] with the real process environment (a value that is not valid
    /// UTF-8 is read lossily, so it fails validation instead of being ignored).
    pub fn from_process_environment() -> Result<Config> {
        Config::from_environment(&|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// The config as a JSON object with the file's sections and native JSON types, for reports.
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.hardware;
        serde_json::json!({
            "general": { "first_run_complete": self.general.first_run_complete },
            "paths": {
                "datasets": self.paths.datasets,
                "models": self.paths.models,
                "generated": self.paths.generated,
            },
            "hardware": {
                "device": h.device,
                "platform_priority":
                    h.platform_priority.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "memory_strategy": h.memory_strategy.as_str(),
                "memory_fraction": h.memory_fraction,
                "max_batch_size": h.max_batch_size,
                "strict": h.strict,
                "backend": h.backend,
            },
            "environment": self.environment,
            "tiers": self.tiers.iter().map(recommend::tier_to_json).collect::<Vec<_>>(),
        })
    }
}

/// The file `save` replaces: `path` itself, or the file a symbolic link at `path` points to (renaming
/// over the link would turn it into a regular file and detach it from its target).
fn resolve_save_target(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::io(format!(
                "cannot save config file {}: it is a symbolic link that cannot be followed: {e}",
                path.display()
            ))
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Refuses when `target` exists and is not a valid config; returns the existing permissions to keep.
fn check_overwritable(target: &Path, shown: &Path) -> Result<Option<std::fs::Permissions>> {
    let metadata = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(format!(
                "cannot save config file {}: {e}",
                shown.display()
            )))
        }
    };
    if !metadata.is_file() {
        return Err(Error::io(format!(
            "refusing to overwrite {}: it is not a regular file",
            shown.display()
        )));
    }
    let refuse = |e: Error| {
        let m = format!(
            "refusing to overwrite {}: it does not parse ({}); fix or remove it",
            shown.display(),
            e.message()
        );
        match e.kind() {
            kind @ (ErrorKind::Io | ErrorKind::InvalidValue | ErrorKind::UnknownKey) => {
                Error::new(kind, m)
            }
            _ => Error::parse(m),
        }
    };
    let bytes = read_config_file(target).map_err(|e| {
        Error::io(format!(
            "refusing to overwrite {}: cannot read it to check that it is a valid config: {e}",
            shown.display()
        ))
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse(Error::parse("it is not UTF-8 text".to_owned())))?;
    Config::from_toml_str(&text).map_err(refuse)?;
    Ok(Some(metadata.permissions()))
}

/// The largest configuration file libsda reads; real ones are a few KiB.
const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;

/// Reads a configuration file, which must be a regular file of at most [`MAX_CONFIG_FILE_BYTES`]. A
/// path naming a FIFO would otherwise block the host until some writer appears (it is opened without
/// blocking and refused), and one naming a device such as `/dev/zero` would be read until memory runs
/// out.
fn read_config_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is larger than {} MiB, which no configuration is",
                MAX_CONFIG_FILE_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Flushes a directory entry change (the rename) to disk. Filesystems that cannot sync a directory
/// say so with EINVAL; there is nothing more to do on them.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preference::ACCEPTED_PREFERENCES;
    use std::collections::HashMap;

    fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn defaults_match_the_schema_and_key_docs() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.hardware.budget_fraction(), 0.75);
        assert_eq!(c.hardware.preference().unwrap(), Preference::Auto);
        assert_eq!(Config::keys().len(), KEYS.len());
        for doc in KEYS {
            assert_eq!(c.get(doc.name).unwrap(), doc.default, "{}", doc.name);
            assert!(!doc.description.is_empty());
        }
        assert_eq!(Config::from_toml_str("").unwrap(), c);
    }

    #[test]
    fn defaults_round_trip_through_text() {
        let c = Config::default();
        let text = c.to_toml_string();
        assert!(text.starts_with("# libsda configuration."));
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn non_default_config_round_trips() {
        let mut c = Config::default();
        c.set("general.first_run_complete", "yes").unwrap();
        c.set("paths.datasets", "../shared data/\"quoted\"\\back")
            .unwrap();
        c.set("paths.models", "/abs/models").unwrap();
        c.set("paths.generated", "./gen/ünïcode").unwrap();
        c.set("hardware.device", "CUDA:1").unwrap();
        c.set("hardware.platform_priority", " cpu , cuda ").unwrap();
        c.set("hardware.memory_strategy", "Custom").unwrap();
        c.set("hardware.memory_fraction", "1").unwrap();
        c.set("hardware.max_batch_size", "1048576").unwrap();
        c.set("hardware.strict", "TRUE").unwrap();
        c.set("hardware.backend", "lib/libsda_torch.so").unwrap();
        c.set(
            "environment.PYTORCH_CUDA_ALLOC_CONF",
            "expandable_segments:True",
        )
        .unwrap();
        c.set("environment.EMPTY", "").unwrap();
        let back = Config::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.hardware.budget_fraction(), 1.0);
        assert_eq!(back.get("hardware.device").unwrap(), "cuda:1");
        assert_eq!(back.get("environment.EMPTY").unwrap(), "");
        let json = back.to_json();
        assert_eq!(json["hardware"]["platform_priority"][0], "cpu");
        assert_eq!(json["hardware"]["strict"], true);
        assert_eq!(json["environment"]["EMPTY"], "");
    }

    #[test]
    fn every_key_gets_and_sets_valid_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("general.first_run_complete", "1", "true"),
            ("general.first_run_complete", "No", "false"),
            ("paths.datasets", "d", "d"),
            ("paths.models", " spaced ", " spaced "),
            ("paths.generated", "g/../h", "g/../h"),
            ("hardware.device", " Cpu ", "cpu"),
            ("hardware.device", "cuda:3", "cuda:3"),
            ("hardware.device", "mps", "mps"),
            ("hardware.platform_priority", "mps", "mps"),
            ("hardware.platform_priority", "cpu,mps,cuda", "cpu,mps,cuda"),
            ("hardware.memory_strategy", " AGGRESSIVE", "aggressive"),
            ("hardware.memory_fraction", "0.05", "0.05"),
            ("hardware.memory_fraction", "0.5", "0.5"),
            ("hardware.max_batch_size", "0", "0"),
            ("hardware.max_batch_size", " 64 ", "64"),
            ("hardware.strict", "yes", "true"),
            ("hardware.backend", "", ""),
            (
                "hardware.backend",
                "/opt/sda/libsda_torch.so",
                "/opt/sda/libsda_torch.so",
            ),
            ("environment.SDA_X_1", "v=1", "v=1"),
            ("environment._under", "", ""),
        ];
        for (key, input, expected) in cases {
            let mut c = Config::default();
            c.set(key, input)
                .unwrap_or_else(|e| panic!("{key}={input}: {e}"));
            assert_eq!(c.get(key).unwrap(), *expected, "{key}={input}");
        }
    }

    #[test]
    fn every_key_rejects_invalid_values_and_stays_unchanged() {
        let cases: &[(&str, &str)] = &[
            ("general.first_run_complete", "maybe"),
            ("general.first_run_complete", ""),
            ("paths.datasets", ""),
            ("paths.models", "a\0b"),
            ("paths.generated", ""),
            ("hardware.device", "tpu"),
            ("hardware.device", "cuda:x"),
            ("hardware.device", ""),
            ("hardware.platform_priority", ""),
            ("hardware.platform_priority", "cuda,tpu"),
            ("hardware.platform_priority", "cuda,cpu,cuda"),
            ("hardware.platform_priority", "cuda,,cpu"),
            ("hardware.memory_strategy", "greedy"),
            ("hardware.memory_fraction", "0.01"),
            ("hardware.memory_fraction", "1.5"),
            ("hardware.memory_fraction", "NaN"),
            ("hardware.memory_fraction", "inf"),
            ("hardware.memory_fraction", "three quarters"),
            ("hardware.max_batch_size", "-1"),
            ("hardware.max_batch_size", "1048577"),
            ("hardware.max_batch_size", "1.5"),
            ("hardware.strict", "2"),
            ("hardware.backend", "x\0"),
        ];
        for (key, input) in cases {
            let mut c = Config::default();
            let err = c.set(key, input).unwrap_err();
            assert!(
                err.kind() == ErrorKind::InvalidValue,
                "{key}={input:?}: {err:?}"
            );
            assert!(err.message().contains(key), "{key}: {err}");
            assert_eq!(c, Config::default(), "{key}={input:?} changed the config");
        }
        let err = Config::default()
            .set("hardware.memory_fraction", "2")
            .unwrap_err();
        assert!(
            err.message().contains("0.05") && err.message().contains("\"2\""),
            "{err}"
        );
        for (name, value) in [("1BAD", "x"), ("BAD-NAME", "x"), ("", "x"), ("OK", "a\0")] {
            let mut c = Config::default();
            let err = c.set(&format!("environment.{name}"), value).unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidValue, "{name}: {err:?}");
            assert!(c.environment.is_empty());
        }
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let mut c = Config::default();
        let err = c.set("hardware.devcie", "cpu").unwrap_err();
        assert!(err.kind() == ErrorKind::UnknownKey);
        assert!(err.message().contains("\"hardware.devcie\""), "{err}");
        assert!(err.message().contains("platform_priority"), "{err}");
        let err = c.get("paths.device").unwrap_err();
        assert!(
            err.message().contains("did you mean hardware.device?"),
            "{err}"
        );
        let err = c.get("hardware").unwrap_err();
        assert!(err.message().contains("is a section"), "{err}");
        let err = c.get("environment.NOT_SET").unwrap_err();
        assert!(err.kind() == ErrorKind::UnknownKey, "{err:?}");
        let err = c.set("gpu.device", "cpu").unwrap_err();
        assert!(err.message().contains("\"gpu.device\""), "{err}");
        assert!(err.message().contains("known sections"), "{err}");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_keys_in_files_are_rejected() {
        let err = Config::from_toml_str("[hardware]\ndevcie = \"cpu\"\n").unwrap_err();
        assert!(err.kind() == ErrorKind::UnknownKey, "{err:?}");
        assert!(err.message().contains("\"hardware.devcie\""), "{err}");
        assert!(err.message().contains("memory_strategy"), "{err}");

        let err = Config::from_toml_str("device = \"cpu\"\n").unwrap_err();
        assert!(err.kind() == ErrorKind::UnknownKey, "{err:?}");
        assert!(err.message().contains("\"device\""), "{err}");
        assert!(
            err.message().contains("did you mean hardware.device?"),
            "{err}"
        );

        let err = Config::from_toml_str("[extra]\nx = 1\n").unwrap_err();
        assert!(err.message().contains("\"extra\""), "{err}");

        let err = Config::from_toml_str("[general.nested]\nx = 1\n").unwrap_err();
        assert!(err.message().contains("\"general.nested\""), "{err}");
    }

    #[test]
    fn wrong_types_in_files_name_key_value_and_expectation() {
        let cases = [
            (
                "[general]\nfirst_run_complete = \"yes\"",
                "general.first_run_complete",
            ),
            ("[paths]\nmodels = 3", "paths.models"),
            ("[hardware]\ndevice = \"tpu\"", "hardware.device"),
            (
                "[hardware]\nplatform_priority = \"cuda\"",
                "hardware.platform_priority",
            ),
            (
                "[hardware]\nplatform_priority = [\"cuda\", 1]",
                "hardware.platform_priority",
            ),
            (
                "[hardware]\nplatform_priority = []",
                "hardware.platform_priority",
            ),
            (
                "[hardware]\nplatform_priority = [\"cpu\", \"CPU\"]",
                "hardware.platform_priority",
            ),
            (
                "[hardware]\nmemory_fraction = 0.0",
                "hardware.memory_fraction",
            ),
            (
                "[hardware]\nmemory_fraction = \"0.5\"",
                "hardware.memory_fraction",
            ),
            ("[hardware]\nmax_batch_size = -4", "hardware.max_batch_size"),
            (
                "[hardware]\nmax_batch_size = 64.0",
                "hardware.max_batch_size",
            ),
            (
                "[hardware]\nmax_batch_size = 2000000",
                "hardware.max_batch_size",
            ),
            ("[hardware]\nstrict = 1", "hardware.strict"),
            ("[environment]\nX = 1", "environment.X"),
            ("[environment]\n\"A B\" = \"x\"", "A B"),
            ("hardware = 5", "hardware"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml_str(text).unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidValue, "{text}: {err:?}");
            assert!(err.message().contains(key), "{text}: {err}");
        }
        let err = Config::from_toml_str("[hardware]\nmax_batch_size = -4").unwrap_err();
        assert!(
            err.message().contains("-4") && err.message().contains("1048576"),
            "{err}"
        );
        let c = Config::from_toml_str("[hardware]\nmemory_fraction = 1").unwrap();
        assert_eq!(c.hardware.memory_fraction, 1.0);
    }

    #[test]
    fn malformed_toml_is_a_parse_error_with_position() {
        let err = Config::from_toml_str("[general]\nfirst_run_complete = = true\n").unwrap_err();
        assert!(err.kind() == ErrorKind::Parse, "{err:?}");
        assert!(err.message().contains("line 2"), "{err}");
        assert!(err.message().contains("column"), "{err}");
        assert!(!err.message().contains('\n'), "{err}");
        let err = Config::from_toml_str("[hardware\n").unwrap_err();
        assert!(err.kind() == ErrorKind::Parse, "{err:?}");
        let err = Config::from_toml_str("[hardware]\nstrict = true\nstrict = false\n").unwrap_err();
        assert!(err.kind() == ErrorKind::Parse, "{err:?}");
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
    }

    #[test]
    fn validate_catches_invalid_public_fields() {
        let mut c = Config::default();
        c.hardware.memory_fraction = 0.0;
        assert!(c
            .validate()
            .unwrap_err()
            .message()
            .contains("memory_fraction"));
        let mut c = Config::default();
        c.hardware.platform_priority.clear();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.hardware.device = "gpu".into();
        assert!(c
            .validate()
            .unwrap_err()
            .message()
            .contains("hardware.device"));
        let mut c = Config::default();
        c.environment.insert("BAD NAME".into(), "x".into());
        assert!(c.validate().is_err());
        let dir = tempfile::tempdir().unwrap();
        let err = c.save(dir.path().join("c.toml")).unwrap_err();
        assert!(err.message().contains("not saving"), "{err}");
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn strategies_have_their_fractions() {
        assert_eq!(MemoryStrategy::Conservative.fraction(), 0.60);
        assert_eq!(MemoryStrategy::Balanced.fraction(), 0.75);
        assert_eq!(MemoryStrategy::Aggressive.fraction(), 0.90);
        let mut h = Hardware {
            memory_strategy: MemoryStrategy::Custom,
            memory_fraction: 0.3,
            ..Hardware::default()
        };
        assert_eq!(h.budget_fraction(), 0.3);
        h.memory_strategy = MemoryStrategy::Aggressive;
        assert_eq!(h.budget_fraction(), 0.90);
        for s in MemoryStrategy::ALL {
            assert_eq!(MemoryStrategy::parse(&s.to_string()).unwrap(), s);
        }
        assert!(MemoryStrategy::parse("all").is_err());
    }

    #[test]
    fn save_and_load_round_trip_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        let mut c = Config::default();
        c.set("hardware.device", "cpu").unwrap();
        c.set("environment.OMP_NUM_THREADS", "4").unwrap();
        c.save(&path).unwrap();
        assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        assert_eq!(Config::load(&path).unwrap(), c);
        // A second save replaces the valid file, again leaving nothing else behind.
        c.set("hardware.strict", "true").unwrap();
        c.save(&path).unwrap();
        assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        assert_eq!(Config::load(&path).unwrap(), c);
    }

    #[test]
    fn relative_paths_are_preserved_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        let text = "[paths]\ndatasets = './d/../x'\nmodels = \"models\"\ngenerated = 'out//gen/'\n";
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.paths.datasets, "./d/../x");
        assert_eq!(c.paths.models, "models");
        assert_eq!(c.paths.generated, "out//gen/");
        c.save(&path).unwrap();
        let again = Config::load(&path).unwrap();
        assert_eq!(again.get("paths.datasets").unwrap(), "./d/../x");
        assert_eq!(again.get("paths.generated").unwrap(), "out//gen/");
        assert_eq!(again, c);
    }

    #[test]
    fn save_refuses_to_overwrite_a_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        for broken in [
            &b"[hardware\ndevice = 'cpu'\n"[..],
            b"[hardware]\ndevice = 'tpu'\n",
            b"[hardware]\ndevcie = 'cpu'\n",
            b"\xff\xfe not utf-8",
        ] {
            std::fs::write(&path, broken).unwrap();
            let err = Config::default().save(&path).unwrap_err();
            assert!(err.message().starts_with("refusing to overwrite"), "{err}");
            assert!(err.message().contains("fix or remove it"), "{err}");
            assert!(err.message().contains(&path.display().to_string()), "{err}");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Parse | ErrorKind::InvalidValue | ErrorKind::UnknownKey
                ),
                "{err:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), broken);
            assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        }
        // An empty file is a valid (all-default) config and may be replaced.
        std::fs::write(&path, "").unwrap();
        Config::default().save(&path).unwrap();
    }

    #[test]
    fn save_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no/such/dir/sda.toml");
        let err = Config::default().save(&missing_dir).unwrap_err();
        assert!(err.kind() == ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("does not exist"), "{err}");
        let err = Config::default().save(dir.path()).unwrap_err();
        assert!(err.message().contains("not a regular file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn save_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut c = Config::default();
        c.set("hardware.device", "mps").unwrap();
        c.save(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(Config::load(&real).unwrap(), c);
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            dir_entries(dir.path()),
            vec!["link.toml".to_owned(), "real.toml".to_owned()]
        );
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(err.kind() == ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("absent.toml"), "{err}");
        std::fs::write(&path, "[hardware]\nstrict = maybe\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.kind() == ErrorKind::Parse, "{err:?}");
        assert!(err.message().contains("absent.toml") && err.message().contains("line 2"));
    }

    #[test]
    fn sda_device_overrides_the_config() {
        let mut c = Config::default();
        c.apply_env_overrides(&lookup_from(&[("SDA_DEVICE", "CPU")]))
            .unwrap();
        assert_eq!(c.hardware.device, "cpu");
        // Empty means unset.
        c.apply_env_overrides(&lookup_from(&[("SDA_DEVICE", "")]))
            .unwrap();
        assert_eq!(c.hardware.device, "cpu");
        for bad in ["tpu", " ", "cuda:x"] {
            let err = c
                .apply_env_overrides(&lookup_from(&[("SDA_DEVICE", bad)]))
                .unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidValue, "{err:?}");
            assert!(err.message().contains("SDA_DEVICE"), "{err}");
            assert!(err.message().contains(ACCEPTED_PREFERENCES), "{err}");
            assert_eq!(c.hardware.device, "cpu");
        }
    }

    const TWO_CUDA_TIERS: &str = "[[tiers]]\ndevice = \"cuda\"\nmin_memory_gb = 0\n\
        max_memory_gb = 20\nbatch_size = 64\ngradient_checkpointing = true\nblocks = 8\n\
        channels = 64\nlabel = \"small cards\"\n\n[[tiers]]\ndevice = \"cuda\"\n\
        min_memory_gb = 20\nbatch_size = 128\ngradient_checkpointing = false\nblocks = 12\n\
        channels = 96\n";

    #[test]
    fn tier_overrides_round_trip_through_text_and_json() {
        let c = Config::from_toml_str(TWO_CUDA_TIERS).unwrap();
        assert_eq!(c.tiers.len(), 2);
        assert_eq!(c.tiers[0].max_memory_gb, Some(20.0));
        assert_eq!(c.tiers[1].max_memory_gb, None);
        assert_eq!(c.tiers[0].label, "small cards");
        let text = c.to_toml_string();
        assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
        let json = c.to_json();
        assert_eq!(json["tiers"][1]["batch_size"], 128);
        assert_eq!(json["tiers"][1]["max_memory_gb"], serde_json::Value::Null);
        // Saved and loaded from a file, with other settings beside it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        let mut c = c;
        c.set("environment.X", "1").unwrap();
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
        // The default config writes no tier but says how to add them.
        let default_text = Config::default().to_toml_string();
        assert!(default_text.contains("# [[tiers]]"), "{default_text}");
        assert!(Config::from_toml_str(&default_text)
            .unwrap()
            .tiers
            .is_empty());
    }

    #[test]
    fn invalid_tier_tables_name_the_tier_and_the_problem() {
        let tier = |device: &str, min: &str, max: Option<&str>| {
            format!(
                "[[tiers]]\ndevice = \"{device}\"\nmin_memory_gb = {min}\n{}batch_size = 8\n\
                 gradient_checkpointing = false\nblocks = 1\nchannels = 1\n",
                max.map(|m| format!("max_memory_gb = {m}\n"))
                    .unwrap_or_default()
            )
        };
        let cases: Vec<(String, &[&str])> = vec![
            // A gap between 16 and 20 GB.
            (
                tier("cuda", "0", Some("16")) + &tier("cuda", "20", None),
                &["tiers[1]", "16 to 20 GB have no tier"],
            ),
            // Overlap.
            (
                tier("cuda", "0", Some("24")) + &tier("cuda", "16", None),
                &["tiers[1]", "overlap"],
            ),
            // Not sorted.
            (
                tier("cuda", "16", None) + &tier("cuda", "0", Some("16")),
                &["tiers[0]", "must start at 0"],
            ),
            // First tier not at 0.
            (tier("mps", "8", None), &["tiers[0]", "must start at 0"]),
            // Last tier bounded.
            (
                tier("cpu", "0", Some("64")),
                &["tiers[0]", "leave out its max_memory_gb"],
            ),
            // Open-ended tier in the middle.
            (
                tier("cuda", "0", None) + &tier("cuda", "16", None),
                &["tiers[0]", "open-ended", "sorted"],
            ),
            // max not above min.
            (tier("cuda", "0", Some("0")), &["tiers[0].max_memory_gb"]),
            (tier("cuda", "-1", None), &["tiers[0].min_memory_gb"]),
            (
                tier("tpu", "0", None),
                &["tiers[0].device", "cpu, cuda, mps"],
            ),
            (
                "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\nbatch_size = 0\n\
                 gradient_checkpointing = false\nblocks = 1\nchannels = 1\n"
                    .to_string(),
                &["tiers[0].batch_size", "from 1"],
            ),
            (
                "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\nbatch_size = 1\n\
                 gradient_checkpointing = false\nblocks = 1\n"
                    .to_string(),
                &["tiers[0] has no channels"],
            ),
            (
                "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\nbatch_size = 1\n\
                 gradient_checkpointing = \"no\"\nblocks = 1\nchannels = 1\n"
                    .to_string(),
                &["tiers[0].gradient_checkpointing"],
            ),
            ("[tiers]\nx = 1\n".to_string(), &["tiers", "[[tiers]]"]),
        ];
        for (text, needles) in cases {
            let err = Config::from_toml_str(&text).unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidValue, "{text}: {err:?}");
            for needle in needles {
                assert!(err.message().contains(needle), "{needle}: {err}");
            }
        }
        let err = Config::from_toml_str(&(tier("cpu", "0", None) + "speed = 1\n")).unwrap_err();
        assert!(err.kind() == ErrorKind::UnknownKey, "{err:?}");
        assert!(err.message().contains("\"tiers[0].speed\""), "{err}");
        // Tiers of different kinds do not interfere with each other.
        let mixed =
            tier("cuda", "0", Some("16")) + &tier("cpu", "0", None) + &tier("cuda", "16", None);
        assert_eq!(Config::from_toml_str(&mixed).unwrap().tiers.len(), 3);
    }

    #[test]
    fn tiers_are_not_keys_and_invalid_public_tiers_are_not_saved() {
        let c = Config::from_toml_str(TWO_CUDA_TIERS).unwrap();
        for key in ["tiers", "tiers.0.batch_size"] {
            let err = c.get(key).unwrap_err();
            assert!(err.kind() == ErrorKind::UnknownKey, "{err:?}");
            assert!(err.message().contains("[[tiers]]"), "{err}");
            let err = c.clone().set(key, "1").unwrap_err();
            assert!(err.message().contains("edit it in the file"), "{err}");
        }
        let mut broken = c.clone();
        broken.tiers[1].min_memory_gb = 30.0;
        let err = broken.validate().unwrap_err();
        assert!(err.message().contains("tiers[1]"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(broken.save(dir.path().join("c.toml")).is_err());
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn sda_config_names_the_file_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        std::fs::write(&path, "[hardware]\ndevice = \"mps\"\nstrict = true\n").unwrap();
        let p = path.to_str().unwrap();

        let c = Config::from_environment(&lookup_from(&[("SDA_CONFIG", p)])).unwrap();
        assert_eq!(c.hardware.device, "mps");
        assert!(c.hardware.strict);

        let c =
            Config::from_environment(&lookup_from(&[("SDA_CONFIG", p), ("SDA_DEVICE", "cuda:0")]))
                .unwrap();
        assert_eq!(c.hardware.device, "cuda:0");
        assert!(c.hardware.strict);

        let c = Config::from_environment(&lookup_from(&[("SDA_CONFIG", "")])).unwrap();
        assert_eq!(c, Config::default());
        let c = Config::from_environment(&lookup_from(&[])).unwrap();
        assert_eq!(c, Config::default());

        let missing = dir.path().join("missing.toml");
        let err =
            Config::from_environment(&lookup_from(&[("SDA_CONFIG", missing.to_str().unwrap())]))
                .unwrap_err();
        assert!(err.kind() == ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("SDA_CONFIG") && err.message().contains("missing.toml"));
    }
}
