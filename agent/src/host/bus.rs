//! The pass's one connection to the system D-Bus, with the runtime that drives it. Opened lazily
//! by [`super::Host::bus`], at most once per pass, and shared by the units and containers phase,
//! the package backend, health checks and a rollback.

use super::systemd::{Systemd, UnitState};
use anyhow::{Context, Result};
use std::future::Future;
use tokio::runtime::Handle;

pub struct Bus {
    rt: Handle,
    conn: zbus::Connection,
    pub systemd: Systemd,
}

impl Bus {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` overrides where it is).
    pub fn open() -> Result<Bus> {
        let rt = super::runtime::handle()?;
        let (conn, systemd) = rt.block_on(async {
            let conn = zbus::Connection::system()
                .await
                .context("connecting to the system D-Bus")?;
            let systemd = Systemd::new(&conn).await?;
            anyhow::Ok((conn, systemd))
        })?;
        Ok(Bus { rt, conn, systemd })
    }

    /// Runs D-Bus work from the synchronous pass (a blocking thread of the runtime).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// What systemd says about one unit now.
    pub fn live(&self, unit: &str) -> Result<UnitState> {
        self.block_on(self.systemd.unit_state(unit))
    }
}
