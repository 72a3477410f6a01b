//! The controller's config throughput (issue 8 item 6): one private network of 10,000
//! authorized members, each request answered as the node answers it (the config built with
//! its COM and COO signed, serialized, and split into signed chunks).
//!
//! Run: `cargo bench -p node-core --bench controller`. The figure to read is the throughput
//! in elements (configs) per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use node_core::sim::identities::unsearched;
use node_core::sim::scale::ConfigLoad;
use node_core::sim::SIM_EPOCH;

const MEMBERS: u32 = 10_000;

fn config_requests(c: &mut Criterion) {
    let controller = unsearched(MEMBERS + 1);
    let members = (0..MEMBERS).map(unsearched).collect();
    let mut load = ConfigLoad::new(controller, members, SIM_EPOCH).expect("network created");
    // First requests assign addresses; the benchmark measures the steady state after them.
    for _ in 0..MEMBERS {
        load.serve_next();
    }
    let mut group = c.benchmark_group("controller");
    group.throughput(Throughput::Elements(1));
    group.bench_function("config_request/10000_members", |b| {
        b.iter(|| black_box(load.serve_next()))
    });
    group.finish();
}

criterion_group!(benches, config_requests);
criterion_main!(benches);
