//! `GET /metrics`: the host node's and the endpoints' counters as Prometheus text (exposition
//! format 0.0.4), under ZeroTier One 1.14's metric names and labels where it has them
//! (`zt_packet`, `zt_data`, `zt_peer_*`, `zt_network_*` ...) and ours (`zt_packet_dropped`,
//! `zt_endpoint_*`) for the rest. docs/metrics.md lists every family.
//!
//! Labels are written in name order, as ZeroTier One's exporter writes them. Every family is
//! written whole (HELP, TYPE, then all its samples) before the next one starts.

use std::fmt::Write as _;

use node_core::metrics::packet_type_label;
use node_core::metrics::{
    Direction, DropReason, Metrics, PacketErrorType, LATENCY_BUCKETS_MS, PACKET_TYPES,
};
use node_core::node::Node;
use node_core::vl2::NetworkId;
use node_core::{Address, Timestamp};

use crate::driver::Endpoint;
use crate::plugin_api::EndpointCounters;

/// Prometheus text exposition of the host node and its hosted endpoints.
pub fn render<'a>(
    host: &Node,
    endpoints: impl Iterator<Item = &'a Endpoint>,
    now: Timestamp,
) -> String {
    let endpoints: Vec<EndpointView<'_>> = endpoints
        .map(|e| EndpointView {
            address: e.node.address(),
            network: e.network,
            key: &e.key,
            node: &e.node,
            counters: e.counters,
        })
        .collect();
    let mut out = Exposition::default();
    render_host(&mut out, host, now);
    render_endpoints(&mut out, &endpoints, now);
    render_runtime(&mut out);
    out.text
}

/// The agent's own tokio runtime: tasks alive now (the soak test watches it for leaks).
/// Absent when rendered outside a runtime (unit tests).
fn render_runtime(out: &mut Exposition) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    out.family(
        "zt_agent_tokio_tasks",
        Kind::Gauge,
        "tasks alive in the agent's async runtime",
    );
    out.sample(
        "zt_agent_tokio_tasks",
        &[],
        runtime.metrics().num_alive_tasks() as u64,
    );
}

/// What the endpoint families need of one [`Endpoint`].
struct EndpointView<'a> {
    address: Address,
    network: NetworkId,
    key: &'a str,
    node: &'a Node,
    counters: EndpointCounters,
}

impl EndpointView<'_> {
    /// The labels every endpoint series carries.
    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("endpoint", self.address.to_string()),
            ("key", self.key.to_string()),
            ("network_id", self.network.to_string()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The host node: ZeroTier One's families

fn render_host(out: &mut Exposition, node: &Node, now: Timestamp) {
    let metrics = node.metrics();

    out.family("zt_packet", Kind::Counter, "ZeroTier packet type counts");
    for direction in Direction::ALL {
        for verb in PACKET_TYPES {
            out.sample(
                "zt_packet",
                &[
                    ("direction", direction.as_str()),
                    ("packet_type", packet_type_label(verb)),
                ],
                metrics.packets(direction, verb),
            );
        }
    }

    out.family("zt_packet_error", Kind::Counter, "ZeroTier packet errors");
    for direction in Direction::ALL {
        for error in PacketErrorType::ALL {
            out.sample(
                "zt_packet_error",
                &[
                    ("direction", direction.as_str()),
                    ("error_type", error.as_str()),
                ],
                metrics.packet_errors(direction, error),
            );
        }
    }

    out.family(
        "zt_packet_dropped",
        Kind::Counter,
        "incoming datagrams dropped before being handled, by reason",
    );
    for reason in DropReason::ALL {
        out.sample(
            "zt_packet_dropped",
            &[("reason", reason.as_str())],
            metrics.dropped(reason),
        );
    }

    out.family(
        "zt_identity_validations",
        Kind::Counter,
        "memory-hard identity validations performed (new identities past the rate gate)",
    );
    out.sample(
        "zt_identity_validations",
        &[],
        metrics.identity_validations(),
    );

    out.family(
        "zt_data",
        Kind::Counter,
        "number of bytes ZeroTier has transmitted or received",
    );
    for direction in Direction::ALL {
        out.sample(
            "zt_data",
            &[("direction", direction.as_str()), ("protocol", "udp")],
            metrics.udp_bytes(direction),
        );
        // No TCP relay here: the series exist so that queries written for ZeroTier One work.
        out.sample(
            "zt_data",
            &[("direction", direction.as_str()), ("protocol", "tcp")],
            0,
        );
    }

    let networks = node.networks();
    out.family(
        "zt_num_networks",
        Kind::Gauge,
        "number of networks this instance is joined to",
    );
    out.sample("zt_num_networks", &[], networks.len() as u64);

    out.family(
        "zt_network_multicast_groups_subscribed",
        Kind::Gauge,
        "number of multicast groups networks are subscribed to",
    );
    for network in &networks {
        out.sample(
            "zt_network_multicast_groups_subscribed",
            &[("network_id", &network.id.to_string())],
            network.multicast_subscriptions.len() as u64,
        );
    }

    out.family(
        "zt_network_packets",
        Kind::Counter,
        "number of incoming/outgoing packets per network",
    );
    for network in &networks {
        let id = network.id.to_string();
        network_packet_samples(
            out,
            "zt_network_packets",
            &[("network_id", &id)],
            metrics,
            network.id,
        );
    }

    let peers = node.peers(now);
    out.family("zt_peer_latency", Kind::Histogram, "peer latency (ms)");
    for peer in &peers {
        let node_id = peer.address.to_string();
        let labels = [("node_id", node_id.as_str())];
        match metrics.peer(peer.address) {
            Some(counters) => {
                let latency = counters.latency();
                out.histogram(
                    "zt_peer_latency",
                    &labels,
                    latency.cumulative_buckets(),
                    latency.sum(),
                    latency.count(),
                );
            }
            None => out.histogram(
                "zt_peer_latency",
                &labels,
                LATENCY_BUCKETS_MS.iter().map(|&bound| (bound, 0)),
                0,
                0,
            ),
        }
    }

    out.family("zt_peer_path_count", Kind::Gauge, "number of paths to peer");
    for peer in &peers {
        let node_id = peer.address.to_string();
        let alive = peer.paths.iter().filter(|p| p.active).count() as u64;
        let dead = peer.paths.len() as u64 - alive;
        for (status, count) in [("alive", alive), ("dead", dead)] {
            out.sample(
                "zt_peer_path_count",
                &[("node_id", &node_id), ("status", status)],
                count,
            );
        }
    }

    out.family(
        "zt_peer_packets",
        Kind::Counter,
        "number of packets to/from a peer",
    );
    for peer in &peers {
        let node_id = peer.address.to_string();
        let counters = metrics.peer(peer.address);
        for direction in Direction::ALL {
            out.sample(
                "zt_peer_packets",
                &[("direction", direction.as_str()), ("node_id", &node_id)],
                counters.map_or(0, |c| c.packets(direction)),
            );
        }
    }

    out.family(
        "zt_peer_packet_errors",
        Kind::Counter,
        "number of incoming packet errors from a peer",
    );
    for peer in &peers {
        let node_id = peer.address.to_string();
        out.sample(
            "zt_peer_packet_errors",
            &[("node_id", &node_id)],
            metrics.peer(peer.address).map_or(0, |c| c.packet_errors()),
        );
    }
}

/// The four `{direction, accepted}` series of one network.
fn network_packet_samples(
    out: &mut Exposition,
    name: &str,
    labels: &[(&str, &str)],
    metrics: &Metrics,
    network_id: NetworkId,
) {
    let counters = metrics.network(network_id);
    for direction in Direction::ALL {
        for (accepted, text) in [(true, "yes"), (false, "no")] {
            let mut all = labels.to_vec();
            all.push(("direction", direction.as_str()));
            all.push(("accepted", text));
            out.sample(
                name,
                &all,
                counters.map_or(0, |c| c.frames(direction, accepted)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hosted endpoints: `zt_endpoint_*`

fn render_endpoints(out: &mut Exposition, endpoints: &[EndpointView<'_>], now: Timestamp) {
    // Per-verb and per-reason series appear once non-zero: endpoints are many, and most
    // never see most verbs.
    out.family(
        "zt_endpoint_packet",
        Kind::Counter,
        "ZeroTier packets of an endpoint's node, by type (series appear once non-zero)",
    );
    for e in endpoints {
        let metrics = e.node.metrics();
        for direction in Direction::ALL {
            for verb in PACKET_TYPES {
                let value = metrics.packets(direction, verb);
                if value > 0 {
                    out.endpoint_sample(
                        "zt_endpoint_packet",
                        e,
                        &[
                            ("direction", direction.as_str()),
                            ("packet_type", packet_type_label(verb)),
                        ],
                        value,
                    );
                }
            }
        }
    }

    out.family(
        "zt_endpoint_packet_error",
        Kind::Counter,
        "ZeroTier ERROR packets of an endpoint's node, by code (series appear once non-zero)",
    );
    for e in endpoints {
        let metrics = e.node.metrics();
        for direction in Direction::ALL {
            for error in PacketErrorType::ALL {
                let value = metrics.packet_errors(direction, error);
                if value > 0 {
                    out.endpoint_sample(
                        "zt_endpoint_packet_error",
                        e,
                        &[
                            ("direction", direction.as_str()),
                            ("error_type", error.as_str()),
                        ],
                        value,
                    );
                }
            }
        }
    }

    out.family(
        "zt_endpoint_packet_dropped",
        Kind::Counter,
        "incoming datagrams an endpoint's node dropped, by reason (series appear once non-zero)",
    );
    for e in endpoints {
        let metrics = e.node.metrics();
        for reason in DropReason::ALL {
            let value = metrics.dropped(reason);
            if value > 0 {
                out.endpoint_sample(
                    "zt_endpoint_packet_dropped",
                    e,
                    &[("reason", reason.as_str())],
                    value,
                );
            }
        }
    }

    out.family(
        "zt_endpoint_data",
        Kind::Counter,
        "number of bytes an endpoint's node has transmitted or received",
    );
    for e in endpoints {
        for direction in Direction::ALL {
            out.endpoint_sample(
                "zt_endpoint_data",
                e,
                &[("direction", direction.as_str()), ("protocol", "udp")],
                e.node.metrics().udp_bytes(direction),
            );
        }
    }

    out.family(
        "zt_endpoint_network_packets",
        Kind::Counter,
        "frames of an endpoint's network its rules accepted or dropped",
    );
    for e in endpoints {
        let labels = e.labels();
        let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        network_packet_samples(
            out,
            "zt_endpoint_network_packets",
            &labels,
            e.node.metrics(),
            e.network,
        );
    }

    out.family(
        "zt_endpoint_peers",
        Kind::Gauge,
        "number of peers an endpoint's node knows",
    );
    for e in endpoints {
        out.endpoint_sample("zt_endpoint_peers", e, &[], e.node.peers(now).len() as u64);
    }

    out.family(
        "zt_endpoint_online",
        Kind::Gauge,
        "1 when an endpoint's node has heard from a root recently",
    );
    for e in endpoints {
        out.endpoint_sample(
            "zt_endpoint_online",
            e,
            &[],
            u64::from(e.node.is_online(now)),
        );
    }

    let interface = |c: &EndpointCounters, direction: Direction| match direction {
        Direction::Rx => (c.rx_packets, c.rx_bytes),
        Direction::Tx => (c.tx_packets, c.tx_bytes),
    };
    let switched = |c: &EndpointCounters, direction: Direction| match direction {
        Direction::Rx => (c.switched_in_packets, c.switched_in_bytes),
        Direction::Tx => (c.switched_out_packets, c.switched_out_bytes),
    };
    type Pick = dyn Fn(&EndpointCounters, Direction) -> (u64, u64);
    let families: [(&str, &str, &Pick, bool); 4] = [
        (
            "zt_endpoint_tap_packets",
            "frames read from (rx) or written to (tx) an endpoint's interface",
            &interface,
            false,
        ),
        (
            "zt_endpoint_tap_bytes",
            "bytes of frames read from (rx) or written to (tx) an endpoint's interface",
            &interface,
            true,
        ),
        (
            "zt_endpoint_switched_packets",
            "frames switched locally to (rx) or from (tx) an endpoint, without UDP",
            &switched,
            false,
        ),
        (
            "zt_endpoint_switched_bytes",
            "bytes of frames switched locally to (rx) or from (tx) an endpoint, without UDP",
            &switched,
            true,
        ),
    ];
    for (name, help, pick, bytes) in families {
        out.family(name, Kind::Counter, help);
        for e in endpoints {
            for direction in Direction::ALL {
                let (packets, byte_count) = pick(&e.counters, direction);
                out.endpoint_sample(
                    name,
                    e,
                    &[("direction", direction.as_str())],
                    if bytes { byte_count } else { packets },
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The text format

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample; labels are sorted by name.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        let mut sorted = labels.to_vec();
        sorted.sort_by_key(|(label, _)| *label);
        if !sorted.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in sorted.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label_value(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// One sample of an endpoint family: the endpoint's labels and `extra`.
    fn endpoint_sample(
        &mut self,
        name: &str,
        endpoint: &EndpointView<'_>,
        extra: &[(&str, &str)],
        value: u64,
    ) {
        let own = endpoint.labels();
        let mut labels: Vec<(&str, &str)> = own.iter().map(|(n, v)| (*n, v.as_str())).collect();
        labels.extend_from_slice(extra);
        self.sample(name, &labels, value);
    }

    /// A histogram's series: cumulative `_bucket`s (then `+Inf`), `_sum` and `_count`.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: impl Iterator<Item = (u64, u64)>,
        sum: u64,
        count: u64,
    ) {
        let bucket_name = format!("{name}_bucket");
        for (bound, cumulative) in buckets {
            let bound = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket_name, &with_le, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// HELP text escapes backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use node_core::node::NodeConfig;
    use node_core::sim::{generate_identities, LinkConfig, Sim};
    use node_core::Millis;

    use crate::driver::EndpointPort;

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A parsed exposition: each family's type, and the samples in order.
    struct Parsed {
        types: BTreeMap<String, String>,
        samples: Vec<Sample>,
    }

    impl Parsed {
        /// The samples of `name` whose labels include all of `labels`.
        fn matching<'a>(
            &'a self,
            name: &'a str,
            labels: &'a [(&'a str, &'a str)],
        ) -> impl Iterator<Item = &'a Sample> + 'a {
            self.samples.iter().filter(move |s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
        }

        /// The value of the one sample of `name` with `labels`.
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let found: Vec<&Sample> = self.matching(name, labels).collect();
            assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
            found[0].value
        }
    }

    /// Parses an exposition strictly: every line is HELP, TYPE or a well-formed sample; a
    /// family's TYPE comes before its samples, once; families are contiguous; no series
    /// repeats. Panics with the offending line otherwise.
    fn parse(text: &str) -> Parsed {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        let mut series: BTreeSet<String> = BTreeSet::new();
        assert!(text.ends_with('\n'), "the exposition ends with a line feed");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has text");
                assert!(is_metric_name(name), "{line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(is_metric_name(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "family declared twice: {line}"
                );
                current = Some(name.to_string());
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let sample = parse_sample(line);
            // A sample belongs to the family declared last; as TYPE lines are unique, a
            // family cannot resume after another one started.
            assert_eq!(
                Some(family_of(&sample.name, &types)),
                current,
                "sample outside its family's block: {line}"
            );
            let key = format!("{}{:?}", sample.name, sample.labels);
            assert!(series.insert(key), "series repeated: {line}");
            samples.push(sample);
        }
        Parsed { types, samples }
    }

    /// The family a sample belongs to: histograms own their `_bucket`, `_sum`, `_count`.
    fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
        if types.contains_key(name) {
            return name.to_string();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("histogram") {
                    return base.to_string();
                }
            }
        }
        panic!("sample of an undeclared family: {name}");
    }

    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// `name{label="value",...} value` or `name value`.
    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "bad name: {line}");
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let used = parse_labels(body, line, &mut labels);
            rest = &body[used..];
        }
        let value_text = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("one space before the value: {line}"));
        assert!(!value_text.contains(' '), "no timestamps here: {line}");
        let value = value_text
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        Sample {
            name: name.to_string(),
            labels,
            value,
        }
    }

    /// Parses `label="value",...}` and returns the bytes used, the `}` included.
    fn parse_labels(body: &str, line: &str, labels: &mut BTreeMap<String, String>) -> usize {
        let bytes = body.as_bytes();
        let mut i = 0;
        loop {
            if bytes.get(i) == Some(&b'}') {
                return i + 1;
            }
            let eq = body[i..]
                .find('=')
                .unwrap_or_else(|| panic!("label=: {line}"))
                + i;
            let label = &body[i..eq];
            assert!(is_label_name(label), "bad label name {label:?}: {line}");
            assert_eq!(bytes.get(eq + 1), Some(&b'"'), "label value quoted: {line}");
            let mut value = String::new();
            i = eq + 2;
            loop {
                match bytes.get(i) {
                    Some(b'\\') => {
                        match bytes.get(i + 1) {
                            Some(b'\\') => value.push('\\'),
                            Some(b'"') => value.push('"'),
                            Some(b'n') => value.push('\n'),
                            _ => panic!("bad escape: {line}"),
                        }
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => {
                        let c = body[i..].chars().next().expect("a character");
                        value.push(c);
                        i += c.len_utf8();
                    }
                    None => panic!("unterminated label value: {line}"),
                }
            }
            assert!(
                labels.insert(label.to_string(), value).is_none(),
                "label repeated: {line}"
            );
            i += 1;
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => panic!("expected , or }}: {line}"),
            }
        }
    }

    struct NullPort;

    impl EndpointPort for NullPort {
        fn deliver(&mut self, _frame: &[u8]) {}
        fn configure(&mut self, _config: &node_core::vl2::config::NetworkConfig) {}
    }

    const NETWORK: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
    /// A key with every character a label value must escape.
    const AWKWARD_KEY: &str = "pod \"web\"\\0\nsecond line";

    /// A root, a host node and an endpoint node that both said HELLO to the root, the host
    /// joined to a network; the endpoint taken out of the simulation with some tap traffic.
    fn scene() -> (Sim, usize, Endpoint, Timestamp) {
        let ids = generate_identities(4, 0x6d74_7263);
        let mut sim = Sim::new(0x31, LinkConfig::default(), vec![ids[0].clone()]);
        let host = sim.add_node(ids[1].clone(), None);
        let endpoint = sim.add_node(ids[2].clone(), None);
        let online = sim.run_until_true(Millis(10_000), Millis(50), |s| {
            s.host(host).node.is_online(s.now()) && s.host(endpoint).node.is_online(s.now())
        });
        assert!(online, "both nodes hear from the root");
        sim.with_node(host, |n, now| n.join(now, NETWORK, None));
        sim.run_for(Millis(1_000));
        let now = sim.now();
        let spare =
            node_core::node::Node::new(NodeConfig::new(ids[3].clone(), sim.planet().clone()), now);
        let node = std::mem::replace(&mut sim.host_mut(endpoint).node, spare);
        let endpoint = Endpoint {
            key: AWKWARD_KEY.to_string(),
            network: NETWORK,
            node,
            port: Box::new(NullPort),
            request: None,
            sandbox: None,
            counters: EndpointCounters {
                rx_packets: 3,
                rx_bytes: 300,
                tx_packets: 4,
                tx_bytes: 400,
                switched_out_packets: 5,
                switched_out_bytes: 500,
                switched_in_packets: 6,
                switched_in_bytes: 600,
            },
        };
        (sim, host, endpoint, now)
    }

    #[test]
    fn exposition_is_well_formed_and_holds_the_counters() {
        let (sim, host, endpoint, now) = scene();
        let node = &sim.host(host).node;
        let text = render(node, std::iter::once(&endpoint), now);
        let parsed = parse(&text);
        let metrics = node.metrics();

        // ZeroTier One's families, with its types.
        for (name, kind) in [
            ("zt_packet", "counter"),
            ("zt_packet_error", "counter"),
            ("zt_data", "counter"),
            ("zt_num_networks", "gauge"),
            ("zt_network_multicast_groups_subscribed", "gauge"),
            ("zt_network_packets", "counter"),
            ("zt_peer_latency", "histogram"),
            ("zt_peer_path_count", "gauge"),
            ("zt_peer_packets", "counter"),
            ("zt_peer_packet_errors", "counter"),
        ] {
            assert_eq!(
                parsed.types.get(name).map(String::as_str),
                Some(kind),
                "{name}"
            );
        }
        assert!(parsed.types.keys().all(|name| name.starts_with("zt_")));

        // The host node.
        let hello_out = parsed.value(
            "zt_packet",
            &[("direction", "tx"), ("packet_type", "hello")],
        );
        assert!(hello_out >= 1.0);
        assert_eq!(
            hello_out,
            metrics.packets(Direction::Tx, node_core::wire::verb::Verb::Hello) as f64
        );
        assert!(parsed.value("zt_packet", &[("direction", "rx"), ("packet_type", "ok")]) >= 1.0);
        assert_eq!(
            parsed.matching("zt_packet", &[]).count(),
            2 * PACKET_TYPES.len()
        );
        assert_eq!(
            parsed.value("zt_data", &[("direction", "rx"), ("protocol", "udp")]),
            metrics.udp_bytes(Direction::Rx) as f64
        );
        assert!(parsed.value("zt_data", &[("direction", "tx"), ("protocol", "udp")]) > 0.0);
        assert_eq!(parsed.value("zt_num_networks", &[]), 1.0);
        let nwid = NETWORK.to_string();
        assert_eq!(
            parsed
                .matching("zt_network_packets", &[("network_id", &nwid)])
                .count(),
            4
        );
        assert!(
            parsed
                .matching(
                    "zt_network_multicast_groups_subscribed",
                    &[("network_id", &nwid)]
                )
                .count()
                == 1
        );

        // The root, as a peer.
        let root = sim.address_of(0).to_string();
        let of_root = [("node_id", root.as_str())];
        assert_eq!(
            parsed.value(
                "zt_peer_path_count",
                &[("node_id", &root), ("status", "alive")]
            ),
            1.0
        );
        assert!(
            parsed.value(
                "zt_peer_packets",
                &[("node_id", &root), ("direction", "rx")]
            ) >= 1.0
        );
        assert_eq!(parsed.value("zt_peer_packet_errors", &of_root), 0.0);
        let count = parsed.value("zt_peer_latency_count", &of_root);
        assert!(count >= 1.0, "OK(HELLO) measured the root");
        assert_eq!(
            parsed.value(
                "zt_peer_latency_bucket",
                &[("node_id", &root), ("le", "+Inf")]
            ),
            count
        );
        let buckets: Vec<f64> = parsed
            .matching("zt_peer_latency_bucket", &of_root)
            .map(|s| s.value)
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "buckets are cumulative"
        );
        // Simulated links take 10 ms each way: every round trip lands in (10, 30].
        assert_eq!(
            parsed.value(
                "zt_peer_latency_bucket",
                &[("node_id", &root), ("le", "10")]
            ),
            0.0
        );
        assert_eq!(
            parsed.value(
                "zt_peer_latency_bucket",
                &[("node_id", &root), ("le", "30")]
            ),
            count
        );

        // The endpoint, its awkward key intact after escaping.
        let address = endpoint.node.address().to_string();
        let of_endpoint = [
            ("endpoint", address.as_str()),
            ("key", AWKWARD_KEY),
            ("network_id", nwid.as_str()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            of_endpoint.iter().chain(extra).copied().collect()
        };
        assert_eq!(
            parsed.value("zt_endpoint_tap_packets", &with(&[("direction", "rx")])),
            3.0
        );
        assert_eq!(
            parsed.value("zt_endpoint_tap_bytes", &with(&[("direction", "tx")])),
            400.0
        );
        assert_eq!(
            parsed.value(
                "zt_endpoint_switched_packets",
                &with(&[("direction", "tx")])
            ),
            5.0
        );
        assert_eq!(
            parsed.value("zt_endpoint_switched_bytes", &with(&[("direction", "rx")])),
            600.0
        );
        assert!(
            parsed.value(
                "zt_endpoint_packet",
                &with(&[("direction", "tx"), ("packet_type", "hello")])
            ) >= 1.0
        );
        assert!(
            parsed
                .matching("zt_endpoint_packet", &[])
                .all(|s| s.value > 0.0),
            "per-verb endpoint series appear once non-zero"
        );
        assert!(
            parsed.value(
                "zt_endpoint_data",
                &with(&[("direction", "rx"), ("protocol", "udp")])
            ) > 0.0
        );
        assert_eq!(parsed.value("zt_endpoint_online", &of_endpoint), 1.0);
        assert!(parsed.value("zt_endpoint_peers", &of_endpoint) >= 1.0);
        assert_eq!(
            parsed
                .matching("zt_endpoint_network_packets", &of_endpoint)
                .count(),
            4
        );
    }

    #[test]
    fn a_fresh_node_without_endpoints_renders_every_family() {
        let ids = generate_identities(1, 0x6d74_7264);
        let planet = Sim::new(1, LinkConfig::default(), Vec::new())
            .planet()
            .clone();
        let now = Timestamp(1_700_000_000_000);
        let node = node_core::node::Node::new(NodeConfig::new(ids[0].clone(), planet), now);
        let parsed = parse(&render(&node, std::iter::empty(), now));
        assert_eq!(parsed.value("zt_num_networks", &[]), 0.0);
        assert!(parsed.samples.iter().all(|s| s.value == 0.0));
        assert!(parsed.types.contains_key("zt_endpoint_tap_packets"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        assert_eq!(escape_help("x\\y\nz \"q\""), r#"x\\y\nz "q""#);
        let mut out = Exposition::default();
        out.family("zt_x", Kind::Gauge, "h");
        out.sample("zt_x", &[("z", "1"), ("a", "2")], 7);
        assert_eq!(
            out.text,
            "# HELP zt_x h\n# TYPE zt_x gauge\nzt_x{a=\"2\",z=\"1\"} 7\n"
        );
    }
}
