//! `zerotier`: the CNI plugin binary. The runtime runs it with `CNI_*` variables and the
//! network config on stdin; see the library ([`cni_plugin`]) for everything it does.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::process::ExitCode;

use cni_plugin::env::Environment;
use cni_plugin::error::{code, CniError};

/// Largest config read from stdin; a conflist entry with a cached result is a few KiB, a
/// GC's attachment list of a busy node a few hundred.
const MAX_STDIN: u64 = 16 << 20;

fn main() -> ExitCode {
    let env = Environment::from_process();
    let mut stdin = Vec::new();
    let read = io::stdin().take(MAX_STDIN).read_to_end(&mut stdin);
    let mut stderr = io::stderr().lock();
    let outcome = match read {
        Ok(_) => cni_plugin::run(&env, &stdin, &mut stderr),
        Err(e) => {
            let error = CniError::new(code::IO_FAILURE, "cannot read the network config")
                .with_details(format!("reading stdin: {e}"));
            let _ = writeln!(stderr, "zerotier: {error}");
            cni_plugin::Outcome {
                stdout: serde_json::to_vec(&error.to_json(cni_plugin::version::LATEST.as_str()))
                    .unwrap_or_default(),
                exit_code: 1,
            }
        }
    };
    let mut stdout = io::stdout().lock();
    if stdout
        .write_all(&outcome.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::from(outcome.exit_code)
}
