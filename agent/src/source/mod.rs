//! Git: fetch, and read the host's tree at a commit.

pub mod backoff;
pub mod git;
pub mod http;
pub mod probe;
pub mod repo;
pub mod verify;
