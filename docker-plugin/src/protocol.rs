//! libnetwork's remote driver and remote IPAM protocol: the JSON bodies of
//! `POST /NetworkDriver.*` and `POST /IpamDriver.*` (field names as Docker writes them).
//!
//! Requests are read leniently, as Docker's own clients behave: an empty body or `null` is
//! `{}`, a missing or `null` field is its default, and unknown fields are ignored (newer
//! Docker versions add some). Answers leave out empty optional fields.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Docker's label for the gateway address (an IPAM `Data` key and a `RequestAddressType`).
pub const GATEWAY_LABEL: &str = "com.docker.network.gateway";
/// The IPAM option that says what an address request is for.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// Where `docker network create -o k=v` options arrive in CreateNetwork's `Options`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// Docker's standard MTU option (`-o com.docker.network.driver.mtu=N`).
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Why a request body is not what the method takes.
#[derive(Debug, thiserror::Error)]
#[error("malformed request body: {0}")]
pub struct BodyError(#[from] serde_json::Error);

/// Parses a request body; empty (or only whitespace) and `null` mean `{}`.
pub fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice::<Option<T>>(body)?.unwrap_or_default())
}

/// A field that may be `null` as well as missing: both are the default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Plugin and network driver
// ---------------------------------------------------------------------------------------------

/// `POST /Plugin.Activate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<String>,
}

/// `POST /NetworkDriver.GetCapabilities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    pub scope: String,
    pub connectivity_scope: String,
}

/// An address pool as libnetwork passes it to CreateNetwork and AllocateNetwork. It names
/// no pool ID: `Pool` and `Gateway` are CIDR strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `POST /NetworkDriver.CreateNetwork`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` options), `com.docker.network.enable_ipv6`...
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// `POST /NetworkDriver.AllocateNetwork` (swarm managers only).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AllocateNetworkRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// `POST /NetworkDriver.AllocateNetwork`'s answer: options handed to CreateNetwork.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocateNetworkResponse {
    pub options: BTreeMap<String, String>,
}

/// The body of calls that name only a network: DeleteNetwork, FreeNetwork.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
}

/// The interface part of CreateEndpoint: what IPAM assigned and, with `--mac-address`, the
/// MAC. Each field is a string, empty when unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointInterface {
    #[serde(
        rename = "Address",
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

/// `POST /NetworkDriver.CreateEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    /// The endpoint's `--driver-opt` keys, exposed ports, port map...
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// `POST /NetworkDriver.CreateEndpoint`'s answer: only what the request left empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// The body of calls that name an endpoint: DeleteEndpoint, EndpointOperInfo, Leave,
/// RevokeExternalConnectivity (and ProgramExternalConnectivity, whose options are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
}

/// `POST /NetworkDriver.EndpointOperInfo`'s answer. Values are strings only: a MAC as
/// anything else once crashed dockerd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfoResponse {
    pub value: BTreeMap<String, String>,
}

/// `POST /NetworkDriver.Join`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// The container's namespace, `/var/run/docker/netns/<id>`.
    #[serde(rename = "SandboxKey", deserialize_with = "nullable")]
    pub sandbox_key: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// Which link Docker moves into the sandbox, and the prefix of its name there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// libnetwork's route types.
pub const ROUTE_NEXT_HOP: u8 = 0;
pub const ROUTE_CONNECTED: u8 = 1;

/// A route Docker adds in the sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    /// [`ROUTE_NEXT_HOP`] (with `NextHop`) or [`ROUTE_CONNECTED`].
    pub route_type: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

/// `POST /NetworkDriver.Join`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "GatewayIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway_ipv6: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    #[serde(default)]
    pub disable_gateway_service: bool,
}

/// `POST /NetworkDriver.GwAllocCheck` (Docker 28+, asked only of drivers that want it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GwAllocCheckResponse {
    #[serde(rename = "SkipIPv4")]
    pub skip_ipv4: bool,
    #[serde(rename = "SkipIPv6")]
    pub skip_ipv6: bool,
}

// ---------------------------------------------------------------------------------------------
// IPAM driver
// ---------------------------------------------------------------------------------------------

/// `POST /IpamDriver.GetCapabilities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilitiesResponse {
    /// False: with it, Docker would put a random MAC on the interface, which ZeroTier drops.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// False: pools are kept in the state file, no replay needed.
    pub requires_request_replay: bool,
}

/// `POST /IpamDriver.GetDefaultAddressSpaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpacesResponse {
    pub local_default_address_space: String,
    pub global_default_address_space: String,
}

/// `POST /IpamDriver.RequestPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RequestPoolRequest {
    #[serde(rename = "AddressSpace", deserialize_with = "nullable")]
    pub address_space: String,
    /// `--subnet`, or empty.
    #[serde(rename = "Pool", deserialize_with = "nullable")]
    pub pool: String,
    /// `--ip-range`, or empty.
    #[serde(rename = "SubPool", deserialize_with = "nullable")]
    pub sub_pool: String,
    /// `--ipam-opt` values.
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6", deserialize_with = "nullable")]
    pub v6: bool,
}

/// `POST /IpamDriver.RequestPool`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `POST /IpamDriver.ReleasePool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
}

/// `POST /IpamDriver.RequestAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    /// `--ip`/`--ip6` (or `--gateway`), without a prefix; empty when Docker lets IPAM pick.
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// `POST /IpamDriver.RequestAddress`'s answer: the address with its prefix length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressResponse {
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `POST /IpamDriver.ReleaseAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
}

/// Every failure: libnetwork reads `Err` from any answer that is not 200.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_and_null_bodies_are_defaults() {
        for body in [&b""[..], b"  \n", b"null"] {
            let request: CreateNetworkRequest = parse_body(body).unwrap();
            assert_eq!(request, CreateNetworkRequest::default());
        }
        let request: RequestPoolRequest =
            parse_body(br#"{"Pool":null,"Options":null,"V6":null}"#).unwrap();
        assert_eq!(request, RequestPoolRequest::default());
    }

    #[test]
    fn create_network_reads_docker_field_names() {
        let body = json!({
            "NetworkID": "n1",
            "Options": {"com.docker.network.generic": {"zerotier.network": "8056c2e21c000001"},
                        "com.docker.network.enable_ipv6": false},
            "IPv4Data": [{"AddressSpace": "zerotier", "Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}],
            "IPv6Data": [],
            "SomethingNew": 1
        });
        let request: CreateNetworkRequest = parse_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(request.network_id, "n1");
        assert_eq!(request.ipv4_data[0].pool, "0.0.0.0/0");
        assert!(request.ipv6_data.is_empty());
        assert!(request.options.contains_key(GENERIC_OPTIONS));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_body::<CreateNetworkRequest>(b"{").is_err());
        assert!(parse_body::<CreateNetworkRequest>(br#"{"NetworkID": 5}"#).is_err());
        assert!(parse_body::<RequestPoolRequest>(br#"{"Options": {"a": 1}}"#).is_err());
    }

    #[test]
    fn answers_leave_out_empty_fields() {
        let join = JoinResponse {
            interface_name: InterfaceName {
                src_name: "ztd0123456789ab".into(),
                dst_prefix: "eth".into(),
            },
            static_routes: vec![StaticRoute {
                destination: "10.10.0.0/16".into(),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new(),
            }],
            ..JoinResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({
                "InterfaceName": {"SrcName": "ztd0123456789ab", "DstPrefix": "eth"},
                "StaticRoutes": [{"Destination": "10.10.0.0/16", "RouteType": 1}],
                "DisableGatewayService": false
            })
        );
        let create = CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "32:a1:b2:c3:d4:e5".into(),
                ..EndpointInterface::default()
            }),
        };
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"Interface": {"MacAddress": "32:a1:b2:c3:d4:e5"}})
        );
        assert_eq!(
            serde_json::to_value(CreateEndpointResponse::default()).unwrap(),
            json!({})
        );
        assert_eq!(
            serde_json::to_value(IpamCapabilitiesResponse {
                requires_mac_address: false,
                requires_request_replay: false
            })
            .unwrap(),
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
        );
    }
}
