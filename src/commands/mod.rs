//! One file per subcommand. Each resolves its settings, takes the lock if it
//! mutates, calls the operation and hands the outcome to the reporter.

mod check;
mod deploy;
mod history;
mod hook;
mod init;
mod man;
mod prune;
mod releases;
mod rollback;
mod status;

use std::time::Duration;

pub use releases::{DiskTotal, ReleaseRow};

use crate::cli::{Cli, Command, WaitArg};
use crate::config::{self, Config};
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
        Command::Deploy(args) => deploy::run(&load()?, &args),
        Command::Rollback(args) => rollback::run(&load()?, &args),
        Command::Releases(args) => releases::run(&load()?, &args),
        Command::Prune(args) => prune::run(&load()?, &args),
        Command::History(args) => history::run(&load()?, &args),
        Command::Status(args) => status::run(&load()?, &args),
        Command::Hook(args) => hook::run(&load()?, args),
        Command::Init(args) => init::run(config_flag, ui, &args),
        Command::Check(args) => check::run(config_flag, ui, &args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "shipit", &mut out);
            let _ = crate::ui::out(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::FleetAgent(args) => crate::fleet::agent::run(&load()?, &args),
        Command::FleetHello => crate::fleet::check::hello(),
        Command::Man(args) => man::run(ui, &args),
    }
}

/// `--wait` → how long to wait for the lock (`None`: fail at once).
fn wait_for(arg: &WaitArg, config: &Config) -> Result<Option<Duration>> {
    match arg.wait.as_deref() {
        None => Ok(None),
        Some("") => Ok(Some(config.lock.wait)),
        Some(text) => {
            let wait = config::parse_duration(text)
                .map_err(|e| e.context(format!("--wait={text} is not a duration")))?;
            let limit = config::duration_limit("--wait");
            if wait > limit {
                let limit = humantime::format_duration(limit);
                return Err(crate::error::Error::usage(format!(
                    "--wait={text} is longer than its limit of {limit}"
                ))
                .hint(format!("wait at most {limit}, e.g. --wait=10m")));
            }
            Ok(Some(wait))
        }
    }
}

/// `deploy` and `rollback` with a `[fleet]`: the controller's side.
#[allow(clippy::too_many_arguments)]
fn fleet(
    ctx: &Ctx,
    fleet: &crate::config::FleetConfig,
    event: &'static str,
    reference: Option<String>,
    to: Option<crate::layout::ReleaseId>,
    no_rollback: bool,
    arg: &crate::cli::NoRevertArg,
    json: bool,
    wait: Option<Duration>,
    force: bool,
) -> Result<()> {
    if no_rollback {
        return Err(crate::error::Error::usage(
            "--no-rollback does not apply to a fleet: a failing host always rolls itself back",
        )
        .hint("to keep the hosts already switched on the new release, use --no-revert"));
    }
    let req = crate::fleet::Request {
        event,
        reference,
        to,
        no_revert: arg.no_revert,
        json,
        wait,
        force,
    };
    crate::fleet::run(ctx, fleet, &req)
}

/// The closing line of a successful deploy.
fn report_deployed(ctx: &Ctx, outcome: &crate::deploy::Outcome) {
    let revision = outcome
        .revision
        .as_deref()
        .map(|r| format!(" ({})", short(Some(r))))
        .unwrap_or_default();
    ctx.ui.step(
        "Deployed",
        format!(
            "{}{revision} in {:.1}s",
            crate::layout::Layout::display(&outcome.release),
            outcome.duration.as_secs_f64()
        ),
    );
}

/// Human-friendly age: `42s`, `5m`, `3h`, `12d`.
fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn short(revision: Option<&str>) -> String {
    revision
        .map(|r| r[..r.len().min(10)].to_string())
        .unwrap_or_else(|| "-".into())
}
