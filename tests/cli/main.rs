//! shipit's integration tests: the built binary, real git repositories,
//! real processes, per-test temp directories. One test binary (so cargo
//! links once); modules by area.

mod sandbox;
#[path = "../support/mod.rs"]
mod support;

mod archives;
mod bad_input;
mod concurrency;
mod config;
mod copy;
mod core;
mod crash;
mod disk;
mod docs;
mod durability;
mod etxtbsy;
mod gate;
mod hooks;
mod init;
mod lock;
mod loopfs;
mod migrate;
mod notify;
mod output;
mod prune;
mod push;
mod reading;
mod reuse;
mod rollback;
mod signals;
mod slots;
mod snapshots;
mod sources;
mod state;
mod structure;
