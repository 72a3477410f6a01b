//! The plugin API's [`EndpointManager`], served by the driver: each call becomes a
//! [`PluginRequest`] on a channel to the task that owns the nodes, and waits for its answer.

use node_core::node::NetworkStatus;
use node_core::Identity;
use tokio::sync::{mpsc, oneshot};

use crate::driver::Endpoint as HostedEndpoint;
use crate::endpoints::TapEndpointPort;
use crate::endpoints::{link_spec, PortOptions};
use crate::plugin_api::{
    ApiError, AttachRequest, DetachRequest, DetachResponse, Endpoint, EndpointManager, EndpointRef,
    EndpointState, ErrorCode, GcRequest, GcResponse, IpPrefix, ManagerFuture, Route,
    SandboxRequest, Status,
};

/// A plugin API call for the driver.
pub enum PluginRequest {
    Attach {
        request: AttachRequest,
        reply: oneshot::Sender<Result<Endpoint, ApiError>>,
    },
    Detach {
        request: DetachRequest,
        reply: oneshot::Sender<Result<DetachResponse, ApiError>>,
    },
    Sandbox {
        request: SandboxRequest,
        reply: oneshot::Sender<Result<Endpoint, ApiError>>,
    },
    Check {
        target: EndpointRef,
        reply: oneshot::Sender<Result<Endpoint, ApiError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Gc {
        request: GcRequest,
        reply: oneshot::Sender<Result<GcResponse, ApiError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<Endpoint>, ApiError>>,
    },
    /// From the driver's own helper task: the endpoint's identity is at hand and its tap is
    /// in the container.
    Opened {
        request: AttachRequest,
        identity: Box<Identity>,
        /// The network's config saved by an earlier run, applied at once.
        saved_config: Option<Box<node_core::vl2::config::NetworkConfig>>,
        /// Why authorizing it with the agent's controller credentials failed, if it did.
        authorize_error: Option<String>,
        port: Result<Box<TapEndpointPort>, ApiError>,
        /// Where the runtime had moved the interface (a restored endpoint without `netns`).
        sandbox: Option<std::path::PathBuf>,
        /// When the attach arrived (its wait counts from then).
        received: std::time::Instant,
        reply: oneshot::Sender<Result<Endpoint, ApiError>>,
    },
}

/// Forwards plugin API calls to the driver.
#[derive(Clone)]
pub struct DriverEndpointManager {
    requests: mpsc::Sender<PluginRequest>,
}

impl DriverEndpointManager {
    pub fn new(requests: mpsc::Sender<PluginRequest>) -> Self {
        Self { requests }
    }

    async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> PluginRequest + Send + 'static,
        gone: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(make(reply)).await.is_err() {
            return gone();
        }
        answer.await.unwrap_or_else(|_| gone())
    }
}

fn agent_gone() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "the agent is shutting down")
}

impl EndpointManager for DriverEndpointManager {
    fn attach(&self, request: AttachRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(self.ask(
            move |reply| PluginRequest::Attach { request, reply },
            || Err(agent_gone()),
        ))
    }

    fn detach(&self, target: EndpointRef) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        self.detach_with(target.into())
    }

    fn detach_with(
        &self,
        request: DetachRequest,
    ) -> ManagerFuture<'_, Result<DetachResponse, ApiError>> {
        Box::pin(self.ask(
            move |reply| PluginRequest::Detach { request, reply },
            || Err(agent_gone()),
        ))
    }

    fn sandbox(&self, request: SandboxRequest) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(self.ask(
            move |reply| PluginRequest::Sandbox { request, reply },
            || Err(agent_gone()),
        ))
    }

    fn check(&self, target: EndpointRef) -> ManagerFuture<'_, Result<Endpoint, ApiError>> {
        Box::pin(self.ask(
            move |reply| PluginRequest::Check { target, reply },
            || Err(agent_gone()),
        ))
    }

    fn status(&self) -> ManagerFuture<'_, Status> {
        Box::pin(self.ask(
            |reply| PluginRequest::Status { reply },
            || Status {
                ready: false,
                address: None,
                version: env!("CARGO_PKG_VERSION").to_string(),
                endpoints: 0,
                reason: Some("the agent is shutting down".into()),
            },
        ))
    }

    fn gc(&self, request: GcRequest) -> ManagerFuture<'_, Result<GcResponse, ApiError>> {
        Box::pin(self.ask(
            move |reply| PluginRequest::Gc { request, reply },
            || Err(agent_gone()),
        ))
    }

    fn endpoints(&self) -> ManagerFuture<'_, Result<Vec<Endpoint>, ApiError>> {
        Box::pin(self.ask(|reply| PluginRequest::List { reply }, || Err(agent_gone())))
    }
}

/// What the plugin API says about a hosted endpoint.
pub fn describe(hosted: &HostedEndpoint, request: &AttachRequest) -> Endpoint {
    let info = hosted.node.network(hosted.network);
    let config = info.as_ref().and_then(|n| n.config.as_ref());
    let applied = config.is_some_and(|c| hosted.port.is_applied(c.revision));
    let state = match info.as_ref().map(|n| n.status) {
        Some(NetworkStatus::Ok) if applied => EndpointState::Ready,
        Some(NetworkStatus::AccessDenied) => EndpointState::AccessDenied,
        Some(NetworkStatus::NotFound) => EndpointState::NetworkNotFound,
        _ => EndpointState::Pending,
    };
    let mac = node_core::vl2::Mac::from_address(hosted.node.address(), hosted.network);
    let spec = config.map(|c| link_spec(mac, c, &PortOptions::of(request)));
    let ips = spec
        .iter()
        .flat_map(|s| s.addresses.iter())
        .filter_map(|(ip, bits)| IpPrefix::new(*ip, *bits))
        .collect();
    let mut routes: Vec<Route> = spec
        .iter()
        .flat_map(|s| s.routes.iter())
        .filter_map(|r| {
            Some(Route {
                dst: IpPrefix::new(r.target.0, r.target.1)?,
                gateway: r.via,
            })
        })
        .collect();
    let gateway = spec.as_ref().and_then(|s| s.default_route_via);
    if let Some(gateway) = gateway {
        let any = if gateway.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        };
        routes.extend(IpPrefix::new(any, 0).map(|dst| Route {
            dst,
            gateway: Some(gateway),
        }));
    }
    Endpoint {
        key: request.key.clone(),
        owner: request.owner.clone(),
        network: hosted.network,
        container_id: request.container_id.clone(),
        netns: request.netns.clone(),
        if_name: request.if_name.clone(),
        mac,
        address: hosted.node.address(),
        ips,
        routes,
        gateway,
        mtu: spec.map_or(
            request.mtu.unwrap_or(node_core::vl2::config::DEFAULT_MTU),
            |s| s.mtu,
        ),
        state,
        dns: config.and_then(dns_of),
        counters: hosted.counters,
    }
}

/// A config's DNS settings, when it has a domain or a server.
fn dns_of(config: &node_core::vl2::config::NetworkConfig) -> Option<crate::plugin_api::Dns> {
    let servers: Vec<std::net::IpAddr> = config
        .dns
        .servers
        .iter()
        .filter_map(|s| match s {
            node_core::wire::inet::InetAddress::Ip(addr) => Some(addr.ip()),
            _ => None,
        })
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let domain = String::from_utf8_lossy(&config.dns.domain)
        .trim_end_matches('\0')
        .to_string();
    (!domain.is_empty() || !servers.is_empty())
        .then_some(crate::plugin_api::Dns { domain, servers })
}
