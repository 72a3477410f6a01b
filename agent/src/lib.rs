//! `zt-agent`: the per-host ZeroTier daemon and its command line, as a library so that the
//! binary stays thin and tests can run an agent in-process.
//!
//! - [`agent`]: `zt-agent run`: home folder, sockets, local API, the node's task.
//! - [`driver`]: the task that owns the node (sans-IO `node_core::node::Node`).
//! - [`transport`]: the UDP sockets behind a trait.
//! - [`api`]: the local HTTP API (ZeroTier One's `/status`, `/peer`, plus `/echo`).
//! - [`home`]: the home folder, laid out as ZeroTier One's.
//! - [`client`], [`cli`]: the command-line tools (idtool, mkworld, info, listpeers, echo).

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod driver;
pub mod home;
pub mod transport;
