//! `@NAME@` placeholders in the bundled templates (the config, the pm2
//! files, the nginx sites, the systemd units, the git hook), filled in one
//! pass.

/// Replace each `@NAME@` of `values` in `text`, in one pass: a value is
/// never searched for placeholders again, so a value that contains one
/// (a path named `x@BRANCH@`) stays as it is.
pub fn fill(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let hit = values.iter().find(|(name, _)| {
            rest.get(1..).is_some_and(|r| {
                r.starts_with(name) && r.get(name.len()..).is_some_and(|r| r.starts_with('@'))
            })
        });
        match hit {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len() + 2..];
            }
            None => {
                out.push('@');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_one_pass() {
        let values = [("A", "@B@"), ("B", "x")];
        assert_eq!(fill("@A@ @B@ @C@ a@b", &values), "@B@ x @C@ a@b");
        assert_eq!(fill("@A", &values), "@A");
        assert_eq!(fill("é@B@é", &values), "éxé");
    }
}
