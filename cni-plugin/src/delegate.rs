//! Running a delegated IPAM plugin the way the spec (section "Delegated plugins") and
//! libcni's `invoke.Delegate*` do: found by name in `CNI_PATH`, run with this plugin's own
//! environment (only `CNI_COMMAND` changes) and exactly the stdin this plugin got, its stderr
//! passed through, its stdout read as a result or a CNI error.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::config::Ipam;
use crate::env::Command;
use crate::error::{code, CniError};
use crate::result::CniResult;

/// libcni retries an exec that fails with "text file busy" (a binary being replaced in
/// place) this many times, a second apart; so do we.
const BUSY_RETRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Finds `ipam.type` in the `CNI_PATH` directories: the first regular, executable file.
pub fn find_plugin(ipam: &Ipam, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if cni_path.is_empty() {
        return Err(CniError::environment(format!(
            "CNI_PATH is not set, so the IPAM plugin {:?} cannot be found",
            ipam.plugin_type
        )));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(&ipam.plugin_type))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            let dirs: Vec<String> = cni_path.iter().map(|d| d.display().to_string()).collect();
            CniError::new(
                code::IPAM_FAILED,
                format!(
                    "IPAM plugin {:?} not found in CNI_PATH ({})",
                    ipam.plugin_type,
                    dirs.join(":")
                ),
            )
            .with_details("install it next to the zerotier plugin, or fix `ipam.type`")
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs the IPAM plugin for `command` with `stdin`. Success is its stdout (empty for all
/// but ADD); failure is its CNI error as it gave it, or ours when it gave none.
pub fn run(
    plugin: &Path,
    command: Command,
    stdin: &[u8],
    extra_env: &[(&str, &str)],
) -> Result<Vec<u8>, CniError> {
    let name = plugin.display();
    let mut attempt = 0;
    let output = loop {
        let mut process = Process::new(plugin);
        process
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in extra_env {
            process.env(key, value);
        }
        match process.spawn() {
            Ok(mut child) => {
                // A plugin that exits without reading its stdin closes the pipe: not our
                // failure, its exit status tells.
                if let Some(mut pipe) = child.stdin.take() {
                    let _ = pipe.write_all(stdin);
                }
                break child.wait_with_output();
            }
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempt < BUSY_RETRIES => {
                attempt += 1;
                thread::sleep(BUSY_PAUSE);
            }
            Err(e) => break Err(e),
        }
    };
    let output = output.map_err(|e| {
        CniError::new(
            code::IPAM_FAILED,
            format!("cannot run the IPAM plugin {name} for {command}"),
        )
        .with_details(e.to_string())
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(delegate_error(&output.stdout).unwrap_or_else(|| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        CniError::new(
            code::IPAM_FAILED,
            format!(
                "the IPAM plugin {name} failed {command} ({}) without a CNI error",
                output.status
            ),
        )
        .with_details(format!("its stdout: {:?}", truncate(stdout.trim(), 400)))
    }))
}

/// Runs ADD and reads the allocation.
pub fn add(plugin: &Path, stdin: &[u8]) -> Result<CniResult, CniError> {
    let stdout = run(plugin, Command::Add, stdin, &[])?;
    let value: Value = serde_json::from_slice(&stdout).map_err(|e| {
        CniError::new(
            code::IPAM_FAILED,
            format!(
                "the IPAM plugin {} answered ADD with no JSON result",
                plugin.display()
            ),
        )
        .with_details(e.to_string())
    })?;
    CniResult::from_value(&value, "IPAM result").map_err(|e| {
        CniError::new(
            code::IPAM_FAILED,
            format!(
                "the IPAM plugin {} answered ADD with a bad result",
                plugin.display()
            ),
        )
        .with_details(e)
    })
}

/// A delegate's CNI error on its stdout, passed up with its own code and message.
fn delegate_error(stdout: &[u8]) -> Option<CniError> {
    let value: Value = serde_json::from_slice(stdout).ok()?;
    let code = u32::try_from(value.get("code")?.as_u64()?).ok()?;
    let msg = value.get("msg").and_then(Value::as_str).unwrap_or_default();
    let mut error = CniError::new(code, format!("IPAM: {msg}"));
    if let Some(details) = value.get("details").and_then(Value::as_str) {
        if !details.is_empty() {
            error = error.with_details(details);
        }
    }
    Some(error)
}

fn truncate(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegate_errors_keep_their_code() {
        let error =
            delegate_error(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad range","details":"x"}"#)
                .unwrap();
        assert_eq!(error.code, 7);
        assert_eq!(error.msg, "IPAM: bad range");
        assert_eq!(error.details.as_deref(), Some("x"));
        for garbage in [
            &b""[..],
            b"oops",
            b"{}",
            br#"{"code":-1}"#,
            br#"{"code":"7"}"#,
        ] {
            assert!(delegate_error(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn a_missing_plugin_says_where_it_looked() {
        let ipam = Ipam {
            plugin_type: "no-such-ipam-plugin".into(),
        };
        let error =
            find_plugin(&ipam, &[PathBuf::from("/nonexistent-a"), "/tmp".into()]).unwrap_err();
        assert_eq!(error.code, code::IPAM_FAILED);
        assert!(error.msg.contains("/nonexistent-a:/tmp"), "{}", error.msg);
        assert_eq!(find_plugin(&ipam, &[]).unwrap_err().code, 4);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
