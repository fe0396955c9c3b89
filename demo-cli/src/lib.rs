//! `shim-demo`: the sample shim's guided tour, over containerd's gRPC API.
//!
//! The Go sample this project grew from is a README you follow with `ctr`. `shim-demo` makes
//! that tour runnable: `shim-demo walkthrough` creates a container for the runtime
//! `com.example.sample.v2`, starts, inspects, kills and deletes its task, and says at each
//! step what a reader should notice. The subcommands do the same steps one at a time.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`api`] | containerd's gRPC services, as the few calls the demo makes |
//! | [`cri`] | the Kubernetes CRI calls a kubelet makes, on the same socket |
//! | [`image`] | the tiny, empty image, imported offline through the content service |
//! | [`fifo`] | the FIFOs a client creates for a task's stdio |
//! | [`attach`] | stdio and signal forwarding for an attached task |
//! | [`proctree`] | the shim and its task, read from `/proc`, printed as `ps -o ppid,pid,pgid,sid,args --forest` |
//! | [`signals`] | signal names and numbers, and exit codes explained (`143 = 128 + 15`) |
//! | [`ui`] | narration, colour, spinner, JSON output |
//! | [`steps`] | a tour's steps and the loop that runs them |
//! | [`commands`] | one file per subcommand |
//! | [`walkthrough`] | the tour: one file per step |
//! | [`pod`] | the pod tour, over the CRI API: one file per step |

pub mod api;
pub mod attach;
pub mod commands;
pub mod cri;
pub mod fifo;
pub mod image;
pub mod pod;
pub mod proctree;
pub mod signals;
pub mod steps;
pub mod ui;
pub mod walkthrough;

/// The runtime the demo creates containers with.
pub const RUNTIME: &str = "com.example.sample.v2";

/// The container id of the guided tour.
pub const DEFAULT_ID: &str = "shim-test";

/// The image the demo names on its container. The shim ignores images; when this one is
/// absent the demo imports its own tiny, empty image under this name (the README's `ctr`
/// tour imports the same name).
pub const DEFAULT_IMAGE: &str = "example.com/sample-shim/empty:latest";
