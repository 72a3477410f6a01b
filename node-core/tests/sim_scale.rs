//! The scale scenario of issue 8 item 6 at a size CI affords (the full 10,000-node run is
//! `scripts/scale.sh`; its figures are in docs/scale.md): every member comes online, gets
//! its network's config from the one controller, and every talking pair ends up on a
//! direct path; the counters the report is made of agree with each other.

use node_core::identity::MemoryHardScratch;
use node_core::sim::identities::{identities, unsearched};
use node_core::sim::scale::{run_scale, ConfigLoad, ScaleOptions};
use node_core::sim::SIM_EPOCH;
use node_core::Millis;

#[test]
fn a_few_hundred_nodes_come_online_get_configs_and_pair_up_directly() {
    let options = ScaleOptions {
        roots: 4,
        nodes: 240,
        networks: 10,
        seed: 3,
        limit: Millis(120_000),
        step: Millis(250),
        steady: Millis(30_000),
    };
    let ids = (0..(options.roots + 1 + options.nodes) as u32)
        .map(unsearched)
        .collect();
    let report = run_scale(&options, ids).expect("valid options");

    assert!(report.online.all(), "online: {}", report.online.count());
    assert!(
        report.configured.all(),
        "configured: {}",
        report.configured.count()
    );
    assert_eq!(report.direct.reached.len(), options.nodes / 2);
    assert!(report.direct.all(), "direct: {}", report.direct.count());

    // The controller's counters add up, and it refused nobody (all were authorized).
    let c = report.startup.controller;
    assert_eq!(c.requests, c.configs + c.refused + c.ignored);
    assert_eq!(c.refused, 0);
    assert!(c.configs >= options.nodes as u64, "{c:?}");
    assert!(report.configs_per_member_max >= 1);
    let s = report.steady.controller;
    assert_eq!(s.requests, s.configs + s.refused + s.ignored);

    // Roots carried traffic; they cannot have received more than the simulator delivered.
    let sim = report.sim;
    assert!(report.startup.root_datagrams_in > 0);
    assert!(report.startup.root_datagrams_out > 0);
    assert!(report.startup.root_datagrams_in + report.steady.root_datagrams_in <= sim.delivered);
    assert!(sim.delivered + sim.lost + sim.unroutable <= sim.sent + sim.duplicated);
    assert!(report.startup.root_in_per_second() > 0.0);
    assert_eq!(report.steady.span, options.steady);

    // The quantiles are ordered.
    for goal in [&report.online, &report.configured, &report.direct] {
        assert!(goal.quantile(0.5) <= goal.quantile(0.99));
        assert!(goal.quantile(0.99) <= goal.quantile(1.0));
    }
    assert!(report.online.quantile(1.0) <= report.configured.quantile(1.0));
}

#[test]
fn the_controller_load_serves_every_member_a_config_with_a_distinct_address() {
    let members: Vec<_> = (0..300).map(|i| unsearched(1000 + i)).collect();
    let mut load = ConfigLoad::new(unsearched(999), members, SIM_EPOCH).expect("created");
    for _ in 0..300 {
        assert!(load.serve_next() >= 1, "a config in at least one chunk");
    }
    let mut addresses: Vec<_> = (0..300)
        .map(|i| load.assigned_ipv4(i).expect("assigned"))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), 300);
}

const FIXTURE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/sim-identities.bin"
));

#[test]
fn fixture_identities_pass_full_validation() {
    let (ids, valid) = identities(FIXTURE, 1030).expect("the fixture reads");
    assert_eq!(valid, 1024);
    assert_eq!(ids.len(), 1030);
    let mut scratch = MemoryHardScratch::new();
    for index in [0, 1, 511, 1023] {
        assert!(ids[index].has_secret());
        assert!(
            ids[index].locally_validate_with(&mut scratch),
            "fixture identity {index}"
        );
    }
    // Past the fixture they are unsearched, and validation says so.
    assert!(!ids[1029].locally_validate_with(&mut scratch));
    let mut addresses: Vec<_> = ids.iter().map(|id| id.address()).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), ids.len());
}
