//! How commands write releases, revisions and ages for people.

use crate::context::Ctx;

/// The closing line of a successful deploy.
pub fn report_deployed(ctx: &Ctx, outcome: &crate::deploy::Outcome) {
    let revision = outcome
        .revision
        .as_deref()
        .map(|r| format!(" ({})", short(Some(r))))
        .unwrap_or_default();
    ctx.ui.step(
        "Deployed",
        format!(
            "{}{revision} in {:.1}s",
            crate::layout::Layout::display(&outcome.release),
            outcome.duration.as_secs_f64()
        ),
    );
}

/// Human-friendly age: `42s`, `5m`, `3h`, `12d`.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

pub fn short(revision: Option<&str>) -> String {
    revision
        .map(|r| r[..r.len().min(10)].to_string())
        .unwrap_or_else(|| "-".into())
}
