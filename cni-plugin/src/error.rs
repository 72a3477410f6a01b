//! CNI errors: the spec's `{"cniVersion","code","msg","details"}` object, printed on stdout
//! with a non-zero exit status. Codes 1 to 99 are the spec's; 100 and up are ours.

use serde_json::{json, Value};

/// The spec's well-known error codes (spec "Error"; 50 and 51 from 1.1.0).
pub mod code {
    /// The request's `cniVersion` is not one this plugin speaks, or the verb needs a newer one.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// The container is unknown or gone; the runtime need not clean up.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A missing or malformed `CNI_*` environment variable.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// Reading stdin, or writing a file, failed.
    pub const IO_FAILURE: u32 = 5;
    /// The config on stdin is not JSON (or not an object).
    pub const DECODING_FAILURE: u32 = 6;
    /// The network config is invalid: a key is missing, mistyped or out of range.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// A transient condition: retry the operation later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin cannot serve ADD, and existing attachments may have limited
    /// connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;

    /// Ours: the agent refused or failed the operation for a reason that retrying does not
    /// fix (a conflicting attachment, a fault in the agent, an agent too old for the call).
    pub const AGENT_FAILED: u32 = 100;
    /// Ours: CHECK found the attachment different from the runtime's cached result.
    pub const CHECK_MISMATCH: u32 = 101;
    /// Ours: the IPAM plugin could not be run, or answered something that is not CNI.
    pub const IPAM_FAILED: u32 = 102;
    /// Ours: DEL could not reach the agent and could not record the delete for later either.
    pub const PENDING_DELETE_FAILED: u32 = 103;
    /// Ours: GC removed some stale attachments but not all of them.
    pub const GC_INCOMPLETE: u32 = 104;
}

/// A CNI error as the plugin prints it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (CNI error {code})")]
pub struct CniError {
    pub code: u32,
    /// A short statement of what failed.
    pub msg: String,
    /// What a person can do about it, or the underlying cause.
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn environment(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, msg)
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg)
    }

    /// The JSON object the spec wants on stdout, echoing the request's `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut object = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if let Some(details) = &self.details {
            object["details"] = Value::String(details.clone());
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let error = CniError::config("missing `network`").with_details("set it");
        assert_eq!(
            error.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "missing `network`", "details": "set it"})
        );
        let bare = CniError::environment("CNI_IFNAME is not set");
        assert_eq!(
            bare.to_json("0.4.0"),
            json!({"cniVersion": "0.4.0", "code": 4, "msg": "CNI_IFNAME is not set"})
        );
    }
}
