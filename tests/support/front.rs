//! nginx in front of a scenario: on 127.0.0.1, with its own prefix, config,
//! pid file and logs in the test's directory; stopped by pid when dropped
//! (SIGQUIT, then SIGKILL after 10 s), its error log kept in `logs_to`.
//! Shared by the end-to-end and fleet suites.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Front {
    child: Child,
    prefix: PathBuf,
    port: u16,
    /// Where the error log is kept after the run, for a post-mortem.
    logs_to: PathBuf,
}

impl Front {
    /// Run `nginx` listening where `http` (the inside of its http block)
    /// says, on `port`.
    pub fn start(nginx: &Path, prefix: &Path, port: u16, logs_to: PathBuf, http: &str) -> Front {
        fs::create_dir_all(prefix.join("logs")).unwrap();
        let p = prefix.display();
        // As root, nginx's workers run as another user, as in production:
        // the user the build defaults to, said out loud.
        let user = if nix::unistd::geteuid().is_root() {
            "user nobody nogroup;\n"
        } else {
            ""
        };
        fs::write(
            prefix.join("nginx.conf"),
            format!(
                "{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
                   client_body_temp_path {p}/tmp-body;\n  proxy_temp_path {p}/tmp-proxy;\n\
                   fastcgi_temp_path {p}/tmp-fcgi;\n  uwsgi_temp_path {p}/tmp-uwsgi;\n  scgi_temp_path {p}/tmp-scgi;\n\
                   {http}}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Front {
            child,
            prefix: prefix.to_path_buf(),
            port,
            logs_to,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The release serving `/healthz` through nginx, asked `n` times: all
    /// must agree.
    #[allow(dead_code)]
    pub fn served_release(&self, n: usize) -> Option<String> {
        let mut seen = self.answers(n);
        seen.dedup();
        match seen.as_slice() {
            [one] if !one.contains(' ') => Some(one.clone()),
            _ => None,
        }
    }

    /// What `/healthz` through nginx answers, asked `n` times: the release
    /// each answer names, or what came instead (`status 502`, `error ...`).
    #[allow(dead_code)]
    pub fn answers(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match http_get(self.addr(), "/healthz") {
                None => "error (no answer)".to_string(),
                Some((200, body)) => body
                    .split("\"release\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map_or_else(
                        || format!("status 200 naming no release: {body}"),
                        str::to_string,
                    ),
                Some((status, _)) => format!("status {status}"),
            })
            .collect()
    }

    /// Wait (bounded) until nginx serves `release`.
    #[allow(dead_code)]
    pub fn wait_for(&self, release: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.served_release(1).as_deref() != Some(release) {
            assert!(Instant::now() < deadline, "nginx never served {release}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(dir) = self.logs_to.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::copy(self.prefix.join("logs/error.log"), &self.logs_to);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain GET with a fresh connection (for checks, not for load).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}
