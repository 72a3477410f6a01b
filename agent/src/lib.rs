//! `zt-agent`: the per-host ZeroTier daemon and its command line, as a library so that the
//! binary stays thin and tests can run an agent in-process.
//!
//! - [`agent`]: `zt-agent run`: home folder, sockets, local API, the node's task.
//! - [`driver`]: the task that owns the node (sans-IO `node_core::node::Node`).
//! - [`transport`]: the UDP sockets behind a trait.
//! - [`api`]: the local HTTP API (ZeroTier One's `/status`, `/peer`, `/network`,
//!   `/controller...`, plus `/echo`).
//! - [`controller`]: the network controller's records in `controller.d/` and its HTTP API.
//! - [`ports`]: one tap per joined network; [`networks`]: `networks.d/` and `/network` JSON.
//! - [`metrics`]: `/metrics`, Prometheus text.
//! - [`home`]: the home folder, laid out as ZeroTier One's.
//! - [`tap`]: the Linux tap device of a virtual network; [`netconf`]: its addresses, routes, MTU.
//! - [`endpoints`]: container endpoints' records and their tap in the container;
//!   [`endpoint_manager`]: the plugin API served by the driver.
//! - [`identity_pool`]: endpoint identities generated ahead of time, so attaches do not wait.
//! - [`plumbing`]: moving endpoint interfaces into container namespaces and configuring them
//!   there, on a thread of its own.
//! - [`authorize`]: authorizing the agent's own endpoints on a private network's controller,
//!   given its credentials (a ZeroTier One-style controller API or ZeroTier Central's).
//! - [`plugin_api`]: the Unix-socket JSON API the CNI plugin and Docker driver call;
//!   [`plugin_client`]: its client (async, and blocking); [`netns_fd`]: namespaces given to
//!   it as a descriptor of the caller, pinned with bind mounts.
//! - [`client`], [`cli`]: the command-line tools (idtool, mkworld, info, listpeers, echo,
//!   join, leave, listnetworks, api).

pub mod agent;
pub mod api;
pub mod authorize;
pub mod cli;
pub mod client;
pub mod controller;
pub mod driver;
pub mod endpoint_manager;
pub mod endpoints;
pub mod home;
pub mod identity_pool;
pub mod metrics;
pub mod netconf;
pub mod netns_fd;
pub mod networks;
pub mod offload;
pub mod plugin_api;
pub mod plugin_client;
pub mod plumbing;
pub mod ports;
pub mod tap;
pub mod transport;
pub mod validator;
