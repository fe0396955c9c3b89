//! The task API: what containerd sees of the shim, and nothing of how processes run.
//!
//! containerd starts the shim ([`shim`]: the `start` and `delete` commands, the daemon),
//! calls the ttrpc `Task` service ([`rpc`]), which hands each request to the table of
//! containers ([`service`]); a [`container`] holds its [`process`]es, their states, its lock,
//! its [`events`] and its exit policy, fed by the reaper through the exit router
//! ([`exits`]). What the container asks of its processes goes through the seam
//! ([`crate::model`]). The bundle's files are read here too: `config.json` ([`spec`]) and
//! what the shim keeps beside it ([`bundle`]).

pub mod bootstrap;
pub mod bundle;
pub mod container;
pub mod daemon;
pub mod events;
pub mod exits;
pub mod info;
pub mod process;
pub mod rpc;
pub mod service;
pub mod shim;
pub mod spec;
