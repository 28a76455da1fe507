//! One module per resource kind: observe (I/O), plan (pure), apply (idempotent I/O).

pub mod activate;
pub mod container;
pub mod file;
pub mod package;
pub mod service;
pub mod unit;
