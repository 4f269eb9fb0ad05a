//! `sda_config`: an opaque, thread-safe configuration handle.

use crate::handle::Registry;
use crate::status::Status;
use crate::{guard, out, str_arg, write_string};
use sda_core::config::Config;
use sda_core::error::Result;
use std::ffi::c_void;
use std::os::raw::c_char;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// An opaque configuration: built-in defaults, a TOML file or a TOML text, plus the environment
/// overrides `SDA_CONFIG` and `SDA_DEVICE`. Create with `sda_config_new`, `sda_config_load` or
/// `sda_config_load_str`; release with `sda_config_free`.
pub struct sda_config {
    _private: [u8; 0],
}

static CONFIGS: Registry<RwLock<Config>> = Registry::new("sda_config");

/// The configuration behind a handle.
pub(crate) fn config_of(config: *const sda_config) -> Result<Arc<RwLock<Config>>> {
    CONFIGS.get(config.cast::<c_void>(), "config")
}

fn hand_out(config: Config, out_config: &mut *mut sda_config) {
    *out_config = CONFIGS.insert(RwLock::new(config)).cast::<sda_config>();
}

/// Creates a configuration with the built-in defaults. When the environment variable `SDA_CONFIG`
/// names a file, that file is loaded instead; `SDA_DEVICE`, when set, overrides `hardware.device`.
///
/// `out_config` receives the new handle (written only on success).
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_config_new(out_config: *mut *mut sda_config) -> Status {
    guard(|| {
        let slot = out(out_config, "out_config")?;
        let config = Config::from_process_environment()?;
        hand_out(config, slot);
        Ok(())
    })
}

/// Loads a configuration from a TOML file (`path`: NUL-terminated UTF-8). Keys missing from the file
/// take their defaults; unknown keys and bad values are errors that name the key. `SDA_DEVICE`, when
/// set, overrides `hardware.device`.
///
/// Errors: `SDA_ERR_IO` (unreadable file), `SDA_ERR_PARSE`, `SDA_ERR_UNKNOWN_KEY`,
/// `SDA_ERR_INVALID_VALUE`.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_config_load(path: *const c_char, out_config: *mut *mut sda_config) -> Status {
    guard(|| {
        let path = str_arg(path, "path")?;
        let slot = out(out_config, "out_config")?;
        let mut config = Config::load(Path::new(path))?;
        config.apply_process_env_overrides()?;
        hand_out(config, slot);
        Ok(())
    })
}

/// Parses a configuration from TOML text (NUL-terminated UTF-8), as `sda_config_load` does for a file.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_config_load_str(
    toml_text: *const c_char,
    out_config: *mut *mut sda_config,
) -> Status {
    guard(|| {
        let text = str_arg(toml_text, "toml_text")?;
        let slot = out(out_config, "out_config")?;
        let mut config = Config::from_toml_str(text)?;
        config.apply_process_env_overrides()?;
        hand_out(config, slot);
        Ok(())
    })
}

/// Saves the configuration to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk and renamed over the target, so a crash leaves either the old or the new file. An
/// existing file that does not parse as a configuration is never overwritten (`SDA_ERR_PARSE`): fix or
/// remove it first. Relative paths inside the configuration are written as they are.
///
/// Thread safety: [thread-safe]; concurrent saves to one path leave one complete file.
#[no_mangle]
pub extern "C" fn sda_config_save(config: *const sda_config, path: *const c_char) -> Status {
    guard(|| {
        let config = config_of(config)?;
        let path = str_arg(path, "path")?;
        let snapshot = config.read().unwrap_or_else(|e| e.into_inner()).clone();
        snapshot.save(Path::new(path))
    })
}

/// Reads one value by dotted key (`hardware.device`, `paths.models`, `environment.NAME`, ...) as plain
/// text: strings without quotes, lists comma-separated (`cuda,mps,cpu`), numbers in decimal, booleans
/// as `true`/`false`.
///
/// The value is copied into `buf` (capacity `capacity` bytes) with a terminating NUL. `*needed`, when
/// `needed` is not NULL, always receives the size required; when `capacity` is too small the call
/// returns `SDA_ERR_BUFFER_TOO_SMALL` and writes nothing to `buf` (pass `buf = NULL, capacity = 0` to
/// ask for the size). Unknown keys: `SDA_ERR_UNKNOWN_KEY`.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_config_get(
    config: *const sda_config,
    key: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Status {
    guard(|| {
        let config = config_of(config)?;
        let key = str_arg(key, "key")?;
        let value = config.read().unwrap_or_else(|e| e.into_inner()).get(key)?;
        write_string(&value, buf, capacity, needed)
    })
}

/// Sets one value by dotted key from plain text (the forms `sda_config_get` returns; booleans also
/// accept `1`/`0`/`yes`/`no`). The value is validated for type and range; on error the configuration
/// is unchanged and the message names the key and the accepted values.
///
/// Thread safety: [thread-safe]. Contexts created earlier keep the configuration they were created
/// with.
#[no_mangle]
pub extern "C" fn sda_config_set(
    config: *mut sda_config,
    key: *const c_char,
    value: *const c_char,
) -> Status {
    guard(|| {
        let config = config_of(config)?;
        let key = str_arg(key, "key")?;
        let value = str_arg(value, "value")?;
        let mut config = config.write().unwrap_or_else(|e| e.into_inner());
        config.set(key, value)
    })
}

/// Writes the whole configuration as TOML text into `buf`, with the same buffer rules as
/// `sda_config_get`.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_config_to_string(
    config: *const sda_config,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Status {
    guard(|| {
        let config = config_of(config)?;
        let text = config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_toml_string();
        write_string(&text, buf, capacity, needed)
    })
}

/// Releases a configuration. NULL is a no-op; a handle that was already freed returns
/// `SDA_ERR_INVALID_HANDLE` without touching memory.
///
/// Thread safety: [thread-safe]; calls still running on the handle in other threads finish first.
#[no_mangle]
pub extern "C" fn sda_config_free(config: *mut sda_config) -> Status {
    guard(|| CONFIGS.remove(config.cast::<c_void>(), "config"))
}
