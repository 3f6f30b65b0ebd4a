//! shipit: release-directory deploys with zero downtime as the default.
//!
//! Where things live:
//!
//! - `src/main.rs`, `src/cli.rs`: parse the command line, map the error to an
//!   exit code
//! - `src/commands/`: one file per subcommand: settings, lock, operation,
//!   report; `options.rs` (flags several share), `format.rs` (ages,
//!   revisions)
//! - `src/config.rs`: `shipit.toml`: schema, defaults, unknown-key errors
//! - `src/layout.rs`: paths under `deploy_to`; the release id type
//! - `src/store.rs`: releases, their metadata, leftovers, deletion through
//!   trash
//! - `src/source.rs`: the git mirror, export (a subdir of it, its
//!   submodules), signature checks; directory sources
//! - `src/archive.rs`: CI artifacts: copy and hash, then unpack tar/zip by
//!   rules that keep every entry inside the release
//! - `src/gitref.rs`: the check every outside ref, branch name, submodule
//!   URL and tree path passes
//! - `src/mutation.rs`: what every mutating command does first: signals,
//!   skeleton, lock, crash repair; the state it acts on, read once
//! - `src/release/`: the pipeline that makes a published release, one for
//!   `deploy`, the fleet's build and a host's receive: `build.rs` (export →
//!   shared links → reuse → build hooks), `shared.rs` (the shared paths),
//!   `log.rs` (the build log's header), the staging guard in `mod.rs`
//! - `src/hooks/`: running one hook: process group, timeout, streamed output,
//!   the build-hook guard, the drain for daemons; `supervisor.rs` decides
//!   which signal to send and when the wait is over
//! - `src/hookenv.rs`: `[env]` and `env_file` for every hook; redaction of
//!   `env_file`'s secrets from everything shipit writes
//! - `src/notify.rs`: the notify hook: the outcome's history event on its
//!   stdin, after the lock is released, bounded, never changing the outcome
//! - `src/swap.rs`: the swap of `current` (the only code that moves it)
//! - `src/activate/`: the seam deploy and rollback share: make a published
//!   release live by one of two strategies: `reload.rs` (swap, reload
//!   hook, gate, swap back) or `slots/` (blue-green on one host: start the
//!   idle slot, gate it on its socket, switch `run/app.sock`, retire the
//!   old slot; `slots/state.rs` reads which slot is live and what each
//!   runs); `live.rs` the types both strategies share, `stale.rs` the
//!   processes left in old releases
//! - `src/fleet/`: rolling deploys over ssh: `ssh.rs` (the ssh invocations,
//!   quoting), `mux.rs` (a remote command asked of a host's master
//!   connection over its control socket), `install.rs` (the host's binary and config), `build.rs` (the one
//!   build on the controller), `rollout.rs` (reach, prepare, roll, revert),
//!   `agent.rs` (the host side: `shipit fleet-agent`), `report.rs` (per-host
//!   outcomes, table, JSON), `protocol.rs` (the typed, framed messages
//!   between them), `check.rs` (`check` on every host), `parallel.rs` (a
//!   bounded number of hosts at a time), `untar.rs` (unpacking on a host)
//! - `src/health.rs`: the gate's decision and the HTTP probe (over TCP, or a
//!   slot's unix socket)
//! - `src/deploy.rs`, `src/rollback.rs`: the deploy (build → publish → activate
//!   → prune) and rollback sequences
//! - `src/prune.rs`: the prune plan and its application
//! - `src/lock.rs`, `src/interrupt.rs`: the deploy lock; SIGINT/SIGTERM/SIGHUP
//!   handling
//! - `src/state.rs`: opening files under `.shipit/` without following links;
//!   whose `.shipit` it is
//! - `src/fsutil.rs`: durability: syncfs, atomic writes, no-replace renames
//! - `src/disk.rs`: what a release costs on disk (allocated, unshared), measured
//!   at publish and prune, kept in its metadata
//! - `src/copy.rs`: copies of trees: reflink clones where the filesystem
//!   allows, then copy_file_range, then read/write
//! - `src/history.rs`: the audit log, and the timeline it gives of which
//!   release was `current` when
//! - `src/procs.rs`: which processes still run from which release, which
//!   could not be inspected, and which releases those may run
//!   (`Hidden::reach`)
//! - `src/githook.rs`, `src/templates.rs`, `src/check.rs`: push to deploy;
//!   `init` templates; `check`; `src/placeholders.rs` fills their `@NAME@`s
//! - `src/urls.rs`, `src/destination.rs`: URLs fit to print (credentials
//!   hidden); ssh destinations, checked and taken apart
//! - `src/views/`: what read-only commands show, as data (the release
//!   row, the disk total, a health probe), shared with the fleet's
//!   protocol; `releases.rs` and `status.rs` are those commands' views,
//!   which the commands render as text or serialise as JSON
//! - `src/ui.rs`: everything printed (never failing the caller): colour,
//!   progress, plain lines, JSON, phase timings
//!
//! The deploy reads as one sequence in `deploy.rs`: build and publish
//! (`release/`), migrate, activate (`activate/`, the seam deploy and rollback share: the reload
//! path or slots), prune. The user-facing documentation is the README and
//! `docs/`.

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod activate;
mod archive;
mod check;
mod cli;
mod clock;
mod commands;
mod config;
mod context;
mod copy;
mod crashpoint;
mod deploy;
mod destination;
mod disk;
mod error;
mod fleet;
mod fsutil;
mod githook;
mod gitref;
mod health;
mod history;
mod hookenv;
mod hooks;
mod interrupt;
mod layout;
mod lock;
mod mutation;
mod notify;
mod placeholders;
mod procs;
mod prune;
mod release;
mod reuse;
mod rollback;
mod source;
mod state;
mod store;
mod swap;
mod templates;
mod ui;
mod urls;
mod views;
mod whoami;

use std::process::ExitCode;

fn main() -> ExitCode {
    fleet::agent::take_pin_from_env();
    let cli = cli::parse();
    let ui = ui::Ui::new(cli.quiet);
    let json = cli.command.json();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if json {
                ui::out_json_error(&err.to_json());
            }
            ui.error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}
