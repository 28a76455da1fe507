//! The process's one tokio runtime. `main` builds it and runs the command on its blocking pool
//! (the main thread drives the I/O); everything else reaches it through [`handle`], from the
//! blocking threads passes run on (D-Bus calls block on it there).

use anyhow::{Context, Result};
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime `main` makes once: one thread of its own for I/O and timers, blocking work
/// (passes, gix, git, apt) on its blocking pool.
pub fn build() -> Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The process's runtime. A library caller that never made one (tests driving a pass directly)
/// gets an error as soon as a pass needs D-Bus, never a second runtime.
pub fn handle() -> Result<Handle> {
    Handle::try_current().map_err(|_| {
        anyhow::anyhow!(
            "no tokio runtime: D-Bus work must run on the process's runtime (see host::runtime::build)"
        )
    })
}

/// Runs `f` (blocking work: a command, a pass) on the runtime's blocking pool while the calling
/// thread drives the runtime; the whole process then has this one runtime.
pub fn run_blocking<T: Send + 'static>(
    rt: &Runtime,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    rt.block_on(async move { tokio::task::spawn_blocking(f).await })
        .context("the command panicked")
}
