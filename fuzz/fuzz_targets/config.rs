//! Fuzzes the config parser (`Config::from_toml_str` in
//! `server/src/config.rs`: TOML over the defaults, then `validate()`), the
//! path every `waybill serve --config FILE` takes.
//!
//! Properties: no text makes it panic; it fails only with a parse or a
//! validation error (it reads no file); and whatever it accepts is a config
//! a node can start from: validating again passes, the peer list parses to
//! as many distinct members as were given, the replication mode has the
//! members it needs, and the retry levels build.
//! Run: `scripts/fuzz.sh config SECONDS` (or `cargo fuzz run config --
//! -dict=fuzz/config.dict`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use waybill::config::{Config, ConfigError, ReplicationMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match Config::from_toml_str(text) {
        Ok(c) => c,
        // A syntax error, an unknown key, or a value refused by its type or
        // by validation (named with its key): the refusals a config may get.
        Err(
            ConfigError::Parse { .. }
            | ConfigError::Invalid { .. }
            | ConfigError::UnknownKey { .. }
            | ConfigError::BadValue { .. },
        ) => return,
        Err(e) => panic!("parsing text failed with neither a parse nor a validation error: {e}"),
    };
    assert!(c.validate().is_ok(), "accepted but invalid: {c:?}");
    let peers = c.peers().expect("accepted peers parse");
    assert_eq!(peers.len(), c.peer.len(), "a peer was dropped or merged");
    assert!(!peers.contains_key(&c.node_id), "a node is its own peer");
    match c.replication {
        ReplicationMode::None => assert!(peers.is_empty()),
        ReplicationMode::Sync | ReplicationMode::Async => assert!(!peers.is_empty()),
        ReplicationMode::Raft => assert!(peers.len() >= 2),
    }
    assert!(c.retry_policy().is_ok(), "accepted retry_delays do not build");
    let _ = c.flush_policy();
    // Parsing is a function of the text alone.
    let again = Config::from_toml_str(text).map(|c| format!("{c:?}"));
    assert_eq!(again.ok(), Some(format!("{c:?}")));
});
