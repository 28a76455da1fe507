//! plumb: a GitOps agent that keeps a Linux host matching its directory in a Git repository.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod docs;
pub mod engine;
pub mod health;
pub mod host;
pub mod judged;
pub mod logging;
pub mod notify;
pub mod offline;
pub mod reason;
pub mod render;
pub mod resource;
pub mod rollout;
pub mod secret_cmd;
pub mod source;
pub mod spec;
pub mod state;
pub mod status;
