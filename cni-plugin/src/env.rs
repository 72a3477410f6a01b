//! The `CNI_*` environment variables and `CNI_ARGS`.
//!
//! Which variables each verb needs follows the spec (and the Go skeleton's checks): ADD and
//! CHECK need the container ID, namespace and interface name; DEL needs the ID and name but
//! not the namespace, which may be empty or gone; STATUS, GC and VERSION need none of them.
//! `CNI_PATH` is only needed to find an IPAM plugin, so it is checked where one is run.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use zt_agent::plugin_api::{ContainerId, EndpointKey, InterfaceName};

use crate::error::CniError;

/// The verb in `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        Ok(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            // libcni reads exactly this message as "the plugin predates VERSION".
            _ => {
                return Err(CniError::environment(format!(
                    "unknown CNI_COMMAND: {text}"
                )))
            }
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plugin's environment, as given (tests pass a map; `main` the process environment).
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        // Variables that are not UTF-8 cannot be CNI's; leave them out.
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; set but empty counts as unset (libcni sets unused ones empty).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn command(&self) -> Result<Command, CniError> {
        let text = self
            .var("CNI_COMMAND")
            .ok_or_else(|| CniError::environment("CNI_COMMAND is not set"))?;
        Command::parse(text)
    }

    pub fn container_id(&self) -> Result<ContainerId, CniError> {
        let text = self
            .var("CNI_CONTAINERID")
            .ok_or_else(|| CniError::environment("CNI_CONTAINERID is not set"))?;
        text.parse()
            .map_err(|e| CniError::environment(format!("CNI_CONTAINERID: {e}")))
    }

    pub fn if_name(&self) -> Result<InterfaceName, CniError> {
        let text = self
            .var("CNI_IFNAME")
            .ok_or_else(|| CniError::environment("CNI_IFNAME is not set"))?;
        text.parse()
            .map_err(|e| CniError::environment(format!("CNI_IFNAME: {e}")))
    }

    /// The container's namespace path: required, and absolute.
    pub fn netns(&self) -> Result<PathBuf, CniError> {
        let text = self
            .var("CNI_NETNS")
            .ok_or_else(|| CniError::environment("CNI_NETNS is not set"))?;
        let path = PathBuf::from(text);
        // The agent's own rule (absolute, no '..', no NUL, bounded), checked here so that a
        // bad variable is the runtime's error (code 4) before anything is asked of the agent.
        zt_agent::plugin_api::check_namespace_path("CNI_NETNS", &path)
            .map_err(|e| CniError::environment(e.message))?;
        Ok(path)
    }

    /// `CNI_NETNS` when it is set to an absolute path (DEL: the namespace may be gone).
    pub fn netns_if_any(&self) -> Option<PathBuf> {
        self.netns().ok()
    }

    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(self.var("CNI_ARGS").unwrap_or_default())
    }

    /// The directories of `CNI_PATH`, in order.
    pub fn cni_path(&self) -> Vec<PathBuf> {
        self.var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. Unknown keys are tolerated whether or
/// not `IgnoreUnknown=1` is given: runtimes add keys of their own (`K8S_POD_UID`,
/// `K8S_POD_INFRA_CONTAINER_ID`) and a plugin that refused them would break on upgrades.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for entry in text.split(';').filter(|entry| !entry.trim().is_empty()) {
            let (key, value) = entry.split_once('=').ok_or_else(|| {
                CniError::environment(format!(
                    "CNI_ARGS entry {entry:?} is not KEY=VALUE (entries are separated by ';')"
                ))
            })?;
            pairs.push((key.trim().to_string(), value.trim().to_string()));
        }
        Ok(Self { pairs })
    }

    /// The last value given for `key`, if not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The pod's namespace and name, when the runtime is Kubernetes' (both must be given).
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.get("K8S_POD_NAMESPACE")?, self.get("K8S_POD_NAME")?))
    }
}

/// The endpoint key the agent keeps the ZeroTier identity under, so that a pod that is
/// re-created comes back with the same member, MAC and addresses:
/// - Kubernetes: `k8s/<namespace>/<pod>` for the pod's main interface `eth0`, and
///   `k8s/<namespace>/<pod>/<ifName>` for any other (a second attachment, e.g. via Multus,
///   must not take the first one's identity);
/// - otherwise `cni/<containerId>/<ifName>` (stable for the container's life only).
pub fn endpoint_key(
    args: &CniArgs,
    container_id: &ContainerId,
    if_name: &InterfaceName,
) -> Result<EndpointKey, CniError> {
    if let Some((namespace, pod)) = args.pod() {
        // A '/' in either would make another pod's (or interface's) key: a pod named
        // "web-0/net1" must not get web-0's second interface's identity.
        for (variable, value) in [("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", pod)] {
            if !is_kubernetes_name(value) {
                return Err(CniError::environment(format!(
                    "{variable} {value:?} is not a Kubernetes name \
                     (1 to 253 characters of a-z, A-Z, 0-9, '.', '-', '_', starting with a letter or digit)"
                )));
            }
        }
    }
    let text = match args.pod() {
        Some((namespace, pod)) if if_name.as_str() == "eth0" => format!("k8s/{namespace}/{pod}"),
        Some((namespace, pod)) => format!("k8s/{namespace}/{pod}/{if_name}"),
        None => format!("cni/{container_id}/{if_name}"),
    };
    text.parse().map_err(|e| {
        CniError::environment(format!(
            "cannot name the endpoint from CNI_ARGS and CNI_IFNAME: {e}"
        ))
    })
}

/// Kubernetes' namespace and pod names are DNS labels and subdomains; this is their
/// superset that CNI's own name rule allows (`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`), at most 253.
fn is_kubernetes_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && bytes.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && text.len() <= 253
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn commands_parse_and_unknown_ones_are_code_4() {
        for name in ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] {
            assert_eq!(Command::parse(name).unwrap().as_str(), name);
        }
        let error = Command::parse("add").unwrap_err();
        assert_eq!(error.code, 4);
        assert_eq!(error.msg, "unknown CNI_COMMAND: add");
        assert_eq!(env(&[]).command().unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "")]).command().unwrap_err().code, 4);
    }

    #[test]
    fn container_variables_are_checked() {
        let good = env(&[
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
        ]);
        assert_eq!(good.container_id().unwrap().as_str(), "abc123");
        assert_eq!(good.if_name().unwrap().as_str(), "eth0");
        assert_eq!(good.netns().unwrap(), PathBuf::from("/var/run/netns/cni-1"));

        let bad = env(&[
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_IFNAME", "a-name-too-long-x"),
            ("CNI_NETNS", "netns/relative"),
        ]);
        for error in [
            bad.container_id().unwrap_err(),
            bad.if_name().unwrap_err(),
            bad.netns().unwrap_err(),
        ] {
            assert_eq!(error.code, 4, "{error}");
        }
        assert!(bad.if_name().unwrap_err().msg.contains("CNI_IFNAME"));
        assert!(bad.netns_if_any().is_none());
        let missing = env(&[]);
        assert_eq!(missing.if_name().unwrap_err().msg, "CNI_IFNAME is not set");
        for name in ["eth0/1", "eth:0", "eth 0", ".", ".."] {
            assert!(env(&[("CNI_IFNAME", name)]).if_name().is_err(), "{name:?}");
        }
    }

    #[test]
    fn cni_args_tolerate_unknown_keys_and_spacing() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2-3;SOMETHING_NEW=x=y;",
        )
        .unwrap();
        assert_eq!(args.pod(), Some(("default", "web-0")));
        assert_eq!(args.get("SOMETHING_NEW"), Some("x=y"));
        assert_eq!(args.get("MISSING"), None);
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse(" ; ;").unwrap(), CniArgs::default());
        let error = CniArgs::parse("K8S_POD_NAME=a;garbage").unwrap_err();
        assert_eq!(error.code, 4);
        assert!(error.msg.contains("\"garbage\""), "{}", error.msg);
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME=a").unwrap().pod(),
            None,
            "a name without a namespace is not a pod"
        );
        assert_eq!(
            CniArgs::parse("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=")
                .unwrap()
                .pod(),
            None
        );
    }

    #[test]
    fn endpoint_keys_follow_the_pod_or_the_container() {
        let id: ContainerId = "4f1c".parse().unwrap();
        let eth0: InterfaceName = "eth0".parse().unwrap();
        let net1: InterfaceName = "net1".parse().unwrap();
        let pod = CniArgs::parse("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(
            endpoint_key(&pod, &id, &eth0).unwrap().as_str(),
            "k8s/default/web-0"
        );
        assert_eq!(
            endpoint_key(&pod, &id, &net1).unwrap().as_str(),
            "k8s/default/web-0/net1"
        );
        assert_eq!(
            endpoint_key(&CniArgs::default(), &id, &eth0)
                .unwrap()
                .as_str(),
            "cni/4f1c/eth0"
        );
        let odd = CniArgs::parse("K8S_POD_NAMESPACE=a b;K8S_POD_NAME=c").unwrap();
        assert_eq!(endpoint_key(&odd, &id, &eth0).unwrap_err().code, 4);
        // A pod name with a '/' would take another attachment's key.
        for args in [
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0/net1",
            "K8S_POD_NAMESPACE=default/web-0;K8S_POD_NAME=net1",
            "K8S_POD_NAMESPACE=..;K8S_POD_NAME=x",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=.hidden",
        ] {
            let hostile = CniArgs::parse(args).unwrap();
            let error = endpoint_key(&hostile, &id, &eth0).unwrap_err();
            assert_eq!(error.code, 4, "{args}");
            assert!(error.msg.contains("K8S_POD_"), "{args}: {}", error.msg);
        }
    }

    #[test]
    fn cni_path_splits_and_skips_empty_entries() {
        let e = env(&[("CNI_PATH", "/opt/cni/bin::/usr/lib/cni:")]);
        assert_eq!(
            e.cni_path(),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert!(env(&[]).cni_path().is_empty());
    }
}
