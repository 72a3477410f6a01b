//! Issue 2: three `zt-agent run` processes in network namespaces made by the test, one of
//! them the only root of a planet the test makes with `zt-agent mkworld`, come ONLINE,
//! exchange ECHO and list each other as direct peers.

use std::fs;
use std::time::Duration;

use zt_e2e::{
    generate_identity, make_planet, require_privileged, wait_until, Agent, Lan, TempDir, AGENT_PORT,
};

const ROOT: usize = 0;
const MEMBER_A: usize = 1;
const MEMBER_B: usize = 2;

/// Echoes `to` until a reply comes (the first tries may wait on WHOIS), printing it.
fn echo_until_replied(from: &Agent<'_>, from_name: &str, to: &str, to_name: &str) -> String {
    let mut last_error = String::new();
    let reply = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(500),
        || match from.echo(to) {
            Ok(reply) => Some(reply),
            Err(error) => {
                last_error = error;
                None
            }
        },
    );
    let reply = reply.unwrap_or_else(|| {
        panic!("{from_name} never got an ECHO reply from {to_name} ({to}): {last_error}")
    });
    assert!(
        reply.contains(to),
        "{from_name}'s echo reply does not name {to_name} ({to}): {reply}"
    );
    println!("echo {from_name} -> {to_name}: {}", reply.trim());
    reply
}

#[test]
fn three_agents_echo_and_become_direct_peers() {
    if !require_privileged() {
        return;
    }
    let lan = Lan::new("vl1", 3);
    let work = TempDir::new("vl1");

    let names = ["root", "member-a", "member-b"];
    let homes: Vec<_> = names.iter().map(|name| work.path().join(name)).collect();
    let mut addresses = Vec::new();
    for home in &homes {
        fs::create_dir_all(home).expect("create a home folder");
        addresses.push(generate_identity(home));
    }
    let root_endpoint = format!("{}/{AGENT_PORT}", lan.ip(ROOT));
    let planet = make_planet(
        work.path(),
        &homes[ROOT].join("identity.public"),
        &[root_endpoint],
    );
    for home in &homes {
        fs::copy(&planet, home.join("planet")).expect("copy the planet into a home");
    }

    let mut agents: Vec<Agent<'_>> = (0..3)
        .map(|index| Agent::start(lan.host(index), &homes[index], AGENT_PORT))
        .collect();

    // A root validates at most one new identity per 2 s per source /24, and both members
    // share one: allow them time to come online.
    for (index, agent) in agents.iter_mut().enumerate() {
        let online = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
            if let Err(exited) = agent.check_running() {
                return Some(Err(exited));
            }
            agent.is_online().then_some(Ok(()))
        });
        match online {
            Some(Ok(())) => {}
            Some(Err(exited)) => panic!("{}: {exited}", names[index]),
            None => panic!("{} never came ONLINE: {:?}", names[index], agent.info()),
        }
        let info = agent
            .info()
            .unwrap_or_else(|error| panic!("{}: {error}", names[index]));
        assert_eq!(
            info["address"].as_str(),
            Some(addresses[index].as_str()),
            "{}'s info -j reports another address",
            names[index]
        );
        println!("{} ({}) is ONLINE", names[index], addresses[index]);
    }

    let [root, member_a, member_b] = &agents[..] else {
        unreachable!("three agents were started")
    };
    echo_until_replied(member_a, "member-a", &addresses[MEMBER_B], "member-b");
    echo_until_replied(member_b, "member-b", &addresses[MEMBER_A], "member-a");
    echo_until_replied(root, "root", &addresses[MEMBER_A], "member-a");
    echo_until_replied(root, "root", &addresses[MEMBER_B], "member-b");

    // Relayed traffic makes the root send RENDEZVOUS to both members, which then reach
    // each other straight over the LAN. Keep echoing while waiting, as a user would.
    let members = [
        (member_a, MEMBER_A, MEMBER_B),
        (member_b, MEMBER_B, MEMBER_A),
    ];
    for (agent, own, other) in members {
        let direct = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
            let peer = agent.peer(&addresses[other]).ok().flatten()?;
            if peer.has_active_path_to(lan.ip(other)) {
                Some(peer)
            } else {
                let _ = agent.echo(&addresses[other]);
                None
            }
        });
        let peers = agent.peers();
        let peer = direct.unwrap_or_else(|| {
            panic!(
                "{} never listed {} with an active direct path to {}: {peers:?}",
                names[own],
                names[other],
                lan.ip(other)
            )
        });
        assert_eq!(peer.role(), Some("LEAF"), "{}: {:?}", names[own], peer);
        println!(
            "{} lists {} as DIRECT via {:?}",
            names[own],
            names[other],
            peer.active_paths()
        );

        // And the root is listed as the planet's root, with its own active path.
        let listed_root = agent
            .peer(&addresses[ROOT])
            .unwrap_or_else(|error| panic!("{}: {error}", names[own]))
            .unwrap_or_else(|| panic!("{} does not list the root", names[own]));
        assert_eq!(listed_root.role(), Some("PLANET"), "{listed_root:?}");
        assert!(
            listed_root.has_active_path_to(lan.ip(ROOT)),
            "{} has no active path to the root: {listed_root:?}",
            names[own]
        );
    }

    for member in [MEMBER_A, MEMBER_B] {
        let listed = wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
            root.peer(&addresses[member])
                .ok()
                .flatten()
                .filter(|peer| peer.has_active_path_to(lan.ip(member)))
        });
        let peers = root.peers();
        let listed = listed.unwrap_or_else(|| {
            panic!(
                "the root never listed {} with an active path to {}: {peers:?}",
                names[member],
                lan.ip(member)
            )
        });
        assert_eq!(listed.role(), Some("LEAF"), "{listed:?}");
    }

    let root_peers = root.cli(&["listpeers"]).unwrap_or_default();
    println!("root listpeers:\n{root_peers}");
    for (index, agent) in agents.iter_mut().enumerate() {
        if let Err(exited) = agent.check_running() {
            panic!("{}: {exited}", names[index]);
        }
    }
}
