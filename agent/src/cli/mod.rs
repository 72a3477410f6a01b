//! The command-line personalities: zerotier-idtool (`idtool`), world making (`mkworld`) and
//! zerotier-cli's queries (`info`, `listpeers`, `peers`, plus `echo`).

pub mod endpoints;
pub mod idtool;
pub mod mkworld;
pub mod query;
