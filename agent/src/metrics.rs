//! `GET /metrics`: the node's and the endpoints' counters as Prometheus text.

use node_core::node::Node;
use node_core::Timestamp;

use crate::driver::Endpoint;

/// Prometheus text exposition of the host node and its hosted endpoints.
pub fn render<'a>(
    host: &Node,
    endpoints: impl Iterator<Item = &'a Endpoint>,
    _now: Timestamp,
) -> String {
    let mut out = String::new();
    out.push_str("# TYPE zt_endpoint_packets counter\n");
    let _ = host;
    for endpoint in endpoints {
        let c = endpoint.counters;
        let address = endpoint.node.address();
        out.push_str(&format!(
            "zt_endpoint_packets{{endpoint=\"{address}\",direction=\"rx\"}} {}\n",
            c.rx_packets
        ));
    }
    out
}
