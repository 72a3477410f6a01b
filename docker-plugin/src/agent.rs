//! The plugin's side of zt-agent's plugin API (`docs/plugin-api.md`): the operations it uses
//! behind a trait (so that tests can stand in for the agent), and [`UnixAgent`], which
//! reaches the agent through the agent's own client (`zt_agent::plugin_client`: hyper over
//! hyperlocal).
//!
//! `attach`, `status` and `gc` use the agent's own types. `detach` with `keepIdentity` and
//! `sandbox` (`docs/docker-plugin-design.md`, section 3) have request types of their own
//! here, stricter than the agent's (`zt_agent::plugin_api::{DetachRequest, SandboxRequest}`):
//! this plugin always names the key.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use hyper::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zt_agent::plugin_api::{
    ApiError, AttachRequest, ContainerId, DetachResponse, Endpoint, EndpointKey, ErrorCode,
    GcRequest, GcResponse, InterfaceName, Status, ATTACH_GRACE,
};
use zt_agent::plugin_client::{AsyncPluginClient, ClientError};

/// Deadline of an operation other than attach.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The future of an agent operation.
pub type AgentFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AgentError>> + Send + 'a>>;

/// What the plugin asks of the agent.
pub trait Agent: Send + Sync + 'static {
    /// `POST /v1/attach`; this plugin always leaves `netns` out.
    fn attach(&self, request: AttachRequest) -> AgentFuture<'_, Endpoint>;
    /// `POST /v1/detach`.
    fn detach(&self, request: DetachRequest) -> AgentFuture<'_, DetachResponse>;
    /// `POST /v1/sandbox` (A3).
    fn sandbox(&self, request: SandboxRequest) -> AgentFuture<'_, Endpoint>;
    /// `GET /v1/status`.
    fn status(&self) -> AgentFuture<'_, Status>;
    /// `POST /v1/gc`.
    fn gc(&self, request: GcRequest) -> AgentFuture<'_, GcResponse>;
}

/// `POST /v1/detach` with `keepIdentity` (A2). It is sent only when true, so
/// that an agent without it still takes every other detach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetachRequest {
    pub key: EndpointKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_name: Option<InterfaceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Keep the key's identity for a later attach (a stable endpoint key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_identity: bool,
}

impl DetachRequest {
    pub fn describe(&self) -> String {
        match (&self.container_id, &self.if_name) {
            (Some(id), Some(name)) => format!("{} ({id}, {name})", self.key),
            _ => self.key.to_string(),
        }
    }
}

/// `POST /v1/sandbox` (A3): the namespace the runtime moved the interface into,
/// or `None` when it is back in the agent's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxRequest {
    pub key: EndpointKey,
    pub container_id: ContainerId,
    pub if_name: InterfaceName,
    pub sandbox: Option<PathBuf>,
}

/// What can go wrong asking the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing listens on the socket: the request did not reach the agent, nothing was done.
    #[error(
        "cannot reach zt-agent at {socket} ({source}): start it (systemctl start zt-agent) or give the plugin the agent's socket with --agent-socket",
        socket = .socket.display()
    )]
    Unreachable { socket: PathBuf, source: io::Error },
    /// The agent did not answer in time.
    #[error("zt-agent did not answer {operation} within {} s", .after.as_secs())]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// The exchange broke off, or the answer is not what the API promises.
    #[error("talking to zt-agent ({operation}): {problem}")]
    Exchange {
        operation: &'static str,
        problem: String,
    },
    /// The agent refused or failed the operation; its message is written for people.
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl AgentError {
    /// The agent's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api(error) => Some(error.code),
            _ => None,
        }
    }

    /// Whether the request never reached the agent (so nothing was done there).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether trying the same request later may succeed: the agent was down, slow or
    /// failing, rather than refusing the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Exchange { .. } => true,
            Self::Api(error) => matches!(
                error.code,
                ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Internal
            ),
        }
    }
}

/// A client of the agent listening at one socket path; one connection per request.
#[derive(Clone, Debug)]
pub struct UnixAgent {
    socket: PathBuf,
    timeout: Duration,
}

impl UnixAgent {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the deadline of operations other than attach (which waits as long as it asks
    /// to, plus the agent's grace and this).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request through the agent's own client (hyper over hyperlocal), with its
    /// errors told in this plugin's terms.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &'static str,
        body: Option<&B>,
        limit: Duration,
    ) -> Result<T, AgentError> {
        let client = AsyncPluginClient::new(&self.socket).with_timeout(self.timeout);
        client
            .call(method, operation, body, limit)
            .await
            .map_err(|error| match error {
                ClientError::Connect { socket, source } => {
                    AgentError::Unreachable { socket, source }
                }
                ClientError::Timeout { after, .. } => AgentError::Timeout { operation, after },
                ClientError::Api { error, .. } => AgentError::Api(error),
                ClientError::Io { source, .. } => AgentError::Exchange {
                    operation,
                    problem: source.to_string(),
                },
                ClientError::Protocol { problem, .. } => {
                    AgentError::Exchange { operation, problem }
                }
            })
    }
}

impl Agent for UnixAgent {
    fn attach(&self, request: AttachRequest) -> AgentFuture<'_, Endpoint> {
        Box::pin(async move {
            let limit = request.wait_duration() + ATTACH_GRACE + self.timeout;
            self.call(Method::POST, "attach", Some(&request), limit)
                .await
        })
    }

    fn detach(&self, request: DetachRequest) -> AgentFuture<'_, DetachResponse> {
        Box::pin(async move {
            self.call(Method::POST, "detach", Some(&request), self.timeout)
                .await
        })
    }

    fn sandbox(&self, request: SandboxRequest) -> AgentFuture<'_, Endpoint> {
        Box::pin(async move {
            self.call(Method::POST, "sandbox", Some(&request), self.timeout)
                .await
        })
    }

    fn status(&self) -> AgentFuture<'_, Status> {
        Box::pin(async move {
            self.call::<(), _>(Method::GET, "status", None, self.timeout)
                .await
        })
    }

    fn gc(&self, request: GcRequest) -> AgentFuture<'_, GcResponse> {
        Box::pin(async move {
            self.call(Method::POST, "gc", Some(&request), self.timeout)
                .await
        })
    }
}
