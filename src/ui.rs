//! The reporter: every byte shipit prints goes through here.
//!
//! Progress and diagnostics go to stderr, so `--json` on stdout stays
//! parseable and a git hook shows them to the pusher as `remote:` lines.
//! Colour only on a terminal and never with `NO_COLOR`; status lines carry a
//! right-aligned verb (`   Building`, `   Swapping`) so a log reads as a story.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, IsTerminal, Write};

use console::Style;

use crate::error::Error;

#[derive(Clone, Copy, Debug)]
pub struct Ui {
    color: bool,
    quiet: bool,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            color: !no_color && io::stderr().is_terminal(),
            quiet,
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            style.apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    /// `    Building releases/20261121174500`
    pub fn step(&self, verb: &str, message: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let verb = self.paint(Style::new().green().bold(), &format!("{verb:>12}"));
        eprintln!("{verb} {}", message.as_ref());
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        let label = self.paint(Style::new().yellow().bold(), "warning");
        eprintln!("{label}: {}", message.as_ref());
    }

    /// One line of a hook's output: `       build | npm WARN ...`
    pub fn hook_line(&self, name: &str, line: &str) {
        if self.quiet {
            return;
        }
        let prefix = self.paint(Style::new().dim(), &format!("{name:>12} |"));
        eprintln!("{prefix} {line}");
    }

    pub fn error(&self, err: &Error) {
        let red = Style::new().red().bold();
        let mut lines = err.to_string();
        for (label, style) in [
            ("caused by:", Style::new().dim()),
            ("live now:", Style::new().cyan().bold()),
            ("hint:", Style::new().cyan()),
        ] {
            lines = lines.replace(
                &format!("\n{label}"),
                &format!("\n{}", self.paint(style, label)),
            );
        }
        eprintln!("{}: {lines}", self.paint(red, "error"));
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(Style::new().dim(), text)
    }
}

/// Write a command's result to stdout. A closed pipe (`shipit releases |
/// head`) ends the process quietly with exit 0.
pub fn out(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush());
    match written {
        // The reader is gone (`shipit releases | head`): nothing more to say.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// Pretty JSON to stdout, newline-terminated.
pub fn out_json(value: &serde_json::Value) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("json serializes");
    text.push('\n');
    out(&text)
}
