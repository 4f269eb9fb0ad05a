//! The key table: every key of `[general]`, `[paths]` and `[hardware]`, with its type, default,
//! accepted values, documentation, its field in [`Config`](super::Config) and its check.
//!
//! This is the one place a key is defined. The key list, `get`/`set`, file parsing, the TOML text
//! (order, sections and comments), the JSON form and validation all walk [`KEYS`], so adding a key is
//! one entry here (plus its field in [`Config`](super::Config) with its default, and a check when its
//! values have a range). The unit test `every_key_round_trips_through_toml_json_get_and_set` walks
//! the table, so a new entry is tested without writing a test for it.

use super::value::{
    any_value, Bool, DeviceKinds, Field, Float, Integer, Path, Slot, Strategy, Text,
};
use super::{MAX_MEMORY_FRACTION, MIN_MEMORY_FRACTION};
use crate::preference::{DeviceKind, Preference, ACCEPTED_PREFERENCES};
use crate::strategy::ACCEPTED_STRATEGIES;
use crate::tiers::MAX_BATCH_SIZE;
use std::fmt;

/// One configuration key: its documentation (for the CLI, generated docs and the comments of a
/// written file) and, privately, how its value is read, written and checked.
#[derive(Clone, Copy)]
pub struct Key {
    /// Dotted key, e.g. `hardware.device`.
    pub name: &'static str,
    /// The built-in default, in the plain-text form [`Config::get`](super::Config::get) returns.
    pub default: &'static str,
    /// A valid value other than the default, in `get`'s form: for documentation, and for the test
    /// that walks the table.
    pub example: &'static str,
    /// The accepted values in words, e.g. `a number from 0.05 to 1.0`.
    pub accepted: &'static str,
    /// One line saying what the key does; written above the key in a saved file.
    pub description: &'static str,
    /// The field, type and check.
    pub(super) slot: &'static dyn Slot,
}

impl Key {
    /// Value type as a user would write it: `bool`, `string`, `path`, `list`, `float`, `integer`.
    pub fn value_type(&self) -> &'static str {
        self.slot.value_type()
    }

    /// The section (`hardware`) and the name within it (`device`).
    pub fn section_and_leaf(&self) -> (&'static str, &'static str) {
        self.name.split_once('.').unwrap_or(("", self.name))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("value_type", &self.value_type())
            .field("default", &self.default)
            .field("example", &self.example)
            .field("accepted", &self.accepted)
            .field("description", &self.description)
            .finish()
    }
}

/// A key is known by its name: there is one entry per name.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.name == other.name
    }
}

impl Eq for Key {}

/// A [`Field`] of `$type` at `config.$path`, with `$check`.
macro_rules! field {
    ($type:ty, $($path:ident).+, $check:expr) => {
        &Field::<$type> {
            get: |c| &c.$($path).+,
            get_mut: |c| &mut c.$($path).+,
            check: $check,
        }
    };
}

/// Every known key (the free `[environment]` table excluded), in file order. Sections appear in the
/// file, in the JSON and in an unknown key's list of known sections in the order of their first key
/// here, and a section's keys must be next to each other.
pub const KEYS: &[Key] = &[
    Key {
        name: "general.first_run_complete",
        default: "false",
        example: "true",
        accepted: "true or false (set also takes 1, 0, yes, no)",
        description: "set once the application's first-run setup has finished",
        slot: field!(Bool, general.first_run_complete, any_value),
    },
    Key {
        name: "paths.datasets",
        default: "data/datasets",
        example: "/srv/audio/datasets",
        accepted: "a directory; relative paths are kept relative",
        description: "directory of the datasets (kept as written; relative stays relative)",
        slot: field!(Path, paths.datasets, required_path),
    },
    Key {
        name: "paths.models",
        default: "data/models",
        example: "../models",
        accepted: "a directory; relative paths are kept relative",
        description: "directory of the models (kept as written; relative stays relative)",
        slot: field!(Path, paths.models, required_path),
    },
    Key {
        name: "paths.generated",
        default: "data/generated",
        example: "out/generated",
        accepted: "a directory; relative paths are kept relative",
        description: "directory for generated output (kept as written; relative stays relative)",
        slot: field!(Path, paths.generated, required_path),
    },
    Key {
        name: "hardware.device",
        default: "auto",
        example: "cuda:1",
        accepted: ACCEPTED_PREFERENCES,
        description: "device preference: auto, cpu, cuda, cuda:N or mps (SDA_DEVICE overrides it)",
        slot: field!(Text, hardware.device, canonical_device),
    },
    Key {
        name: "hardware.platform_priority",
        default: "cuda,mps,cpu",
        example: "cpu,cuda",
        accepted: "cuda, mps and cpu in any order, each at most once, at least one",
        description: "order in which `auto` tries device kinds (cuda, mps, cpu; no duplicates)",
        slot: field!(DeviceKinds, hardware.platform_priority, check_priority),
    },
    Key {
        name: "hardware.memory_strategy",
        default: "balanced",
        example: "custom",
        accepted: ACCEPTED_STRATEGIES,
        description: "memory budget: conservative 60 %, balanced 75 %, aggressive 90 %, custom",
        slot: field!(Strategy, hardware.memory_strategy, any_value),
    },
    Key {
        name: "hardware.memory_fraction",
        default: "0.75",
        example: "0.5",
        accepted: "a number from 0.05 to 1.0",
        description: "budget fraction from 0.05 to 1.0, used only when memory_strategy = custom",
        slot: field!(Float, hardware.memory_fraction, check_fraction),
    },
    Key {
        name: "hardware.max_batch_size",
        default: "0",
        example: "256",
        accepted: "an integer from 0 to 1048576 (0 = not probed yet)",
        description: "largest batch found by the last probe (0 to 1048576; 0 = not probed yet)",
        slot: field!(
            Integer<MAX_BATCH_SIZE>,
            hardware.max_batch_size,
            check_batch
        ),
    },
    Key {
        name: "hardware.strict",
        default: "false",
        example: "true",
        accepted: "true or false (set also takes 1, 0, yes, no)",
        description: "true: a missing or broken device is an error instead of a CPU fallback",
        slot: field!(Bool, hardware.strict, any_value),
    },
    Key {
        name: "hardware.backend",
        default: "",
        example: "/opt/sda/lib/libsda_torch.so",
        accepted: "a path to libsda_torch, or empty",
        description: "path of the torch backend module; empty = the one beside libsda",
        slot: field!(Path, hardware.backend, optional_path),
    },
    Key {
        name: "hardware.libtorch",
        default: "",
        example: "/opt/libtorch/lib",
        accepted: "a directory holding libtorch_cpu, or empty",
        description:
            "libtorch for the torch backend (SDA_LIBTORCH wins); empty = found at run time",
        slot: field!(Path, hardware.libtorch, optional_path),
    },
];

/// The key named `name`.
pub(super) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The sections that hold keys, in file order.
pub(super) fn key_sections() -> Vec<&'static str> {
    let mut sections: Vec<&'static str> = Vec::new();
    for key in KEYS {
        let (section, _) = key.section_and_leaf();
        if !sections.contains(&section) {
            sections.push(section);
        }
    }
    sections
}

fn check_priority(kinds: Vec<DeviceKind>) -> Result<Vec<DeviceKind>, String> {
    if kinds.is_empty() {
        return Err("the list is empty; name at least one of cuda, mps, cpu".to_owned());
    }
    for (i, k) in kinds.iter().enumerate() {
        if kinds[..i].contains(k) {
            return Err(format!("{k} is listed twice; each kind may appear once"));
        }
    }
    Ok(kinds)
}

fn check_fraction(f: f64) -> Result<f64, String> {
    // `contains` is false for NaN, so NaN is rejected too.
    if (MIN_MEMORY_FRACTION..=MAX_MEMORY_FRACTION).contains(&f) {
        Ok(f)
    } else {
        Err(format!(
            "out of range; accepted: a number from {MIN_MEMORY_FRACTION:?} to {MAX_MEMORY_FRACTION:?}"
        ))
    }
}

fn check_batch(n: u64) -> Result<u64, String> {
    if n <= MAX_BATCH_SIZE {
        Ok(n)
    } else {
        Err(format!(
            "out of range; accepted: an integer from 0 to {MAX_BATCH_SIZE} (0 = not probed yet)"
        ))
    }
}

/// A path must be passable to the OS (no NUL byte); a data directory must also name something.
fn check_path(text: String, may_be_empty: bool) -> Result<String, String> {
    if text.is_empty() && !may_be_empty {
        return Err("the path is empty; give a directory such as \"data/models\"".to_owned());
    }
    if text.contains('\0') {
        return Err("a path cannot contain a NUL character".to_owned());
    }
    Ok(text)
}

fn required_path(text: String) -> Result<String, String> {
    check_path(text, false)
}

/// Empty means "the default place", which is why it is allowed.
fn optional_path(text: String) -> Result<String, String> {
    check_path(text, true)
}

/// The device preference in its canonical lower-case form, so that `CUDA:1` is stored as `cuda:1`.
pub(super) fn canonical_device(text: String) -> Result<String, String> {
    Preference::parse(&text)
        .map(|p| p.to_string())
        .map_err(|e| e.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    /// A JSON value in `get`'s plain-text form, to compare the two.
    fn json_as_text(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                items.iter().map(json_as_text).collect::<Vec<_>>().join(",")
            }
            other => other.to_string(),
        }
    }

    #[test]
    fn every_key_round_trips_through_toml_json_get_and_set() {
        let defaults = Config::default();
        for key in KEYS {
            let name = key.name;
            let (section, leaf) = key.section_and_leaf();
            assert_eq!(defaults.get(name).unwrap(), key.default, "{name}: default");
            assert_eq!(
                json_as_text(&defaults.to_json()[section][leaf]),
                key.default,
                "{name}: default in JSON"
            );

            let mut c = Config::default();
            c.set(name, key.example)
                .unwrap_or_else(|e| panic!("{name}: the example {:?}: {e}", key.example));
            let value = c.get(name).unwrap();
            assert_eq!(
                value, key.example,
                "{name}: the example is not in get's form"
            );
            assert_ne!(
                value, key.default,
                "{name}: the example must not be the default"
            );
            assert!(c.validate().is_ok(), "{name}");

            // get → set reads back to the same config.
            let mut again = Config::default();
            again.set(name, &value).unwrap();
            assert_eq!(again, c, "{name}: set(get()) changed the value");

            // TOML: the key sits in its section under its description and parses back.
            let text = c.to_toml_string();
            let line = format!("# {}\n{leaf} = ", key.description);
            let section_at = text.find(&format!("\n[{section}]\n")).unwrap();
            assert!(
                text[section_at..].contains(&line),
                "{name}: not in [{section}] with its comment:\n{text}"
            );
            let back = Config::from_toml_str(&text)
                .unwrap_or_else(|e| panic!("{name}: TOML does not read back: {e}\n{text}"));
            assert_eq!(back.get(name).unwrap(), value, "{name}: TOML");
            assert_eq!(back, c, "{name}: TOML changed another key");

            // JSON: native type, same value.
            let json = c.to_json();
            assert_eq!(json_as_text(&json[section][leaf]), value, "{name}: JSON");
            let expected_type = match key.value_type() {
                "bool" => json[section][leaf].is_boolean(),
                "string" | "path" => json[section][leaf].is_string(),
                "list" => json[section][leaf].is_array(),
                "float" | "integer" => json[section][leaf].is_number(),
                other => panic!("{name}: a value type without a JSON type: {other}"),
            };
            assert!(
                expected_type,
                "{name}: JSON {} for {}",
                json[section][leaf],
                key.value_type()
            );

            // A file that sets only this key reads to the same value.
            let only: toml::Table = text.parse().unwrap();
            let one = format!("[{section}]\n{leaf} = {}\n", only[section][leaf]);
            assert_eq!(Config::from_toml_str(&one).unwrap(), c, "{name}: {one}");
        }
    }

    #[test]
    fn the_table_is_consistent() {
        for (i, key) in KEYS.iter().enumerate() {
            let (section, leaf) = key.section_and_leaf();
            assert!(!section.is_empty() && !leaf.is_empty(), "{}", key.name);
            assert!(!leaf.contains('.'), "{}: one level of sections", key.name);
            assert!(
                !key.accepted.is_empty() && !key.description.is_empty(),
                "{}",
                key.name
            );
            assert!(
                KEYS[..i].iter().all(|k| k.name != key.name),
                "{} twice",
                key.name
            );
            // A section's keys are together, so the file has one [section] header per section.
            if let Some(previous) = i.checked_sub(1).map(|j| KEYS[j].section_and_leaf().0) {
                assert!(
                    previous == section
                        || KEYS[..i].iter().all(|k| k.section_and_leaf().0 != section),
                    "{}: [{section}] is split",
                    key.name
                );
            }
            assert_eq!(find(key.name), Some(key));
        }
        // `[environment]` and `[[tiers]]` are not sections of keys: their names are free.
        for reserved in [super::super::env::SECTION, super::super::TIERS] {
            assert!(!key_sections().contains(&reserved), "{reserved}");
        }
    }

    #[test]
    fn accepted_values_name_the_limits_in_force() {
        let accepted = |name: &str| find(name).unwrap().accepted;
        assert!(accepted("hardware.max_batch_size").contains(&MAX_BATCH_SIZE.to_string()));
        let fraction = accepted("hardware.memory_fraction");
        assert!(fraction.contains(&format!("{MIN_MEMORY_FRACTION:?}")));
        assert!(fraction.contains(&format!("{MAX_MEMORY_FRACTION:?}")));
    }
}
