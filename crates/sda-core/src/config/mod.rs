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
//!
//! Where things are: the [`Config`] type and its text API here; the key table, which every per-key
//! operation walks, in `keys.rs` (the one place to add a key) over the value types of `value.rs`; file
//! I/O and the atomic save in `file.rs`; environment overrides and the `[environment]` table in
//! `env.rs`. The `[[tiers]]` tables are read and written by [`crate::tiers`].

mod env;
mod file;
mod keys;
mod value;

// A tier's batch size has the same limit, and the config reads tier tables: the limit lives with
// them so that the tiers need nothing of the config.
pub use crate::tiers::MAX_BATCH_SIZE;
pub use env::{ENV_CONFIG, ENV_DEVICE};
pub use keys::{Key, KEYS};

use crate::error::{Error, ErrorKind, Result};
use crate::preference::{DeviceKind, Preference};
use crate::strategy::MemoryStrategy;
use crate::tiers::{self, Tier};
use std::collections::BTreeMap;
use value::{toml_type_name, Input};

/// Lowest accepted `hardware.memory_fraction`: below 5 % no useful workload fits, so a smaller value
/// is almost certainly a typo (`0.0075` for `0.75`).
pub const MIN_MEMORY_FRACTION: f64 = 0.05;
/// Highest accepted `hardware.memory_fraction` (the whole device).
pub const MAX_MEMORY_FRACTION: f64 = 1.0;

/// The array of tables (`[[tiers]]`) that overrides the auto-configuration tiers; not a section of
/// keys, so `get`/`set` cannot reach it and the file is where it is edited.
const TIERS: &str = "tiers";

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
    /// Directory holding the libtorch the backend uses (its `libtorch_cpu`); empty means "found at
    /// run time" (see `crate::libtorch_discovery`). `SDA_LIBTORCH` takes precedence.
    pub libtorch: String,
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
            libtorch: String::new(),
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
    /// (empty: the built-in table, [`tiers::builtin_tiers`]). Checked by
    /// [`tiers::validate_tiers`]: sorted, starting at 0 GB, no gaps, no overlaps.
    pub tiers: Vec<Tier>,
}

/// The sections of the file, in the order they are written: those of the key table, then
/// `[environment]`.
fn sections() -> Vec<&'static str> {
    let mut sections = keys::key_sections();
    sections.push(env::SECTION);
    sections
}

/// Keys of one section, without the section prefix.
fn section_keys(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|k| k.name.strip_prefix(section)?.strip_prefix('.'))
        .collect()
}

/// The UnknownKey error for `key`, naming it, listing what the section knows and suggesting the
/// right section when only the section was wrong.
fn unknown_key(key: &str, environment: &BTreeMap<String, String>) -> Error {
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
    let sections = sections();
    let message = if section == TIERS {
        format!(
            "\"{key}\" cannot be read or set as a key: [[tiers]] is a list of tables that replaces \
             the built-in auto-configuration tiers of its device kind; edit it in the file (`sda \
             recommend --tiers` prints the table in force)"
        )
    } else if section == env::SECTION {
        env::unknown_entry_message(key, leaf, environment)
    } else if sections.contains(&section) {
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
            sections.join(", ")
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

impl Config {
    /// Every known dotted key (the `[environment]` table excluded), in file order.
    pub fn keys() -> Vec<String> {
        KEYS.iter().map(|k| k.name.to_owned()).collect()
    }

    /// Checks every invariant. Values coming through [`Config::from_toml_str`] and [`Config::set`] are
    /// already checked; this also catches invalid values written into the public fields directly, and
    /// [`Config::save`] runs it so that such a value never reaches a file.
    pub fn validate(&self) -> Result<()> {
        for key in KEYS {
            key.slot.validate(self, key.name)?;
        }
        for (name, value) in &self.environment {
            env::check_entry(name, value)?;
        }
        tiers::validate_tiers(&self.tiers)?;
        Ok(())
    }

    /// Stores one key's value after checking its type and range.
    fn assign(&mut self, key: &str, input: Input<'_>) -> Result<()> {
        match keys::find(key) {
            Some(k) => k.slot.assign(self, key, input),
            None => Err(unknown_key(key, &self.environment)),
        }
    }

    /// Parses a config from TOML text, starting from the defaults. Syntax errors are
    /// [`ErrorKind::Parse`] with line and column; a wrong type or an out-of-range value is
    /// [`ErrorKind::InvalidValue`] naming the dotted key, the value and what is accepted; an unknown
    /// section or key is [`ErrorKind::UnknownKey`] naming the dotted key and the known ones.
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let table: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
        let mut config = Config::default();
        let sections = sections();
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
                        .push(tiers::tier_from_toml(&format!("{TIERS}[{i}]"), item)?);
                }
                continue;
            }
            if !sections.contains(&section.as_str()) {
                return Err(unknown_key(section, &config.environment));
            }
            let entries = value.as_table().ok_or_else(|| {
                Error::invalid_value(format!(
                    "invalid value {value} for {section}: expected a table ([{section}]), got {}",
                    toml_type_name(value)
                ))
            })?;
            if section == env::SECTION {
                env::read_table(&mut config, entries)?;
                continue;
            }
            for (name, item) in entries {
                config.assign(&format!("{section}.{name}"), Input::Toml(item))?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML text that [`Config::from_toml_str`] reads back to an equal config: a short
    /// header, then every section and key with its one-line description as a comment.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from(
            "# libsda configuration.\n\
             # Every key is optional (a missing key takes its built-in default); unknown keys are \
             rejected.\n",
        );
        let mut current_section = "";
        for key in KEYS {
            let (section, leaf) = key.section_and_leaf();
            if section != current_section {
                out.push_str(&format!("\n[{section}]\n"));
                current_section = section;
            }
            out.push_str(&format!("# {}\n", key.description));
            out.push_str(&format!("{leaf} = {}\n", key.slot.toml(self)));
        }
        out.push_str(&env::toml_section(&self.environment));
        out.push_str(
            "\n# [[tiers]] tables replace the built-in auto-configuration tiers of their device kind\n\
             # (device, min_memory_gb, max_memory_gb, batch_size, gradient_checkpointing, blocks,\n\
             # channels, label); `sda recommend --tiers` prints the table in force.\n",
        );
        for tier in &self.tiers {
            out.push('\n');
            out.push_str(&tiers::tier_to_toml(tier));
        }
        out
    }

    /// The value of a dotted key as plain text: strings without quotes, lists comma-separated
    /// (`cuda,mps,cpu`), numbers in decimal, booleans `true`/`false`. `environment.NAME` reads the
    /// environment table; a name that is not set there is [`ErrorKind::UnknownKey`].
    pub fn get(&self, key: &str) -> Result<String> {
        if let Some(k) = keys::find(key) {
            return Ok(k.slot.text(self));
        }
        env::entry_name(key)
            .and_then(|name| self.environment.get(name))
            .cloned()
            .ok_or_else(|| unknown_key(key, &self.environment))
    }

    /// Sets a dotted key from plain text, parsed by the key's type: booleans accept
    /// `true/false/1/0/yes/no` (any case), lists are comma-separated and trimmed, numbers are decimal,
    /// strings and paths are taken exactly as given. `environment.NAME` sets an entry of the
    /// environment table (an empty value sets an empty string). On any error `self` is unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        match env::entry_name(key) {
            Some(name) => {
                env::check_entry(name, value)?;
                next.environment.insert(name.to_owned(), value.to_owned());
            }
            None => next.assign(key, Input::Text(value))?,
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The config as a JSON object with the file's sections and native JSON types, for reports.
    pub fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for key in KEYS {
            let (section, leaf) = key.section_and_leaf();
            if let serde_json::Value::Object(entries) = root
                .entry(section)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
            {
                entries.insert(leaf.to_owned(), key.slot.json(self));
            }
        }
        root.insert(env::SECTION.to_owned(), serde_json::json!(self.environment));
        root.insert(
            TIERS.to_owned(),
            self.tiers.iter().map(tiers::tier_to_json).collect(),
        );
        serde_json::Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted: a save must leave no temporary file behind.
    pub(super) fn dir_entries(dir: &std::path::Path) -> Vec<String> {
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
}
