//! `shipit man`: manual pages, one per subcommand, from the same definition
//! as `--help`, with the sections a man page reader looks for: EXIT STATUS,
//! ENVIRONMENT and FILES.

use std::io::Write;

use crate::cli::{ManArgs, command};
use crate::error::{Error, IoContext, Kind, Result};
use crate::ui::{self, Ui};

pub fn run(ui: Ui, args: &ManArgs) -> Result<()> {
    let mut root = command();
    root.build();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_path("could not create", dir)?;
        for (name, cmd) in pages(&root) {
            let path = dir.join(format!("{name}.1"));
            crate::fsutil::atomic_write_mode(&path, &render(&cmd, &name)?, Some(0o644))
                .with_path("could not write", &path)?;
            ui.step("Wrote", path.display().to_string());
        }
        return Ok(());
    }
    let (name, cmd) = match &args.command {
        None => ("shipit".to_string(), root),
        Some(wanted) => pages(&root)
            .into_iter()
            .find(|(name, _)| name.strip_prefix("shipit-") == Some(wanted.as_str()))
            .ok_or_else(|| {
                let known: Vec<String> = pages(&root)
                    .into_iter()
                    .filter_map(|(name, _)| name.strip_prefix("shipit-").map(String::from))
                    .collect();
                Error::usage(format!("there is no man page for {wanted:?}"))
                    .hint(format!("pick one of: {}", known.join(", ")))
            })?,
    };
    let _ = ui::out(&String::from_utf8_lossy(&render(&cmd, &name)?));
    Ok(())
}

/// `shipit` and every visible subcommand, nested ones included, each under
/// its page name (`shipit-deploy`, `shipit-hook-install`).
fn pages(root: &clap::Command) -> Vec<(String, clap::Command)> {
    let mut out = vec![("shipit".to_string(), root.clone())];
    add_pages(root, "shipit", "shipit", &mut out);
    out
}

fn add_pages(
    parent: &clap::Command,
    page: &str,
    bin: &str,
    out: &mut Vec<(String, clap::Command)>,
) {
    for sub in parent
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{page}-{}", sub.get_name());
        let bin_name = format!("{bin} {}", sub.get_name());
        let cmd = sub
            .clone()
            .name(name.clone())
            .bin_name(bin_name.clone())
            .version(env!("CARGO_PKG_VERSION"))
            .disable_help_subcommand(true);
        out.push((name.clone(), cmd));
        add_pages(sub, &name, &bin_name, out);
    }
}

fn render(cmd: &clap::Command, name: &str) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1");
    let mut out = Vec::new();
    let fail = |e: std::io::Error| Error::internal("could not render the man page").cause(e);
    man.render_title(&mut out).map_err(fail)?;
    man.render_name_section(&mut out).map_err(fail)?;
    man.render_synopsis_section(&mut out).map_err(fail)?;
    man.render_description_section(&mut out).map_err(fail)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out).map_err(fail)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out).map_err(fail)?;
    }
    out.write_all(extra_sections().as_bytes()).map_err(fail)?;
    man.render_version_section(&mut out).map_err(fail)?;
    Ok(out)
}

/// roff-escape plain text (backslashes, and a leading `.` or `'`).
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

fn item(term: &str, body: &str) -> String {
    format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(body))
}

fn extra_sections() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    s.push_str(&item("0", "ok"));
    for kind in Kind::ALL {
        s.push_str(&item(
            &kind.exit_code().to_string(),
            &format!("{}: {}", kind.name(), kind.meaning()),
        ));
    }
    s.push_str(".SH ENVIRONMENT\n");
    for (name, what) in ENVIRONMENT {
        s.push_str(&item(name, what));
    }
    s.push_str(".SH FILES\n");
    for (name, what) in FILES {
        s.push_str(&item(name, what));
    }
    s
}

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SHIPIT_CONFIG",
        "The config file when --config is not given (else ./shipit.toml).",
    ),
    (
        "NO_COLOR",
        "Set and not empty: no colour, hook output included.",
    ),
    (
        "SHIPIT_TIMINGS",
        "1: print how long each deploy phase took.",
    ),
    (
        "SHIPIT_RELEASE, SHIPIT_RELEASE_PATH, SHIPIT_DEPLOY_TO, SHIPIT_REVISION, SHIPIT_BRANCH, SHIPIT_PREVIOUS_RELEASE",
        "Set for every hook: the release id, its directory, deploy_to, the commit, the branch, and what was live before.",
    ),
    (
        "SHIPIT_BUILD_PATH",
        "Build hooks: the staging directory the build runs in.",
    ),
    (
        "SHIPIT_SLOT, SHIPIT_SLOT_SOCKET, SHIPIT_SLOT_PORT",
        "Slot hooks: the slot (blue or green), its socket, and with slots.ports its port.",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("shipit.toml", "The config (see `shipit init`)."),
    (
        "<deploy_to>/releases/<id>/",
        "One directory per release; <id> is the UTC time its deploy began.",
    ),
    (
        "<deploy_to>/current",
        "The symlink to the live release, replaced atomically by rename(2).",
    ),
    (
        "<deploy_to>/shared/",
        "Files and directories linked into every release.",
    ),
    (
        "<deploy_to>/run/",
        "With slots: blue.sock, green.sock, and app.sock, the link the front proxy connects through; blue.release and green.release, links to the release each slot was started for.",
    ),
    (
        "<deploy_to>/.shipit/lock",
        "The deploy lock (flock); it names its holder and frees itself when the holder exits. Never delete it.",
    ),
    (
        "<deploy_to>/.shipit/history.jsonl",
        "The audit log, one JSON event per line.",
    ),
    (
        "<deploy_to>/.shipit/logs/<id>.log",
        "The build and reload output of a release.",
    ),
    ("<deploy_to>/.shipit/repo.git", "The mirror of source.git."),
    (
        "<deploy_to>/.shipit/modules/<digest>.git",
        "The mirror of a submodule's repository, one per URL.",
    ),
    (
        "<deploy_to>/.shipit/staging/<id>/",
        "Where a release is built before it is published.",
    ),
];
