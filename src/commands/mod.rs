//! One file per subcommand. Each resolves its settings, takes the lock if it
//! mutates, calls the operation and hands the outcome to the reporter.

mod check;
mod deploy;
mod format;
mod history;
mod hook;
mod init;
mod man;
mod options;
mod prune;
mod releases;
mod rollback;
mod status;

use crate::cli::{Cli, Command};
use crate::config;
use crate::context::Ctx;
use crate::error::Result;
use crate::ui::Ui;

pub fn run(cli: Cli) -> Result<()> {
    let ui = Ui::new(cli.quiet);
    // Which config was used: errors name it (it may have been found in a
    // parent directory), and so does a mutating command's first line.
    let used = std::cell::RefCell::new(None);
    let mutates = cli.command.mutates();
    let load = || {
        config::load(cli.config.as_deref()).map(|c| {
            *used.borrow_mut() = Some(c.file.clone().into_boxed_path());
            if mutates {
                ui.step("Config", c.file.display().to_string());
            }
            Ctx::new(c, ui)
        })
    };
    let result = dispatch(cli.command, cli.config.as_deref(), ui, load);
    result.map_err(|mut e| {
        e.config = e.config.or_else(|| used.take());
        e
    })
}

fn dispatch(
    command: Command,
    config_flag: Option<&std::path::Path>,
    ui: Ui,
    load: impl Fn() -> Result<Ctx>,
) -> Result<()> {
    match command {
        Command::Deploy(args) => notifying(&load()?, |ctx| deploy::run(ctx, &args)),
        Command::Rollback(args) => notifying(&load()?, |ctx| rollback::run(ctx, &args)),
        Command::Releases(args) => releases::run(&load()?, &args),
        Command::Prune(args) => prune::run(&load()?, &args),
        Command::History(args) => history::run(&load()?, &args),
        Command::Status(args) => status::run(&load()?, &args),
        Command::Hook(args) => notifying(&load()?, |ctx| hook::run(ctx, args)),
        Command::Init(args) => init::run(config_flag, ui, &args),
        Command::Check(args) => check::run(config_flag, ui, &args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "shipit", &mut out);
            let _ = crate::ui::out(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::FleetAgent(args) => {
            crate::fleet::agent::pin(config_flag)?;
            crate::fleet::agent::run(&load()?, &args)
        }
        Command::FleetHello => crate::fleet::check::hello(),
        Command::Man(args) => man::run(ui, &args),
    }
}

/// Run a command that may deploy or roll back, then tell the notify hook
/// of what it recorded: by then the command has let go of the lock.
fn notifying(ctx: &Ctx, command: impl FnOnce(&Ctx) -> Result<()>) -> Result<()> {
    let result = command(ctx);
    crate::notify::after(ctx);
    result
}
