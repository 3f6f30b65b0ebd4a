//! What every test binary shares. Each suite includes it with
//! `#[path = "../support/mod.rs"] mod support;`, so a helper is written
//! once and fixed once.

#![allow(dead_code)]

pub mod exec;
pub mod front;
pub mod git;
pub mod load;
pub mod ports;
pub mod run;
