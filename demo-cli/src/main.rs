//! `shim-demo`: the sample shim's guided tour over containerd's gRPC API.
//! See the library docs (`shim_demo`) for the layout.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shim_demo::{
    api::Containerd, commands, cri, pod, ui, walkthrough, DEFAULT_ID, DEFAULT_IMAGE, RUNTIME,
};

/// Replays the containerd shim sample's guided tour, or its steps one at a time.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// containerd's gRPC socket.
    #[arg(
        long,
        global = true,
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    address: PathBuf,
    /// containerd namespace.
    #[arg(
        long,
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

/// The container a subcommand acts on.
#[derive(Args)]
struct Container {
    /// Container id.
    #[arg(long, default_value = DEFAULT_ID)]
    id: String,
}

/// How a tour runs.
#[derive(Args)]
struct Tour {
    /// Go straight through, without waiting for Enter between steps.
    #[arg(long, short)]
    yes: bool,
    /// Print one JSON object per step instead of prose.
    #[arg(long)]
    json: bool,
    /// Image the containers name (imported, tiny and empty, when absent; for the pod tour,
    /// into the CRI plugin's namespace `k8s.io`).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
}

#[derive(Subcommand)]
enum Command {
    /// The whole tour: create, start, inspect, kill (143), attached SIGINT (130), delete.
    Walkthrough {
        #[command(flatten)]
        tour: Tour,
    },
    /// The tour as Kubernetes drives a shim: a pod of two containers over the CRI API.
    Pod {
        #[command(flatten)]
        tour: Tour,
        /// The runtime handler containerd's config maps to our shim.
        #[arg(long, default_value = cri::HANDLER)]
        handler: String,
        /// Directory for the pod's CRI log files (default: a new one under /tmp, removed
        /// at the end).
        #[arg(long)]
        log_dir: Option<PathBuf>,
    },
    /// Create the container (no shim runs yet).
    Create {
        #[command(flatten)]
        container: Container,
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
        /// Runtime name; containerd resolves `a.b.name.vN` to `containerd-shim-name-vN`.
        #[arg(long, default_value = RUNTIME)]
        runtime: String,
    },
    /// Create and start the task: attached (exit code = the task's) unless --detach.
    Start {
        #[command(flatten)]
        container: Container,
        #[arg(long, short)]
        detach: bool,
    },
    /// Attach to a running task's stdio; Ctrl-C is forwarded to it.
    Attach {
        #[command(flatten)]
        container: Container,
    },
    /// List tasks (TASK PID STATUS).
    Ps,
    /// List containers (CONTAINER IMAGE RUNTIME).
    Ls,
    /// Signal a task.
    Kill {
        #[command(flatten)]
        container: Container,
        /// Signal name or number.
        #[arg(long, short, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the task, not only its init.
        #[arg(long, short)]
        all: bool,
    },
    /// Set new limits on a running task's cgroup (memory, CPU, pids).
    Update {
        #[command(flatten)]
        container: Container,
        #[command(flatten)]
        limits: commands::update::Limits,
    },
    /// Delete the task (printing its exit code) and the container.
    Rm {
        #[command(flatten)]
        container: Container,
        /// Kill a running task first.
        #[arg(long, short)]
        force: bool,
    },
    /// Stream containerd's events.
    Events,
    /// Remove whatever the demo left: task, container, FIFOs, imported image.
    Cleanup {
        #[command(flatten)]
        container: Container,
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("shim-demo: {}", ui::error_text(&err));
            1
        }
    };
    // Exit here: an attached session may leave a blocking read of our stdin behind.
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Walkthrough { tour } = &cli.command {
        let options = walkthrough::Options {
            address: cli.address.clone(),
            namespace: cli.namespace.clone(),
            image: tour.image.clone(),
            yes: tour.yes,
            json: tour.json,
        };
        return Ok(walkthrough::run(options).await);
    }
    if let Command::Pod {
        tour,
        handler,
        log_dir,
    } = &cli.command
    {
        let options = pod::Options {
            address: cli.address.clone(),
            image: tour.image.clone(),
            log_directory: log_dir.clone().unwrap_or_default(),
            handler: handler.clone(),
            yes: tour.yes,
            json: tour.json,
        };
        return Ok(pod::run(options).await);
    }
    let api = match Containerd::connect(&cli.address, &cli.namespace).await {
        Ok(api) => api,
        Err(err) => {
            eprintln!(
                "shim-demo: {}\n{}",
                ui::error_text(&err),
                walkthrough::preflight::HOW_TO_START
            );
            return Ok(2);
        }
    };
    match cli.command {
        Command::Walkthrough { .. } | Command::Pod { .. } => unreachable!("handled above"),
        Command::Create {
            container,
            image,
            runtime,
        } => commands::create::run(&api, &container.id, &image, &runtime).await?,
        Command::Start { container, detach } => {
            return Ok(commands::start::run(&api, &container.id, detach).await? as i32)
        }
        Command::Attach { container } => {
            return Ok(commands::attach::run(&api, &container.id).await? as i32)
        }
        Command::Ps => print!("{}", commands::ps::table(&api).await?),
        Command::Ls => print!("{}", commands::ls::table(&api).await?),
        Command::Kill {
            container,
            signal,
            all,
        } => commands::kill::run(&api, &container.id, &signal, all).await?,
        Command::Update { container, limits } => {
            commands::update::run(&api, &container.id, &limits).await?
        }
        Command::Rm { container, force } => commands::rm::run(&api, &container.id, force).await?,
        Command::Events => commands::events::run(&api).await?,
        Command::Cleanup { container, image } => {
            for line in commands::cleanup::run(&api, &container.id, &image).await? {
                println!("{line}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
