//! The example app's repository, as the suites deploy it: the files of
//! `examples/node-app`, a `VERSION` the app serves, one commit on `main`.

use std::fs;
use std::path::Path;

use super::git::git;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Make `app` a repository of the example app's `files` (paths relative
/// to `examples/node-app`) and `VERSION` 0, committed as `v0`.
pub fn node_app_repo(app: &Path, files: &[&str]) {
    for file in files {
        let to = app.join(file);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(
            Path::new(MANIFEST).join("examples/node-app").join(file),
            &to,
        )
        .unwrap();
    }
    fs::write(app.join("VERSION"), "0\n").unwrap();
    git(app, &["init", "-q", "-b", "main"]);
    git(app, &["add", "-A"]);
    git(app, &["commit", "-q", "-m", "v0"]);
}
