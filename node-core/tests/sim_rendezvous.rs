//! The root introduces two peers once per pair (zt-vl1.md 7.6, 9.5): a request relayed one
//! way and its answer relayed back must not produce a second round of RENDEZVOUS.

use node_core::crypto::armor::dearmor;
use node_core::sim::{generate_identities, LinkConfig, Sim};
use node_core::wire::fragment::is_fragment;
use node_core::wire::packet::Packet;
use node_core::wire::verb::Verb;
use node_core::Millis;

#[test]
fn one_rendezvous_to_each_side_per_pair() {
    let ids = generate_identities(3, 0x2e2e);
    let mut sim = Sim::new(5, LinkConfig::default(), vec![ids[0].clone()]);
    let a = sim.add_node(ids[1].clone(), None);
    let b = sim.add_node(ids[2].clone(), None);
    sim.run_for(Millis(10_000));
    sim.capture(true);
    let to = sim.address_of(b);
    sim.with_node(a, |n, now| n.send_echo(now, to, b"hello b"));
    sim.run_for(Millis(5_000));

    let root = sim.host(0).local;
    let mut rendezvous_to = Vec::new();
    for c in sim
        .captured()
        .iter()
        .filter(|c| c.from == root && !is_fragment(&c.data))
    {
        let Some(host) = [a, b].into_iter().find(|h| sim.host(*h).local == c.to) else {
            continue;
        };
        let key = ids[0].agree(&ids[host]).expect("root has its secret");
        let mut packet = c.data.clone();
        if dearmor(&mut packet, &key).is_err() {
            continue; // relayed packets are armored for someone else
        }
        let verb = Packet::new_checked(&packet[..]).map(|p| Verb::from_verb_byte(p.raw_verb()));
        if verb == Ok(Verb::Rendezvous) {
            rendezvous_to.push(host);
        }
    }
    rendezvous_to.sort_unstable();
    assert_eq!(
        rendezvous_to,
        vec![a, b],
        "exactly one RENDEZVOUS to each side"
    );
}
