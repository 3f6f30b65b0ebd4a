use crate::cli::HistoryArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::history;
use crate::ui;

pub fn run(ctx: &Ctx, args: &HistoryArgs) -> Result<()> {
    let log = history::read(&ctx.layout)?;
    if log.skipped > 0 {
        ctx.ui.warn(format!(
            "skipped {} unreadable line(s) in {} (torn by a crash or damaged); the rest is shown",
            log.skipped,
            ctx.layout.history().display()
        ));
    }
    let mut events = log.events;
    events.reverse();
    if let Some(limit) = args.limit {
        events.truncate(limit);
    }
    if args.json {
        let _ = ui::out_json(&serde_json::to_value(&events).expect("events serialize"));
        return Ok(());
    }
    let mut text = String::new();
    for e in &events {
        let release = e
            .release
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{}  {:<8}  {:<18}  {:<14}  {:<10}  {:<12}  {}@{}  {:.1}s",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            e.event,
            e.outcome,
            release,
            super::short(e.revision.as_deref()),
            e.branch.as_deref().unwrap_or("-"),
            e.user,
            e.host,
            e.duration_ms as f64 / 1000.0
        );
        if !e.removed.is_empty() {
            line.push_str(&format!("  removed {}", e.removed.len()));
        }
        if let Some(m) = &e.message {
            line.push_str(&format!("  {}", ctx.ui.dim(m)));
        }
        text.push_str(&line);
        text.push('\n');
    }
    if events.is_empty() {
        ctx.ui.step("History", "nothing recorded yet");
    }
    let _ = ui::out(&text);
    Ok(())
}
