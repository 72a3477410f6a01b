//! Joined networks on the host side: `networks.d/` (ZeroTier One's layout), the per-network
//! settings of `<nwid>.local.conf`, which managed addresses and routes the settings allow,
//! and the `/network` JSON object.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use node_core::node::NetworkInfo;
use node_core::vl2::config::{NetworkConfig, FLAG_ENABLE_BROADCAST};
use node_core::vl2::NetworkId;
use node_core::wire::inet::InetAddress;
use serde_json::{json, Value};

use crate::home::{write_atomic, PUBLIC_MODE};
use crate::netconf::ManagedRoute;

pub const NETWORKS_DIR: &str = "networks.d";

/// `networks.d/<nwid>.local.conf`: what the host lets the network's controller manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    pub allow_managed: bool,
    pub allow_global: bool,
    pub allow_default: bool,
    pub allow_dns: bool,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            allow_managed: true,
            allow_global: false,
            allow_default: false,
            allow_dns: false,
        }
    }
}

impl LocalSettings {
    /// Reads ZeroTier One's `key=value` lines; unknown keys and bad values keep defaults.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let on = matches!(value.trim(), "1" | "true");
            match key.trim() {
                "allowManaged" => s.allow_managed = on,
                "allowGlobal" => s.allow_global = on,
                "allowDefault" => s.allow_default = on,
                "allowDNS" => s.allow_dns = on,
                _ => {}
            }
        }
        s
    }

    pub fn render(&self) -> String {
        let b = |v: bool| if v { 1 } else { 0 };
        format!(
            "allowManaged={}\nallowGlobal={}\nallowDefault={}\nallowDNS={}\n",
            b(self.allow_managed),
            b(self.allow_global),
            b(self.allow_default),
            b(self.allow_dns)
        )
    }

    /// Applies the boolean fields of a `POST /network/<nwid>` body.
    pub fn update_from_json(&mut self, body: &Value) {
        let set = |key: &str, field: &mut bool| {
            if let Some(v) = body.get(key).and_then(Value::as_bool) {
                *field = v;
            }
        };
        set("allowManaged", &mut self.allow_managed);
        set("allowGlobal", &mut self.allow_global);
        set("allowDefault", &mut self.allow_default);
        set("allowDNS", &mut self.allow_dns);
    }
}

/// `networks.d/` in a home folder.
#[derive(Clone, Debug)]
pub struct NetworksDir {
    dir: PathBuf,
}

impl NetworksDir {
    pub fn new(home: &Path) -> Self {
        Self {
            dir: home.join(NETWORKS_DIR),
        }
    }

    pub fn create(&self) -> io::Result<()> {
        crate::home::create_dir_with_mode(&self.dir, crate::home::PUBLIC_DIR_MODE)
    }

    fn conf(&self, nwid: NetworkId) -> PathBuf {
        self.dir.join(format!("{:016x}.conf", nwid.0))
    }

    fn local_conf(&self, nwid: NetworkId) -> PathBuf {
        self.dir.join(format!("{:016x}.local.conf", nwid.0))
    }

    /// Every joined network (each file named exactly `<16 hex>.conf`), with its saved config
    /// when the file holds one that parses.
    pub fn joined(&self) -> Vec<(NetworkId, Option<NetworkConfig>, LocalSettings)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let Some(hex) = name.strip_suffix(".conf") else {
                continue;
            };
            if hex.len() != 16 {
                continue;
            }
            let Ok(id) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            let nwid = NetworkId(id);
            let saved = fs::read(entry.path())
                .ok()
                .and_then(|bytes| NetworkConfig::from_bytes(&bytes).ok());
            out.push((nwid, saved, self.settings(nwid)));
        }
        out.sort_by_key(|(nwid, ..)| nwid.0);
        out
    }

    pub fn settings(&self, nwid: NetworkId) -> LocalSettings {
        fs::read_to_string(self.local_conf(nwid))
            .map(|t| LocalSettings::parse(&t))
            .unwrap_or_default()
    }

    /// Records a join: a placeholder `\n` until a config arrives (as ZeroTier One).
    pub fn save_joined(&self, nwid: NetworkId) -> io::Result<()> {
        let path = self.conf(nwid);
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, b"\n", PUBLIC_MODE)
    }

    pub fn save_config(&self, nwid: NetworkId, dictionary: &[u8]) -> io::Result<()> {
        write_atomic(&self.conf(nwid), dictionary, PUBLIC_MODE)
    }

    pub fn save_settings(&self, nwid: NetworkId, settings: &LocalSettings) -> io::Result<()> {
        write_atomic(
            &self.local_conf(nwid),
            settings.render().as_bytes(),
            PUBLIC_MODE,
        )
    }

    pub fn remove(&self, nwid: NetworkId) -> io::Result<()> {
        for path in [self.conf(nwid), self.local_conf(nwid)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether the host may use `ip` as a managed address or route under `settings`
/// (ZeroTier One: never loopback, link-local or multicast; global scope only if allowed).
fn allowed(ip: IpAddr, bits: u8, settings: &LocalSettings) -> bool {
    if !settings.allow_managed {
        return false;
    }
    if ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return false;
    }
    if bits == 0 && !settings.allow_default {
        return false;
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    private || settings.allow_global || bits == 0
}

/// The addresses the host should put on the network's interface.
pub fn managed_addresses(config: &NetworkConfig, settings: &LocalSettings) -> Vec<(IpAddr, u8)> {
    config
        .static_ips
        .iter()
        .filter_map(|ip| match ip {
            InetAddress::Ip(sa) => Some((sa.ip(), sa.port().min(128) as u8)),
            _ => None,
        })
        .filter(|(ip, bits)| allowed(*ip, *bits, settings))
        .collect()
}

/// The routes the host should add for the network.
pub fn managed_routes(config: &NetworkConfig, settings: &LocalSettings) -> Vec<ManagedRoute> {
    config
        .routes
        .iter()
        .filter_map(|r| {
            let InetAddress::Ip(target) = r.target else {
                return None;
            };
            let via = match r.via {
                InetAddress::Ip(v) => Some(v.ip()),
                _ => None,
            };
            let bits = target.port().min(128) as u8;
            allowed(target.ip(), bits, settings).then_some(ManagedRoute {
                target: (target.ip(), bits),
                via,
            })
        })
        .collect()
}

fn inet_text(ip: &InetAddress) -> Option<String> {
    match ip {
        InetAddress::Ip(sa) => Some(format!("{}/{}", sa.ip(), sa.port())),
        _ => None,
    }
}

/// ZeroTier One's `/network/<nwid>` object.
pub fn network_json(info: &NetworkInfo, port_device_name: &str, settings: &LocalSettings) -> Value {
    let nwid = format!("{:016x}", info.id.0);
    let mac = info
        .mac
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let config = info.config.as_ref();
    let assigned: Vec<String> = config
        .map(|c| c.static_ips.iter().filter_map(inet_text).collect())
        .unwrap_or_default();
    let routes: Vec<Value> = config
        .map(|c| {
            c.routes
                .iter()
                .filter_map(|r| {
                    let target = inet_text(&r.target)?;
                    let via = match r.via {
                        InetAddress::Ip(v) => Value::String(v.ip().to_string()),
                        _ => Value::Null,
                    };
                    Some(
                        json!({"target": target, "via": via, "flags": r.flags, "metric": r.metric}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let dns = config.map_or_else(
        || json!({"domain": "", "servers": []}),
        |c| {
            let servers: Vec<String> = c
                .dns
                .servers
                .iter()
                .filter_map(|s| match s {
                    InetAddress::Ip(sa) => Some(sa.ip().to_string()),
                    _ => None,
                })
                .collect();
            json!({"domain": String::from_utf8_lossy(&c.dns.domain), "servers": servers})
        },
    );
    let groups: Vec<Value> = info
        .multicast_subscriptions
        .iter()
        .map(|g| {
            let mac = g
                .mac
                .0
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            json!({"mac": mac, "adi": g.adi})
        })
        .collect();
    json!({
        "id": nwid,
        "nwid": nwid,
        "mac": mac,
        "name": config.map(|c| c.name.clone()).unwrap_or_default(),
        "status": info.status.as_str(),
        "type": match config.map(|c| c.network_type) {
            Some(node_core::vl2::config::NetworkType::Public) => "PUBLIC",
            _ => "PRIVATE",
        },
        "mtu": config.map_or(node_core::vl2::config::DEFAULT_MTU, |c| c.mtu),
        "dhcp": false,
        "bridge": false,
        "broadcastEnabled": config.is_some_and(|c| c.flags & FLAG_ENABLE_BROADCAST != 0),
        "portError": 0,
        "netconfRevision": config.map_or(0, |c| c.revision),
        "portDeviceName": port_device_name,
        "allowManaged": settings.allow_managed,
        "allowGlobal": settings.allow_global,
        "allowDefault": settings.allow_default,
        "allowDNS": settings.allow_dns,
        "assignedAddresses": assigned,
        "routes": routes,
        "multicastSubscriptions": groups,
        "dns": dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn settings_round_trip_and_defaults() {
        let s = LocalSettings::parse("allowManaged=0\nallowGlobal=1\njunk\n");
        assert!(!s.allow_managed && s.allow_global && !s.allow_default);
        assert_eq!(LocalSettings::parse(&s.render()), s);
        assert_eq!(LocalSettings::parse(""), LocalSettings::default());
    }

    #[test]
    fn managed_addresses_follow_the_settings() {
        let nwid = NetworkId(0x8056_c2e2_1c00_0001);
        let mut config = NetworkConfig::new(nwid, node_core::Address::from_u64(0x0123456789));
        let ip = |s: &str, bits: u16| InetAddress::Ip(SocketAddr::new(s.parse().unwrap(), bits));
        config.static_ips = vec![
            ip("10.147.17.5", 24),
            ip("fd80:56c2:e21c:0:199:9301:2345:6789", 88),
            ip("203.0.113.9", 24),
        ];
        let default = LocalSettings::default();
        let got = managed_addresses(&config, &default);
        assert_eq!(got.len(), 2, "a global address needs allowGlobal: {got:?}");
        let global = LocalSettings {
            allow_global: true,
            ..default
        };
        assert_eq!(managed_addresses(&config, &global).len(), 3);
        let none = LocalSettings {
            allow_managed: false,
            ..default
        };
        assert!(managed_addresses(&config, &none).is_empty());
    }
}
