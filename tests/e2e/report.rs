//! Figures and a picture from the load samples.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::{Outcome, Sample};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Rollback,
    /// A deploy of a release that fails its gate and is rolled back.
    Broken,
    /// The same, with the gate's early failure on error answers.
    BrokenFailFast,
}

#[derive(Clone, Debug)]
pub struct Mark {
    pub kind: Kind,
    pub start: Duration,
    pub end: Duration,
}

impl Mark {
    fn contains(&self, at: Duration) -> bool {
        self.start <= at && at <= self.end
    }
}

pub fn window_of(marks: &[Mark], at: Duration) -> Option<Kind> {
    marks.iter().find(|m| m.contains(at)).map(|m| m.kind)
}

pub struct Summary {
    pub requests: usize,
    pub failed: usize,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub status_5xx: usize,
    pub socket_errors: usize,
}

pub fn summarize<'a>(samples: impl Iterator<Item = &'a Sample>, seconds: f64) -> Summary {
    let mut latencies = Vec::new();
    let (mut failed, mut status_5xx, mut socket_errors) = (0, 0, 0);
    for s in samples {
        latencies.push(s.latency);
        if !s.outcome.ok() {
            failed += 1;
        }
        match s.outcome {
            Outcome::Status(500..=599) => status_5xx += 1,
            Outcome::Status(_) => {}
            _ => socket_errors += 1,
        }
    }
    latencies.sort();
    let pick = |p: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
        }
    };
    Summary {
        requests: latencies.len(),
        failed,
        rps: latencies.len() as f64 / seconds.max(0.001),
        p50: pick(0.50),
        p99: pick(0.99),
        status_5xx,
        socket_errors,
    }
}

fn total(marks: &[Mark], kinds: &[Kind]) -> f64 {
    marks
        .iter()
        .filter(|m| kinds.contains(&m.kind))
        .map(|m| (m.end - m.start).as_secs_f64())
        .sum()
}

/// The Markdown table of the run.
pub fn table(samples: &[Sample], marks: &[Mark], run: Duration) -> String {
    let in_kinds = |kinds: &'static [Kind]| {
        samples
            .iter()
            .filter(move |s| window_of(marks, s.at).is_some_and(|k| kinds.contains(&k)))
    };
    let steady_secs = run.as_secs_f64()
        - total(
            marks,
            &[
                Kind::Deploy,
                Kind::Rollback,
                Kind::Broken,
                Kind::BrokenFailFast,
            ],
        );
    let rows = [
        (
            "steady state",
            summarize(
                samples.iter().filter(|s| window_of(marks, s.at).is_none()),
                steady_secs,
            ),
        ),
        (
            "during deploys",
            summarize(in_kinds(&[Kind::Deploy]), total(marks, &[Kind::Deploy])),
        ),
        (
            "during rollbacks",
            summarize(in_kinds(&[Kind::Rollback]), total(marks, &[Kind::Rollback])),
        ),
        (
            "broken deploy (gate fails, rolled back)",
            summarize(in_kinds(&[Kind::Broken]), total(marks, &[Kind::Broken])),
        ),
        (
            "broken deploy, gate failing fast",
            summarize(
                in_kinds(&[Kind::BrokenFailFast]),
                total(marks, &[Kind::BrokenFailFast]),
            ),
        ),
        ("whole run", summarize(samples.iter(), run.as_secs_f64())),
    ];
    let mut out = String::from(
        "| window | requests | failed | 5xx | socket errors | req/s | p50 | p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
            s.requests,
            s.failed,
            s.status_5xx,
            s.socket_errors,
            s.rps,
            s.p50.as_secs_f64() * 1000.0,
            s.p99.as_secs_f64() * 1000.0
        );
    }
    out
}

/// Requests and failures per bucket over time, with the deploy, rollback
/// and broken-deploy windows shaded.
pub fn svg(samples: &[Sample], marks: &[Mark], run: Duration) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 320.0;
    const LEFT: f64 = 60.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 40.0;
    let bucket = Duration::from_millis(250);
    let n = (run.as_millis() / bucket.as_millis()).max(1) as usize + 1;
    let mut ok = vec![0u32; n];
    let mut bad = vec![0u32; n];
    for s in samples {
        let i = ((s.at.as_millis() / bucket.as_millis()) as usize).min(n - 1);
        if s.outcome.ok() {
            ok[i] += 1;
        } else {
            bad[i] += 1;
        }
    }
    let per_sec = 1000.0 / bucket.as_millis() as f64;
    let max = ok
        .iter()
        .zip(&bad)
        .map(|(a, b)| a + b)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * per_sec;
    let plot_w = W - LEFT - 20.0;
    let plot_h = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / run.as_secs_f64().max(0.001) * plot_w;
    let y = |v: f64| TOP + plot_h - v / max * plot_h;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"14\">Requests per second through nginx during shipit deploys and rollbacks (pm2 cluster)</text>\n"
    );
    for m in marks {
        let (fill, label) = match m.kind {
            Kind::Deploy => ("#cdeccd", "D"),
            Kind::Rollback => ("#cfe0f5", "R"),
            Kind::Broken => ("#f7cccc", "broken"),
            Kind::BrokenFailFast => ("#f7e0cc", "broken, fast"),
        };
        let (x0, x1) = (x(m.start.as_secs_f64()), x(m.end.as_secs_f64()));
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"{fill}\"/>\
             <text x=\"{x0:.1}\" y=\"{:.1}\" fill=\"#555\" font-size=\"10\">{label}</text>",
            (x1 - x0).max(1.0),
            TOP + 10.0
        );
    }
    let points: Vec<String> = ok
        .iter()
        .zip(&bad)
        .enumerate()
        .map(|(i, (a, b))| {
            let t = i as f64 * bucket.as_secs_f64();
            format!("{:.1},{:.1}", x(t), y(f64::from(a + b) * per_sec))
        })
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\"/>",
        points.join(" ")
    );
    for (i, b) in bad.iter().enumerate().filter(|(_, b)| **b > 0) {
        let t = i as f64 * bucket.as_secs_f64();
        let top = y(f64::from(*b) * per_sec);
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"3\" height=\"{:.1}\" fill=\"#d62728\"/>",
            x(t),
            TOP + plot_h - top
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{0}\" stroke=\"black\"/>\
         <text x=\"5\" y=\"{TOP}\">{2:.0}/s</text><text x=\"5\" y=\"{0}\">0</text>\
         <text x=\"{1}\" y=\"{3}\" text-anchor=\"end\">{4:.0} s</text>\
         <text x=\"{LEFT}\" y=\"{3}\">0 s</text>\
         <text x=\"{5}\" y=\"{3}\" text-anchor=\"middle\">green: deploy · blue: rollback · pink: broken release (gate fails, rolled back) · red bars: failed requests</text>",
        TOP + plot_h,
        LEFT + plot_w,
        max,
        H - 12.0,
        run.as_secs_f64(),
        LEFT + plot_w / 2.0
    );
    out.push_str("</svg>\n");
    out
}
