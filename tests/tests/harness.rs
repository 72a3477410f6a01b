//! Self-tests of the end-to-end harness: namespaces, the LAN and clean-up work on their own,
//! before any agent is involved.

use std::path::Path;
use std::time::{Duration, Instant};

use zt_e2e::{require_privileged, run_command, wait_until, Lan, Netns};

fn namespace_exists(name: &str) -> bool {
    let listing = run_command("ip", ["netns", "list"]).expect("ip netns list");
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn wait_until_returns_the_first_value() {
    let mut calls = 0;
    let found = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
        calls += 1;
        (calls == 3).then_some(calls)
    });
    assert_eq!(found, Some(3));
}

#[test]
fn wait_until_gives_up_at_the_deadline() {
    let start = Instant::now();
    let found: Option<()> =
        wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            None
        });
    assert_eq!(found, None);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn lan_hosts_reach_each_other_and_nothing_else() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("selftest", 2);
    let names: Vec<String> = [lan.host(0), lan.host(1), lan.bridge()]
        .iter()
        .map(|netns| netns.name().to_owned())
        .collect();
    for name in &names {
        assert!(namespace_exists(name), "{name} was not created");
    }

    let ping = lan
        .host(0)
        .run("ping", ["-c", "1", "-W", "5", &lan.ip(1).to_string()]);
    assert!(
        ping.status.success(),
        "{} cannot ping {} (is iputils-ping installed? scripts/test.sh installs it): {}{}",
        lan.host(0).name(),
        lan.ip(1),
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // Only the LAN's own /24 is routable from a host: nothing can leave the namespaces.
    let routes = lan.host(0).run("ip", ["-4", "route", "show"]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        !routes.contains("default"),
        "a host has a default route: {routes}"
    );
    assert!(
        routes.contains(&format!("10.213.{}.0/24", lan.subnet())),
        "no route for the LAN: {routes}"
    );

    drop(lan);
    for name in &names {
        assert!(!namespace_exists(name), "{name} was not deleted");
    }
}

#[test]
fn dropping_a_namespace_kills_its_processes() {
    if !require_privileged() {
        return;
    }
    let netns = Netns::new("killtest");
    let mut sleeper = netns
        .command("sleep")
        .arg("600")
        .spawn()
        .expect("start sleep in the namespace");
    let pid = sleeper.id();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // `ip netns exec` enters the namespace and then execs sleep: wait until it is inside,
    // or the namespace has nothing to kill yet.
    let inside = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        let listing = run_command("ip", ["netns", "pids", netns.name()]).ok()?;
        String::from_utf8_lossy(&listing.stdout)
            .split_whitespace()
            .any(|p| p == pid.to_string())
            .then_some(())
    });
    assert!(
        inside.is_some(),
        "sleep (pid {pid}) never entered its namespace"
    );
    drop(netns);
    let exited = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        sleeper.try_wait().ok().flatten()
    });
    assert!(exited.is_some(), "sleep (pid {pid}) outlived its namespace");
}
