//! The scale simulation of issue 8 item 6, with a report: roots, one controller with many
//! networks, and thousands of member nodes on the virtual clock (`node_core::sim::scale`).
//!
//! `cargo run --release -p node-core --example sim_scale -- [--nodes N] [--roots R]
//! [--networks M] [--seed S] [--limit-s SECONDS] [--steady-s SECONDS]
//! [--controller-bench MEMBERS] [--fixture PATH]`
//!
//! Identities come from the checked-in fixture (`tests/data/sim-identities.bin`, made by
//! the `sim_identities` example) as far as it reaches, then from unsearched key streams
//! (`node_core::sim::identities`); validation is off either way. `scripts/scale.sh` runs
//! the full-size case.

use std::time::Instant;

use node_core::sim::identities::{identities, unsearched};
use node_core::sim::scale::{run_scale, ConfigLoad, GoalTimes, Rates, ScaleOptions};
use node_core::sim::SIM_EPOCH;
use node_core::Millis;

const DEFAULT_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/sim-identities.bin"
);

struct Args {
    options: ScaleOptions,
    controller_bench: usize,
    fixture: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        options: ScaleOptions::default(),
        controller_bench: 10_000,
        fixture: DEFAULT_FIXTURE.to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: {value} is not a number"))
        };
        let o = &mut args.options;
        match flag.as_str() {
            "--nodes" => o.nodes = number()? as usize,
            "--roots" => o.roots = number()? as usize,
            "--networks" => o.networks = number()? as usize,
            "--seed" => o.seed = number()?,
            "--limit-s" => o.limit = Millis(number()? as i64 * 1000),
            "--steady-s" => o.steady = Millis(number()? as i64 * 1000),
            "--controller-bench" => args.controller_bench = number()? as usize,
            "--fixture" => args.fixture = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

fn seconds(m: Option<Millis>) -> String {
    m.map_or("never".into(), |m| format!("{:.2} s", m.0 as f64 / 1000.0))
}

fn goal(name: &str, times: &GoalTimes) {
    println!(
        "  {name:<28} {:>6} / {:<6} p50 {:>9}  p99 {:>9}  all {:>9}",
        times.count(),
        times.reached.len(),
        seconds(times.quantile(0.5)),
        seconds(times.quantile(0.99)),
        if times.all() {
            seconds(times.quantile(1.0))
        } else {
            "not all".into()
        },
    );
}

fn rates(name: &str, r: &Rates) {
    println!(
        "  {name}: {:.1} s virtual; roots received {:.0} datagrams/s and sent {:.0}/s (all \
         roots together); controller {:.1} requests/s, {:.1} configs/s ({} requests, {} \
         configs, {} refused, {} rate-limited)",
        r.span.0 as f64 / 1000.0,
        r.root_in_per_second(),
        r.root_out_per_second(),
        r.controller_requests_per_second(),
        r.controller_configs_per_second(),
        r.controller.requests,
        r.controller.configs,
        r.controller.refused,
        r.controller.ignored,
    );
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time (user + system) this process used so far (Linux), in seconds.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel counts them in USER_HZ, which is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sim_scale: {e}");
            std::process::exit(2);
        }
    };
    let o = &args.options;
    let started = Instant::now();
    let fixture = std::fs::read(&args.fixture).unwrap_or_else(|e| {
        eprintln!(
            "sim_scale: reading {}: {e}; every identity will be unsearched",
            args.fixture
        );
        node_core::sim::identities::encode(&[])
    });
    let total = o.roots + 1 + o.nodes;
    let (ids, valid) = identities(&fixture, total).unwrap_or_else(|e| {
        eprintln!("sim_scale: {}: {e}", args.fixture);
        std::process::exit(1);
    });
    let identities_wall = started.elapsed();

    let sim_started = Instant::now();
    let sim_cpu = cpu_seconds();
    let Some(report) = run_scale(o, ids) else {
        eprintln!("sim_scale: bad options");
        std::process::exit(2);
    };
    let sim_wall = sim_started.elapsed();
    let sim_cpu = cpu_seconds() - sim_cpu;

    println!(
        "scale simulation: {} members, {} roots, 1 controller with {} networks, seed {}",
        o.nodes, o.roots, o.networks, o.seed
    );
    println!(
        "  identities: {total} ({valid} searched, from the fixture; the rest unsearched), \
         rebuilt in {:.2} s wall",
        identities_wall.as_secs_f64()
    );
    println!(
        "  simulation: {:.2} s wall ({:.2} s CPU) for {:.1} s virtual",
        sim_wall.as_secs_f64(),
        sim_cpu,
        (report.startup.span.0 + report.steady.span.0) as f64 / 1000.0
    );
    println!("virtual time from start until (members or talking pairs):");
    goal("online", &report.online);
    goal("configured", &report.configured);
    goal("direct path (both sides)", &report.direct);
    println!("rates:");
    rates("start-up (until every goal)", &report.startup);
    rates("steady state (after)", &report.steady);
    println!(
        "  simulator: {} datagrams sent, {} delivered, {} unroutable; at most {} configs \
         received by one member",
        report.sim.sent, report.sim.delivered, report.sim.unroutable, report.configs_per_member_max
    );

    if args.controller_bench > 0 {
        let members = args.controller_bench as u32;
        let controller = unsearched(u32::MAX);
        let load_ids = (0..members).map(|i| unsearched(i + 0x1000_0000)).collect();
        let setup = Instant::now();
        let Some(mut load) = ConfigLoad::new(controller, load_ids, SIM_EPOCH) else {
            eprintln!("sim_scale: the controller benchmark's network was not created");
            std::process::exit(1);
        };
        let mut chunks = 0;
        for _ in 0..members {
            chunks += load.serve_next();
        }
        let first = setup.elapsed();
        let steady = Instant::now();
        let steady_cpu = cpu_seconds();
        let mut served = 0;
        while steady.elapsed().as_secs_f64() < 3.0 || served < members as usize {
            chunks += load.serve_next();
            served += 1;
        }
        let steady = steady.elapsed();
        let steady_cpu = cpu_seconds() - steady_cpu;
        println!(
            "controller alone, one network of {members} members: set-up and first requests \
             (address assignment) {:.0} configs/s; then {:.0} configs/s of wall time, {:.0} \
             per CPU second, over {served} requests ({:.2} chunks per config), one thread",
            members as f64 / first.as_secs_f64(),
            served as f64 / steady.as_secs_f64(),
            served as f64 / steady_cpu.max(0.01),
            chunks as f64 / (members as usize + served) as f64,
        );
    }
    println!(
        "wall time {:.2} s in all ({:.2} s CPU); peak memory {}",
        started.elapsed().as_secs_f64(),
        cpu_seconds(),
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
}
