//! `containerd-shim-sample-v2`: a containerd runtime v2 shim that runs host processes, or
//! real containers through an OCI runtime.
//!
//! containerd starts this binary for every task of the runtime `com.example.sample.v2` (for
//! every pod, under Kubernetes) and talks to it over ttrpc. By default (the *host mode*) a
//! task runs [`task::spec::DEFAULT_COMMAND`], `sh -c 'while date --rfc-3339=seconds; do sleep 5;
//! done'`, on the host, with **no isolation** (no namespaces, no root filesystem; cgroups
//! limit it). A container whose runtime options name an OCI runtime ([`model::options`]:
//! runc-v2's options) runs in the *OCI mode* instead ([`model::oci`]): a real container, made
//! by runc or crun; so does every container when the binary is installed as
//! `containerd-shim-runc-v2`, in runc-v2's place ([`model::modes`]).
//!
//! # Layout
//!
//! This is the one module table of the project; the README and docs/ARCHITECTURE.md point
//! here. One folder a concern, in the order a request travels; each folder's `mod.rs` opens
//! with what it owns.
//!
//! | folder | module | role |
//! |---|---|---|
//! | [`task`] | | **what containerd sees**: the task API, states, events, the exit policy |
//! | | [`task::shim`] | lifecycle: the `start` and `delete` commands containerd runs, and which a run is |
//! | | [`task::bootstrap`] | what `start` reads on stdin and answers: the task API version containerd speaks |
//! | | [`task::daemon`] | the long-lived daemon: reaper, signals, the ttrpc server (task API v2 and v3) |
//! | | [`task::info`] | `-info`: what the runtime supports, for containerd 2.x |
//! | | [`task::rpc`] | the ttrpc `Task` service: each RPC (Create, Start, Kill, ...) calls `service` |
//! | | [`task::service`] | the table of containers, the rules between them, routing RPCs and exits |
//! | | [`task::container`] | one container: its processes, its lock, its events, its exit policy |
//! | | [`task::process`] | one process's states (Created, Running, Stopped), its `Wait`s, signals |
//! | | [`task::exits`] | from the reaper to the container whose process exited, within windows |
//! | | [`task::events`] | `/tasks/*` events, and where they go ([`task::events::EventSink`]) |
//! | | [`task::spec`], [`task::bundle`] | the bundle's `config.json`; the files the shim keeps there |
//! | [`model`] | | **the seam**: how a container's processes run ([`model::Instance`]) |
//! | | [`model::modes`], [`model::options`] | which model a container gets, from its runtime options (runc-v2's) |
//! | | [`model::ending`] | what both models use to end what is left of a container |
//! | | [`model::host`] | the host model: spawning behind a start gate, membership, ending |
//! | | [`model::host::spawn`] | the birth of a host process: `clone3` into its cgroup, set up, `exec` |
//! | | [`model::host::gate`], [`model::host::pause`] | the start-gate helper; a pod's pause process |
//! | | [`model::host::members`] | which process belongs to which container, without a cgroup |
//! | | [`model::oci`] | the OCI model: real containers made by an OCI runtime (runc, crun) |
//! | | [`model::oci::runtime`] | an OCI runtime's command line, run and awaited through the reaper |
//! | [`cgroup`] | | a task's cgroup (v1 or v2): where its processes live, freezer, OOM count |
//! | | [`cgroup::resources`], [`cgroup::devices`] | `linux.resources` as each version's files; device rules |
//! | | [`cgroup::metrics`], [`cgroup::oom`] | `Stats` (v1 or v2 `Metrics`); OOM notifications |
//! | [`stdio`] | | stdin, stdout and stderr between the task and containerd's FIFOs |
//! | | [`stdio::logs`] | log URIs: `file://` and `binary://` loggers |
//! | [`sys`] | | the system calls that need care, and most of the few `unsafe` blocks |
//! | | [`sys::procfs`] | what `/proc` says about the task's processes |
//! | [`error`] | | the error type and its gRPC codes |
//! | [`logfmt`] | | the shim's own log: logfmt lines into the `log` FIFO containerd copies |
//!
//! Words used throughout: the *init process* is a task's main process, the one `Create`
//! makes (containerd's term); the *start-gate helper* is what it is before `Start`; *pid 1*
//! is the machine's init, which this shim never is.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod error;
pub mod logfmt;
pub mod model;
#[cfg(test)]
mod proptests;
pub mod stdio;
pub mod sys;
pub mod task;

/// The runtime name containerd knows this shim by (`ctr run --runtime ...`).
pub const RUNTIME_ID: &str = "com.example.sample.v2";
