//! The subcommands for doing the tour by hand, one file each.

pub mod attach;
pub mod cleanup;
pub mod create;
pub mod events;
pub mod kill;
pub mod ls;
pub mod ps;
pub mod rm;
pub mod start;
pub mod update;
