//! The only layer with side effects on the host.

pub mod command;
pub mod fs;
pub mod packagekit;
pub mod packages;
pub mod pkg_cleanup;
pub mod pkgcmd;
pub mod service_hold;
pub mod systemd;
pub mod unit_dirs;
