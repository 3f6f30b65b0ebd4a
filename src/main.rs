#![deny(clippy::print_stdout, clippy::print_stderr)]

mod activate;
mod archive;
mod check;
mod cli;
mod clock;
mod commands;
mod config;
mod context;
mod crashpoint;
mod deploy;
mod error;
mod fleet;
mod fsutil;
mod githook;
mod gitref;
mod health;
mod history;
mod hooks;
mod interrupt;
mod layout;
mod lock;
mod mutation;
mod procs;
mod prune;
mod rollback;
mod slots;
mod source;
mod state;
mod store;
mod swap;
mod templates;
mod ui;
mod whoami;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    let ui = ui::Ui::new(cli.quiet);
    let json = cli.command.json();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if json && !err.reported {
                ui::out_json_error(&err.to_json());
            }
            ui.error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}
