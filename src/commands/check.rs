use std::path::Path;

use serde_json::json;

use crate::check::{self, Check};
use crate::cli::CheckArgs;
use crate::config;
use crate::error::{Error, Result};
use crate::ui::{self, Ui};

pub fn run(config_flag: Option<&Path>, ui: Ui, args: &CheckArgs) -> Result<()> {
    let checks = match config::load(config_flag) {
        Ok(config) => check::run(&config, &ui),
        Err(e) => vec![Check {
            name: "config",
            host: None,
            ok: false,
            detail: e.message.clone(),
            fix: e.hint.clone().or_else(|| e.causes.first().cloned()),
        }],
    };
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        let _ = ui::out_json(&json!({"ok": failed == 0, "checks": checks}));
    } else {
        let mut text = String::new();
        for c in &checks {
            let mark = if c.ok { "✓" } else { "✗" };
            match &c.host {
                Some(host) => {
                    text.push_str(&format!("{mark} {:<10} {host}: {}\n", c.name, c.detail))
                }
                None => text.push_str(&format!("{mark} {:<10} {}\n", c.name, c.detail)),
            }
            if let Some(fix) = &c.fix {
                text.push_str(&format!("  {:<10} fix: {fix}\n", ""));
            }
        }
        let _ = ui::out(&text);
    }
    if failed > 0 {
        return Err(Error::usage(format!(
            "{failed} of {} checks failed",
            checks.len()
        )));
    }
    ui.step("Passed", format!("all {} checks", checks.len()));
    Ok(())
}
