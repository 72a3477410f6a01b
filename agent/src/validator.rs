//! The memory-hard identity hash for every node the driver hosts, on a thread of its own.
//!
//! A HELLO from a new identity costs [`Identity::locally_validate`] (tens of milliseconds,
//! more on a loaded host). Run on the driver's task, a flood of fresh identities would stall
//! every node's packets; instead the nodes defer it
//! ([`node_core::node::NodeConfig::defer_identity_validation`]), the driver hands each
//! [`node_core::node::Event::ValidateIdentity`] to this worker, and the verdicts come back on
//! a channel the driver selects on. One thread: at most one hash at a time, whatever the
//! flood, so the agent's CPU stays bounded too.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use node_core::identity::MemoryHardScratch;
use node_core::{Address, Identity};
use tokio::sync::mpsc;

/// Requests waiting for the thread; beyond this the oldest is abandoned. Each node bounds
/// its own pending validations, but many nodes share this thread.
pub const MAX_QUEUED_VALIDATIONS: usize = 256;

/// What the worker reports for one request.
#[derive(Debug)]
pub struct Verdict {
    /// The hosted node that asked.
    pub node: Address,
    pub identity: Identity,
    /// `Some(valid)`: the hash's result; `None`: abandoned unhashed (the queue was full).
    pub valid: Option<bool>,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<(Address, Identity)>,
    closed: bool,
}

/// The driver's handle on the worker thread, started at the first request.
pub struct IdentityValidator {
    verdicts: mpsc::UnboundedSender<Verdict>,
    shared: Option<Arc<(Mutex<Queue>, Condvar)>>,
}

impl IdentityValidator {
    /// Verdicts will be sent on `verdicts`.
    pub fn new(verdicts: mpsc::UnboundedSender<Verdict>) -> Self {
        Self {
            verdicts,
            shared: None,
        }
    }

    /// Queues `identity` for hashing on behalf of the hosted node `node`.
    pub fn validate(&mut self, node: Address, identity: Identity) {
        let shared = self.shared.get_or_insert_with(|| {
            let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
            let worker = shared.clone();
            let verdicts = self.verdicts.clone();
            let spawned = std::thread::Builder::new()
                .name("zt-identity-hash".into())
                .spawn(move || work(&worker, &verdicts));
            if let Err(e) = spawned {
                tracing::error!("cannot start the identity validation thread: {e}");
            }
            shared
        });
        let abandoned = {
            let Ok(mut queue) = shared.0.lock() else {
                return;
            };
            let abandoned = if queue.requests.len() >= MAX_QUEUED_VALIDATIONS {
                queue.requests.pop_front()
            } else {
                None
            };
            queue.requests.push_back((node, identity));
            abandoned
        };
        shared.1.notify_one();
        if let Some((node, identity)) = abandoned {
            let _ = self.verdicts.send(Verdict {
                node,
                identity,
                valid: None,
            });
        }
    }
}

impl Drop for IdentityValidator {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            if let Ok(mut queue) = shared.0.lock() {
                queue.closed = true;
            }
            shared.1.notify_one();
        }
    }
}

fn work(shared: &(Mutex<Queue>, Condvar), verdicts: &mpsc::UnboundedSender<Verdict>) {
    // 2 MiB, allocated once for the thread's life.
    let mut scratch = MemoryHardScratch::new();
    loop {
        let (node, identity) = {
            let Ok(mut queue) = shared.0.lock() else {
                return;
            };
            loop {
                if queue.closed {
                    return;
                }
                if let Some(request) = queue.requests.pop_front() {
                    break request;
                }
                queue = match shared.1.wait(queue) {
                    Ok(queue) => queue,
                    Err(_) => return,
                };
            }
        };
        let valid = identity.locally_validate_with(&mut scratch);
        let verdict = Verdict {
            node,
            identity,
            valid: Some(valid),
        };
        if verdicts.send(verdict).is_err() {
            return; // The driver is gone.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_come_back_in_order_and_invalid_ones_say_so() {
        let ids = node_core::sim::generate_identities(1, 0x7661_6c69);
        let forged = node_core::sim::identities::unsearched(3);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut validator = IdentityValidator::new(tx);
        let node = Address::from_u64(0x01_0203_0405);
        validator.validate(node, ids[0].clone());
        validator.validate(node, forged.clone());
        let first = rx.blocking_recv().expect("a verdict");
        assert_eq!((first.node, &first.identity), (node, &ids[0]));
        assert_eq!(first.valid, Some(true));
        let second = rx.blocking_recv().expect("a verdict");
        assert_eq!((&second.identity, second.valid), (&forged, Some(false)));
    }
}
