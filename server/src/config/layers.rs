//! The configuration's layers and where each value came from: defaults ←
//! `--config FILE` (TOML) ← `WAYBILL_<KEY>` environment variables ← flags.
//!
//! Each layer is a TOML table keyed by setting name; later layers replace
//! whole values (a `--peer` list replaces the file's list). Rules:
//! - a file key no setting has is refused with its name (a typo would
//!   otherwise be silently ignored);
//! - `WAYBILL_*` variables that are not settings are left alone (the
//!   consumer gives handlers `WAYBILL_MSG_ID` and friends); a setting's
//!   variable is read by the setting's type (numbers, `true`/`false`,
//!   comma-separated lists); `[[token]]` entries come from the file only;
//! - every key is deserialized on its own before the whole, and
//!   [`Config::validate`]'s refusals are re-said with the key's source, so
//!   a bad value is always named with its key and where it came from.
//!
//! The settings' names are read from serde's own field list of [`Config`]
//! ([`keys`]), so a new field is a setting here with no second list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use toml::{Table, Value};

use super::{Config, ConfigError};

/// Environment variables `WAYBILL_<KEY>` (key upper-cased) set settings.
pub const ENV_PREFIX: &str = "WAYBILL_";

/// Shown instead of a secret by `--print-config`.
const REDACTED: &str = "<redacted>";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The merged configuration and each setting's source.
#[derive(Debug)]
pub struct Layered {
    pub config: Config,
    sources: BTreeMap<String, Source>,
}

/// The settings' names, in [`Config`]'s declaration order.
pub fn keys() -> &'static [&'static str] {
    let mut probe = FieldsProbe(None);
    let _ = <Config as serde::Deserialize>::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// Reads `file`, then merges the layers (see [`merge`]).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Table,
) -> Result<Layered, ConfigError> {
    let text = match file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?),
        None => None,
    };
    merge(file.zip(text.as_deref()), env, flags)
}

/// Merges the layers (see the module comment): the config file's `(path,
/// text)`, the environment, and `flags` (only those given on the command
/// line). `Config::from_toml_str` (and so the config fuzz target) runs
/// this same path.
pub fn merge(
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Table,
) -> Result<Layered, ConfigError> {
    let keys = keys();
    let defaults = Table::try_from(Config::default()).map_err(|e| ConfigError::BadValue {
        key: "(defaults)".into(),
        origin: "the built-in defaults".into(),
        why: e.to_string(),
    })?;
    let mut merged = Table::new();
    let mut sources = BTreeMap::new();
    if let Some((path, text)) = file {
        let table: Table = text.parse().map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (key, value) in table {
            if !keys.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: Source::File(path.to_path_buf()).to_string(),
                });
            }
            sources.insert(key.clone(), Source::File(path.to_path_buf()));
            merged.insert(key, value);
        }
    }
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase) else {
            continue;
        };
        if !keys.contains(&key.as_str()) {
            continue;
        }
        let origin = Source::Env(name.clone());
        let value = env_value(&key, defaults.get(&key), &raw).map_err(|why| ConfigError::BadValue {
            key: key.clone(),
            origin: origin.to_string(),
            why,
        })?;
        sources.insert(key.clone(), origin);
        merged.insert(key, value);
    }
    for (key, value) in flags {
        if !keys.contains(&key.as_str()) {
            continue;
        }
        sources.insert(key.clone(), Source::Flag(format!("--{}", key.replace('_', "-"))));
        merged.insert(key, value);
    }
    // Each key alone first, so a bad value is named with its key.
    for (key, value) in &merged {
        let one: Table = [(key.clone(), value.clone())].into_iter().collect();
        if let Err(e) = Value::Table(one).try_into::<Config>() {
            return Err(ConfigError::BadValue {
                key: key.clone(),
                origin: sources.get(key).unwrap_or(&Source::Default).to_string(),
                why: e.message().trim().to_string(),
            });
        }
    }
    let config = Value::Table(merged)
        .try_into::<Config>()
        .map_err(|e| ConfigError::BadValue {
            key: "(all)".into(),
            origin: "the merged configuration".into(),
            why: e.message().trim().to_string(),
        })?;
    Ok(Layered { config, sources })
}

/// A setting's environment value, read by the type its default has.
fn env_value(key: &str, default: Option<&Value>, raw: &str) -> Result<Value, String> {
    let raw_t = raw.trim();
    Ok(match default {
        Some(Value::Integer(_)) => {
            Value::Integer(raw_t.parse().map_err(|_| format!("{raw_t:?} is not a whole number"))?)
        }
        Some(Value::Boolean(_)) => Value::Boolean(match raw_t {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{raw_t:?} is not true or false")),
        }),
        Some(Value::Float(_)) => Value::Float(raw_t.parse().map_err(|_| format!("{raw_t:?} is not a number"))?),
        Some(Value::Array(_)) if key == "token" => {
            return Err("named tokens come from the config file only ([[token]])".into())
        }
        Some(Value::Array(_)) => Value::Array(
            raw_t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

impl Layered {
    /// Checks the merged settings ([`Config::validate`]), naming the
    /// refused key's source.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate().map_err(|e| match e {
            ConfigError::Invalid { name, why } => ConfigError::BadValue {
                key: name.to_string(),
                origin: self.source(name).to_string(),
                why,
            },
            other => other,
        })
    }

    /// Where `key`'s value came from.
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    /// The effective settings as TOML, each with its source; secrets
    /// (`auth_token`, the tokens' `token`) are redacted.
    pub fn render(&self) -> Result<String, ConfigError> {
        let table = Table::try_from(&self.config).map_err(|e| ConfigError::BadValue {
            key: "(all)".into(),
            origin: "the effective configuration".into(),
            why: e.to_string(),
        })?;
        let mut out = String::from("# waybill serve: effective configuration (defaults < file < WAYBILL_* < flags)\n");
        let mut tables = String::new();
        for key in keys() {
            let source = self.source(key);
            match (key, table.get(*key)) {
                (&"token", Some(Value::Array(entries))) => {
                    for entry in entries {
                        tables.push_str(&format!("\n[[token]]  # {source}\n"));
                        if let Value::Table(t) = entry {
                            for (k, v) in t {
                                let shown = if k == "token" { quoted(REDACTED) } else { value(v) };
                                tables.push_str(&format!("{k} = {shown}\n"));
                            }
                        }
                    }
                }
                (&"auth_token", Some(_)) => out.push_str(&format!("auth_token = {}  # {source}\n", quoted(REDACTED))),
                (_, Some(v)) => out.push_str(&format!("{key} = {}  # {source}\n", value(v))),
                (_, None) => out.push_str(&format!("# {key} is not set  # {source}\n")),
            }
        }
        out.push_str(&tables);
        Ok(out)
    }
}

/// A TOML basic string (JSON's escapes are valid TOML escapes).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A value in TOML syntax.
fn value(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        Value::Array(items) => format!("[{}]", items.iter().map(value).collect::<Vec<_>>().join(", ")),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
    }
}

/// A deserializer that only records the field list serde's derive hands
/// to `deserialize_struct`, then stops.
struct FieldsProbe(Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for &mut FieldsProbe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn knows_every_setting_by_serdes_own_list() {
        let k = keys();
        for name in [
            "data_dir",
            "flush",
            "peer",
            "auth_token",
            "token",
            "insecure",
            "trace_db",
        ] {
            assert!(k.contains(&name), "{name} missing from {k:?}");
        }
        assert!(!k.contains(&"fault_fs"), "test-only flags are not settings");
    }

    #[test]
    fn env_beats_the_file_and_flags_beat_env() -> Result<(), ConfigError> {
        let f = file("flush_interval_ms = 200\nqueues_per_topic = 8\nnode_id = 3\n");
        let env = [
            ("WAYBILL_FLUSH_INTERVAL_MS".to_string(), "300".to_string()),
            ("WAYBILL_NODE_ID".to_string(), "4".to_string()),
            ("WAYBILL_MSG_ID".to_string(), "not a setting".to_string()),
        ];
        let flags: Table = [("node_id".to_string(), Value::Integer(5))].into_iter().collect();
        let l = load(Some(f.path()), env, flags)?;
        assert_eq!(l.config.flush_interval_ms, 300);
        assert_eq!(l.config.queues_per_topic, 8);
        assert_eq!(l.config.node_id, 5);
        assert_eq!(
            l.source("flush_interval_ms"),
            &Source::Env("WAYBILL_FLUSH_INTERVAL_MS".into())
        );
        assert_eq!(l.source("queues_per_topic"), &Source::File(f.path().to_path_buf()));
        assert_eq!(l.source("node_id"), &Source::Flag("--node-id".into()));
        assert_eq!(l.source("segment_bytes"), &Source::Default);
        let shown = l.render()?;
        assert!(shown.contains("flush_interval_ms = 300  # environment variable WAYBILL_FLUSH_INTERVAL_MS"));
        assert!(shown.contains("segment_bytes = 1073741824  # default"), "{shown}");
        Ok(())
    }

    #[test]
    fn an_unknown_key_and_a_bad_value_are_named() {
        let f = file("flush_intervall_ms = 200\n");
        let e = load(Some(f.path()), [], Table::new())
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("unknown setting flush_intervall_ms")),
            "{e:?}"
        );
        let f = file("flush_interval_ms = \"soon\"\n");
        let e = load(Some(f.path()), [], Table::new())
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("flush_interval_ms") && m.contains("config file")),
            "{e:?}"
        );
        let env = [("WAYBILL_QUEUES_PER_TOPIC".to_string(), "many".to_string())];
        let e = load(None, env, Table::new()).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("queues_per_topic") && m.contains("WAYBILL_QUEUES_PER_TOPIC")),
            "{e:?}"
        );
    }

    #[test]
    fn validation_names_the_source_and_secrets_are_redacted() -> Result<(), ConfigError> {
        let f = file(
            "auth_token = \"root-secret-value\"\n[[token]]\nname = \"grafana\"\ntoken = \"0123456789abcdef\"\nrole = \"viewer\"\n",
        );
        let env = [("WAYBILL_FLUSH_INTERVAL_MS".to_string(), "0".to_string())];
        let l = load(Some(f.path()), env, Table::new())?;
        let e = l.validate().map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("flush_interval_ms (from environment variable")),
            "{e:?}"
        );
        let shown = l.render()?;
        assert!(
            !shown.contains("root-secret-value") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        assert!(
            shown.contains("[[token]]") && shown.contains("name = \"grafana\""),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn lists_come_from_comma_separated_env_values() -> Result<(), ConfigError> {
        let env = [(
            "WAYBILL_PEER".to_string(),
            "2=127.0.0.1:9002, 3=127.0.0.1:9003".to_string(),
        )];
        let l = load(None, env, Table::new())?;
        assert_eq!(l.config.peer, vec!["2=127.0.0.1:9002", "3=127.0.0.1:9003"]);
        Ok(())
    }
}
