//! A release's build log, opened afresh with one header whose last line
//! says how its tree came to be (built here, built for the fleet, or
//! received from a fleet controller).

use std::fs::File;
use std::io::Write;

use chrono::Utc;

use crate::error::Result;
use crate::layout::{Layout, ReleaseId};

/// How the release's tree is made, as the build log's header tells it.
pub(crate) enum Made<'a> {
    /// Built here for this host (`shipit deploy`).
    Here,
    /// Built by a fleet controller for its hosts.
    ForFleet,
    /// Received on a host from the fleet controller run by `by`.
    Received { by: &'a str },
}

/// Where the release came from, for the build log's header.
pub(crate) struct Origin<'a> {
    pub source: &'a str,
    pub revision: Option<&'a str>,
    pub branch: Option<&'a str>,
}

/// The build log's header for release `id`, stamped now.
pub(crate) fn header(id: &ReleaseId, origin: &Origin, made: &Made) -> String {
    let now = Utc::now().to_rfc3339();
    let last = match made {
        Made::Here => format!("started {now}"),
        Made::ForFleet => format!("built for the fleet {now}"),
        Made::Received { by } => format!("built by {by} (fleet controller)\nreceived {now}"),
    };
    format!(
        "release {id}\nsource {}\nrevision {}\nbranch {}\n{last}",
        origin.source,
        origin.revision.unwrap_or("-"),
        origin.branch.unwrap_or("-"),
    )
}

/// A release's build log, started afresh with its header.
pub(crate) fn open_build_log(
    layout: &Layout,
    id: &ReleaseId,
    origin: &Origin,
    made: &Made,
) -> Result<File> {
    let mut log = crate::state::open_or_explain(
        &layout.build_log(id),
        File::options().write(true).create(true).truncate(true),
        "the build log",
    )?;
    let _ = writeln!(log, "{}", header(id, origin, made));
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_how_the_tree_was_made() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let origin = Origin {
            source: "/src",
            revision: Some("abc"),
            branch: None,
        };
        let here = header(&id, &origin, &Made::Here);
        assert!(
            here.starts_with(
                "release 20260101000000\nsource /src\nrevision abc\nbranch -\nstarted "
            )
        );
        let fleet = header(&id, &origin, &Made::ForFleet);
        assert!(fleet.contains("\nbranch -\nbuilt for the fleet "));
        let got = header(&id, &origin, &Made::Received { by: "ann" });
        assert!(got.contains("\nbranch -\nbuilt by ann (fleet controller)\nreceived "));
    }
}
