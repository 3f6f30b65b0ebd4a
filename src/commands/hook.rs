use crate::cli::{HookAction, HookArgs};
use crate::context::Ctx;
use crate::error::Result;
use crate::githook::{self, Mode};

pub fn run(ctx: &Ctx, args: HookArgs) -> Result<()> {
    let (mode, branch) = match args.action {
        HookAction::Install {
            git_dir,
            mode,
            branch,
            force,
        } => {
            let installed =
                githook::install(&git_dir, mode, &ctx.config.file, branch.as_deref(), force)?;
            if let Some(backup) = &installed.backup {
                ctx.ui.step(
                    "Saved",
                    format!("the previous hook as {}", backup.display()),
                );
            }
            if let Some(other) = &installed.removed_other {
                ctx.ui.step(
                    "Removed",
                    format!("shipit's other hook {}", other.display()),
                );
            }
            ctx.ui
                .step("Installed", installed.path.display().to_string());
            warn_if_build_dir(ctx, &installed.shipit);
            warn_if_other_source(ctx, &git_dir, mode);
            return Ok(());
        }
        HookAction::PostReceive { branch } => (Mode::PostReceive, branch),
        HookAction::PreReceive { branch } => (Mode::PreReceive, branch),
    };
    if let Some(outcome) = githook::run(ctx, mode, branch.as_deref())? {
        super::format::report_deployed(ctx, &outcome);
    }
    Ok(())
}

/// The hook names the binary that installed it; one in a cargo build
/// directory disappears with `cargo clean`, and every push then fails.
fn warn_if_build_dir(ctx: &Ctx, shipit: &std::path::Path) {
    warn_if_build_dir_for(ctx.ui, shipit);
}

pub(super) fn warn_if_build_dir_for(ui: crate::ui::Ui, shipit: &std::path::Path) {
    if let Some(dir) = githook::build_dir_of(shipit) {
        ui.warn(format!(
            "the hook runs {}, inside the cargo build directory {}: `cargo clean` deletes it, \
             and every push then fails to deploy; install shipit (`cargo install \
             --path .`, or copy it to /usr/local/bin) and run `shipit hook install` again from there",
            shipit.display(),
            dir.display()
        ));
    }
}

/// A post-receive deploy fetches `source.git`; if that is not the repository
/// being pushed to, the pushed revision may not be there.
fn warn_if_other_source(ctx: &Ctx, git_dir: &std::path::Path, mode: Mode) {
    if mode != Mode::PostReceive {
        return;
    }
    let same = ctx.config.source.git.as_deref().is_some_and(|g| {
        let a = std::fs::canonicalize(g).ok();
        let b = std::fs::canonicalize(git_dir).ok();
        a.is_some() && a == b
    });
    if !same {
        ctx.ui.warn(format!(
            "source.git in {} is not {}: post-receive deploys fetch source.git, so point it at the \
             repository that receives the pushes",
            ctx.config.file.display(),
            git_dir.display()
        ));
    }
}
