//! `zt-agent`: the per-host ZeroTier daemon and its command line.
//!
//! - `run`: the node over UDP with ZeroTier One's home layout, and the local HTTP API.
//! - `idtool`, `mkworld`: identities and worlds (zerotier-idtool's personality).
//! - `info`, `listpeers`, `peers`, `echo`: clients of the local API (zerotier-cli's).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use zt_agent::cli::idtool::IdtoolCommand;
use zt_agent::cli::query::{self, Failure, DEFAULT_PORT};
use zt_agent::{agent, cli, client};

/// Where the agent keeps its state unless told otherwise.
const DEFAULT_HOME: &str = "/var/lib/zt-agent";

#[derive(Debug, Parser)]
#[command(
    name = "zt-agent",
    version,
    about = "ZeroTier agent: node, local API and tools"
)]
struct Cli {
    /// Home folder: identity, planet, moons.d, authtoken.secret.
    #[arg(long, global = true, env = "ZT_AGENT_HOME", default_value = DEFAULT_HOME)]
    home: PathBuf,
    /// UDP port of the node and TCP port of its local API [default: the home's
    /// zerotier-one.port for clients, 9993 for run].
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Local API token [default: the home's authtoken.secret].
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Identities, as zerotier-idtool.
    #[command(subcommand)]
    Idtool(IdtoolCommand),
    /// `mkworld init [--moon] [<identity.public>...]` prints a JSON template;
    /// `mkworld <file.json> [-o <out>]` signs it into a binary planet or moon.
    Mkworld {
        /// With `init`: make a moon template (ID = the first root's address).
        #[arg(long)]
        moon: bool,
        /// Output file [default: `planet`, or `<16 hex id>.moon`].
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// `init [<identity.public>...]`, or the JSON description to sign.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Run the node.
    Run {
        /// Address the local API listens on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
        api_bind: IpAddr,
        /// The plugin API's Unix socket (root only) [default: /run/zt-agent/agent.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Serve no plugin API.
        #[arg(long, conflicts_with = "socket")]
        no_socket: bool,
    },
    /// Status of the running agent.
    Info {
        /// Print the JSON.
        #[arg(short = 'j')]
        json: bool,
    },
    /// Peers of the running agent, as zerotier-cli listpeers.
    Listpeers {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Peers of the running agent, as a table.
    Peers {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Call the local API (e.g. the controller's): `api POST /controller/network '{}'`.
    Api {
        method: String,
        path: String,
        body: Option<String>,
    },
    /// Join a network (creates its tap once the controller answers).
    Join {
        /// The network's 16 hex digit ID.
        network: String,
        #[arg(short = 'j')]
        json: bool,
    },
    /// Leave a network.
    Leave { network: String },
    /// Joined networks, as zerotier-cli listnetworks.
    Listnetworks {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Send VL1 ECHOs to a node and print the round trips.
    Echo {
        /// The node's 10 hex digit address.
        address: String,
        /// How many ECHOs.
        #[arg(short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Milliseconds between ECHOs.
        #[arg(short = 'i', default_value_t = 1000)]
        interval_ms: u64,
        /// Payload of each ECHO [default: a unique tag].
        #[arg(short = 'p', long)]
        payload: Option<String>,
        /// Print each reply's JSON.
        #[arg(short = 'j')]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Run { .. }));
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let code = match &cli.command {
        Command::Idtool(command) => cli::idtool::run(command, &mut out, &mut err),
        Command::Mkworld {
            moon,
            out: out_path,
            args,
        } => match args.split_first() {
            Some((first, rest)) if first == "init" => {
                cli::mkworld::run_init(*moon, rest, &mut out, &mut err)
            }
            Some((spec, [])) => cli::mkworld::run_make(
                spec.as_ref(),
                out_path.as_deref(),
                now_ms(),
                &mut out,
                &mut err,
            ),
            _ => {
                eprintln!("usage: zt-agent mkworld init [--moon] [<identity.public>...] | zt-agent mkworld <file.json> [-o <out>]");
                2
            }
        },
        Command::Run {
            api_bind,
            socket,
            no_socket,
        } => {
            drop((out, err));
            let socket = (!*no_socket).then(|| {
                socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(zt_agent::plugin_api::DEFAULT_SOCKET))
            });
            run(&cli, *api_bind, socket)
        }
        Command::Info { json } => client_command(&cli, |c| query::info(c, *json, &mut out)),
        Command::Listpeers { json } => {
            client_command(&cli, |c| query::listpeers(c, *json, &mut out))
        }
        Command::Peers { json } => client_command(&cli, |c| query::peers(c, *json, &mut out)),
        Command::Join { network, json } => {
            client_command(&cli, |c| query::join(c, network, *json, &mut out))
        }
        Command::Api { method, path, body } => client_command(&cli, |c| {
            query::api(c, method, path, body.as_deref(), &mut out)
        }),
        Command::Leave { network } => client_command(&cli, |c| query::leave(c, network, &mut out)),
        Command::Listnetworks { json } => {
            client_command(&cli, |c| query::listnetworks(c, *json, &mut out))
        }
        Command::Echo {
            address,
            count,
            interval_ms,
            payload,
            json,
        } => client_command(&cli, |c| {
            query::echo(
                c,
                address,
                *count,
                Duration::from_millis(*interval_ms),
                payload.as_deref().unwrap_or_default(),
                *json,
                &mut out,
            )
        }),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn client_command(
    cli: &Cli,
    command: impl FnOnce(&client::ApiClient) -> Result<(), Failure>,
) -> i32 {
    let result = query::client_for(&cli.home, cli.port, cli.token.clone())
        .and_then(|client| command(&client));
    match result {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{}", failure.message);
            failure.code
        }
    }
}

fn run(cli: &Cli, api_bind: IpAddr, socket: Option<PathBuf>) -> i32 {
    let options = agent::RunOptions {
        home: cli.home.clone(),
        port: cli.port.unwrap_or(DEFAULT_PORT),
        api_bind,
        socket,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        let agent = agent::Agent::start(&options).await?;
        agent.run(agent::termination_signal()).await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (`info` for `run` by default, `warn` otherwise).
fn init_logging(daemon: bool) {
    let default = if daemon {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(default));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(io::stderr))
        .with(filter)
        .try_init();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
