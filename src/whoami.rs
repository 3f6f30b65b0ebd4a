//! Who is running shipit, for history and the lock holder line.

pub fn user() -> String {
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
        return u.name;
    }
    std::env::var("USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()))
}

pub fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}
