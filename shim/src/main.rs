//! `containerd-shim-sample-v2`: a containerd runtime v2 shim that runs host processes.
//!
//! containerd starts this binary for every task of the runtime `com.example.sample.v2` and
//! talks to it over ttrpc. It runs the seed's command,
//! `sh -c 'while date --rfc-3339=seconds; do sleep 5; done'`, on the host, with **no
//! isolation** (no namespaces, no cgroups, no root filesystem).
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `shim` | lifecycle: the `start` and `delete` commands, the daemon |
//! | `task` | the ttrpc `Task` service: Create, Start, Kill, Delete, ... |
//! | `process` | a process's states (Created, Running, Stopped), identity, signals |
//! | `init` | the `init` helper that holds a created process at its start gate |
//! | `exits` | from `SIGCHLD` to `/tasks/exit`; killing what is left of a task |
//! | `metrics` | `Stats`: CPU and memory of the task's processes |
//! | `stdio` | stdin, stdout and stderr between the task and containerd's FIFOs |
//! | `events` | `/tasks/*` events sent to containerd |
//! | `spec` | the bundle's `config.json` |
//! | `bundle` | the files the shim keeps in the bundle: `address`, `init.pid` |
//! | `procfs` | what `/proc` says about the task's processes |
//! | `error` | the error type and its gRPC codes |

mod bundle;
mod error;
mod events;
mod exits;
mod init;
mod metrics;
mod process;
mod procfs;
#[cfg(test)]
mod proptests;
mod shim;
mod spec;
mod stdio;
mod task;

/// The runtime name containerd knows this shim by (`ctr run --runtime ...`).
const RUNTIME_ID: &str = "com.example.sample.v2";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if init::requested(&args) {
        init::run(args);
    }
    // One runtime thread: a shim serves one task, and a single thread keeps the reaper and
    // the handlers from running at the same time (see `exits.rs`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(containerd_shim::run::<shim::SampleShim>(RUNTIME_ID, None)),
        Err(err) => {
            eprintln!("{RUNTIME_ID}: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    }
}
