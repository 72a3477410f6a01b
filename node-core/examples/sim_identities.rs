//! Writes the identity fixture the scale simulation rebuilds its nodes from
//! (`node_core::sim::identities`): runs the memory-hard search for identities 0..count on
//! `threads` threads and writes the fixture to `path`.
//!
//! `cargo run --release -p node-core --example sim_identities -- <count> <path> [threads]`
//! (10,004 identities take about 25 minutes of CPU.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use node_core::identity::MemoryHardScratch;
use node_core::sim::identities::{encode, search, FixtureEntry};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(count), Some(path)) = (
        args.first().and_then(|c| c.parse::<u32>().ok()),
        args.get(1),
    ) else {
        eprintln!("usage: sim_identities <count> <path> [threads]");
        std::process::exit(2);
    };
    let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1usize);
    let started = Instant::now();
    let next = AtomicU32::new(0);
    let found: Mutex<Vec<Option<FixtureEntry>>> = Mutex::new(vec![None; count as usize]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut scratch = MemoryHardScratch::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let entry = search(index, &mut scratch);
                    let Ok(mut found) = found.lock() else {
                        break;
                    };
                    found[index as usize] = entry;
                    if index % 500 == 0 {
                        eprintln!("{index} / {count} after {:?}", started.elapsed());
                    }
                }
            });
        }
    });
    let found = found.into_inner().unwrap_or_default();
    let entries: Option<Vec<FixtureEntry>> = found.into_iter().collect();
    let Some(entries) = entries else {
        eprintln!("an identity found no winning candidate");
        std::process::exit(1);
    };
    if let Err(e) = std::fs::write(path, encode(&entries)) {
        eprintln!("writing {path}: {e}");
        std::process::exit(1);
    }
    eprintln!(
        "{count} identities written to {path} in {:?}",
        started.elapsed()
    );
}
