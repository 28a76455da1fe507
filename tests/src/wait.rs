//! Polling with a deadline instead of fixed sleeps.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// Calls `check` until it returns `Ok(Some(v))`, backing off from 20 ms to 250 ms between tries.
/// `Ok(None)` means "not yet"; `Err` gives up at once (the condition can no longer come true).
/// After `timeout` the error names `desc`.
pub fn wait_until<T>(
    desc: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = check().with_context(|| format!("waiting for {desc}"))? {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {timeout:?} waiting for {desc}");
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
