//! `containerd-shim-sample-v2`: see the library's docs (`src/lib.rs`) for the layout.

use containerd_shim_sample_v2::{
    model::host::gate, model::host::pause, task::info, task::shim, RUNTIME_ID,
};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if gate::requested(&args) {
        gate::run(args);
    }
    if pause::requested(&args) {
        pause::run();
    }
    if info::requested(&args) {
        info::run();
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(err) => {
            eprintln!("{RUNTIME_ID}: {err}");
            std::process::exit(2);
        }
    };
    // One runtime thread: the reaper cannot run between a spawn and the pidfd taken on the
    // child, and no container's state is touched by two threads (see "Concurrency" in
    // docs/ARCHITECTURE.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => std::process::exit(runtime.block_on(shim::run(flags))),
        Err(err) => {
            eprintln!("{RUNTIME_ID}: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    }
}
