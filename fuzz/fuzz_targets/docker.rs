//! libnetwork's remote network driver and IPAM calls (`/NetworkDriver.*`, `/IpamDriver.*`)
//! as the Docker plugin serves them: body parsing, option and address validation, and the
//! state changes, against an agent whose status is ready and which fails every other call.
//!
//! Input: up to 8 calls separated by NUL bytes (JSON holds none), each a method byte and
//! the body. Each input starts from an empty state.
//!
//! Properties, beyond "never panics": after the calls, the state file reads back as the
//! driver's state.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use docker_plugin::agent::{Agent, AgentError, AgentFuture, DetachRequest, SandboxRequest};
use docker_plugin::driver::{Driver, DriverConfig, FORGET_KEY_METHOD};
use docker_plugin::state::StateStore;
use libfuzzer_sys::fuzz_target;
use zt_agent::plugin_api::{
    AttachRequest, DetachResponse, Endpoint, GcRequest, GcResponse, Status,
};

const METHODS: [&str; 20] = [
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.DiscoverNew",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    FORGET_KEY_METHOD,
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "NetworkDriver.GwAllocCheck",
];
const MAX_CALLS: usize = 8;

/// Ready, and refusing everything else: what the driver does with bodies is under test, not
/// the agent.
struct RefusingAgent;

fn refused<T>() -> AgentFuture<'static, T> {
    Box::pin(async {
        Err(AgentError::Exchange {
            operation: "fuzz",
            problem: "the fuzz target's agent refuses".into(),
        })
    })
}

impl Agent for RefusingAgent {
    fn attach(&self, _: AttachRequest) -> AgentFuture<'_, Endpoint> {
        refused()
    }
    fn detach(&self, _: DetachRequest) -> AgentFuture<'_, DetachResponse> {
        refused()
    }
    fn sandbox(&self, _: SandboxRequest) -> AgentFuture<'_, Endpoint> {
        refused()
    }
    fn status(&self) -> AgentFuture<'_, Status> {
        Box::pin(async {
            Ok(Status {
                ready: true,
                address: None,
                version: "fuzz".into(),
                endpoints: 0,
                reason: None,
            })
        })
    }
    fn gc(&self, _: GcRequest) -> AgentFuture<'_, GcResponse> {
        refused()
    }
}

/// The runtime and a state folder of this process's own.
fn setup() -> &'static (tokio::runtime::Runtime, PathBuf) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // Every save syncs: in memory where there is a tmpfs for it.
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("zt-fuzz-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a state folder");
        (runtime, dir)
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, dir) = setup();
    let store = StateStore::new(dir);
    let _ = std::fs::remove_file(store.path());
    let driver = Driver::new(Arc::new(RefusingAgent), store, DriverConfig::default())
        .expect("an empty state loads");
    runtime.block_on(async {
        for call in data.split(|&b| b == 0).take(MAX_CALLS) {
            let Some((&selector, body)) = call.split_first() else {
                continue;
            };
            let method = METHODS[usize::from(selector) % METHODS.len()];
            if let Ok(Some(answer)) = driver.handle(method, body).await {
                serde_json::to_vec(&answer).expect("an answer serializes");
            }
        }
    });
    let mut saved = StateStore::new(dir)
        .load()
        .unwrap_or_else(|e| panic!("the state file does not load: {e}"));
    let state = driver.snapshot();
    // Saving stamps the file with the current version; the state in memory keeps the one it
    // was loaded with.
    saved.version = state.version;
    assert_eq!(saved, state, "the state file differs from the state");
});
