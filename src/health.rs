//! The health gate: a pure decision, and a small HTTP probe.
//!
//! A deploy is done only when the *new* release proves itself: `successes`
//! consecutive probes must pass within `timeout`. A process manager can keep
//! answering from old code after a reload, so `expect_body = "{release}"`
//! lets the gate demand the new release id in the answer. The decision
//! ([`Gate`]) is kept apart from the sockets so it can be tested on its own.
//!
//! The probe ignores `http_proxy` and friends (a probe of 127.0.0.1 sent to
//! a proxy tests the proxy, or nothing), reads at most [`BODY_LIMIT`] bytes
//! of a body, and never follows redirects (a health URL that redirects is a
//! misconfiguration worth seeing).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::HealthConfig;
use crate::error::{Error, Result};
use crate::interrupt;
use crate::ui::Ui;

const BODY_LIMIT: u64 = 64 * 1024;

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub passed: bool,
    /// What was seen, e.g. `status 500, body "oops"` or `connection refused`.
    pub detail: String,
    /// The release itself answered with an error status (see
    /// [`is_error_status`]): not "still starting", but "running and broken".
    pub error_answer: bool,
    /// Nothing answered: a refused or failed connection, or 502, 503 or
    /// 504 (a proxy that cannot reach the app). Still starting, or down:
    /// the gate counts it as an error only after its grace (see
    /// [`Gate::down_counts_after`]).
    pub down: bool,
    /// Of `down`: connected, but no whole answer came within
    /// `request_timeout` (busy, or hung), not a refusal.
    pub timed_out: bool,
}

/// An answer that says the app runs and fails: 4xx and 5xx, except 502,
/// 503 and 504, which a proxy (or an app still warming up) gives while the
/// app cannot answer yet. Those wait out the whole gate, like a refused
/// connection.
pub fn is_error_status(status: u16) -> bool {
    status >= 400 && !matches!(status, 502..=504)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    /// Out of time; carries what the last probe saw.
    Fail(String),
    Wait,
}

/// The gate's state: consecutive passes so far, consecutive error answers,
/// and the last thing seen.
#[derive(Debug)]
pub struct Gate {
    needed: u32,
    budget: Duration,
    /// Consecutive error answers that fail the gate before its budget; 0
    /// never does.
    fail_after: u32,
    /// From when on a probe that found nothing answering counts as an
    /// error answer; `None`: never (it waits out the budget).
    grace: Option<Duration>,
    /// What the failure message says about counting those probes.
    grace_note: String,
    /// Whether a probe that timed out counts like a refusal once `grace`
    /// has passed (see [`Gate::timeouts_wait`]).
    timeouts_count: bool,
    streak: u32,
    errors: u32,
    /// How many of `errors` found nothing answering.
    downs: u32,
    probes: u32,
    last: Option<Observation>,
}

impl Gate {
    pub fn new(needed: u32, budget: Duration, fail_after: u32) -> Gate {
        Gate {
            needed,
            budget,
            fail_after,
            grace: None,
            grace_note: String::new(),
            timeouts_count: true,
            streak: 0,
            errors: 0,
            downs: 0,
            probes: 0,
            last: None,
        }
    }

    /// Count probes that find nothing answering (refused connections,
    /// 502/503/504) as error answers once `grace` has passed: the hook
    /// that started the release has returned, so it is supposed to be up.
    /// `note` says why in failure messages.
    pub fn down_counts_after(mut self, grace: Duration, note: impl Into<String>) -> Gate {
        self.grace = Some(grace);
        self.grace_note = note.into();
        self
    }

    /// A probe that timed out only fails to pass: it never counts towards
    /// `fail_after`. For a check where a refusal fails at once (through the
    /// front, after a slot passed its own gate), a slow answer on a busy
    /// machine is not the front failing to reach the slot.
    pub fn timeouts_wait(mut self) -> Gate {
        self.timeouts_count = false;
        self
    }

    /// The `[health]` rules: `successes` within `timeout`, `fail_after`
    /// errors in a row, counting probes that find nothing answering once
    /// `grace` has passed.
    pub fn from_config(config: &HealthConfig) -> Gate {
        Gate::new(config.successes, config.timeout, config.fail_after).down_counts_after(
            config.grace,
            format!(
                "a refused connection or 502/503/504 counts once health.grace = {} has passed",
                humantime::format_duration(config.grace)
            ),
        )
    }

    /// A probe's result, seen `at` after the gate started.
    pub fn observe(&mut self, observation: Observation, at: Duration) {
        self.probes += 1;
        self.streak = if observation.passed {
            self.streak + 1
        } else {
            0
        };
        let down_counts = observation.down
            && (self.timeouts_count || !observation.timed_out)
            && self.grace.is_some_and(|g| at >= g);
        if observation.error_answer || down_counts {
            self.errors += 1;
            self.downs += u32::from(down_counts && !observation.error_answer);
        } else {
            self.errors = 0;
            self.downs = 0;
        }
        self.last = Some(observation);
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Decide after `elapsed` time. Passing wins over running out of time
    /// (the last probe may have finished just after the budget).
    pub fn decide(&self, elapsed: Duration) -> Decision {
        if self.streak >= self.needed {
            return Decision::Pass;
        }
        if self.fail_after > 0 && self.errors >= self.fail_after {
            let last = self.last.as_ref().map(|o| o.detail.as_str()).unwrap_or("");
            let what = match (self.downs, self.grace) {
                (0, _) | (_, None) => "with an error status".to_string(),
                (_, Some(_)) => format!("with an error status or not at all ({})", self.grace_note),
            };
            return Decision::Fail(format!(
                "the release answered {} probes in a row {what} (health.fail_after = {}), \
                 after {} of {} allowed; last: {last}",
                self.errors,
                self.fail_after,
                humantime::format_duration(round_ms(elapsed)),
                humantime::format_duration(self.budget),
            ));
        }
        if elapsed >= self.budget {
            let last = match &self.last {
                Some(o) => o.detail.clone(),
                None => "no probe finished".into(),
            };
            return Decision::Fail(format!(
                "{} of {} consecutive probes passed within {} ({} probes); last: {last}",
                self.streak,
                self.needed,
                humantime::format_duration(self.budget),
                self.probes
            ));
        }
        Decision::Wait
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Substitute `{release}` and `{revision}` in an expected body.
pub fn expected_body(template: &str, release: &str, revision: Option<&str>) -> String {
    template
        .replace("{release}", release)
        .replace("{revision}", revision.unwrap_or(""))
}

/// Where a gate sends its probes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The configured URL, over TCP.
    Url(String),
    /// The configured URL's path and host, over a slot's own unix socket:
    /// the release is proven before the front proxy can reach it.
    Socket { path: PathBuf, url: String },
}

impl Target {
    /// How progress lines name it.
    pub fn describe(&self) -> String {
        match self {
            Target::Url(url) => crate::urls::redact_url(url),
            Target::Socket { path, url } => {
                format!("{} on {}", split_url(url).1, path.display())
            }
        }
    }
}

/// Probe once.
pub fn probe(agent: &ureq::Agent, url: &str, status: u16, body: Option<&str>) -> Observation {
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(e) => {
            let timed_out = matches!(e, ureq::Error::Timeout(_));
            return Observation {
                timed_out,
                ..fail(e.to_string().replace(url, &crate::urls::redact_url(url)))
            };
        }
    };
    let got = response.status().as_u16();
    let mut bytes = Vec::new();
    let read = response
        .body_mut()
        .as_reader()
        .take(BODY_LIMIT)
        .read_to_end(&mut bytes);
    judge(got, &bytes, read.err(), status, body)
}

/// Nothing answered (no connection, no complete answer).
fn fail(detail: String) -> Observation {
    Observation {
        passed: false,
        detail,
        error_answer: false,
        down: true,
        timed_out: false,
    }
}

/// The verdict on one answer, whatever carried it.
fn judge(
    got: u16,
    bytes: &[u8],
    read_error: Option<std::io::Error>,
    status: u16,
    body: Option<&str>,
) -> Observation {
    let text = String::from_utf8_lossy(bytes);
    let shown: String = text.trim().chars().take(120).collect();
    if let Some(e) = read_error {
        return fail(format!("status {got}, body unreadable: {e}"));
    }
    if got != status {
        return Observation {
            error_answer: is_error_status(got),
            down: matches!(got, 502..=504),
            ..fail(format!("status {got} (expected {status}), body {shown:?}"))
        };
    }
    if let Some(want) = body
        && !text.contains(want)
    {
        // Something answered, only not (yet) the release wanted.
        return Observation {
            down: false,
            ..fail(format!(
                "status {got}, body {shown:?} does not contain {want:?}"
            ))
        };
    }
    Observation {
        passed: true,
        detail: format!("status {got}, body {shown:?}"),
        error_answer: false,
        down: false,
        timed_out: false,
    }
}

/// `http://host:port/path?q` -> (`host:port`, `/path?q`).
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.trim().strip_prefix("http://").unwrap_or(url);
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], "/"),
        None => (rest, "/"),
    }
}

/// The path (and query) of an `http://` URL, `/` when it has none.
pub fn url_path(url: &str) -> &str {
    split_url(url).1
}

/// Probe once over a unix socket: a plain HTTP/1.0 GET (so the answer is
/// neither chunked nor kept alive), read until the server closes, bounded
/// in size and in time.
pub fn probe_socket(
    socket: &Path,
    url: &str,
    timeout: Duration,
    status: u16,
    body: Option<&str>,
) -> Observation {
    let (host, path) = split_url(url);
    let deadline = crate::clock::after(timeout);
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", socket.display())),
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: shipit\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream
        .set_write_timeout(Some(timeout))
        .and_then(|_| stream.write_all(request.as_bytes()))
    {
        return fail(format!("could not send the request: {e}"));
    }
    let limit = BODY_LIMIT as usize + 16 * 1024;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let mut read_error = None;
    while bytes.len() < limit {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            read_error = Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete answer in time",
            ));
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n.min(limit - bytes.len())]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return fail(match read_error {
            Some(e) => format!("no answer: {e}"),
            None if bytes.is_empty() => "the connection closed without an answer".into(),
            None => "a malformed answer (no end of headers)".into(),
        });
    };
    let head = String::from_utf8_lossy(&bytes[..split]);
    let got = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    let Some(got) = got else {
        return fail(format!(
            "a malformed status line {:?}",
            head.lines().next().unwrap_or("")
        ));
    };
    let body_bytes = &bytes[split + 4..];
    let body_bytes = &body_bytes[..body_bytes.len().min(BODY_LIMIT as usize)];
    judge(got, body_bytes, read_error, status, body)
}

pub fn agent(request_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(request_timeout))
        .build()
        .into()
}

/// Run the gate for `release` on the configured URL, after the reload
/// hook returned (users are sent to it already): poll until it passes,
/// fails or is interrupted; after `grace`, a release that does not answer
/// counts towards `fail_after`. `Err` carries a message naming the last
/// thing seen.
pub fn gate(config: &HealthConfig, release: &str, revision: Option<&str>, ui: &Ui) -> Result<()> {
    gate_url(config, release, revision, Gate::from_config(config), ui)
}

/// [`gate`] for a release being gone back to (a rollback, or the swap back
/// after a failed gate): a refused connection or 502/503/504 means "not up
/// yet" for the whole `timeout`, whatever `grace` says. The process
/// manager may still be restarting it after the release that failed, and
/// nothing comes after it to fall back to: failing early would only report
/// an outage sooner, or one that is not there. Error answers still count
/// towards `fail_after`.
pub fn gate_back(
    config: &HealthConfig,
    release: &str,
    revision: Option<&str>,
    ui: &Ui,
) -> Result<()> {
    let gate = Gate::new(config.successes, config.timeout, config.fail_after);
    gate_url(config, release, revision, gate, ui)
}

/// `gate` on `health.url`, expecting the body `expect_body` names for
/// `release`.
fn gate_url(
    config: &HealthConfig,
    release: &str,
    revision: Option<&str>,
    gate: Gate,
    ui: &Ui,
) -> Result<()> {
    let body = config
        .expect_body
        .as_deref()
        .map(|t| expected_body(t, release, revision));
    run_gate(
        config,
        &Target::Url(config.url.clone()),
        body.as_deref(),
        gate,
        ui,
    )
}

/// The gate on any target, with the `[health]` rules: `successes`
/// consecutive passes (status, and `body` if given) within `timeout`,
/// `fail_after` error answers in a row. A target that does not answer
/// waits out `timeout` (a slot's own gate: no user meets it meanwhile, and
/// a slow start is not a failure).
pub fn gate_on(config: &HealthConfig, target: &Target, body: Option<&str>, ui: &Ui) -> Result<()> {
    let gate = Gate::new(config.successes, config.timeout, config.fail_after);
    run_gate(config, target, body, gate, ui)
}

/// Poll `target` until `gate` decides.
pub fn run_gate(
    config: &HealthConfig,
    target: &Target,
    body: Option<&str>,
    mut gate: Gate,
    ui: &Ui,
) -> Result<()> {
    let agent = agent(config.request_timeout);
    let once = || match target {
        Target::Url(url) => probe(&agent, url, config.expect_status, body),
        Target::Socket { path, url } => probe_socket(
            path,
            url,
            config.request_timeout,
            config.expect_status,
            body,
        ),
    };
    let name = target.describe();
    let started = Instant::now();
    sleep_interruptibly(config.initial_delay)?;
    let mut last_detail = String::new();
    loop {
        let observation = once();
        if observation.passed {
            ui.step(
                "Healthy",
                format!("{name} ({}/{})", gate.streak() + 1, config.successes),
            );
        } else if observation.detail != last_detail {
            ui.step("Waiting", format!("{name}: {}", observation.detail));
        }
        last_detail = observation.detail.clone();
        gate.observe(observation, started.elapsed());
        match gate.decide(started.elapsed()) {
            Decision::Pass => return Ok(()),
            Decision::Fail(why) => {
                return Err(Error::internal(format!("health check of {name} failed")).cause(why));
            }
            Decision::Wait => {}
        }
        let left = config.timeout.saturating_sub(started.elapsed());
        sleep_interruptibly(config.interval.min(left))?;
    }
}

/// Sleep, but return `Err(Interrupted)` promptly on SIGINT/SIGTERM.
pub fn sleep_interruptibly(duration: Duration) -> Result<()> {
    let until = crate::clock::after(duration);
    loop {
        interrupt::check()?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(passed: bool) -> Observation {
        Observation {
            passed,
            detail: if passed { "status 200" } else { "status 500" }.into(),
            error_answer: !passed,
            down: false,
            timed_out: false,
        }
    }

    fn refused() -> Observation {
        Observation {
            passed: false,
            detail: "connection refused".into(),
            error_answer: false,
            down: true,
            timed_out: false,
        }
    }

    fn timed_out() -> Observation {
        Observation {
            detail: "timeout: global".into(),
            timed_out: true,
            ..refused()
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn through_the_front_a_refusal_fails_at_once_and_a_timeout_does_not() {
        let front = || {
            Gate::new(3, BUDGET, 1)
                .down_counts_after(Duration::ZERO, "through the front")
                .timeouts_wait()
        };
        let mut g = front();
        g.observe(obs(true), T);
        for _ in 0..5 {
            g.observe(timed_out(), T);
            assert_eq!(g.decide(T), Decision::Wait, "a slow answer only waits");
        }
        for _ in 0..3 {
            g.observe(obs(true), T);
        }
        assert_eq!(g.decide(T), Decision::Pass);
        let mut g = front();
        g.observe(refused(), T);
        assert!(
            matches!(g.decide(T), Decision::Fail(_)),
            "a refusal fails at once"
        );
        // Elsewhere (the reload path after its grace) a timeout counts.
        let mut g = Gate::new(3, BUDGET, 1).down_counts_after(Duration::ZERO, "grace");
        g.observe(timed_out(), T);
        assert!(
            matches!(g.decide(T), Decision::Fail(_)),
            "{:?}",
            g.decide(T)
        );
    }

    #[test]
    fn after_the_grace_a_release_that_does_not_answer_fails_fast() {
        // A release that crashes at startup behind a proxy: 502s, then
        // refused connections. Within the grace they wait; after it, they
        // count like error answers.
        let grace = Duration::from_secs(2);
        let mut g = Gate::new(2, BUDGET, 3).down_counts_after(grace, "health.grace = 2s");
        let bad = judge(502, b"Bad Gateway", None, 200, None);
        assert!(bad.down && !bad.error_answer, "{bad:?}");
        for _ in 0..10 {
            g.observe(bad.clone(), T);
            assert_eq!(g.decide(T), Decision::Wait, "within the grace");
        }
        let after = grace + T;
        g.observe(bad.clone(), after);
        g.observe(refused(), after);
        assert_eq!(g.decide(after), Decision::Wait);
        g.observe(bad, after);
        match g.decide(after) {
            Decision::Fail(why) => {
                assert!(why.contains("health.fail_after = 3"), "{why}");
                assert!(why.contains("health.grace = 2s"), "{why}");
                assert!(why.contains("not at all"), "{why}");
            }
            other => panic!("down after the grace must fail fast: {other:?}"),
        }
        // An answer from another release is something answering: it
        // breaks the run.
        let mut g = Gate::new(2, BUDGET, 2).down_counts_after(Duration::ZERO, "k");
        g.observe(refused(), T);
        g.observe(judge(200, b"old", None, 200, Some("new")), T);
        g.observe(refused(), T);
        assert_eq!(g.decide(T), Decision::Wait);
        // Without a grace (the default Gate), down never counts.
        let mut g = Gate::new(2, BUDGET, 1);
        g.observe(refused(), BUDGET / 2);
        assert_eq!(g.decide(BUDGET / 2), Decision::Wait);
    }

    #[test]
    fn error_answers_in_a_row_fail_before_the_budget() {
        let mut g = Gate::new(2, BUDGET, 3);
        for o in [obs(false), obs(false), refused(), obs(false), obs(false)] {
            g.observe(o, T);
            assert_eq!(g.decide(Duration::from_secs(1)), Decision::Wait);
        }
        g.observe(obs(false), T);
        match g.decide(Duration::from_secs(1)) {
            Decision::Fail(why) => {
                assert!(why.contains("3 probes in a row"), "{why}");
                assert!(why.contains("health.fail_after = 3"), "{why}");
            }
            other => panic!("three error answers in a row must fail: {other:?}"),
        }
        // Refused connections (still starting) never fail early; 0 turns
        // the early failure off.
        let mut g = Gate::new(2, BUDGET, 3);
        let mut off = Gate::new(2, BUDGET, 0);
        for _ in 0..10 {
            g.observe(refused(), T);
            off.observe(obs(false), T);
        }
        assert_eq!(g.decide(Duration::from_secs(1)), Decision::Wait);
        assert_eq!(off.decide(Duration::from_secs(1)), Decision::Wait);
    }

    #[test]
    fn which_statuses_count_as_error_answers() {
        for (status, error) in [
            (500, true),
            (404, true),
            (401, true),
            (502, false),
            (503, false),
            (504, false),
            (200, false),
            (302, false),
        ] {
            assert_eq!(is_error_status(status), error, "status {status}");
            let seen = judge(status, b"", None, 200, None);
            assert_eq!(seen.error_answer, error, "status {status}");
        }
        // A 200 with another release's body is "not yet", not an error.
        assert!(!judge(200, b"old", None, 200, Some("new")).error_answer);
    }

    const BUDGET: Duration = Duration::from_secs(10);

    #[test]
    fn passes_after_enough_consecutive_successes() {
        let mut g = Gate::new(3, BUDGET, 0);
        g.observe(obs(true), T);
        g.observe(obs(true), T);
        assert_eq!(g.decide(Duration::from_secs(1)), Decision::Wait);
        g.observe(obs(true), T);
        assert_eq!(g.decide(Duration::from_secs(1)), Decision::Pass);
    }

    #[test]
    fn a_failure_resets_the_streak() {
        let mut g = Gate::new(3, BUDGET, 0);
        for passed in [true, true, false, true, true] {
            g.observe(obs(passed), T);
        }
        assert_eq!(g.decide(Duration::from_secs(1)), Decision::Wait);
        g.observe(obs(true), T);
        assert_eq!(g.decide(Duration::from_secs(1)), Decision::Pass);
    }

    #[test]
    fn one_success_does_not_fool_a_gate_that_needs_three() {
        let mut g = Gate::new(3, BUDGET, 0);
        g.observe(obs(true), T);
        for _ in 0..5 {
            g.observe(obs(false), T);
        }
        match g.decide(BUDGET) {
            Decision::Fail(why) => {
                assert!(why.contains("0 of 3"), "{why}");
                assert!(why.contains("status 500"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_time_with_no_probe_says_so() {
        let g = Gate::new(1, BUDGET, 0);
        match g.decide(BUDGET) {
            Decision::Fail(why) => assert!(why.contains("no probe finished"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pass_at_the_deadline_still_counts() {
        let mut g = Gate::new(1, BUDGET, 0);
        g.observe(obs(true), T);
        assert_eq!(g.decide(BUDGET * 2), Decision::Pass);
    }

    /// Serve one canned response per connection on 127.0.0.1, `count` times.
    fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            for response in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = reader.get_mut().write_all(&response);
            }
        });
        (url, handle)
    }

    #[test]
    fn the_probe_reads_a_bounded_body_and_follows_no_redirect() {
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 1024 * 1024 - 6));
        big.extend(b"marker");
        let redirect =
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (url, server) = serve(vec![big, redirect]);
        let agent = agent(Duration::from_secs(5));
        // The marker lies past the 64 KiB that are read: not seen.
        let seen = probe(&agent, &url, 200, Some("marker"));
        assert!(!seen.passed, "{seen:?}");
        assert!(seen.detail.contains("does not contain"), "{seen:?}");
        let seen = probe(&agent, &url, 200, None);
        assert!(
            !seen.passed && seen.detail.contains("status 302"),
            "{seen:?}"
        );
        server.join().unwrap();
    }

    #[test]
    fn body_template() {
        assert_eq!(
            expected_body(
                "release={release} rev={revision}",
                "20260101000000",
                Some("abc")
            ),
            "release=20260101000000 rev=abc"
        );
    }
}
