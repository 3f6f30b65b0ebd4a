//! The command line. The `///` docs here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::templates::Template;

/// The command line as `--help` and the man pages show it: the derived
/// definition plus the exit codes, which scripts branch on.
pub fn command() -> clap::Command {
    let codes = crate::error::exit_codes_help();
    Cli::command()
        .after_long_help(codes.clone())
        .mut_subcommands(|sub| sub.after_long_help(codes.clone()))
}

/// Parse the process's arguments (exits with clap's message and code 2 on
/// bad ones, or after printing help or the version).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Zero-downtime release-directory deploys: build each release into
/// releases/<id>, swap `current` atomically, reload, gate on health, roll
/// back automatically, prune old releases.
#[derive(Debug, Parser)]
#[command(name = "shipit", version, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $SHIPIT_CONFIG, else ./shipit.toml]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print only warnings, errors and results (no progress lines)
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, build, swap, reload, health-gate and prune a new release
    Deploy(DeployArgs),
    /// Swap back to the previous good release (or --to ID), reload, health-gate
    Rollback(RollbackArgs),
    /// List releases: id, age, revision, branch, status, which is current
    Releases(ReleasesArgs),
    /// Remove old releases, keeping current, the rollback target and any in use
    Prune(PruneArgs),
    /// Show the audit log, newest first
    History(HistoryArgs),
    /// Show the live release, probe its health now, and the last deploy's outcome
    Status(StatusArgs),
    /// Push to deploy: install or run the git hook
    Hook(HookArgs),
    /// Write a commented shipit.toml, or templates filled in from it
    Init(InitArgs),
    /// Validate the config and the environment without changing anything
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff), e.g. `shipit man deploy | man -l -`, or
    /// write them all with --dir
    Man(ManArgs),
    /// Fleet: what the controller runs on a host over ssh
    #[command(hide = true, name = "fleet-agent")]
    FleetAgent(FleetAgentArgs),
    /// Fleet: which shipit and protocol this is (framed; needs no config)
    #[command(hide = true, name = "fleet-hello")]
    FleetHello,
}

impl Command {
    /// The command changes a deploy directory (its first line names the
    /// config it uses).
    pub fn mutates(&self) -> bool {
        match self {
            Command::Deploy(_) | Command::Rollback(_) => true,
            Command::Prune(a) => !a.dry_run,
            Command::Hook(a) => matches!(
                a.action,
                HookAction::PostReceive { .. } | HookAction::PreReceive { .. }
            ),
            _ => false,
        }
    }

    /// The command was asked for `--json` output.
    pub fn json(&self) -> bool {
        match self {
            Command::Deploy(a) => a.json,
            Command::Rollback(a) => a.json,
            Command::Releases(a) => a.json,
            Command::Prune(a) => a.json,
            Command::History(a) => a.json,
            Command::Status(a) => a.json,
            // `check --json` prints its report, failed checks included.
            Command::Check(_)
            | Command::Hook(_)
            | Command::Init(_)
            | Command::Completions { .. }
            | Command::Man(_) => false,
            // The agent prints its own framed reply, failures included.
            Command::FleetAgent(_) | Command::FleetHello => false,
        }
    }
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print [default: the page of shipit itself]
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,

    /// Write every page (shipit.1, shipit-deploy.1, ...) into this directory
    /// instead, e.g. /usr/local/share/man/man1
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

/// `--no-revert` of a fleet deploy or rollback.
#[derive(Debug, Args)]
pub struct NoRevertArg {
    /// With [fleet]: when a host fails, leave the hosts already switched in
    /// this rollout where they are instead of switching them back
    #[arg(long)]
    pub no_revert: bool,
}

#[derive(Debug, Args)]
pub struct FleetAgentArgs {
    #[command(subcommand)]
    pub action: FleetAgentAction,
}

/// The host side of a fleet rollout. Each prints one framed reply on stdout
/// (`@@shipit-fleet/<version> <json>`, see `src/fleet/protocol.rs`) and
/// exits with the code of its outcome.
#[derive(Debug, Subcommand)]
pub enum FleetAgentAction {
    /// What this host has: releases, what is live, the rollback target
    State {
        /// Also probe health.url now
        #[arg(long)]
        probe: bool,
    },
    /// Publish the release whose tree (a tar) arrives on stdin; nothing goes live
    Receive {
        #[arg(long)]
        id: String,
        #[arg(long)]
        revision: Option<String>,
        /// When the revision was committed (RFC 3339)
        #[arg(long)]
        revision_time: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        source: String,
        #[arg(long)]
        deployed_by: String,
        #[arg(long)]
        build_ms: u64,
        /// Keep setuid/setgid bits, devices and fifos (fleet.keep_special_files)
        #[arg(long)]
        keep_special_files: bool,
    },
    /// Make a received release live: the single-host activation
    Activate {
        #[arg(long)]
        id: String,
        /// What became of the rollout's migrate hook (`ran`, `skipped`),
        /// for this host's history
        #[arg(long, value_enum)]
        migrate: Option<crate::history::Migrate>,
    },
    /// Make an existing release live (a rollback or a revert), or `none`:
    /// remove `current` (the host had nothing live before)
    Switch {
        #[arg(long)]
        to: String,
        /// How long to wait for this host's lock (a switch back waits for
        /// an activation still running there)
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Go there even if it failed or never proved itself live here
        /// (the controller's `rollback --force`, or a switch back to what
        /// this host ran before the rollout)
        #[arg(long)]
        force: bool,
    },
    /// Run hooks.migrate in a received release, before any host is
    /// switched (on the fleet's primary host, once per rollout); stopped
    /// when stdin closes (the controller, or its ssh, went away)
    Migrate {
        #[arg(long)]
        id: String,
        /// The controller's name for this host (`SHIPIT_HOST` in the hook)
        #[arg(long)]
        host: String,
    },
    /// Remove a received release that never went live
    Discard {
        #[arg(long)]
        id: String,
    },
    /// Whether a release an agent answered as live is recorded as proven
    /// live here, once nothing holds the deploy lock (that agent records
    /// before it lets go): waiting at most 5 s when it is marked proven
    /// already, else at most 60 s
    Recorded {
        #[arg(long)]
        id: String,
    },
    /// Hold this host's fleet lock for a controller's rollout until stdin
    /// closes (the controller, or its ssh, went away)
    Lock {
        /// Who holds it: the controller's lock holder, as JSON
        #[arg(long)]
        holder: String,
        /// How long to wait for a running rollout to finish (0: refuse at once)
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Answer with the host's state once locked, instead of `locked`
        #[arg(long)]
        state: bool,
    },
}

/// `--wait[=DURATION]`: queue behind a running command instead of failing.
#[derive(Debug, Args)]
pub struct WaitArg {
    /// If another shipit command holds the lock, wait for it (bare --wait:
    /// lock.wait from the config, 10m by default) instead of failing at once
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Branch, tag or commit to deploy [default: source.branch]
    #[arg(long = "ref", value_name = "REV")]
    pub reference: Option<String>,

    /// Deploy this CI artifact (.tar, .tar.gz, .tar.zst or .zip; - reads
    /// stdin) instead of [source]
    #[arg(long, value_name = "FILE", conflicts_with = "reference")]
    pub archive: Option<PathBuf>,

    /// If the reload or health gate fails, leave the new release live
    /// instead of rolling back (not with [slots] or [fleet])
    #[arg(long)]
    pub no_rollback: bool,

    /// Do not run hooks.migrate for this release (recorded in the history)
    #[arg(long)]
    pub skip_migrate: bool,

    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub wait: WaitArg,

    #[command(flatten)]
    pub fleet: NoRevertArg,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Release id to go to (see `shipit releases`) [default: the newest
    /// good release older than current]
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,

    /// With --to: accept a release that failed when it was deployed (it is
    /// gated again, and stays marked failed)
    #[arg(long, requires = "to")]
    pub force: bool,

    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub wait: WaitArg,

    #[command(flatten)]
    pub fleet: NoRevertArg,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    #[command(subcommand)]
    pub action: Option<ReleasesAction>,

    /// Print JSON on stdout (schema in docs/json.md)
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReleasesAction {
    /// List releases (the default)
    List,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many releases to keep [default: keep_releases]
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Print the plan as JSON on stdout
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Show at most N events
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,

    /// Print JSON on stdout (an array, newest first)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON on stdout (schema in docs/json.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HookArgs {
    #[command(subcommand)]
    pub action: HookAction,
}

#[derive(Debug, Subcommand)]
pub enum HookAction {
    /// Write the push-to-deploy hook into a git repository
    Install {
        /// The repository that receives the pushes (bare or not)
        #[arg(long, value_name = "DIR")]
        git_dir: PathBuf,
        /// post-receive: deploy after the push lands; pre-receive: deploy
        /// first and reject the push if the deploy fails
        #[arg(long, value_enum, default_value = "post-receive")]
        mode: crate::githook::Mode,
        /// Branch whose pushes deploy [default: source.branch]
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
        /// Replace a hook that shipit did not write (it is kept as a backup)
        #[arg(long)]
        force: bool,
    },
    /// Run as git's post-receive hook (reads the push from stdin)
    PostReceive {
        /// Branch whose pushes deploy [default: source.branch]
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
    },
    /// Run as git's pre-receive hook: a failed deploy rejects the push
    PreReceive {
        /// Branch whose pushes deploy [default: source.branch]
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Instead of shipit.toml, write these templates, filled in from the
    /// config (repeat, or `all`)
    #[arg(long = "template", value_enum, value_name = "NAME")]
    pub templates: Vec<TemplateArg>,

    /// App name for file and unit names [default: the last part of deploy_to]
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,

    /// Directory to write templates into
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,

    /// The port the app listens on (pm2, the systemd socket, nginx's
    /// upstream) [default: health.url's port, else 3000]. When health.url
    /// names another port, it is the front's: the nginx sites listen there
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Overwrite files that exist
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print JSON on stdout (schema in docs/json.md)
    #[arg(long)]
    pub json: bool,
}

/// `--template` of `init`: one of the templates, or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateArg {
    One(Template),
    All,
}

impl TemplateArg {
    const VARIANTS: [TemplateArg; Template::EACH.len() + 1] = {
        let mut variants = [TemplateArg::All; Template::EACH.len() + 1];
        let mut i = 0;
        while i < Template::EACH.len() {
            variants[i] = TemplateArg::One(Template::EACH[i]);
            i += 1;
        }
        variants
    };
}

impl ValueEnum for TemplateArg {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            TemplateArg::One(template) => template.to_possible_value(),
            TemplateArg::All => {
                Some(clap::builder::PossibleValue::new("all").help("All of the above"))
            }
        }
    }
}
