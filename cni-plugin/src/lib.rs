//! The `zerotier` CNI plugin: a thin translator from the CNI spec (0.3.1 to 1.1.0) to
//! zt-agent's plugin API. It holds no network logic: it validates what the runtime gives
//! it, calls the agent over its Unix socket, and writes the answer as a CNI result or error.
//!
//! - [`env`]: `CNI_*` variables, `CNI_ARGS`, the endpoint key.
//! - [`config`]: the network config on stdin.
//! - [`version`]: the spec versions and which verbs each allows.
//! - [`result`]: results in every version; [`error`]: CNI errors and codes.
//! - [`commands`]: ADD, DEL, CHECK, STATUS, GC, VERSION.
//! - [`delegate`]: running an IPAM plugin; [`spool`]: DEL's pending deletes.
//!
//! `cni-plugin/README.md` documents the contract for users and for the agent: the config
//! keys, the error codes and the pending-delete format.

#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod result;
pub mod spool;
pub mod version;

use std::io::Write;

use crate::env::Environment;

/// What the process prints on stdout and exits with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: u8,
}

/// Runs one invocation: the verb in `env`'s `CNI_COMMAND` on the config in `stdin`. Notes
/// for people (what DEL skipped, where it recorded a pending delete, the error) go to `log`,
/// which is stderr in the binary; the runtime copies it into its own log.
pub fn run(env: &Environment, stdin: &[u8], log: &mut dyn Write) -> Outcome {
    match commands::dispatch(env, stdin, log) {
        Ok(Some(value)) => {
            let mut stdout = serde_json::to_vec(&value).unwrap_or_default();
            stdout.push(b'\n');
            Outcome {
                stdout,
                exit_code: 0,
            }
        }
        Ok(None) => Outcome {
            stdout: Vec::new(),
            exit_code: 0,
        },
        Err(error) => {
            let _ = writeln!(log, "zerotier: {error}");
            let json = error.to_json(&config::echo_version(stdin));
            let mut stdout = serde_json::to_vec(&json).unwrap_or_default();
            stdout.push(b'\n');
            Outcome {
                stdout,
                exit_code: 1,
            }
        }
    }
}
