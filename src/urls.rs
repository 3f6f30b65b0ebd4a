//! URLs fit to print.

/// `url` fit to print: the password (or token) of a `user:pass@` part is
/// replaced by `***`, so progress lines, `remote:` lines, logs and errors
/// never carry it.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        // `user:password@` keeps the user; a lone `token@` is all secret.
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:***{}{tail}", &authority[at..]),
            None => format!("{scheme}***{}{tail}", &authority[at..]),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        for (url, shown) in [
            ("http://127.0.0.1:3000/up", "http://127.0.0.1:3000/up"),
            ("http://u:p@h:1/up?x=@", "http://u:***@h:1/up?x=@"),
            ("http://token@h/", "http://***@h/"),
            ("http://u:p:q@r@h", "http://u:***@h"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
