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
    if !events.is_empty() {
        text.push_str(&ctx.ui.dim(&format!(
            "{:<19}  {:<8}  {:<19}  {:<32}  {:<10}  {:<12}  {:<20}  {:>6}",
            "TIME (UTC)",
            "EVENT",
            "OUTCOME",
            "RELEASES (FROM -> TO)",
            "REVISION",
            "BRANCH",
            "BY",
            "TOOK"
        )));
        text.push('\n');
    }
    for e in &events {
        let mut line = format!(
            "{}  {:<8}  {:<19}  {:<32}  {:<10}  {:<12}  {:<20}  {:>5.1}s",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            e.event,
            e.outcome,
            e.what(),
            super::short(e.revision.as_deref()),
            e.branch.as_deref().unwrap_or("-"),
            format!("{}@{}", e.user, e.host),
            e.duration_ms as f64 / 1000.0
        );
        if let Some(m) = &e.message {
            line.push_str(&format!("  {}", ctx.ui.dim(m)));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if events.is_empty() {
        ctx.ui.step("History", "nothing recorded yet");
    }
    let _ = ui::out(&text);
    Ok(())
}
