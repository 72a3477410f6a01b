//! Pieces of the scale simulation (issue 8 item 6) shared by its example, its test and the
//! controller benchmark: a [`Controller`] answering a simulated node's config requests, and
//! a controller with one large network served without any network ([`ConfigLoad`]).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use serde_json::json;

use crate::controller::{Controller, RequestAnswer};
use crate::identity::Identity;
use crate::node::{ConfigAnswer, Event, Node};
use crate::time::Timestamp;
use crate::vl2::config::RequestMetadata;
use crate::vl2::verbs::ConfigChunkRepr;
use crate::vl2::NetworkId;
use crate::wire::verb::ErrorCode;

use super::{HostId, LinkConfig, Responder, Sim, SimStats};
use crate::metrics::Direction;
use crate::time::Millis;
use crate::vl2::Mac;

/// What a simulated controller did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerCounters {
    /// Config requests that reached the controller.
    pub requests: u64,
    /// Requests answered with a config.
    pub configs: u64,
    /// Requests refused (not found or access denied).
    pub refused: u64,
    /// Requests dropped (a repeat within the controller's rate limit).
    pub ignored: u64,
}

/// A controller shared by its host's responder and the code driving the simulation.
pub type SharedController = Rc<RefCell<(Controller, ControllerCounters)>>;

/// A responder that answers the node's config requests with `controller`, as the agent does
/// (records it would persist are dropped).
pub fn controller_responder(controller: SharedController) -> Responder {
    Box::new(move |node: &mut Node, now: Timestamp, event: &Event| {
        let Event::NetworkConfigRequest {
            network_id,
            requester,
            metadata,
            packet_id,
            from,
        } = event
        else {
            return;
        };
        let Ok(mut shared) = controller.try_borrow_mut() else {
            return;
        };
        let (controller, counters) = &mut *shared;
        counters.requests += 1;
        let answer = controller.handle_request(now, *network_id, requester, metadata, *from);
        controller.take_changes();
        let answer = match answer {
            RequestAnswer::Config(config) => {
                counters.configs += 1;
                ConfigAnswer::Config(config)
            }
            RequestAnswer::NotFound => {
                counters.refused += 1;
                ConfigAnswer::Error(ErrorCode::ObjectNotFound)
            }
            RequestAnswer::AccessDenied => {
                counters.refused += 1;
                ConfigAnswer::Error(ErrorCode::NetworkAccessDenied)
            }
            RequestAnswer::Ignore => {
                counters.ignored += 1;
                return;
            }
        };
        node.answer_config_request(now, *network_id, requester.address(), *packet_id, answer);
    })
}

/// The body of a private network whose members get an IPv4 address from 10.128.0.0/16
/// (room for 65,000 members).
pub fn private_network_body(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "private": true,
        "v4AssignMode": {"zt": true},
        "routes": [{"target": "10.128.0.0/16"}],
        "ipAssignmentPools": [{"ipRangeStart": "10.128.0.1", "ipRangeEnd": "10.128.255.254"}],
        "rules": [
            {"type": "MATCH_ETHERTYPE", "not": true, "etherType": 2048},
            {"type": "MATCH_ETHERTYPE", "not": true, "etherType": 2054},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"}
        ],
    })
}

/// Creates a private network ([`private_network_body`]) and authorizes `members` in it
/// through the API, as an administrator would.
pub fn create_network_with_members<'a>(
    controller: &mut Controller,
    now: Timestamp,
    name: &str,
    members: impl IntoIterator<Item = &'a Identity>,
) -> Option<NetworkId> {
    let record = controller.create_network(now, &private_network_body(name))?;
    let network_id: NetworkId = record.get("id")?.as_str()?.parse().ok()?;
    for member in members {
        controller.post_member(
            now,
            network_id,
            member.address(),
            &json!({"authorized": true}),
        )?;
    }
    controller.take_changes();
    controller.take_pushes(now);
    Some(network_id)
}

/// A controller serving one network of many members, driven directly: each
/// [`ConfigLoad::serve_next`] is one config request of the next member in turn, answered as
/// the node does (config built and signed, serialized, split into signed chunks).
pub struct ConfigLoad {
    controller: Controller,
    network_id: NetworkId,
    members: Vec<Identity>,
    metadata: Vec<u8>,
    next: usize,
    now: Timestamp,
}

impl ConfigLoad {
    /// `members` are authorized in one new network of a controller with identity
    /// `controller` (which must hold its secret).
    pub fn new(controller: Identity, members: Vec<Identity>, now: Timestamp) -> Option<Self> {
        let mut ctl = Controller::new(controller, 0x5ca1e);
        let network_id = create_network_with_members(&mut ctl, now, "load", &members)?;
        let metadata = RequestMetadata::zerotier_1_14("linux/x86_64")
            .to_dictionary()
            .ok()?
            .into_bytes();
        Some(Self {
            controller: ctl,
            network_id,
            members: members.into_iter().map(|m| m.public_only()).collect(),
            metadata,
            next: 0,
            now,
        })
    }

    pub fn network_id(&self) -> NetworkId {
        self.network_id
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Answers the next member's request; returns the number of chunks sent (0 if the
    /// request got no config). The clock advances 1 ms per request, so each member asks
    /// again only after the controller's one-second rate limit once the members outnumber
    /// 1,000.
    pub fn serve_next(&mut self) -> usize {
        let Some(member) = self.members.get(self.next) else {
            return 0;
        };
        self.next = (self.next + 1) % self.members.len();
        self.now = Timestamp(self.now.as_millis() + 1);
        let answer =
            self.controller
                .handle_request(self.now, self.network_id, member, &self.metadata, None);
        // The agent writes these to disk; here they are only dropped.
        self.controller.take_changes();
        let RequestAnswer::Config(config) = answer else {
            return 0;
        };
        let Ok(dictionary) = config.to_dictionary() else {
            return 0;
        };
        let update_id = self.now.as_millis() as u64 | 1;
        ConfigChunkRepr::split(
            self.network_id,
            dictionary.as_bytes(),
            update_id,
            self.controller.identity(),
        )
        .map_or(0, |chunks| chunks.len())
    }

    /// The IPv4 address member `index` was assigned, from its record.
    pub fn assigned_ipv4(&self, index: usize) -> Option<Ipv4Addr> {
        let member = self
            .controller
            .member(self.network_id, self.members.get(index)?.address())?;
        let ip = member.get("ipAssignments")?.as_array()?.first()?.as_str()?;
        match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }
}

/// What a scale run is made of.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub roots: usize,
    /// Member nodes (the controller's node and the roots come on top).
    pub nodes: usize,
    /// Networks of the controller; member `i` joins network `i % networks`.
    pub networks: usize,
    pub seed: u64,
    /// Virtual time allowed for everything to happen.
    pub limit: Millis,
    /// How often the goals are checked (and talking pairs send a frame).
    pub step: Millis,
    /// Virtual time measured after the goals are met, for steady-state rates.
    pub steady: Millis,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        Self {
            roots: 4,
            nodes: 10_000,
            networks: 100,
            seed: 1,
            limit: Millis(300_000),
            step: Millis(250),
            steady: Millis(60_000),
        }
    }
}

/// Packets in and out of the roots and requests to the controller over a span of virtual
/// time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub span: Millis,
    /// UDP datagrams received by all roots together.
    pub root_datagrams_in: u64,
    /// UDP datagrams sent by all roots together.
    pub root_datagrams_out: u64,
    pub controller: ControllerCounters,
}

impl Rates {
    fn per_second(count: u64, span: Millis) -> f64 {
        if span.0 <= 0 {
            return 0.0;
        }
        count as f64 * 1000.0 / span.0 as f64
    }

    /// Datagrams received per second by all roots together.
    pub fn root_in_per_second(&self) -> f64 {
        Self::per_second(self.root_datagrams_in, self.span)
    }

    pub fn root_out_per_second(&self) -> f64 {
        Self::per_second(self.root_datagrams_out, self.span)
    }

    pub fn controller_requests_per_second(&self) -> f64 {
        Self::per_second(self.controller.requests, self.span)
    }

    pub fn controller_configs_per_second(&self) -> f64 {
        Self::per_second(self.controller.configs, self.span)
    }
}

/// When each goal was reached by every node (virtual time since the start), and the
/// distribution over nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoalTimes {
    /// Per node (or pair), in order of reaching the goal; `None` entries never did.
    pub reached: Vec<Option<Millis>>,
}

impl GoalTimes {
    /// How many reached the goal.
    pub fn count(&self) -> usize {
        self.reached.iter().flatten().count()
    }

    pub fn all(&self) -> bool {
        self.reached.iter().all(Option::is_some)
    }

    /// The time by which `fraction` (0..=1) of them had reached it.
    pub fn quantile(&self, fraction: f64) -> Option<Millis> {
        let mut times: Vec<Millis> = self.reached.iter().flatten().copied().collect();
        if times.is_empty() {
            return None;
        }
        times.sort_unstable();
        let index = ((times.len() - 1) as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        times.get(index).copied()
    }
}

/// The outcome of [`run_scale`].
#[derive(Clone, Debug, Default)]
pub struct ScaleReport {
    /// Member nodes online (something heard from a root).
    pub online: GoalTimes,
    /// Member nodes holding their network's config.
    pub configured: GoalTimes,
    /// Talking pairs holding a direct path to each other (both sides).
    pub direct: GoalTimes,
    /// From the start until every goal was met (or the limit).
    pub startup: Rates,
    /// Over [`ScaleOptions::steady`] after that.
    pub steady: Rates,
    /// Every datagram the simulator carried.
    pub sim: SimStats,
    /// Configs the controller issued per member (for consistency checks).
    pub configs_per_member_max: u64,
}

/// One talking pair: two members of the same network.
#[derive(Clone, Copy, Debug)]
struct Pair {
    a: HostId,
    b: HostId,
    network_id: NetworkId,
}

/// Runs the scale scenario: `roots` roots, one controller node with `networks` private
/// networks, `nodes` members each joining one network (authorized beforehand through the
/// API); consecutive members of each network form talking pairs that send each other a
/// frame every step until both hold a direct path. `identities` gives the roots', the
/// controller's and the members' identities in that order (with secrets), and must hold
/// `roots + 1 + nodes`. Identity validation is off (a fixture's or unsearched identities).
pub fn run_scale(options: &ScaleOptions, identities: Vec<Identity>) -> Option<ScaleReport> {
    let ScaleOptions {
        roots,
        nodes,
        networks,
        seed,
        limit,
        step,
        steady,
    } = options.clone();
    if identities.len() < roots + 1 + nodes || roots == 0 || networks == 0 {
        return None;
    }
    let mut identities = identities.into_iter();
    let root_ids: Vec<Identity> = identities.by_ref().take(roots).collect();
    let controller_id = identities.next()?;
    let member_ids: Vec<Identity> = identities.take(nodes).collect();

    let mut sim = Sim::new(seed, LinkConfig::default(), root_ids);
    sim.set_validate_identities(false);
    let start = sim.now();

    // The controller's networks, each with its members authorized.
    let mut controller = Controller::new(controller_id.clone(), seed ^ 0xc0);
    let mut network_ids = Vec::with_capacity(networks);
    for n in 0..networks {
        let members = member_ids.iter().skip(n).step_by(networks);
        network_ids.push(create_network_with_members(
            &mut controller,
            start,
            &format!("scale-{n}"),
            members,
        )?);
    }
    let shared: SharedController = Rc::new(RefCell::new((controller, Default::default())));
    let controller_host = sim.add_node(controller_id, None);
    sim.set_responder(controller_host, controller_responder(shared.clone()));

    let mut members = Vec::with_capacity(nodes);
    for (i, identity) in member_ids.into_iter().enumerate() {
        let host = sim.add_node(identity, None);
        let network_id = network_ids[i % networks];
        sim.with_node(host, |node, now| node.join(now, network_id, None));
        members.push((host, network_id));
    }
    let mut pairs = Vec::new();
    for (n, &network_id) in network_ids.iter().enumerate() {
        let in_network: Vec<HostId> = members
            .iter()
            .skip(n)
            .step_by(networks)
            .map(|&(host, _)| host)
            .collect();
        for two in in_network.chunks_exact(2) {
            pairs.push(Pair {
                a: two[0],
                b: two[1],
                network_id,
            });
        }
    }

    let root_hosts: Vec<HostId> = (0..roots).collect();
    let root_counts = |sim: &Sim| {
        root_hosts.iter().fold((0, 0), |(rx, tx), &h| {
            let metrics = sim.host(h).node.metrics();
            (
                rx + metrics.udp_datagrams(Direction::Rx),
                tx + metrics.udp_datagrams(Direction::Tx),
            )
        })
    };

    let mut report = ScaleReport {
        online: GoalTimes {
            reached: vec![None; nodes],
        },
        configured: GoalTimes {
            reached: vec![None; nodes],
        },
        direct: GoalTimes {
            reached: vec![None; pairs.len()],
        },
        ..ScaleReport::default()
    };
    let mut pending_online: Vec<usize> = (0..nodes).collect();
    let mut pending_configured: Vec<usize> = (0..nodes).collect();
    let mut pending_direct: Vec<usize> = (0..pairs.len()).collect();
    let end = start + limit;
    loop {
        let now = sim.now();
        let elapsed = Millis(now.as_millis() - start.as_millis());
        pending_online.retain(|&i| {
            let online = sim.host(members[i].0).node.is_online(now);
            if online {
                report.online.reached[i] = Some(elapsed);
            }
            !online
        });
        pending_configured.retain(|&i| {
            let (host, network_id) = members[i];
            let configured =
                sim.host(host).node.network(network_id).is_some_and(|n| {
                    n.status == crate::node::NetworkStatus::Ok && n.config.is_some()
                });
            if configured {
                report.configured.reached[i] = Some(elapsed);
            }
            !configured
        });
        let mut talking = Vec::new();
        pending_direct.retain(|&p| {
            let pair = pairs[p];
            let direct = has_direct_path(&sim, pair.a, pair.b, now)
                && has_direct_path(&sim, pair.b, pair.a, now);
            if direct {
                report.direct.reached[p] = Some(elapsed);
            } else {
                talking.push(pair);
            }
            !direct
        });
        if pending_online.is_empty() && pending_configured.is_empty() && pending_direct.is_empty()
            || now >= end
        {
            break;
        }
        for pair in talking {
            send_frame(&mut sim, pair.a, pair.b, pair.network_id);
            send_frame(&mut sim, pair.b, pair.a, pair.network_id);
        }
        let next = (now + step).min(end);
        sim.run_until(next);
    }
    let startup_span = Millis(sim.now().as_millis() - start.as_millis());
    let (rx, tx) = root_counts(&sim);
    let counters_at_startup = shared.borrow().1;
    report.startup = Rates {
        span: startup_span,
        root_datagrams_in: rx,
        root_datagrams_out: tx,
        controller: counters_at_startup,
    };
    if steady.0 > 0 {
        sim.run_for(steady);
        let (rx2, tx2) = root_counts(&sim);
        let counters = shared.borrow().1;
        report.steady = Rates {
            span: steady,
            root_datagrams_in: rx2 - rx,
            root_datagrams_out: tx2 - tx,
            controller: ControllerCounters {
                requests: counters.requests - counters_at_startup.requests,
                configs: counters.configs - counters_at_startup.configs,
                refused: counters.refused - counters_at_startup.refused,
                ignored: counters.ignored - counters_at_startup.ignored,
            },
        };
    }
    report.sim = sim.stats;
    report.configs_per_member_max = members
        .iter()
        .map(|&(host, network_id)| configs_received(&sim, host, network_id))
        .max()
        .unwrap_or(0);
    Some(report)
}

/// Whether `from` holds an active direct path to `to`.
fn has_direct_path(sim: &Sim, from: HostId, to: HostId, now: Timestamp) -> bool {
    let to = sim.address_of(to);
    sim.host(from)
        .node
        .peers(now)
        .iter()
        .any(|p| p.address == to && p.paths.iter().any(|path| path.active))
}

/// One IPv4 frame from `from` to `to` on `network_id` (the payload need not be a real IP
/// packet: the network's rules look at the ethertype only).
fn send_frame(sim: &mut Sim, from: HostId, to: HostId, network_id: NetworkId) {
    let source = Mac::from_address(sim.address_of(from), network_id);
    let destination = Mac::from_address(sim.address_of(to), network_id);
    let mut frame = Vec::with_capacity(14 + 28);
    frame.extend_from_slice(&destination.0);
    frame.extend_from_slice(&source.0);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&[0x45; 28]);
    sim.with_node(from, |node, now| {
        node.handle_tap_frame(now, network_id, &frame)
    });
}

/// How many configs `host` reported for `network_id`.
fn configs_received(sim: &Sim, host: HostId, network_id: NetworkId) -> u64 {
    sim.host(host)
        .events
        .iter()
        .filter(
            |e| matches!(e, Event::NetworkConfigUpdated { network_id: n, .. } if *n == network_id),
        )
        .count() as u64
}
