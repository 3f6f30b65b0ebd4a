//! `shipit init`: write a commented shipit.toml, or templates from it.

use std::path::Path;

use crate::cli::{InitArgs, TemplateArg};
use crate::config;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::templates::{self, Template, Values};
use crate::ui::Ui;

pub fn run(config_flag: Option<&Path>, ui: Ui, args: &InitArgs) -> Result<()> {
    let config_path = config::locate(config_flag);
    if args.templates.is_empty() {
        return write_config(&config_path, ui, args);
    }
    let config = config::load(config_flag).map_err(|e| {
        e.context("templates are filled in from shipit.toml: run `shipit init` first")
    })?;
    let values = Values::from_config(&config, args.app.as_deref(), args.port)?;
    let wanted: Vec<Template> = if args.templates.contains(&TemplateArg::All) {
        Template::EACH.to_vec()
    } else {
        args.templates
            .iter()
            .filter_map(|t| match t {
                TemplateArg::One(template) => Some(*template),
                TemplateArg::All => None,
            })
            .collect()
    };
    // Refuse before writing anything, so a refusal leaves no half set.
    let targets: Vec<_> = wanted
        .iter()
        .map(|t| (*t, args.out.join(t.file_name(&values.app))))
        .collect();
    if let Some((_, path)) = targets.iter().find(|(_, p)| p.exists() && !args.force) {
        return Err(refuse(path));
    }
    std::fs::create_dir_all(&args.out).with_path("could not create", &args.out)?;
    for (template, path) in targets {
        let text = templates::render(template, &values, &config.file)?;
        // Readable by the services that load them (nginx, systemd, pm2);
        // the git hook is a program.
        let mode = if template == Template::GitHook {
            0o755
        } else {
            0o644
        };
        fsutil::atomic_write_mode(&path, text.as_bytes(), Some(mode))
            .with_path("could not write", &path)?;
        if template == Template::GitHook
            && let Ok(shipit) = std::env::current_exe().and_then(std::fs::canonicalize)
        {
            super::hook::warn_if_build_dir_for(ui, &shipit);
        }
        ui.step("Wrote", path.display().to_string());
        if let Some(warning) = templates::root_user_warning(template, &values) {
            ui.warn(warning);
        }
    }
    Ok(())
}

fn write_config(path: &Path, ui: Ui, args: &InitArgs) -> Result<()> {
    if path.exists() && !args.force {
        return Err(refuse(path));
    }
    let app = match &args.app {
        Some(app) => app.clone(),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "myapp".into()),
    };
    let values = Values::fresh(&app)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_path("could not create", parent)?;
    }
    fsutil::atomic_write_mode(path, templates::config(&values).as_bytes(), Some(0o644))
        .with_path("could not write", path)?;
    ui.step("Wrote", path.display().to_string());
    ui.step(
        "Next",
        "edit deploy_to and [source], then `shipit check`; `shipit init --template all` writes systemd, nginx, pm2 and git hook files",
    );
    Ok(())
}

fn refuse(path: &Path) -> Error {
    Error::usage(format!("{} exists", path.display())).hint("pass --force to overwrite it")
}
