//! An echo the host asks for is reported when its answer comes, even when it had to wait
//! for a WHOIS that itself waited for the root (a node that has only just started).

use node_core::node::Event;
use node_core::sim::{generate_identities, LinkConfig, Sim};
use node_core::Millis;

#[test]
fn echo_asked_at_start_is_reported() {
    let ids = generate_identities(3, 0x3e3e);
    let mut sim = Sim::new(9, LinkConfig::default(), vec![ids[0].clone()]);
    let a = sim.add_node(ids[1].clone(), None);
    let b = sim.add_node(ids[2].clone(), None);
    // Nothing has been exchanged yet: a knows neither b nor any path to the root.
    let to = sim.address_of(b);
    sim.with_node(a, |n, now| n.send_echo(now, to, b"early"));
    sim.run_for(Millis(4_000));
    let reported = sim.host(a).events.iter().any(
        |e| matches!(e, Event::EchoReply { from, payload, .. } if *from == to && payload == b"early"),
    );
    assert!(
        reported,
        "the early echo's answer must be reported to the host"
    );
}
