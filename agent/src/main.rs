//! `zt-agent`: the per-host ZeroTier daemon and its command line.
//!
//! - `run`: the node over UDP with ZeroTier One's home layout, and the local HTTP API.
//! - `idtool`, `mkworld`: identities and worlds (zerotier-idtool's personality).
//! - `info`, `listpeers`, `peers`, `echo`: clients of the local API (zerotier-cli's).
//! - `endpoints`, `attach`, `detach`, `check`: clients of the plugin API's Unix socket.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use zt_agent::authorize::{ControllerApi, ControllerCredentials};
use zt_agent::cli::endpoints::{AttachArgs, EndpointRefArgs, SocketArg};
use zt_agent::cli::idtool::IdtoolCommand;
use zt_agent::cli::query::{self, Failure, DEFAULT_PORT};
use zt_agent::plugin_client::PluginClient;
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

/// Controller credentials for `run`: with them the agent authorizes its own container
/// endpoints on private networks; without them an attach names the member to authorize.
#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Base URL of the controller API that authorizes container endpoints: a ZeroTier One
    /// style API (e.g. http://10.0.0.1:9993) or, with `--controller-api central`, a
    /// Central-compatible API v1 (e.g. http://central.example/api/v1). http:// only.
    #[arg(long, env = "ZT_CONTROLLER_URL", requires = "controller_token_source")]
    controller_url: Option<String>,
    /// File holding the controller API token (e.g. the controller's authtoken.secret).
    #[arg(
        long,
        env = "ZT_CONTROLLER_TOKEN_FILE",
        group = "controller_token_source"
    )]
    controller_token_file: Option<PathBuf>,
    /// The controller API token itself (the file or the environment keep it out of `ps`).
    #[arg(
        long,
        env = "ZT_CONTROLLER_TOKEN",
        hide_env_values = true,
        group = "controller_token_source"
    )]
    controller_token: Option<String>,
    /// Which controller API: `zerotier` or `central`.
    #[arg(long, env = "ZT_CONTROLLER_API", default_value = "zerotier")]
    controller_api: String,
    /// All of it in a JSON file: {"api": "zerotier"|"central", "url": "...", "token": "..."}
    /// or with "tokenFile" instead of "token".
    #[arg(
        long,
        env = "ZT_CONTROLLER_CREDENTIALS",
        conflicts_with = "controller_url"
    )]
    controller_credentials: Option<PathBuf>,
}

impl ControllerArgs {
    fn credentials(&self) -> Result<Option<ControllerCredentials>, String> {
        if let Some(path) = &self.controller_credentials {
            return ControllerCredentials::load(path)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        let Some(url) = &self.controller_url else {
            return Ok(None);
        };
        let api: ControllerApi = self.controller_api.parse().map_err(|e| format!("{e}"))?;
        let token = match (&self.controller_token, &self.controller_token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            (None, None) => {
                return Err(
                    "--controller-url needs --controller-token-file or --controller-token".into(),
                )
            }
        };
        ControllerCredentials::new(api, url.as_str(), token)
            .map(Some)
            .map_err(|e| e.to_string())
    }
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
        #[command(flatten)]
        controller: ControllerArgs,
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
    /// Container endpoints of the running agent (plugin API).
    ///
    /// One line per endpoint: key, container, interface, network, ZeroTier address, MAC,
    /// state, IPs and packet counters (rx/tx through the interface, switched out/in
    /// between endpoints of this agent).
    Endpoints {
        #[arg(short = 'j')]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Attach a container to a network (plugin API).
    ///
    /// The container becomes a ZeroTier member of its own, with an interface in its
    /// namespace. Prints the endpoint. While the network refuses the member, fails after
    /// --wait naming the member to authorize; attach again once it is authorized.
    Attach(AttachArgs),
    /// Detach a container's endpoint (plugin API).
    ///
    /// Name it by --key, or by --container-id and --if-name; every option given must match.
    /// Detaching what is not attached succeeds.
    Detach(EndpointRefArgs),
    /// Check that an endpoint is in place and ready (plugin API).
    ///
    /// Name it by --key, or by --container-id and --if-name.
    Check(EndpointRefArgs),
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
            controller,
        } => {
            drop(out);
            let credentials = match controller.credentials() {
                Ok(credentials) => credentials,
                Err(message) => {
                    let _ = writeln!(err, "zt-agent run: {message}");
                    return ExitCode::from(2);
                }
            };
            drop(err);
            let socket = (!*no_socket).then(|| {
                socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(zt_agent::plugin_api::DEFAULT_SOCKET))
            });
            run(&cli, *api_bind, socket, credentials)
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
        Command::Endpoints { json, socket } => plugin_command(&cli, socket, |c| {
            cli::endpoints::endpoints(c, *json, &mut out)
        }),
        Command::Attach(args) => plugin_command(&cli, &args.socket, |c| {
            cli::endpoints::attach(c, &args.request()?, args.json, &mut out)
        }),
        Command::Detach(args) => plugin_command(&cli, &args.socket, |c| {
            cli::endpoints::detach(c, &args.reference()?, args.json, &mut out)
        }),
        Command::Check(args) => plugin_command(&cli, &args.socket, |c| {
            cli::endpoints::check(c, &args.reference()?, args.json, &mut out)
        }),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a client command of the plugin API against the socket `--socket` or the home names.
fn plugin_command(
    cli: &Cli,
    socket: &SocketArg,
    command: impl FnOnce(&PluginClient) -> Result<(), Failure>,
) -> i32 {
    let client = PluginClient::new(socket.path(&cli.home));
    match command(&client) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{}", failure.message);
            failure.code
        }
    }
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

fn run(
    cli: &Cli,
    api_bind: IpAddr,
    socket: Option<PathBuf>,
    controller_credentials: Option<ControllerCredentials>,
) -> i32 {
    if let Some(credentials) = &controller_credentials {
        // Debug hides the token.
        tracing::info!("container endpoints are authorized with {credentials:?}");
    }
    let options = agent::RunOptions {
        home: cli.home.clone(),
        port: cli.port.unwrap_or(DEFAULT_PORT),
        api_bind,
        socket,
        controller_credentials,
    };
    // One thread runs every task: a frame then moves from its tap reader to the driver and
    // out of the UDP socket without waking another thread, which on a busy machine cost more
    // latency (each wake-up waits for a core) than a second worker ever gained. Blocking work
    // (file writes, identity generation) still goes to tokio's blocking pool, and netlink
    // has a thread of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
