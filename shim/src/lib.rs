//! `containerd-shim-sample-v2`: a containerd runtime v2 shim that runs host processes, or
//! real containers through an OCI runtime.
//!
//! containerd starts this binary for every task of the runtime `com.example.sample.v2` (for
//! every pod, under Kubernetes) and talks to it over ttrpc. By default (the *host mode*) a
//! task runs [`spec::DEFAULT_COMMAND`], `sh -c 'while date --rfc-3339=seconds; do sleep 5;
//! done'`, on the host, with **no isolation** (no namespaces, no root filesystem; cgroups
//! limit it). A container whose runtime options name an OCI runtime ([`options`]) runs in
//! the *OCI mode* instead ([`oci`]): a real container, made by runc or crun.
//!
//! # Layout
//!
//! This is the one module table of the project; the README and docs/ARCHITECTURE.md point
//! here. In the order a request travels:
//!
//! | module | role |
//! |---|---|
//! | [`shim`] | lifecycle: the `start` and `delete` commands containerd runs, the daemon |
//! | [`rpc`] | the ttrpc `Task` service: each RPC (Create, Start, Kill, ...) calls [`service`] |
//! | [`service`] | the table of containers, the rules between them, routing RPCs and exits |
//! | [`container`] | one container: its processes, its lock, its events, its exit policy |
//! | [`process`] | one process's states (Created, Running, Stopped), its `Wait`s, signals |
//! | [`model`] | **the seam**: what a process model implements (how processes run) |
//! | [`modes`] | which model a container gets: host (the default) or OCI, from its runtime [`options`] |
//! | [`host`] | the host process model: spawning, membership (cgroup or tree), ending |
//! | [`oci`] | the OCI process model: real containers made by an OCI [`runtime`] (runc, crun) |
//! | [`gate`] | the start-gate helper that holds a created process until `Start` |
//! | [`pause`] | the pause process a pod's sandbox runs |
//! | [`exits`] | from the reaper to the container whose process exited |
//! | [`cgroup`] | a task's cgroup (v1 or v2): where its processes live, freezer, OOM count |
//! | [`resources`] | the limits of `linux.resources`, as each cgroup version's files |
//! | [`devices`] | the v1 devices cgroup: rules checked, an `Update` as the smallest change |
//! | [`members`] | which of the shim's processes belong to which container, without a cgroup |
//! | [`stdio`] | stdin, stdout and stderr between the task and containerd's FIFOs |
//! | [`logs`] | log URIs: `file://` and `binary://` loggers |
//! | [`options`] | `Create`'s runtime options: the TOML file that selects the OCI mode |
//! | [`runtime`] | an OCI runtime's command line, run and awaited through the reaper |
//! | [`events`] | `/tasks/*` events, and where they go ([`events::EventSink`]) |
//! | [`spec`] | the bundle's `config.json`: what to run, as whom |
//! | [`bundle`] | the files the shim keeps in the bundle: `address`, `init.pid` |
//! | [`metrics`] | `Stats`: the cgroup's figures (v1 or v2 `Metrics`), or `/proc`'s |
//! | [`oom`] | waiting for a cgroup's OOM notifications (eventfd on v1, inotify on v2) |
//! | [`procfs`] | what `/proc` says about the task's processes |
//! | [`spawn`] | the birth of a host process: `clone3` into its cgroup, set up, `exec` |
//! | [`sys`] | the system calls that need care (signals, pidfds, children, what a child does before `exec`), and most of the few `unsafe` blocks |
//! | [`error`] | the error type and its gRPC codes |
//! | [`logfmt`] | the shim's own log: logfmt lines into the `log` FIFO containerd copies into its log |
//!
//! Words used throughout: the *init process* is a task's main process, the one `Create`
//! makes (containerd's term); the *start-gate helper* is what it is before `Start`; *pid 1*
//! is the machine's init, which this shim never is.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bundle;
pub mod cgroup;
pub mod container;
pub mod devices;
pub mod error;
pub mod events;
pub mod exits;
pub mod gate;
pub mod host;
pub mod logfmt;
pub mod logs;
pub mod members;
pub mod metrics;
pub mod model;
pub mod modes;
pub mod oci;
pub mod oom;
pub mod options;
pub mod pause;
pub mod process;
pub mod procfs;
#[cfg(test)]
mod proptests;
pub mod resources;
pub mod rpc;
pub mod runtime;
pub mod service;
pub mod shim;
pub mod spawn;
pub mod spec;
pub mod stdio;
pub mod sys;

/// The runtime name containerd knows this shim by (`ctr run --runtime ...`).
pub const RUNTIME_ID: &str = "com.example.sample.v2";
