//! The value types of configuration keys and the one generic way a key's value is read, written and
//! checked. The key table ([`super::keys`]) names a type and a field for each key; everything here
//! is shared by all keys of a type, so that a new key of an existing type needs no code of its own.

use super::Config;
use crate::error::{Error, Result};
use crate::preference::DeviceKind;
use crate::strategy::{MemoryStrategy, ACCEPTED_STRATEGIES};

/// A value on its way in: from a parsed file, or plain text from `set`.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
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

pub(super) fn toml_type_name(v: &toml::Value) -> &'static str {
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

pub(super) fn invalid(key: &str, input: Input<'_>, why: &str) -> Error {
    Error::invalid_value(format!("invalid value {} for {key}: {why}", input.shown()))
}

pub(super) fn wrong_type(key: &str, input: Input<'_>, expected: &str) -> Error {
    let got = match input {
        Input::Toml(v) => toml_type_name(v),
        Input::Text(_) => "text",
    };
    invalid(key, input, &format!("expected {expected}, got {got}"))
}

/// TOML text of a string value (quoted and escaped as TOML requires).
pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A type of configuration value: how a value is read from a file or from `set`'s text and how it is
/// written back as `get` text, TOML and JSON. Range and relation checks are not here but in the key
/// table, because two keys of one type (two paths, two integers) accept different values.
pub(super) trait ValueType {
    /// The Rust type of the field that holds the value.
    type Value: Clone;
    /// The type as the documentation names it.
    const NAME: &'static str;
    /// Reads a value; a wrong type is an InvalidValue error naming `key`.
    fn parse(key: &str, input: Input<'_>) -> Result<Self::Value>;
    /// The plain text `get` returns (and `set` reads back).
    fn text(value: &Self::Value) -> String;
    /// The TOML text of the value, as written in a file.
    fn toml(value: &Self::Value) -> String;
    /// The value with native JSON types.
    fn json(value: &Self::Value) -> serde_json::Value;
    /// The value in a message of `validate` (which has no user input to quote).
    fn shown(value: &Self::Value) -> String {
        Self::text(value)
    }
}

/// `true` / `false`; `set` also takes `1`/`0`/`yes`/`no` in any case, a file only TOML booleans.
pub(super) struct Bool;

impl ValueType for Bool {
    type Value = bool;
    const NAME: &'static str = "bool";
    fn parse(key: &str, input: Input<'_>) -> Result<bool> {
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
    fn text(value: &bool) -> String {
        value.to_string()
    }
    fn toml(value: &bool) -> String {
        value.to_string()
    }
    fn json(value: &bool) -> serde_json::Value {
        serde_json::Value::Bool(*value)
    }
}

fn parse_string(key: &str, input: Input<'_>) -> Result<String> {
    match input {
        Input::Toml(toml::Value::String(s)) => Ok(s.clone()),
        Input::Toml(_) => Err(wrong_type(key, input, "a string")),
        Input::Text(t) => Ok(t.to_owned()),
    }
}

/// A string kept exactly as written (no trimming: `" spaced "` stays so).
pub(super) struct Text;

impl ValueType for Text {
    type Value = String;
    const NAME: &'static str = "string";
    fn parse(key: &str, input: Input<'_>) -> Result<String> {
        parse_string(key, input)
    }
    fn text(value: &String) -> String {
        value.clone()
    }
    fn toml(value: &String) -> String {
        toml_str(value)
    }
    fn json(value: &String) -> serde_json::Value {
        serde_json::Value::String(value.clone())
    }
    fn shown(value: &String) -> String {
        format!("{value:?}")
    }
}

/// A path: a string the library never canonicalises, so that a relative path stays relative.
pub(super) struct Path;

impl ValueType for Path {
    type Value = String;
    const NAME: &'static str = "path";
    fn parse(key: &str, input: Input<'_>) -> Result<String> {
        Text::parse(key, input)
    }
    fn text(value: &String) -> String {
        Text::text(value)
    }
    fn toml(value: &String) -> String {
        Text::toml(value)
    }
    fn json(value: &String) -> serde_json::Value {
        Text::json(value)
    }
    fn shown(value: &String) -> String {
        Text::shown(value)
    }
}

/// A list of device kinds: a TOML array of strings, or comma-separated text (`cuda,mps,cpu`).
pub(super) struct DeviceKinds;

impl DeviceKinds {
    fn joined(value: &[DeviceKind]) -> String {
        value
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl ValueType for DeviceKinds {
    type Value = Vec<DeviceKind>;
    const NAME: &'static str = "list";
    fn parse(key: &str, input: Input<'_>) -> Result<Vec<DeviceKind>> {
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
        names
            .iter()
            .map(|name| {
                DeviceKind::parse(name).map_err(|_| {
                    invalid(
                        key,
                        input,
                        &format!("{name:?} is not a device kind; accepted kinds: cpu, cuda, mps"),
                    )
                })
            })
            .collect()
    }
    fn text(value: &Vec<DeviceKind>) -> String {
        DeviceKinds::joined(value)
    }
    fn toml(value: &Vec<DeviceKind>) -> String {
        format!(
            "[{}]",
            value
                .iter()
                .map(|k| toml_str(k.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
    fn json(value: &Vec<DeviceKind>) -> serde_json::Value {
        value.iter().map(|k| k.as_str()).collect()
    }
    fn shown(value: &Vec<DeviceKind>) -> String {
        format!("{:?}", DeviceKinds::joined(value))
    }
}

/// A memory strategy by name (case-insensitive).
pub(super) struct Strategy;

impl ValueType for Strategy {
    type Value = MemoryStrategy;
    const NAME: &'static str = "string";
    fn parse(key: &str, input: Input<'_>) -> Result<MemoryStrategy> {
        let text = parse_string(key, input)?;
        MemoryStrategy::parse(&text)
            .map_err(|_| invalid(key, input, &format!("accepted: {ACCEPTED_STRATEGIES}")))
    }
    fn text(value: &MemoryStrategy) -> String {
        value.as_str().to_owned()
    }
    fn toml(value: &MemoryStrategy) -> String {
        toml_str(value.as_str())
    }
    fn json(value: &MemoryStrategy) -> serde_json::Value {
        serde_json::Value::from(value.as_str())
    }
    fn shown(value: &MemoryStrategy) -> String {
        format!("{:?}", value.as_str())
    }
}

/// A decimal number; a TOML integer is taken too, because `memory_fraction = 1` is a natural way to
/// write 1.0.
pub(super) struct Float;

impl ValueType for Float {
    type Value = f64;
    const NAME: &'static str = "float";
    fn parse(key: &str, input: Input<'_>) -> Result<f64> {
        match input {
            Input::Toml(toml::Value::Float(f)) => Ok(*f),
            Input::Toml(toml::Value::Integer(i)) => Ok(*i as f64),
            Input::Toml(_) => Err(wrong_type(key, input, "a number")),
            Input::Text(t) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| invalid(key, input, "expected a decimal number such as 0.75")),
        }
    }
    fn text(value: &f64) -> String {
        value.to_string()
    }
    fn toml(value: &f64) -> String {
        // Value's Display always writes a float with a point or exponent, so it reads back as a float
        // (plain `{}` would write 1.0 as `1`).
        toml::Value::Float(*value).to_string()
    }
    fn json(value: &f64) -> serde_json::Value {
        serde_json::json!(value)
    }
}

/// A non-negative integer. `MAX` is only for the message when the text is not such an integer at
/// all; the key's check refuses values above it, with that key's own words.
pub(super) struct Integer<const MAX: u64>;

impl<const MAX: u64> ValueType for Integer<MAX> {
    type Value = u64;
    const NAME: &'static str = "integer";
    fn parse(key: &str, input: Input<'_>) -> Result<u64> {
        let range = || format!("accepted: an integer from 0 to {MAX}");
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
    fn text(value: &u64) -> String {
        value.to_string()
    }
    fn toml(value: &u64) -> String {
        value.to_string()
    }
    fn json(value: &u64) -> serde_json::Value {
        serde_json::Value::from(*value)
    }
}

/// A key's check: the value as stored (canonicalised where the key has a canonical form), or why it
/// is refused. The reason is put after `invalid value ... for KEY:` by the caller.
pub(super) type Check<V> = fn(V) -> std::result::Result<V, String>;

/// The check of a key whose every well-typed value is valid.
pub(super) fn any_value<V>(value: V) -> std::result::Result<V, String> {
    Ok(value)
}

/// Where a key's value lives in a [`Config`], of which type, and its check. The key table holds one
/// per key, written with the `field!` macro of [`super::keys`].
pub(super) struct Field<T: ValueType> {
    /// Reads the field.
    pub(super) get: fn(&Config) -> &T::Value,
    /// Writes the field.
    pub(super) get_mut: fn(&mut Config) -> &mut T::Value,
    /// Checks a value before it is stored, and every stored value in `validate`.
    pub(super) check: Check<T::Value>,
}

/// What every key can do, whatever its type: the table is a list of these behind one trait so that
/// keys of different types sit in one list.
pub(super) trait Slot: Sync {
    /// [`ValueType::NAME`] of the key's type.
    fn value_type(&self) -> &'static str;
    /// Parses, checks and stores a value; on error `config` is unchanged.
    fn assign(&self, config: &mut Config, key: &str, input: Input<'_>) -> Result<()>;
    /// The value as `get` text.
    fn text(&self, config: &Config) -> String;
    /// The value as TOML text.
    fn toml(&self, config: &Config) -> String;
    /// The value as JSON.
    fn json(&self, config: &Config) -> serde_json::Value;
    /// Runs the key's check on the stored value (which may have been written into a public field).
    fn validate(&self, config: &Config, key: &str) -> Result<()>;
}

impl<T: ValueType> Slot for Field<T> {
    fn value_type(&self) -> &'static str {
        T::NAME
    }
    fn assign(&self, config: &mut Config, key: &str, input: Input<'_>) -> Result<()> {
        let value = T::parse(key, input)?;
        let value = (self.check)(value).map_err(|why| invalid(key, input, &why))?;
        *(self.get_mut)(config) = value;
        Ok(())
    }
    fn text(&self, config: &Config) -> String {
        T::text((self.get)(config))
    }
    fn toml(&self, config: &Config) -> String {
        T::toml((self.get)(config))
    }
    fn json(&self, config: &Config) -> serde_json::Value {
        T::json((self.get)(config))
    }
    fn validate(&self, config: &Config, key: &str) -> Result<()> {
        let value = (self.get)(config);
        (self.check)(value.clone()).map(drop).map_err(|why| {
            Error::invalid_value(format!(
                "invalid value {} for {key}: {why}",
                T::shown(value)
            ))
        })
    }
}
