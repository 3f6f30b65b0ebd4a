//! ssh destinations as the config and the command line give them
//! (`[user@]host`, `ssh://[user@]host[:port]`): checked before anything
//! reaches ssh's argv, and taken apart the way ssh is handed them.

use crate::error::{Error, Result};

/// Where ssh is sent: `[user@]host` and the port, if one was given.
#[derive(Debug, PartialEq, Eq)]
pub struct Destination {
    /// `[user@]host`, an IPv6 address without brackets.
    pub target: String,
    pub port: Option<u16>,
}

/// Refuse a destination that is not `[user@]host` or
/// `ssh://[user@]host[:port]`: it would reach ssh's argv as something else.
pub fn check_destination(dest: &str) -> Result<()> {
    parse_destination(dest).map(|_| ())
}

/// Read a destination the way it is handed to ssh. An `ssh://` URI is
/// taken apart here and given to ssh as `-p <port> [user@]host`: OpenSSH
/// itself refuses an IPv6 address in a URI (`ssh://[::1]:2222`), and reads
/// `ssh://h:22:33` as host `h`, port `22:33`, which it refuses too, so a
/// destination that passed `check` failed every rollout.
pub fn parse_destination(dest: &str) -> Result<Destination> {
    let bad = |why: &str| {
        Err(Error::usage(format!("{dest:?} is not an ssh destination: {why}")).hint(
            "write hosts as user@host, host, or ssh://user@host:port (options go in fleet.ssh_options)",
        ))
    };
    if dest.starts_with('-') {
        return bad("it starts with '-', so ssh would read it as an option");
    }
    let (rest, uri) = match dest.strip_prefix("ssh://") {
        Some(rest) => (rest.strip_suffix('/').unwrap_or(rest), true),
        None => (dest, false),
    };
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((user, hostport)) => (Some(user), hostport),
        None => (None, rest),
    };
    if let Some(user) = user
        && (user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return bad("the user name may hold only letters, digits, '.', '_' and '-'");
    }
    let is_v6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return bad("a '[' without its ']'");
        };
        if !is_v6(addr) {
            return bad("only an IPv6 address goes between '[' and ']'");
        }
        let port = match after {
            "" => None,
            p if uri && p.starts_with(':') => Some(&p[1..]),
            _ => return bad("only ':' and a port may follow ']' (in an ssh:// URI)"),
        };
        (addr, port)
    } else if is_v6(hostport) {
        // A bare IPv6 address: every ':' is part of it, there is no port.
        (hostport, None)
    } else if uri {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    } else {
        (hostport, None)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return bad("the port must be a number from 1 to 65535"),
        },
    };
    if host.is_empty() {
        return bad("the host name is empty");
    }
    if host.starts_with('-') {
        return bad("the host name starts with '-'");
    }
    if !is_v6(host)
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        return bad(
            "the host name may hold only letters, digits, '.', '-', '_' (or an IP address)",
        );
    }
    let target = match user {
        Some(user) => format!("{user}@{host}"),
        None => host.to_string(),
    };
    Ok(Destination { target, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        for good in [
            "web1",
            "deploy@web1",
            "deploy@web1.example.com",
            "ssh://deploy@web2:2222",
            "ssh://web2",
            "ssh://root@127.0.0.1:2201",
            "10.0.0.7",
            "ssh://[::1]:22",
            "::1",
            "deploy@[fe80::1]",
        ] {
            check_destination(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // What ssh is given: OpenSSH refuses an IPv6 address in a URI, so
        // the port goes with -p.
        let d = parse_destination("ssh://deploy@[::1]:2222").unwrap();
        assert_eq!(d.target, "deploy@::1");
        assert_eq!(d.port, Some(2222));
        let d = parse_destination("ssh://web2").unwrap();
        assert_eq!((d.target.as_str(), d.port), ("web2", None));
        for bad in [
            "",
            "-oProxyCommand=touch /tmp/x",
            "deploy@-oProxyCommand=x",
            "web 1",
            "web1;reboot",
            "$(id)",
            "ssh://web1:port",
            "ssh://web1:0",
            "ssh://h:22:33",
            "ssh://[web1]:22",
            "ssh://[::1",
            "h:22",
            "@web1",
            "us er@web1",
        ] {
            let e = check_destination(bad).unwrap_err();
            assert!(e.message.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
