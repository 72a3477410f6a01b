//! `zt-docker-plugin`: the `zerotier` libnetwork remote network driver and IPAM driver.
//!
//! Docker calls it over a Unix socket (`/run/docker/plugins/zerotier.sock`); it translates
//! each call into calls to zt-agent's plugin API and keeps what it must remember in a state
//! file. Every Docker endpoint is a ZeroTier member of its own, with the addresses the
//! network's controller assigns it. `docs/docker-plugin-design.md` has the design and the
//! agent additions it relies on.
//!
//! - [`protocol`]: libnetwork's JSON bodies.
//! - [`driver`]: what each call does.
//! - [`state`]: the state file.
//! - [`agent`]: the agent's side, a trait and its Unix-socket client.
//! - [`server`]: the HTTP server on the plugin socket.

#![forbid(unsafe_code)]

pub mod agent;
pub mod driver;
pub mod protocol;
pub mod server;
pub mod state;
