//! The reporter: every byte shipit prints goes through here.
//!
//! Progress and diagnostics go to stderr, so `--json` on stdout stays
//! parseable and a git hook shows them to the pusher as `remote:` lines.
//! Colour only on a terminal and never with `NO_COLOR`; status lines carry a
//! right-aligned verb (`   Building`, `   Swapping`) so a log reads as a story.
//!
//! Output can fail: a closed pipe (`shipit deploy 2>&1 | tee log`, then
//! Ctrl-C), a terminal or SSH session that went away (EIO), a pusher who
//! disconnected. A deploy must still finish what it started (roll back,
//! record history), so diagnostics are written with [`say`], which drops
//! errors, never with `eprintln!`, which panics on them.

use std::io::{self, IsTerminal, Write};

use console::Style;

use crate::error::Error;

#[derive(Clone, Copy, Debug)]
pub struct Ui {
    color: bool,
    quiet: bool,
    /// stderr is a terminal: long steps get a live spinner.
    live: bool,
}

/// A long step in progress; see [`Ui::long_step`].
pub struct LongStep {
    ui: Ui,
    line: String,
    spinner: Option<indicatif::ProgressBar>,
}

impl LongStep {
    /// The step is done: leave its plain status line behind.
    pub fn done(mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
            say(format_args!("{}", self.line));
        }
    }
}

impl Drop for LongStep {
    fn drop(&mut self) {
        // Failed or interrupted: clear the spinner; the error says the rest.
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
        let _ = self.ui;
    }
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let terminal = io::stderr().is_terminal();
        Ui {
            color: !no_color && terminal,
            quiet,
            live: terminal && !quiet,
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            // We decided on colour for stderr ourselves; do not let the
            // styling library second-guess it from stdout.
            style.force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    fn step_line(&self, verb: &str, message: &str) -> String {
        let verb = self.paint(Style::new().green().bold(), &format!("{verb:>12}"));
        format!("{verb} {message}")
    }

    /// `    Building releases/20261121174500`
    pub fn step(&self, verb: &str, message: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        say(format_args!("{}", self.step_line(verb, message.as_ref())));
    }

    /// A step that may take a while without printing anything (a fetch, an
    /// export). On a terminal: a spinner with the elapsed time until
    /// [`LongStep::done`]. Elsewhere (a git hook, CI): the plain line now.
    pub fn long_step(&self, verb: &str, message: impl AsRef<str>) -> LongStep {
        let line = self.step_line(verb, message.as_ref());
        if !self.live {
            if !self.quiet {
                say(format_args!("{line}"));
            }
            return LongStep {
                ui: *self,
                line,
                spinner: None,
            };
        }
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{msg} {spinner} {elapsed}")
                .expect("the template is valid"),
        );
        spinner.set_message(line.clone());
        spinner.enable_steady_tick(std::time::Duration::from_millis(100));
        LongStep {
            ui: *self,
            line,
            spinner: Some(spinner),
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        let label = self.paint(Style::new().yellow().bold(), "warning");
        say(format_args!("{label}: {}", message.as_ref()));
    }

    /// One line of a hook's output: `       build | npm WARN ...`
    pub fn hook_line(&self, name: &str, line: &str) {
        if self.quiet {
            return;
        }
        let prefix = self.paint(Style::new().dim(), &format!("{name:>12} |"));
        if self.color {
            say(format_args!("{prefix} {line}"));
        } else {
            // NO_COLOR, a pipe, a git hook's `remote:` lines: no escape codes,
            // the hook's included.
            say(format_args!("{prefix} {}", console::strip_ansi_codes(line)));
        }
    }

    /// One line a fleet host said: `deploy@web1 |      Swapping current -> ...`.
    /// Its own progress and warnings; shown unless quiet, but a host's
    /// `warning:` and `error:` lines always.
    pub fn host_line(&self, host: &str, line: &str) {
        let loud = line.starts_with("warning:") || line.starts_with("error:");
        if self.quiet && !loud {
            return;
        }
        let prefix = self.paint(Style::new().dim(), &format!("{host} |"));
        say(format_args!("{prefix} {line}"));
    }

    pub fn error(&self, err: &Error) {
        let red = Style::new().red().bold();
        let mut lines = err.to_string();
        for (label, style) in [
            ("caused by:", Style::new().dim()),
            ("live now:", Style::new().cyan().bold()),
            ("config:", Style::new().dim()),
            ("hint:", Style::new().cyan()),
        ] {
            lines = lines.replace(
                &format!("\n{label}"),
                &format!("\n{}", self.paint(style, label)),
            );
        }
        say(format_args!("{}: {lines}", self.paint(red, "error")));
    }

    /// `--quiet`: only warnings, errors and results.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(Style::new().dim(), text)
    }
}

/// A phase of a deploy being timed: with `SHIPIT_TIMINGS=1` in the
/// environment, dropping it says how long the phase took (`timing export
/// 3.21 ms`), quiet or not. The benchmark reads these lines to show where a
/// deploy's time goes.
pub struct Timing {
    phase: &'static str,
    started: std::time::Instant,
}

impl Timing {
    pub fn start(phase: &'static str) -> Timing {
        Timing {
            phase,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *ON.get_or_init(|| std::env::var_os("SHIPIT_TIMINGS").is_some_and(|v| v == "1")) {
            say(format_args!(
                "timing {} {:.2} ms",
                self.phase,
                self.started.elapsed().as_secs_f64() * 1000.0
            ));
        }
    }
}

/// One line on stderr, without the secrets of `env_file`
/// ([`crate::hookenv`]). Errors are dropped: see the module docs.
fn say(args: std::fmt::Arguments) {
    let text = args.to_string();
    let text = crate::hookenv::redact(&text);
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_all(text.as_bytes())
        .and_then(|_| stderr.write_all(b"\n"));
}

/// Write a command's result to stdout. The reader may be gone (`shipit
/// releases | head`): callers ignore the error, and the exit code still
/// says how the command went.
/// Secrets of `env_file` are replaced, in their JSON-escaped form too
/// (every `--json` goes through here).
pub fn out(text: &str) -> io::Result<()> {
    let text = crate::hookenv::redact_json(text);
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
}

/// Whether this process printed a JSON document on stdout.
static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A failed command's JSON error object on stdout (see [`out`]), unless
/// it printed its JSON document already: a report that failed carries its
/// error inside (a fleet rollout's), and stdout holds one document.
pub fn out_json_error(value: &serde_json::Value) {
    if !JSON_PRINTED.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = out_json(value);
    }
}

/// Pretty JSON to stdout, newline-terminated: the command's one document.
pub fn out_json(value: &serde_json::Value) -> io::Result<()> {
    JSON_PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut text = serde_json::to_string_pretty(value).expect("json serializes");
    text.push('\n');
    out(&text)
}
