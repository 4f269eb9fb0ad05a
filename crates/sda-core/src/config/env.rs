//! The environment's part of a configuration: the variables that override it for one run
//! (`SDA_CONFIG`, `SDA_DEVICE`), and the `[environment]` table of variables it sets before the torch
//! backend starts.
//!
//! The overrides read the environment through a lookup function that the caller passes, so that
//! tests (and hosts that keep their own environment) decide where it comes from.

use super::keys::canonical_device;
use super::value::{toml_str, wrong_type, Input};
use super::{with_context, Config};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Environment variable that names a config file to load instead of the built-in defaults.
pub const ENV_CONFIG: &str = "SDA_CONFIG";
/// Environment variable that replaces `hardware.device` (for one run, without editing the file).
pub const ENV_DEVICE: &str = "SDA_DEVICE";

/// The section of free `NAME = "value"` pairs; its keys are `environment.NAME`.
pub(super) const SECTION: &str = "environment";

/// The variable name of an `environment.NAME` key; `None` for any other key.
pub(super) fn entry_name(key: &str) -> Option<&str> {
    key.strip_prefix(SECTION)?.strip_prefix('.')
}

/// Names that a process environment and every shell accept.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks one `[environment]` entry.
pub(super) fn check_entry(name: &str, value: &str) -> Result<()> {
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

/// Reads the `[environment]` table of a file into `config`.
pub(super) fn read_table(config: &mut Config, entries: &toml::Table) -> Result<()> {
    for (name, item) in entries {
        let text = item.as_str().ok_or_else(|| {
            wrong_type(&format!("{SECTION}.{name}"), Input::Toml(item), "a string")
        })?;
        check_entry(name, text)?;
        config.environment.insert(name.clone(), text.to_owned());
    }
    Ok(())
}

/// The `[environment]` section of a written file, always present so that the file shows where such
/// variables go.
pub(super) fn toml_section(environment: &BTreeMap<String, String>) -> String {
    let mut out = format!(
        "\n[{SECTION}]\n\
         # NAME = \"value\" pairs set before the torch backend starts (e.g. \
         PYTORCH_CUDA_ALLOC_CONF)\n"
    );
    for (name, value) in environment {
        out.push_str(&format!("{name} = {}\n", toml_str(value)));
    }
    out
}

/// The UnknownKey message for `key` in the environment section (`leaf` is what follows the dot).
pub(super) fn unknown_entry_message(
    key: &str,
    leaf: Option<&str>,
    environment: &BTreeMap<String, String>,
) -> String {
    match leaf {
        None => format!("\"{SECTION}\" is a table, not a key; use {SECTION}.NAME"),
        Some(name) => {
            let set: Vec<&str> = environment.keys().map(String::as_str).collect();
            let set = if set.is_empty() {
                "none".to_owned()
            } else {
                set.join(", ")
            };
            format!(
                "unknown configuration key \"{key}\": {name} is not in [{SECTION}] (set there: {set})"
            )
        }
    }
}

impl Config {
    /// Applies the environment overrides, read through `lookup` (so that callers and tests decide
    /// where the environment comes from). `SDA_DEVICE`, when set and not empty, replaces
    /// `hardware.device`; an invalid value is [`ErrorKind::InvalidValue`] naming `SDA_DEVICE`, never a
    /// silent fallback. On error `self` is unchanged.
    ///
    /// [`ErrorKind::InvalidValue`]: crate::error::ErrorKind::InvalidValue
    pub fn apply_env_overrides(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(device) = lookup(ENV_DEVICE).filter(|v| !v.is_empty()) {
            self.hardware.device = canonical_device(device.clone()).map_err(|why| {
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

    /// [`Config::from_environment`] with the real process environment. `SDA_CONFIG` or `SDA_DEVICE`
    /// set to bytes that are not UTF-8 is an [`ErrorKind::InvalidValue`](crate::error::ErrorKind)
    /// naming the variable, never ignored and never read lossily.
    pub fn from_process_environment() -> Result<Config> {
        Config::from_environment(&process_environment()?)
    }

    /// [`Config::apply_env_overrides`] with the real process environment (non-UTF-8 values are
    /// errors, as for [`Config::from_process_environment`]).
    pub fn apply_process_env_overrides(&mut self) -> Result<()> {
        self.apply_env_overrides(&process_environment()?)
    }
}

/// The process environment as a lookup, once the variables the configuration reads are known to be
/// UTF-8: `std::env::var(..).ok()` alone would turn a non-UTF-8 value into "not set".
fn process_environment() -> Result<impl Fn(&str) -> Option<String>> {
    for name in [ENV_CONFIG, ENV_DEVICE] {
        if let Some(value) = std::env::var_os(name) {
            if value.to_str().is_none() {
                return Err(Error::invalid_value(format!(
                    "the environment variable {name} is not valid UTF-8 ({:?}); set it to a UTF-8 \
                     value or unset it",
                    value.to_string_lossy()
                )));
            }
        }
    }
    Ok(|name: &str| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::preference::ACCEPTED_PREFERENCES;
    use std::collections::HashMap;

    fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
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
