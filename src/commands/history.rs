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
    let _ = ui::out(&table(ctx, &events));
    if events.is_empty() {
        ctx.ui.step("History", "nothing recorded yet");
    }
    Ok(())
}

/// The events as a table whose columns are at least as wide as their widest
/// cell (a failed deploy's "<id> not live; live: <id>" is wider than the
/// usual width of its column), then, on failures, what was said.
fn table(ctx: &Ctx, events: &[history::Event]) -> String {
    const HEADER: [&str; 8] = [
        "TIME (UTC)",
        "EVENT",
        "OUTCOME",
        "RELEASES (FROM -> TO)",
        "REVISION",
        "BRANCH",
        "BY",
        "TOOK",
    ];
    if events.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 8]> = events
        .iter()
        .map(|e| {
            [
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.event.to_string(),
                e.outcome.to_string(),
                e.what(),
                super::format::short(e.revision.as_deref()).to_string(),
                e.branch.as_deref().unwrap_or("-").to_string(),
                format!("{}@{}", e.user, e.host),
                format!("{:.1}s", e.duration_ms as f64 / 1000.0),
            ]
        })
        .collect();
    // The usual widths, so that most tables look alike from run to run;
    // a wider cell widens its column.
    let mut widths = [19, 8, 19, 32, 10, 12, 20, 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Left-aligned cells, but the duration, right-aligned.
    let line = |cells: [&str; 8]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i == cells.len() - 1 {
                line.push_str(&format!("{cell:>width$}"));
            } else {
                line.push_str(&format!("{cell:<width$}"));
            }
        }
        line
    };
    let mut text = ctx.ui.dim(&line(HEADER));
    text.push('\n');
    for (row, e) in rows.iter().zip(events) {
        let mut shown = line(row.each_ref().map(String::as_str));
        if let Some(said) = e.said() {
            shown.push_str(&format!("  {}", ctx.ui.dim(&said)));
        }
        text.push_str(shown.trim_end());
        text.push('\n');
    }
    text
}
