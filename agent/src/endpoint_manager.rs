//! The plugin API's [`EndpointManager`], served by the driver: each call becomes a
//! [`PluginRequest`] on a channel to the task that owns the nodes, and waits for its answer.

use node_core::node::NetworkStatus;
use node_core::Identity;
use tokio::sync::{mpsc, oneshot};

use crate::driver::Endpoint as HostedEndpoint;
use crate::endpoints::TapEndpointPort;
use crate::networks::{self, LocalSettings};
use crate::plugin_api::{
    ApiError, AttachRequest, DetachResponse, Endpoint, EndpointManager, EndpointRef, EndpointState,
    ErrorCode, GcRequest, GcResponse, IpPrefix, ManagerFuture, Route, Status,
};

/// A plugin API call for the driver.
pub enum PluginRequest {
    Attach {
        request: AttachRequest,
        reply: oneshot::Sender<Result<Endpoint, ApiError>>,
    },
    Detach {
        target: EndpointRef,
        reply: oneshot::Sender<Result<DetachResponse, ApiError>>,
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
        port: Result<TapEndpointPort, ApiError>,
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
        Box::pin(self.ask(
            move |reply| PluginRequest::Detach { target, reply },
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
    let settings = LocalSettings::default();
    let ips = config
        .map(|c| {
            networks::managed_addresses(c, &settings)
                .into_iter()
                .filter_map(|(ip, bits)| IpPrefix::new(ip, bits))
                .collect()
        })
        .unwrap_or_default();
    let routes = config
        .map(|c| {
            networks::managed_routes(c, &settings)
                .into_iter()
                .filter_map(|r| {
                    Some(Route {
                        dst: IpPrefix::new(r.target.0, r.target.1)?,
                        gateway: r.via,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Endpoint {
        key: request.key.clone(),
        owner: request.owner.clone(),
        network: hosted.network,
        container_id: request.container_id.clone(),
        netns: request.netns.clone(),
        if_name: request.if_name.clone(),
        mac: node_core::vl2::Mac::from_address(hosted.node.address(), hosted.network),
        address: hosted.node.address(),
        ips,
        routes,
        gateway: None,
        mtu: config.map_or(node_core::vl2::config::DEFAULT_MTU, |c| c.mtu),
        state,
        counters: hosted.counters,
    }
}
