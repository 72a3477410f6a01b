//! A private network in the simulator for the fault and security tests: planet roots, a
//! controller on a host of its own (so that it can go down while the roots stay up), and
//! members. The controller answers config requests from a policy the test changes while the
//! run goes on (authorized and ignored members, credential window, rules, ownership).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use node_core::node::{ConfigAnswer, Event, NetworkStatus, Node, NodeConfig};
use node_core::sim::{HostId, LinkConfig, NatKind, Sim};
use node_core::vl2::config::{NetworkConfig, FLAG_ENABLE_BROADCAST};
use node_core::vl2::credentials::Thing;
use node_core::vl2::{
    CertificateOfMembership, CertificateOfOwnership, Mac, NetworkId, Rule, RuleKind,
};
use node_core::wire::inet::InetAddress;
use node_core::wire::verb::ErrorCode;
use node_core::{Address, Identity, Millis, Timestamp};

/// Identities made once with `generate_identities(8, 0x0fa0_0000)` and kept here: making
/// one costs seconds of memory-hard hashing, which would dominate these tests.
const IDENTITIES: [&str; 8] = [
    "ccd7c0cc4d:0:0341cb1bbe44e313160212137a9d353a4bbdaff020d2fb1668e4cefbc4d76b6774e3296a54b2bd42ac9d48432d3b41a3854774cbb70f03a83f32f6bcd3269400:a9c0b535994be80658701fb0a9e43b80db65cfc7dad947bac953e8684bafbc35192447c8baf39b3d899d18e47874510792dbc8d7a9a91c8539e082a4285c9c67",
    "f61755b8d2:0:090739882c02c021d78e1b2f12bf3a5e3a6e528db1f2b436fd2bc18890e648295df1d9103e66258dc80a36a57db623caea6f342ef16520127e4eb7b328052ef1:7a75a9f84cd7366b23a9b7e1021ee62feb802e46ffc956b2b5bab2bcd6deee3116cc945fe5f6ad3c8b70b208b0335e9c73650db33a677646ba5edeef36c1fdbf",
    "aff78eb8b7:0:19f28bd0943262848eb8059ee7f3e99904c4c280764c8068537cfd4998e2fd0f44bda91a4c67fcd7566a1a8fe8bf01a98531d293b7a23a75c19d8e3fb80880e0:4b2c28e88ba882b5236bb9e81bee8d6043b8de8923b066f3864187455faa5c4f8f83bcedf7bada74b98a3fe7afdf44365dd40630200e17a2fa01b89e81450c29",
    "fc51e235be:0:8a421d8f1fbe8331f0ff396a08979792fe13fd0de8a5a3b2ce46942059e9e87a52bcaf9e78a6129e90bf935fd2e74b6e6edd7785a6bb0107b3b302a001292f34:e0cd896ed0094a0e75ead46b2de6aafda5517a059522fa20eb3155c08053770c119acd8f5b2d741b628eabe125f6509db263f16ac6a6a67cdeefd3afb412dd64",
    "275b8e73cd:0:3a34cbc8de0a403d6b81eea28001234232d256e13f4b918bb4c43662392e3c26357ff9ef989e8c21470a5048446cd9aae89fa429dbb70c2682300f4eb38a63c2:d0b4b18b1efd2e587a7b272b798f206e459365b0d6460ca5f60d71c273da1cc83ddbd101256edfa9d89c4c6cc4b90075de8fdbf55a33176ce106d1d60cee3a22",
    "da773a230f:0:ce646322f781c5263ce8f11b8291b28e5955acd8661781fae207bc63e7ca1046169cd3f5c0867e458719d67acf2395f310f3387237c776a96477fb5951579749:f6dc2d78b182ebb6af5724e4760e96aa3c5eab915d3433a3a7bc1586532ed9516db7f8e4af0349c39298b35349a112cbd797a17583172e344f26166ced0f4ee7",
    "c6d30c41f1:0:ad37cbe808a834bbaa6ae634050f223f4945417570466669f0866e77925e7b595f79d7bdc8348c5c7e84288f6865be6ac6ea9d754e3ec04bf9ca87dc8d841e68:812c68b41f89fc0eea65ca4377077773b769bbaf5f5d1dfb38bf8521e47fea9f2f49b27202f7d22ffabe242aef89deb81c552742721cc9f779c0382e341fce5c",
    "bbff8861e5:0:b80800851d8e3c09e296f9782885e98aeaacececfe4b4e4d57bc29152b395c3dedbc74ca125d50311b9cfceafcb3bdfc7f94701fb652e9ef93d640ac5f037819:229a697ac22675a0eaaa877ef5d6113d673194793404873c28d8a4105bb9be3983109761be7cc4c9c14869c974ef3e1eea0d3bdb58121c5eb9fcc704ad595031",
];

/// The fixed identities (with their secrets), in order.
pub(crate) fn fixed_identities() -> Vec<Identity> {
    IDENTITIES
        .iter()
        .map(|text| text.parse().expect("a valid identity"))
        .collect()
}

/// What the controller does with requests; tests change it during a run.
pub(crate) struct Policy {
    /// Members that get a config; others are refused (ACCESS_DENIED).
    pub(crate) authorized: BTreeSet<Address>,
    /// Members whose requests are ignored (cut off from the controller, not refused).
    pub(crate) ignored: BTreeSet<Address>,
    /// The COM's max delta, and the config's credential time max delta, in ms.
    pub(crate) max_delta: u64,
    pub(crate) rules: Vec<Rule>,
    /// Issue each member a certificate of ownership of its IP.
    pub(crate) ownership: bool,
    /// The config's name (a test changes it to tell configs apart).
    pub(crate) name: String,
    /// Members in config order; member `i` gets [`member_ip`]`(i + 1)`.
    pub(crate) members: Vec<Address>,
    /// Configs sent, in order: (to, timestamp).
    pub(crate) answered: Vec<(Address, i64)>,
}

pub(crate) fn accept_all() -> Vec<Rule> {
    vec![Rule {
        not: false,
        or: false,
        kind: RuleKind::Accept,
    }]
}

pub(crate) fn member_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 147, 17, i)
}

/// The config `policy` gives `member` at `now`.
pub(crate) fn config_for(
    controller: &Identity,
    nwid: NetworkId,
    member: &Identity,
    now: Timestamp,
    policy: &Policy,
) -> NetworkConfig {
    let index = policy
        .members
        .iter()
        .position(|m| *m == member.address())
        .unwrap_or(0) as u8;
    let ip = member_ip(index + 1);
    let mut config = NetworkConfig::new(nwid, member.address());
    config.timestamp = now.as_millis();
    config.credential_time_max_delta = policy.max_delta as i64;
    config.multicast_limit = 32;
    config.flags = FLAG_ENABLE_BROADCAST;
    config.name = policy.name.clone();
    let mut com =
        CertificateOfMembership::new(now.as_millis() as u64, policy.max_delta, nwid, member);
    com.sign(controller).expect("controller has its secret");
    config.com = Some(com);
    config.static_ips = vec![InetAddress::Ip(SocketAddr::new(IpAddr::V4(ip), 24))];
    if policy.ownership {
        let mut coo = CertificateOfOwnership::new(nwid, now.as_millis(), member.address(), 1);
        coo.things.push(Thing::ipv4(ip));
        coo.sign(controller).expect("controller has its secret");
        config.certificates_of_ownership = vec![coo];
    }
    config.rules = policy.rules.clone();
    config
}

pub(crate) struct Lab {
    pub(crate) sim: Sim,
    pub(crate) nwid: NetworkId,
    pub(crate) roots: Vec<HostId>,
    pub(crate) controller: HostId,
    pub(crate) members: Vec<HostId>,
    pub(crate) policy: Rc<RefCell<Policy>>,
}

/// What to build.
pub(crate) struct LabSpec {
    pub(crate) seed: u64,
    pub(crate) link: LinkConfig,
    pub(crate) roots: usize,
    /// One entry per member: its NAT, if any.
    pub(crate) members: Vec<Option<NatKind>>,
}

impl Lab {
    /// Builds the lab; `configure` adjusts each member's node config (index, config), e.g.
    /// to orbit a moon. All members start authorized.
    pub(crate) fn new(spec: LabSpec, configure: impl Fn(usize, &mut NodeConfig)) -> Self {
        let count = spec.roots + 1 + spec.members.len();
        let ids = fixed_identities();
        assert!(count <= ids.len(), "the lab has {} identities", ids.len());
        let root_ids = ids[..spec.roots].to_vec();
        let controller_id = ids[spec.roots].clone();
        let member_ids = ids[spec.roots + 1..].to_vec();
        let nwid = NetworkId((controller_id.address().to_u64() << 24) | 0x00_0001);
        let mut sim = Sim::new(spec.seed, spec.link, root_ids);
        let roots: Vec<HostId> = (0..spec.roots).collect();
        let policy = Rc::new(RefCell::new(Policy {
            authorized: member_ids.iter().map(Identity::address).collect(),
            ignored: BTreeSet::new(),
            max_delta: 1_800_000,
            rules: accept_all(),
            ownership: false,
            name: "faults".into(),
            members: member_ids.iter().map(Identity::address).collect(),
            answered: Vec::new(),
        }));
        let controller = sim.add_node(controller_id.clone(), None);
        {
            let policy = policy.clone();
            sim.set_responder(
                controller,
                Box::new(move |node: &mut Node, now: Timestamp, event: &Event| {
                    let Event::NetworkConfigRequest {
                        network_id,
                        requester,
                        packet_id,
                        ..
                    } = event
                    else {
                        return;
                    };
                    let address = requester.address();
                    let mut policy = policy.borrow_mut();
                    if policy.ignored.contains(&address) {
                        return;
                    }
                    let answer = if policy.authorized.contains(&address) {
                        let config =
                            config_for(&controller_id, *network_id, requester, now, &policy);
                        policy.answered.push((address, config.timestamp));
                        ConfigAnswer::Config(Box::new(config))
                    } else {
                        ConfigAnswer::Error(ErrorCode::NetworkAccessDenied)
                    };
                    node.answer_config_request(now, *network_id, address, *packet_id, answer);
                }),
            );
        }
        let members = member_ids
            .into_iter()
            .zip(spec.members)
            .enumerate()
            .map(|(i, (id, nat))| sim.add_node_with(id, nat, |c| configure(i, c)))
            .collect();
        Lab {
            sim,
            nwid,
            roots,
            controller,
            members,
            policy,
        }
    }

    /// Every member joins; true once all hold a config.
    pub(crate) fn join_all(&mut self, limit: Millis) -> bool {
        let nwid = self.nwid;
        for &m in &self.members {
            self.sim.with_node(m, |n, now| n.join(now, nwid, None));
        }
        let members = self.members.clone();
        self.sim.run_until_true(limit, Millis(500), |s| {
            members.iter().all(|&h| {
                s.host(h)
                    .node
                    .network(nwid)
                    .is_some_and(|n| n.status == NetworkStatus::Ok && n.config.is_some())
            })
        })
    }

    pub(crate) fn config(&self, host: HostId) -> Option<NetworkConfig> {
        self.sim.host(host).node.network(self.nwid)?.config
    }

    pub(crate) fn status(&self, host: HostId) -> Option<NetworkStatus> {
        self.sim
            .host(host)
            .node
            .network(self.nwid)
            .map(|n| n.status)
    }

    pub(crate) fn mac(&self, host: HostId) -> Mac {
        Mac::from_address(self.sim.address_of(host), self.nwid)
    }

    /// The managed IP of a member (by host).
    pub(crate) fn ip(&self, host: HostId) -> Ipv4Addr {
        let i = self.members.iter().position(|m| *m == host).unwrap_or(0) as u8;
        member_ip(i + 1)
    }

    /// Frames the host's virtual port received so far.
    pub(crate) fn frames_at(&self, host: HostId) -> Vec<Vec<u8>> {
        self.sim
            .host(host)
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Frame { network_id, frame } if *network_id == self.nwid => {
                    Some(frame.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The host's port sends `frame`.
    pub(crate) fn send_frame(&mut self, host: HostId, frame: Vec<u8>) {
        let nwid = self.nwid;
        self.sim
            .with_node(host, move |n, now| n.handle_tap_frame(now, nwid, &frame));
    }

    /// An IPv4 frame from `from`'s port (its MAC and IP) to `to`'s, carrying `tag`.
    pub(crate) fn ip_frame(&self, from: HostId, to: HostId, tag: &[u8]) -> Vec<u8> {
        frame(
            self.mac(to),
            self.mac(from),
            0x0800,
            &ipv4_packet(self.ip(from), self.ip(to), tag),
        )
    }

    /// Sends a fresh frame from `from` to `to` every `every` until it arrives, at most
    /// `tries` times (loss on the links, paths still settling); true if one arrived.
    pub(crate) fn deliver_with_retries(
        &mut self,
        from: HostId,
        to: HostId,
        tag: &str,
        tries: usize,
        every: Millis,
    ) -> bool {
        for attempt in 0..tries {
            let frame = self.ip_frame(from, to, format!("{tag} #{attempt}").as_bytes());
            self.send_frame(from, frame.clone());
            self.sim.run_for(every);
            if self.frames_at(to).contains(&frame) {
                return true;
            }
        }
        false
    }

    /// True if `host` has an active path to `other` at `remote`.
    pub(crate) fn has_active_path_at(
        &self,
        host: HostId,
        other: HostId,
        remote: SocketAddr,
    ) -> bool {
        let target = self.sim.address_of(other);
        self.sim
            .host(host)
            .node
            .peers(self.sim.now())
            .iter()
            .any(|p| p.address == target && p.paths.iter().any(|x| x.active && x.address == remote))
    }

    /// True if `host` has an active direct path to `other` (wherever it leads).
    pub(crate) fn has_direct_path(&self, host: HostId, other: HostId) -> bool {
        let target = self.sim.address_of(other);
        self.sim
            .host(host)
            .node
            .peers(self.sim.now())
            .iter()
            .any(|p| p.address == target && p.paths.iter().any(|x| x.active))
    }

    /// The configs the host applied, in order (from its events).
    pub(crate) fn applied_configs(&self, host: HostId) -> Vec<NetworkConfig> {
        self.sim
            .host(host)
            .events
            .iter()
            .filter_map(|e| match e {
                Event::NetworkConfigUpdated {
                    network_id, config, ..
                } if *network_id == self.nwid => Some((**config).clone()),
                _ => None,
            })
            .collect()
    }
}

pub(crate) fn frame(dest: Mac, source: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dest.0);
    f.extend_from_slice(&source.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A minimal IPv4 packet (protocol 253, experimental) from `source` to `dest`.
pub(crate) fn ipv4_packet(source: Ipv4Addr, dest: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut p = vec![0x45, 0x00];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 253, 0, 0]);
    p.extend_from_slice(&source.octets());
    p.extend_from_slice(&dest.octets());
    p.extend_from_slice(body);
    p
}

/// Links without loss or duplication, with a little jitter.
pub(crate) fn clean() -> LinkConfig {
    LinkConfig {
        loss: 0.0,
        duplicate: 0.0,
        latency: Millis(10),
        jitter: Millis(5),
    }
}
