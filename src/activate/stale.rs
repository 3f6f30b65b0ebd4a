//! Processes left running from a release that is no longer live: named
//! after every activation, with the fix that does not take the site down.

use crate::context::Ctx;
use crate::layout::{Layout, ReleaseId};
use crate::procs;

/// Name processes still running from a release other than `live` (or one
/// `expected` to run, like a warm standby slot's), with the cause and the
/// fix that does not take the site down; `running` is a look through
/// `/proc` taken after the activation ([`procs::scan`]).
pub fn warn_stale_processes(
    ctx: &Ctx,
    running: &procs::Usage,
    live: &ReleaseId,
    expected: &[ReleaseId],
) {
    for (id, list) in &running.used {
        if id == live || expected.contains(id) {
            continue;
        }
        for warning in stale_warnings(list, id, live) {
            ctx.ui.warn(warning);
        }
    }
}

/// What to say about processes in release `old` while `live` is live: a
/// process that runs `old`'s executable runs old code, and so may one that
/// only sits in it (an app run by an interpreter installed elsewhere); but
/// pm2's daemon sitting there serves nothing from it, and restarting it
/// would be an outage for nothing.
fn stale_warnings(list: &[procs::Proc], old: &ReleaseId, live: &ReleaseId) -> Vec<String> {
    let names = |via: procs::Via| -> Vec<String> {
        list.iter()
            .filter(|p| p.via == via)
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect()
    };
    let (old, live) = (Layout::display(old), Layout::display(live));
    let mut out = Vec::new();
    let running = names(procs::Via::Executable);
    if !running.is_empty() {
        out.push(format!(
            "{} runs an executable from {old}, not the live {live}: it serves old code; restart \
             it through its process manager (a manager that resolved `current` once, at start, \
             keeps old code after a reload)",
            running.join(", ")
        ));
    }
    // pm2's daemon names itself `PM2 vX.Y.Z: God Daemon (...)`; the
    // kernel keeps 15 bytes of that (`PM2 v6.0.13: Go`).
    let is_pm2_daemon = |p: &procs::Proc| p.name.starts_with("PM2 v");
    let sitting: Vec<&procs::Proc> = list
        .iter()
        .filter(|p| p.via == procs::Via::WorkingDirectory)
        .collect();
    let shown = |ps: &[&&procs::Proc]| -> String {
        ps.iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (daemons, others): (Vec<_>, Vec<_>) = sitting.iter().partition(|p| is_pm2_daemon(p));
    if !others.is_empty() {
        out.push(format!(
            "{} has its working directory in {old}, not the live {live}: if it serves requests, \
             it serves old code (a process manager that resolved `current` once, at start, \
             keeps old code after a reload); restart it through its process manager",
            shown(&others)
        ));
    }
    if !daemons.is_empty() {
        out.push(format!(
            "{} has its working directory in {old}, not the live {live}: the pm2 daemon was \
             started from inside a release (by a reload hook, or `pm2 start` run in current). \
             It serves nothing itself, and nothing needs a restart now if the gate proved {live} \
             answers (restarting the daemon restarts the app: an outage); prune keeps {old} \
             while it is used. Start reload hooks with `cd \"$SHIPIT_DEPLOY_TO\" && ...` so the \
             next daemon start happens outside the releases",
            shown(&daemons)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::{Proc, Via};

    #[test]
    fn a_daemon_sitting_in_an_old_release_is_not_told_to_restart() {
        let old = ReleaseId::parse("20260101000000").unwrap();
        let live = ReleaseId::parse("20260102000000").unwrap();
        let daemon = Proc {
            pid: 7,
            name: "PM2 v7.0.1: God".into(),
            via: Via::WorkingDirectory,
        };
        let said = stale_warnings(std::slice::from_ref(&daemon), &old, &live);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("has its working directory in releases/20260101000000"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("the pm2 daemon was started from inside a release"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("nothing needs a restart now"),
            "{}",
            said[0]
        );
        assert!(said[0].contains("cd \"$SHIPIT_DEPLOY_TO\""), "{}", said[0]);
        assert!(!said[0].contains("restart it"), "{}", said[0]);

        let worker = Proc {
            pid: 8,
            name: "node".into(),
            via: Via::Executable,
        };
        let said = stale_warnings(&[worker, daemon], &old, &live);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with("node (pid 8) runs an executable from"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("restart it through its process manager"),
            "{}",
            said[0]
        );

        // An app process run by an interpreter outside the release sits in
        // it only by its working directory: it may serve old code, and is
        // told to restart. So is pm2's daemon under a longer version, cut
        // at 15 bytes by the kernel, recognised as the daemon.
        let python = Proc {
            pid: 9,
            name: "python3".into(),
            via: Via::WorkingDirectory,
        };
        let cut = Proc {
            pid: 10,
            name: "PM2 v6.0.13: Go".into(),
            via: Via::WorkingDirectory,
        };
        let said = stale_warnings(&[python, cut], &old, &live);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with("python3 (pid 9) has its working directory in"),
            "{}",
            said[0]
        );
        assert!(said[0].contains("it serves old code"), "{}", said[0]);
        assert!(
            said[0].contains("restart it through its process manager"),
            "{}",
            said[0]
        );
        assert!(!said[0].contains("nothing needs a restart"), "{}", said[0]);
        assert!(
            said[1].starts_with("PM2 v6.0.13: Go (pid 10)"),
            "{}",
            said[1]
        );
        assert!(
            said[1].contains("nothing needs a restart now"),
            "{}",
            said[1]
        );
    }
}
