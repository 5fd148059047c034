//! The effective configuration, in layers: flags > environment > configuration file
//! (`--config FILE` / `VW_CONFIG`, TOML) > defaults (the library's `Default` impls).
//!
//! clap already puts a flag above its environment variable. What it cannot know is the file:
//! so a value is taken from the parsed flags only when clap says it came from the command line
//! or the environment (`ArgMatches::value_source`), never when it is clap's default. Those given
//! values, as a JSON tree keyed by arg id, are laid over the file's tree, and serde fills what
//! is still missing from `Default` and checks names and types (`deny_unknown_fields`).

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use video_worker::queue::worker::WorkerConfig;
use video_worker::queue::{NatsConfig, QueueError, Topology};

use super::args::{NatsArgs, TopologyArgs, WorkerArgs};

/// The configuration file as a tree; no file: an empty one.
pub fn read_file(path: Option<&Path>) -> Result<Value, QueueError> {
    let Some(path) = path else {
        return Ok(Value::Object(Map::new()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| QueueError::Config(format!("configuration file {}: {e}", path.display())))?;
    parse_file(&text)
        .map_err(|e| QueueError::Config(format!("configuration file {}: {e}", path.display())))
}

/// TOML text as a tree.
fn parse_file(text: &str) -> Result<Value, String> {
    match toml::from_str::<Value>(text) {
        Ok(tree @ Value::Object(_)) => Ok(tree),
        Ok(_) => Err("not a TOML table".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The values of `args` that were given on the command line or in the environment, as a
/// tree keyed like `args` (field names = arg ids); clap's defaults and absent options are left
/// out, so that the file shows through.
pub fn given(args: &impl Serialize, matches: &ArgMatches) -> Value {
    let tree = serde_json::to_value(args).unwrap_or(Value::Null);
    prune(tree, matches)
}

fn prune(tree: Value, matches: &ArgMatches) -> Value {
    let Value::Object(fields) = tree else {
        return Value::Null;
    };
    let mut kept = Map::new();
    for (key, value) in fields {
        match value {
            // A flattened group (`nats`, `topology`): its own args, one level down.
            Value::Object(_) => {
                let inner = prune(value, matches);
                if inner.as_object().is_some_and(|o| !o.is_empty()) {
                    kept.insert(key, inner);
                }
            }
            value => {
                let from_user = matches!(
                    matches.value_source(&key),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
                if from_user && !value.is_null() {
                    kept.insert(key, value);
                }
            }
        }
    }
    Value::Object(kept)
}

/// `top` laid over `bottom`: tables merge key by key, anything else (numbers, strings, lists)
/// in `top` replaces what `bottom` has.
fn overlay(bottom: Value, top: Value) -> Value {
    match (bottom, top) {
        (Value::Object(mut b), Value::Object(t)) => {
            for (key, value) in t {
                let merged = match b.remove(&key) {
                    Some(below) => overlay(below, value),
                    None => value,
                };
                b.insert(key, merged);
            }
            Value::Object(b)
        }
        (_, top) => top,
    }
}

/// `given` over `file`, with the defaults of `T` beneath both.
fn layered<T: DeserializeOwned>(file: Value, given: Value) -> Result<T, QueueError> {
    serde_json::from_value(overlay(file, given))
        .map_err(|e| QueueError::Config(format!("configuration: {e}")))
}

/// `video-worker run`'s configuration (also what `video-worker config` prints).
pub fn worker(
    args: &WorkerArgs,
    matches: &ArgMatches,
    file: Value,
) -> Result<WorkerConfig, QueueError> {
    let config: WorkerConfig = layered(file, given(args, matches))?;
    config.validate()?;
    Ok(config)
}

/// What `submit` and `streams` take from the file: its `[nats]` and `[topology]` tables (the
/// worker's other keys are not theirs).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub nats: NatsConfig,
    pub topology: Topology,
}

/// NATS and the topology for `submit` and `streams`.
pub fn connection(
    nats: &NatsArgs,
    topology: &TopologyArgs,
    matches: &ArgMatches,
    file: Value,
) -> Result<Connection, QueueError> {
    let mut from_file = Map::new();
    if let Value::Object(mut file) = file {
        for table in ["nats", "topology"] {
            if let Some(v) = file.remove(table) {
                from_file.insert(table.into(), v);
            }
        }
    }
    let mut from_user = Map::new();
    from_user.insert("nats".into(), given(nats, matches));
    from_user.insert("topology".into(), given(topology, matches));
    let connection: Connection = layered(Value::Object(from_file), Value::Object(from_user))?;
    connection.nats.validate()?;
    connection.topology.validate()?;
    Ok(connection)
}

/// `video-worker config`: the effective configuration as TOML, secrets redacted.
pub fn to_toml(config: &WorkerConfig) -> Result<String, QueueError> {
    let text = toml::to_string(&config.redacted())
        .map_err(|e| QueueError::Config(format!("printing the configuration: {e}")))?;
    Ok(format!(
        "# video-worker: effective configuration of `run` (flags > environment > file > \
         defaults); secrets redacted.\n{text}"
    ))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Cli, Command};

    /// The worker's configuration for these flags over this file (no environment: the
    /// environment layer is table-tested through the binary, in tests/cli.rs).
    fn effective(flags: &[&str], file: &str) -> Result<WorkerConfig, QueueError> {
        let argv = ["video-worker", "run"].iter().chain(flags);
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!("parsed `run`")
        };
        let (_, sub) = matches.subcommand().unwrap();
        let file = parse_file(file).map_err(|e| QueueError::Config(format!("TOML: {e}")))?;
        worker(&args, sub, file)
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        // (flag given, file sets it) → grace; default 30.
        let table: [(&[&str], &str, f64); 4] = [
            (&[], "", 30.0),
            (&[], "grace = 11", 11.0),
            (&["--grace", "33"], "", 33.0),
            (&["--grace", "33"], "grace = 11", 33.0),
        ];
        for (flags, file, grace) in table {
            assert_eq!(
                effective(flags, file).unwrap().grace,
                grace,
                "{flags:?} {file:?}"
            );
        }
    }

    #[test]
    fn nested_tables_and_lists_layer_the_same_way() {
        let file = "kinds = [\"process\"]\n[nats]\nurls = [\"nats://file:4222\"]\n\
                    name = \"from-file\"\n[topology]\nreplicas = 3\nstream = \"S\"\n";
        let c = effective(
            &["--replicas", "5", "--nats-url", "nats://a:1,nats://b:2"],
            file,
        )
        .unwrap();
        assert_eq!(c.topology.replicas, 5);
        assert_eq!(c.topology.stream, "S");
        assert_eq!(c.topology.dlq_stream, Topology::default().dlq_stream);
        assert_eq!(c.nats.urls, ["nats://a:1", "nats://b:2"]);
        assert_eq!(c.nats.name, "from-file");
        assert_eq!(c.kinds, [video_worker::job::JobKind::Process]);
        // A boolean flag sets; its absence leaves the file's value.
        assert!(effective(&[], "no_setup = true").unwrap().no_setup);
        assert!(effective(&["--no-setup"], "").unwrap().no_setup);
        assert!(!effective(&[], "").unwrap().no_setup);
    }

    #[test]
    fn no_flags_and_no_file_give_the_library_defaults() {
        assert_eq!(effective(&[], "").unwrap(), WorkerConfig::default());
    }

    #[test]
    fn a_misspelt_key_or_a_wrong_type_or_a_bad_value_in_the_file_is_refused() {
        for (file, says) in [
            ("gracee = 1", "unknown field `gracee`"),
            ("grace = \"soon\"", "invalid type"),
            ("[nats]\nurl = \"nats://x\"", "unknown field `url`"),
            ("[topology]\nreplicas = 9", "replicas 9"),
            ("max_preset = \"ludicrous\"", "unknown x264 preset"),
            ("kinds = [\"transcode\"]", "unknown variant"),
            ("grace = ", "TOML"),
        ] {
            let e = effective(&[], file).unwrap_err();
            assert!(e.to_string().contains(says), "{file:?}: {e}");
        }
    }
}
