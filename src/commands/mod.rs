//! One file per subcommand. Each resolves its settings, takes the lock if it
//! mutates, calls the operation and hands the outcome to the reporter.

mod check;
mod deploy;
mod history;
mod hook;
mod init;
mod prune;
mod releases;
mod rollback;
mod status;

use std::time::Duration;

use crate::cli::{Cli, Command, WaitArg};
use crate::config::{self, Config};
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::interrupt;
use crate::lock::{self, Lock};
use crate::store;
use crate::ui::Ui;

pub fn run(cli: Cli) -> Result<()> {
    let ui = Ui::new(cli.quiet);
    let load = || config::load(cli.config.as_deref()).map(|c| Ctx::new(c, ui));
    match cli.command {
        Command::Deploy(args) => deploy::run(&load()?, &args),
        Command::Rollback(args) => rollback::run(&load()?, &args),
        Command::Releases(args) => releases::run(&load()?, &args),
        Command::Prune(args) => prune::run(&load()?, &args),
        Command::History(args) => history::run(&load()?, &args),
        Command::Status(args) => status::run(&load()?, &args),
        Command::Hook(args) => hook::run(&load()?, args),
        Command::Init(args) => init::run(cli.config.as_deref(), ui, &args),
        Command::Check(args) => check::run(cli.config.as_deref(), ui, &args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "shipit", &mut out);
            let _ = crate::ui::out(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(|e| {
                    crate::error::Error::internal("could not render the man page").cause(e)
                })?;
            let _ = crate::ui::out(&String::from_utf8_lossy(&out));
            Ok(())
        }
    }
}

/// `--wait` → how long to wait for the lock (`None`: fail at once).
fn wait_for(arg: &WaitArg, config: &Config) -> Result<Option<Duration>> {
    match arg.wait.as_deref() {
        None => Ok(None),
        Some("") => Ok(Some(config.lock.wait)),
        Some(text) => config::parse_duration(text)
            .map(Some)
            .map_err(|e| e.context(format!("--wait={text} is not a duration"))),
    }
}

/// Everything a mutating command does first: route signals to the flag,
/// create the deploy directory's skeleton, take the lock.
pub fn begin_mutation(ctx: &Ctx, wait: Option<Duration>) -> Result<Lock> {
    interrupt::install();
    let layout = &ctx.layout;
    for dir in [
        layout.root().to_path_buf(),
        layout.releases(),
        layout.state(),
    ] {
        let writable = nix::unistd::access(
            &dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        );
        if dir.exists() && writable.is_err() {
            return Err(Error::usage(format!(
                "{} is not writable by {}",
                dir.display(),
                crate::whoami::user()
            ))
            .hint("run shipit as the owner of deploy_to, or fix its owner and permissions"));
        }
    }
    crate::state::check(layout)?;
    store::ensure_dirs(&ctx.layout).map_err(|e| {
        e.in_phase(Kind::Usage).hint(format!(
            "deploy_to must be a directory that {} can write; check its owner and permissions",
            crate::whoami::user()
        ))
    })?;
    let command: Vec<String> = std::env::args().collect();
    lock::acquire(&ctx.layout, wait, &command.join(" ")).map_err(|e| {
        // Refused: say what is serving, as of now (the holder may change it).
        match store::read_current(layout) {
            Ok(current) if e.kind == Kind::LockBusy => e.live(current.describe()),
            _ => e,
        }
    })
}

/// The closing line of a successful deploy.
fn report_deployed(ctx: &Ctx, outcome: &crate::deploy::Outcome) {
    ctx.ui.step(
        "Deployed",
        format!(
            "{} ({}) in {:.1}s",
            crate::layout::Layout::display(&outcome.release),
            short(outcome.revision.as_deref()),
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
