//! What every test binary shares. Each suite includes it with
//! `#[path = "../support/mod.rs"] mod support;`, so a helper is written
//! once and fixed once.

#![allow(dead_code)]

pub mod app;
pub mod exec;
pub mod front;
pub mod git;
pub mod hosts;
pub mod load;
pub mod neighbour;
pub mod ports;
pub mod receiver;
pub mod run;
