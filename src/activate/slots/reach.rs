//! Can the front use a slot's socket? Asked before the switch (SPEC §10: a
//! release the front cannot reach is refused before any user meets it).
//!
//! The gate probes a slot's socket as shipit's user, often root, who may
//! connect to anything. nginx's workers run as another user (`www-data`,
//! `nobody`): connecting to a unix socket needs write permission on it and
//! search permission on every directory on the way, through the link
//! `run/app.sock` (connect(2), path_resolution(7)). Without it every user
//! request is a 502. Probing through the front after the switch would find
//! out too late, and pooled upstream connections to the old slot can answer
//! such a probe; so the permissions are read from the disk and judged
//! against the front's user and groups before the link moves.
//!
//! The front's identity is `slots.front_user` when set; otherwise that of
//! the running nginx workers, read from `/proc/<pid>/status` (readable by
//! any user, so a deploy user who is not root can ask). With neither, the
//! check is skipped and the caller says so.
//!
//! The decision ([`denial`]) is pure; ACLs and LSMs are not modelled (a
//! socket made reachable only by an ACL is reported as unreachable; set
//! its mode instead).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, Result};

/// Who the front's workers are: the fs uid, and every group they hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub uid: u32,
    pub gids: BTreeSet<u32>,
    /// How messages name it, e.g. `nginx workers (user nobody)`.
    pub name: String,
}

/// One path on the way to the socket, as the disk has it.
#[derive(Clone, Debug)]
pub struct Node {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The socket itself (needs write), or a directory (needs search).
    pub socket: bool,
}

/// Why the front may not use the socket: which path, which permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub path: PathBuf,
    /// `write` (the socket) or `search (x)` (a directory).
    pub permission: &'static str,
    pub detail: String,
}

/// The first node on the way that `who` may not pass, if any. The owner
/// class wins over the group class even when it grants less (Linux checks
/// them in that order and stops at the first that applies); root passes.
pub fn denial(who: &Identity, chain: &[Node]) -> Option<Denial> {
    if who.uid == 0 {
        return None;
    }
    chain.iter().find_map(|node| {
        let (bit, permission) = if node.socket {
            (0o2, "write")
        } else {
            (0o1, "search (x)")
        };
        let (class, shift) = if who.uid == node.uid {
            ("owner", 6)
        } else if who.gids.contains(&node.gid) {
            ("group", 3)
        } else {
            ("other", 0)
        };
        (node.mode >> shift & bit == 0).then(|| Denial {
            path: node.path.clone(),
            permission,
            detail: format!(
                "{} is mode {:04o}, owner {}, group {}: for {} it is the {class} class, which has no \
                 {permission} permission",
                node.path.display(),
                node.mode & 0o7777,
                user_name(node.uid),
                group_name(node.gid),
                who.name,
            ),
        })
    })
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// `slots.front_user`: a user name (or a numeric uid), with its primary
/// group and supplementary groups from the group database.
pub fn configured(user: &str) -> Result<Identity> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    let Ok(Some(found)) = found else {
        return Err(Error::usage(format!(
            "slots.front_user {user:?} is not a user on this host"
        ))
        .hint("give the user nginx's workers run as (its `user` directive; www-data on Debian)"));
    };
    let mut gids: BTreeSet<u32> = [found.gid.as_raw()].into();
    if let Ok(name) = CString::new(found.name.clone())
        && let Ok(groups) = nix::unistd::getgrouplist(&name, found.gid)
    {
        gids.extend(groups.iter().map(|g| g.as_raw()));
    }
    Ok(Identity {
        uid: found.uid.as_raw(),
        gids,
        name: format!("the front's user {} (slots.front_user)", found.name),
    })
}

/// The identities of the running nginx workers (`nginx: worker process`),
/// each distinct one once. Empty when none runs or `/proc` hides them.
pub fn nginx_workers() -> Vec<Identity> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let Ok(cmdline) = fs::read(dir.join("cmdline")) else {
            continue;
        };
        if !cmdline.starts_with(b"nginx: worker process") {
            continue;
        }
        if let Ok(status) = fs::read_to_string(dir.join("status"))
            && let Some(identity) = parse_status(&status)
        {
            found.insert(identity);
        }
    }
    found.into_iter().collect()
}

/// The fs uid and the groups of a `/proc/<pid>/status` (proc(5)): the ids
/// the kernel checks file access with.
fn parse_status(status: &str) -> Option<Identity> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    // Uid: real, effective, saved, filesystem.
    let uid = *field("Uid:")?.get(3)?;
    let gid = *field("Gid:")?.get(3)?;
    let mut gids: BTreeSet<u32> = field("Groups:").unwrap_or_default().into_iter().collect();
    gids.insert(gid);
    Some(Identity {
        uid,
        gids,
        name: format!("nginx workers (user {})", user_name(uid)),
    })
}

/// Every directory the front searches on its way to `socket` through
/// `link` (lexically, and once resolved), then the socket itself.
pub fn chain(link: &Path, socket: &Path) -> std::io::Result<Vec<Node>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add_ancestors = |path: &Path| {
        for dir in path.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() && !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    };
    add_ancestors(link);
    let resolved = fs::canonicalize(socket)?;
    add_ancestors(&resolved);
    dirs.sort_by_key(|d| d.components().count());
    let mut nodes = Vec::new();
    for dir in dirs {
        let meta = fs::metadata(&dir)?;
        nodes.push(node(dir, &meta, false));
    }
    let meta = fs::metadata(&resolved)?;
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::other(format!(
            "{} is not a socket",
            resolved.display()
        )));
    }
    nodes.push(node(resolved, &meta, true));
    Ok(nodes)
}

fn node(path: PathBuf, meta: &fs::Metadata, socket: bool) -> Node {
    Node {
        path,
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        socket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, gids: &[u32]) -> Identity {
        Identity {
            uid,
            gids: gids.iter().copied().collect(),
            name: "the front".into(),
        }
    }

    fn dir(path: &str, uid: u32, gid: u32, mode: u32) -> Node {
        Node {
            path: path.into(),
            uid,
            gid,
            mode,
            socket: false,
        }
    }

    fn sock(uid: u32, gid: u32, mode: u32) -> Node {
        Node {
            socket: true,
            ..dir("/srv/app/run/green.sock", uid, gid, mode)
        }
    }

    #[test]
    fn a_socket_the_front_may_not_write_is_denied() {
        let www = who(33, &[33]);
        let ok_dirs = [dir("/", 0, 0, 0o755), dir("/srv", 0, 0, 0o755)];
        let with = |s: Node| {
            let mut chain = ok_dirs.to_vec();
            chain.push(s);
            chain
        };
        // 0755 root:root: others may not write.
        let denied = denial(&www, &with(sock(0, 0, 0o755))).expect("0755 is denied");
        assert_eq!(denied.permission, "write");
        assert!(denied.detail.contains("mode 0755"), "{}", denied.detail);
        assert!(denied.detail.contains("other class"), "{}", denied.detail);
        // 0666, or 0660 with the front's group, or its own socket: allowed.
        assert_eq!(denial(&www, &with(sock(0, 0, 0o666))), None);
        assert_eq!(denial(&www, &with(sock(0, 33, 0o660))), None);
        assert_eq!(denial(&www, &with(sock(33, 0, 0o600))), None);
        // The owner class wins even when it grants less than the others.
        assert!(denial(&www, &with(sock(33, 0, 0o066))).is_some());
        // Root may do anything.
        assert_eq!(denial(&who(0, &[0]), &with(sock(0, 0, 0o700))), None);
    }

    #[test]
    fn every_directory_on_the_way_needs_search() {
        let nobody = who(65534, &[65534]);
        let chain = [
            dir("/", 0, 0, 0o755),
            dir("/root", 0, 0, 0o700),
            sock(0, 0, 0o666),
        ];
        let denied = denial(&nobody, &chain).expect("/root 0700 is denied");
        assert_eq!(denied.path, Path::new("/root"));
        assert_eq!(denied.permission, "search (x)");
        // Search by the group is enough.
        let chain = [dir("/srv", 0, 65534, 0o710), sock(0, 0, 0o666)];
        assert_eq!(denial(&nobody, &chain), None);
    }

    #[test]
    fn proc_status_gives_the_fs_ids_and_the_groups() {
        let status = "Name:\tnginx\nUid:\t33\t33\t33\t34\nGid:\t33\t33\t33\t35\nGroups:\t4 20 \n";
        let id = parse_status(status).unwrap();
        assert_eq!(id.uid, 34);
        assert_eq!(id.gids, [4, 20, 35].into());
        assert!(parse_status("Name:\tx\n").is_none());
    }
}
