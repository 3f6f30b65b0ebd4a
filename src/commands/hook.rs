use crate::cli::{HookAction, HookArgs, HookMode};
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
            let mode = match mode {
                HookMode::PostReceive => Mode::PostReceive,
                HookMode::PreReceive => Mode::PreReceive,
            };
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
            warn_if_other_source(ctx, &git_dir, mode);
            return Ok(());
        }
        HookAction::PostReceive { branch } => (Mode::PostReceive, branch),
        HookAction::PreReceive { branch } => (Mode::PreReceive, branch),
    };
    if let Some(outcome) = githook::run(ctx, mode, branch.as_deref())? {
        super::report_deployed(ctx, &outcome);
    }
    Ok(())
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
