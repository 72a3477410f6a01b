//! `zt-docker-plugin`: serves Docker's plugin socket (see the library's docs), or with
//! `forget`, asks the running plugin to forget a stable endpoint key.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use docker_plugin::agent::UnixAgent;
use docker_plugin::driver::{
    Driver, DriverConfig, ForgetKeyRequest, ForgetKeyResponse, DEFAULT_ATTACH_WAIT_SECS,
    FORGET_KEY_METHOD,
};
use docker_plugin::protocol::ErrorResponse;
use docker_plugin::server::{self, DEFAULT_SOCKET};
use docker_plugin::state::{StateStore, DEFAULT_STATE_DIR};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use zt_agent::plugin_api::{DEFAULT_SOCKET as DEFAULT_AGENT_SOCKET, MAX_ATTACH_WAIT};

#[derive(Debug, Parser)]
#[command(
    name = "zt-docker-plugin",
    version,
    about = "The zerotier Docker network and IPAM driver"
)]
struct Cli {
    /// The plugin's socket; Docker finds a plugin named `zerotier` at the default.
    #[arg(long, global = true, env = "ZT_DOCKER_PLUGIN_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// zt-agent's plugin API socket.
    #[arg(long, env = "ZT_AGENT_SOCKET", default_value = DEFAULT_AGENT_SOCKET)]
    agent_socket: PathBuf,
    /// Where the plugin keeps its state.
    #[arg(long, env = "ZT_DOCKER_PLUGIN_STATE", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Seconds a new endpoint waits for its member to be authorized and configured
    /// (a network's `-o zerotier.wait=N` overrides it). Keep it under Docker's 30 s.
    #[arg(long, default_value_t = DEFAULT_ATTACH_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(0..=MAX_ATTACH_WAIT.as_secs()))]
    attach_wait: u64,
    /// The agent's owner name for this plugin's endpoints.
    #[arg(long, default_value = "docker")]
    owner: String,
    /// Do not remove, at start, agent endpoints of this owner that the state does not know.
    #[arg(long)]
    no_gc: bool,
    /// Log filter: error, warn, info, debug or trace.
    #[arg(long, env = "ZT_DOCKER_PLUGIN_LOG", default_value = "info")]
    log_level: tracing::Level,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forget a stable endpoint key (`--driver-opt zerotier.key=NAME`) and delete its
    /// member's identity; the next use of the key makes a new member.
    Forget {
        /// The ZeroTier network ID the key is on.
        #[arg(long)]
        network: String,
        /// The key.
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Forget { network, key }) => forget(&cli.socket, network, key),
        None => run(&cli.socket, cli.run),
    }
}

fn run(socket: &Path, args: RunArgs) -> ExitCode {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(Targets::new().with_default(args.log_level))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zt-docker-plugin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let agent = Arc::new(UnixAgent::new(&args.agent_socket));
        let config = DriverConfig {
            owner: args.owner,
            attach_wait: args.attach_wait,
            gc_at_start: !args.no_gc,
            ..DriverConfig::default()
        };
        let driver = match Driver::new(agent, StateStore::new(&args.state_dir), config) {
            Ok(driver) => Arc::new(driver),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Open the socket first: Docker probes it soon after starting a plugin.
        let server = match server::spawn(socket, driver.clone()) {
            Ok(server) => server,
            Err(e) => {
                tracing::error!("cannot serve {}: {e}", socket.display());
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            socket = %socket.display(),
            agent = %args.agent_socket.display(),
            state = %args.state_dir.display(),
            "zt-docker-plugin serving"
        );
        let upkeep = tokio::spawn(driver.maintain());
        wait_for_signal().await;
        upkeep.abort();
        server.shutdown();
        tracing::info!("zt-docker-plugin stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Posts the plugin's `ZeroTier.ForgetKey` to the running plugin.
fn forget(socket: &Path, network: String, key: String) -> ExitCode {
    let request = ForgetKeyRequest { network, key };
    match call_plugin(socket, FORGET_KEY_METHOD, &request) {
        Ok(answer) => match serde_json::from_slice::<ForgetKeyResponse>(&answer) {
            Ok(answer) => {
                println!("forgot key {} (member {})", request.key, answer.member);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("zt-docker-plugin: unexpected answer: {e}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("zt-docker-plugin: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One HTTP/1.1 POST to the plugin socket; the body of a 200, or the error's text.
fn call_plugin<T: serde::Serialize>(
    socket: &Path,
    method: &str,
    body: &T,
) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the plugin at {}: {e}", socket.display()))?;
    let timeout = Some(Duration::from_secs(60));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /{method} HTTP/1.1\r\nHost: zt-docker-plugin\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .map_err(|e| format!("sending to the plugin: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the plugin's answer: {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the plugin's answer has no HTTP header")?;
    let status_ok = answer.starts_with(b"HTTP/1.1 200");
    let body = answer[split + 4..].to_vec();
    if status_ok {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(error) => error.err,
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    })
}
