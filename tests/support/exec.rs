//! Putting an executable on disk in a test process, so that running it
//! never fails with `Text file busy` (ETXTBSY).
//!
//! A test binary runs its tests on many threads, and they all start
//! processes. `execve(2)` refuses a file that any process holds open for
//! writing, and a child forked by another thread gets a copy of every
//! descriptor the parent has open at that moment, the writable one of a file
//! being written included, until it calls exec (`O_CLOEXEC` closes it only
//! then). So `fs::copy(shipit, bin)` followed by running `bin` fails now and
//! then, on a busy machine more often: whenever another thread forked while
//! the copy was open.
//!
//! The fix is to never hold such a descriptor in the test process: the
//! bytes are written by a child (`install`), whose descriptors no other
//! thread of ours can inherit, and which has exited before we return.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Copy `from` to `to` as an executable (mode 0755), written by a child
/// process.
pub fn copy_executable(from: &Path, to: &Path) {
    let out = Command::new("install")
        .args(["-m", "0755"])
        .arg(from)
        .arg(to)
        .output()
        .unwrap_or_else(|e| panic!("could not run install(1): {e}"));
    assert!(
        out.status.success(),
        "install -m 0755 {} {} failed: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write `contents` to `to` as an executable (mode 0755). The bytes go to a
/// private file next to it first (its writable descriptor may reach a
/// forked child, but nothing ever executes that file), then a child copies
/// them into place.
pub fn write_executable(to: &Path, contents: impl AsRef<[u8]>) {
    let dir = to.parent().expect("an executable's path has a parent");
    let draft = tempfile::Builder::new()
        .prefix(".draft-")
        .tempfile_in(dir)
        .unwrap_or_else(|e| panic!("could not create a draft in {}: {e}", dir.display()));
    fs::write(draft.path(), contents).unwrap();
    copy_executable(draft.path(), to);
}
