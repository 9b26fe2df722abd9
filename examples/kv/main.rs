//! raftwal-kv: a replicated key-value service on raft-rs whose nodes keep their logs in
//! `raftwal::DiskStorage` — the engine's end-to-end proof.
//!
//! ```sh
//! cargo run --release --example kv -- demo     # 3 processes on loopback, SIGKILL, checks
//! cargo run --release --example kv -- node --id 1 --dir /tmp/kv1 \
//!     --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --metrics-addr 127.0.0.1:9001
//! curl -s 127.0.0.1:9001/metrics | grep fsync
//! cargo run --release --example kv -- put --endpoints 127.0.0.1:7001 greeting hello
//! ```
//!
//! Modules: `wire` (bytes on the sockets), `state` (the state machine and its snapshots),
//! `node` (the raft loop over DiskStorage), `server` (sockets, forwarding), `client`,
//! `app` (starting a node process), `procs` (a local cluster of processes), `demo`.

mod app;
mod client;
mod demo;
mod node;
mod procs;
mod server;
mod stall;
mod state;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::wire::Consistency;

#[derive(Parser)]
#[command(
    name = "kv",
    about = "raftwal-kv: a replicated key-value store on raft-rs + raftwal"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct Endpoints {
    /// Node addresses, comma separated; requests fail over between them.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<SocketAddr>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start 3 nodes on loopback, write, SIGKILL one, write, restart it, check every write.
    /// Its directory is removed after a success, kept (and named) after a failure or --keep.
    Demo(demo::DemoArgs),
    /// Run one node until it is killed.
    Node(app::NodeArgs),
    /// Read a key (eventual: from the node asked; --strong: linearizable, via the leader).
    Get {
        #[command(flatten)]
        at: Endpoints,
        key: String,
        #[arg(long)]
        strong: bool,
    },
    /// Write a key; --expect V makes it a compare-and-swap (0: only if absent).
    Put {
        #[command(flatten)]
        at: Endpoints,
        key: String,
        value: String,
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Delete a key; --expect V makes it conditional.
    Del {
        #[command(flatten)]
        at: Endpoints,
        key: String,
        #[arg(long)]
        expect: Option<u64>,
    },
    /// List the keys under a prefix.
    List {
        #[command(flatten)]
        at: Endpoints,
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        strong: bool,
    },
    /// Print every change under a prefix as it is applied on the first endpoint.
    Watch {
        #[command(flatten)]
        at: Endpoints,
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Add a node as a voter; then start it with `node --join`.
    AddNode {
        #[command(flatten)]
        at: Endpoints,
        id: u64,
        /// The address it will listen on.
        addr: SocketAddr,
    },
    /// Remove a voter (stop its process afterwards).
    RemoveNode {
        #[command(flatten)]
        at: Endpoints,
        id: u64,
    },
    /// Each endpoint's raft and storage status.
    Status {
        #[command(flatten)]
        at: Endpoints,
    },
}

fn consistency(strong: bool) -> Consistency {
    if strong {
        Consistency::Strong
    } else {
        Consistency::Eventual
    }
}

async fn client_command(cmd: Cmd) -> Result<(), ClientError> {
    match cmd {
        Cmd::Get { at, key, strong } => {
            match Client::new(at.endpoints)
                .read(&key, consistency(strong))
                .await?
            {
                Some(i) => println!("{}\t{}\t(version {})", i.key, i.value, i.version),
                None => println!("{key}: not found"),
            }
        }
        Cmd::Put {
            at,
            key,
            value,
            expect,
        } => {
            let v = Client::new(at.endpoints)
                .write_cas(&key, &value, expect)
                .await?;
            println!("{key}: version {v}");
        }
        Cmd::Del { at, key, expect } => {
            let v = Client::new(at.endpoints).delete_cas(&key, expect).await?;
            println!("{key}: deleted at index {v}");
        }
        Cmd::List { at, prefix, strong } => {
            for i in Client::new(at.endpoints)
                .list(&prefix, consistency(strong))
                .await?
            {
                println!("{}\t{}\t(version {})", i.key, i.value, i.version);
            }
        }
        Cmd::Watch { at, prefix } => {
            let first = *at
                .endpoints
                .first()
                .ok_or_else(|| ClientError::Refused("no endpoint given".into()))?;
            let mut w = Client::pinned(first).watch(&prefix).await?;
            println!("watching {prefix:?} on {first} from index {}", w.applied);
            while let Some(e) = w.next().await {
                match e.value {
                    Some(v) => println!("put\t{}\t{v}\t(version {})", e.key, e.version),
                    None => println!("delete\t{}\t(index {})", e.key, e.version),
                }
            }
            println!("the node closed the watch");
        }
        Cmd::AddNode { at, id, addr } => {
            let (index, voters) = Client::new(at.endpoints)
                .add_node(id, &addr.to_string())
                .await?;
            println!("node {id} ({addr}) added at index {index}; voters now {voters:?}");
        }
        Cmd::RemoveNode { at, id } => {
            let (index, voters) = Client::new(at.endpoints).remove_node(id).await?;
            println!("node {id} removed at index {index}; voters now {voters:?}");
        }
        Cmd::Status { at } => {
            for a in at.endpoints {
                match Client::pinned(a).status().await {
                    Ok(s) => println!("{a}: {}", serde_json::to_string(&s).unwrap_or_default()),
                    Err(e) => println!("{a}: {e}"),
                }
            }
        }
        Cmd::Demo(_) | Cmd::Node(_) => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Node(args) => app::run_node(args),
        Cmd::Demo(args) => std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start nodes: {e}"))
            .and_then(|exe| {
                runtime().and_then(|rt| rt.block_on(demo::run(exe, vec!["node".into()], args)))
            }),
        cmd => runtime().and_then(|rt| rt.block_on(client_command(cmd)).map_err(|e| e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}
