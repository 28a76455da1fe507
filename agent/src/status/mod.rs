//! The report model; publishing it to the status branch.

pub mod report;
