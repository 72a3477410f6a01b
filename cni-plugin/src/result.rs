//! CNI results: one model for every version, read from a `prevResult` or an IPAM plugin's
//! answer in any supported version and written in the version the request names.
//!
//! Differences between the versions (spec, "Success"; libcni's `types040`/`types100`):
//! - 0.3.1 and 0.4.0 tag each `ips[]` entry with `"version": "4"|"6"`; 1.0.0 dropped it.
//! - 1.1.0 adds `interfaces[].mtu` (and `socketPath`, `pciID`) and the route attributes
//!   `mtu`, `advmss`, `priority`, `table`, `scope`. They are written only in 1.1.0 results:
//!   an older runtime's parser has no place for them.
//!
//! Keys this model does not know (another plugin's additions in a `prevResult`) are kept as
//! they are, so that a chain loses nothing passing through this plugin.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zt_agent::plugin_api::IpPrefix;

use crate::version::CniVersion;

/// Interface keys that only 1.1.0 results carry.
const INTERFACE_KEYS_SINCE_1_1: [&str; 3] = ["mtu", "socketPath", "pciID"];
/// Route keys that only 1.1.0 results carry.
const ROUTE_KEYS_SINCE_1_1: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

/// A result, version-neutral.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace path for a container interface; empty or absent for a host one.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Unknown keys, and the 1.1.0 ones (`mtu`, ...), as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct IpConfig {
    pub address: IpPrefix,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RouteEntry {
    pub dst: IpPrefix,
    #[serde(default)]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The well-known `dns` object, in both configs and results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other`'s servers, searches and options after ours (without repeats), and its
    /// domain if we have none.
    pub fn merge(&mut self, other: &Dns) {
        fn union(ours: &mut Vec<String>, theirs: &[String]) {
            for item in theirs {
                if !ours.contains(item) {
                    ours.push(item.clone());
                }
            }
        }
        union(&mut self.nameservers, &other.nameservers);
        union(&mut self.search, &other.search);
        union(&mut self.options, &other.options);
        if self.domain.is_none() {
            self.domain.clone_from(&other.domain);
        }
    }
}

impl CniResult {
    /// Reads a result of any supported version (a `prevResult`, an IPAM plugin's stdout).
    /// `what` names it in the error.
    pub fn from_value(value: &Value, what: &str) -> Result<Self, String> {
        let mut result: Self =
            serde_json::from_value(value.clone()).map_err(|e| format!("{what}: {e}"))?;
        for ip in &mut result.ips {
            // 0.x's family tag; written again from the address when the version wants it.
            ip.extra.remove("version");
        }
        Ok(result)
    }

    /// The result as the spec of `version` writes it.
    pub fn to_value(&self, version: CniVersion) -> Value {
        let mut object = Map::new();
        object.insert("cniVersion".into(), version.as_str().into());
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| i.to_value(version))
                .collect();
            object.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| ip.to_value(version)).collect();
            object.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self.routes.iter().map(|r| r.to_value(version)).collect();
            object.insert("routes".into(), Value::Array(list));
        }
        if !self.dns.is_empty() {
            // Serializing plain strings and lists cannot fail.
            let dns = serde_json::to_value(&self.dns).unwrap_or_default();
            object.insert("dns".into(), dns);
        }
        Value::Object(object)
    }

    /// The index of the interface named `name` in `sandbox`, if listed.
    pub fn interface_index(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == Some(sandbox))
    }
}

impl Interface {
    fn to_value(&self, version: CniVersion) -> Value {
        let mut object = self.extra.clone();
        if !version.has_interface_mtu() {
            for key in INTERFACE_KEYS_SINCE_1_1 {
                object.remove(key);
            }
        }
        object.insert("name".into(), self.name.clone().into());
        if let Some(mac) = &self.mac {
            object.insert("mac".into(), mac.clone().into());
        }
        if let Some(sandbox) = self.sandbox.as_ref().filter(|s| !s.is_empty()) {
            object.insert("sandbox".into(), sandbox.clone().into());
        }
        Value::Object(object)
    }

    /// The MTU this interface was reported with (1.1.0 results).
    pub fn mtu(&self) -> Option<u64> {
        self.extra.get("mtu").and_then(Value::as_u64)
    }
}

impl IpConfig {
    fn to_value(&self, version: CniVersion) -> Value {
        let mut object = self.extra.clone();
        if version.ips_carry_version() {
            let family = if self.address.address.is_ipv4() {
                "4"
            } else {
                "6"
            };
            object.insert("version".into(), family.into());
        }
        object.insert("address".into(), self.address.to_string().into());
        if let Some(gateway) = self.gateway {
            object.insert("gateway".into(), gateway.to_string().into());
        }
        if let Some(index) = self.interface {
            object.insert("interface".into(), index.into());
        }
        Value::Object(object)
    }
}

impl RouteEntry {
    fn to_value(&self, version: CniVersion) -> Value {
        let mut object = self.extra.clone();
        if !version.has_interface_mtu() {
            for key in ROUTE_KEYS_SINCE_1_1 {
                object.remove(key);
            }
        }
        object.insert("dst".into(), self.dst.to_string().into());
        if let Some(gw) = self.gw {
            object.insert("gw".into(), gw.to_string().into());
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        let mut container = Interface {
            name: "eth0".into(),
            mac: Some("32:01:02:03:04:05".into()),
            sandbox: Some("/var/run/netns/cni-1".into()),
            extra: Map::new(),
        };
        container.extra.insert("mtu".into(), 2800.into());
        CniResult {
            interfaces: vec![container],
            ips: vec![
                IpConfig {
                    address: "10.147.17.5/24".parse().unwrap(),
                    gateway: Some("10.147.17.1".parse().unwrap()),
                    interface: Some(0),
                    extra: Map::new(),
                },
                IpConfig {
                    address: "fd00::5/88".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                    extra: Map::new(),
                },
            ],
            routes: vec![RouteEntry {
                dst: "10.10.0.0/16".parse().unwrap(),
                gw: Some("10.147.17.1".parse().unwrap()),
                extra: Map::new(),
            }],
            dns: Dns {
                nameservers: vec!["10.147.17.1".into()],
                domain: Some("zt.local".into()),
                ..Dns::default()
            },
        }
    }

    #[test]
    fn results_before_1_0_tag_ip_versions() {
        for version in [CniVersion::V0_3_1, CniVersion::V0_4_0] {
            assert_eq!(
                sample().to_value(version),
                json!({
                    "cniVersion": version.as_str(),
                    "interfaces": [{"name": "eth0", "mac": "32:01:02:03:04:05", "sandbox": "/var/run/netns/cni-1"}],
                    "ips": [
                        {"version": "4", "address": "10.147.17.5/24", "gateway": "10.147.17.1", "interface": 0},
                        {"version": "6", "address": "fd00::5/88", "interface": 0}
                    ],
                    "routes": [{"dst": "10.10.0.0/16", "gw": "10.147.17.1"}],
                    "dns": {"nameservers": ["10.147.17.1"], "domain": "zt.local"}
                })
            );
        }
    }

    #[test]
    fn results_1_0_drop_ip_versions_and_1_1_adds_mtu() {
        let v1 = sample().to_value(CniVersion::V1_0_0);
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert_eq!(
            v1["ips"][0],
            json!({"address": "10.147.17.5/24", "gateway": "10.147.17.1", "interface": 0})
        );
        assert!(v1["interfaces"][0].get("mtu").is_none());
        let v11 = sample().to_value(CniVersion::V1_1_0);
        assert_eq!(v11["cniVersion"], "1.1.0");
        assert_eq!(v11["interfaces"][0]["mtu"], 2800);
        assert!(v11["ips"][0].get("version").is_none());
    }

    #[test]
    fn empty_parts_are_left_out() {
        assert_eq!(
            CniResult::default().to_value(CniVersion::V1_0_0),
            json!({"cniVersion": "1.0.0"})
        );
    }

    #[test]
    fn prev_results_of_any_version_round_trip_with_unknown_keys() {
        let prev = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "sandbox": "/var/run/netns/x", "socketPath": "/s", "vendorKey": 1}
            ],
            "ips": [{"version": "4", "address": "10.0.0.2/24", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "priority": 5}],
            "dns": {}
        });
        let result = CniResult::from_value(&prev, "prevResult").unwrap();
        assert_eq!(result.interface_index("eth0", "/var/run/netns/x"), Some(1));
        assert_eq!(result.interface_index("eth0", "/var/run/netns/y"), None);
        let v1 = result.to_value(CniVersion::V1_0_0);
        assert_eq!(
            v1,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "veth1", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "sandbox": "/var/run/netns/x", "vendorKey": 1}
                ],
                "ips": [{"address": "10.0.0.2/24", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0"}]
            })
        );
        let v11 = result.to_value(CniVersion::V1_1_0);
        assert_eq!(v11["interfaces"][1]["socketPath"], "/s");
        assert_eq!(v11["routes"][0]["priority"], 5);
        let back = CniResult::from_value(&v11, "again").unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn malformed_results_are_refused_with_the_reason() {
        for bad in [
            json!({"ips": [{"address": "10.0.0.2"}]}),
            json!({"ips": [{"address": "10.0.0.2/24", "gateway": "x"}]}),
            json!({"routes": [{"gw": "10.0.0.1"}]}),
            json!({"interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]}),
            json!({"interfaces": "eth0"}),
        ] {
            let error = CniResult::from_value(&bad, "prevResult").unwrap_err();
            assert!(error.starts_with("prevResult: "), "{error}");
        }
    }

    #[test]
    fn dns_merges_without_repeats() {
        let mut ours = Dns {
            nameservers: vec!["10.0.0.1".into()],
            ..Dns::default()
        };
        ours.merge(&Dns {
            nameservers: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            domain: Some("a".into()),
            search: vec!["a".into()],
            options: vec!["ndots:2".into()],
        });
        assert_eq!(ours.nameservers, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ours.domain.as_deref(), Some("a"));
        ours.merge(&Dns {
            domain: Some("b".into()),
            ..Dns::default()
        });
        assert_eq!(ours.domain.as_deref(), Some("a"), "the first domain stays");
    }
}
