//! What a host unpacks of the release tar the controller sends.
//!
//! The agent often runs as root, and GNU tar run as root restores what the
//! archive says: a setuid or setgid bit from the controller's build (made
//! by any user there, or by a dependency's install script) becomes a
//! root-owned setuid program in the release, and a device entry becomes a
//! device node. So the stream is read here (the `tar` crate only parses)
//! and passed on to `tar -x` with the setuid and setgid bits cleared and
//! without devices and fifos, which no release needs; everything else
//! (files, directories, links, long names) passes as it was. What was
//! changed is returned, for the host to say so.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use tar::EntryType;

/// What the filter changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Entries whose setuid or setgid bit was cleared.
    pub cleared: Vec<PathBuf>,
    /// Devices and fifos left out.
    pub skipped: Vec<PathBuf>,
}

/// Copy the tar on `input` to `output`, entry by entry, without setuid or
/// setgid bits, devices or fifos.
pub fn filter(input: impl Read, output: impl Write) -> io::Result<Filtered> {
    let mut archive = tar::Archive::new(input);
    let mut builder = tar::Builder::new(output);
    let mut filtered = Filtered::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path()?.into_owned();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                filtered.skipped.push(path);
                continue;
            }
            // Read by the parser into the entries they describe.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            _ => {}
        }
        let mut header = entry.header().clone();
        let mode = header.mode()?;
        if mode & 0o6000 != 0 {
            header.set_mode(mode & !0o6000);
            filtered.cleared.push(path.clone());
        }
        match kind {
            EntryType::Symlink | EntryType::Link => {
                let target = entry.link_name()?.map(|t| t.into_owned()).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the link {} has no target", path.display()),
                    )
                })?;
                builder.append_link(&mut header, &path, &target)?;
            }
            _ => builder.append_data(&mut header, &path, &mut entry)?,
        }
    }
    builder.into_inner()?.flush()?;
    Ok(filtered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h
    }

    #[test]
    fn setuid_bits_devices_and_fifos_do_not_pass_the_rest_does() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Directory, 0o2755, 0), "bin", &[][..])
            .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o4755, 2),
            "bin/su",
            &b"x\n"[..],
        )
        .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o644, 3),
            &long,
            &b"abc"[..],
        )
        .unwrap();
        b.append_data(&mut header(EntryType::Char, 0o666, 0), "null", &[][..])
            .unwrap();
        b.append_data(&mut header(EntryType::Fifo, 0o644, 0), "pipe", &[][..])
            .unwrap();
        b.append_link(&mut header(EntryType::Symlink, 0o777, 0), "link", "bin/su")
            .unwrap();
        let tar = b.into_inner().unwrap();
        let mut out = Vec::new();
        let filtered = filter(&tar[..], &mut out).unwrap();
        assert_eq!(
            filtered.cleared,
            [PathBuf::from("bin"), PathBuf::from("bin/su")]
        );
        assert_eq!(
            filtered.skipped,
            [PathBuf::from("null"), PathBuf::from("pipe")]
        );
        let mut got = Vec::new();
        for entry in tar::Archive::new(&out[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            got.push((
                entry.path().unwrap().display().to_string(),
                entry.header().mode().unwrap(),
                data,
                entry.link_name().unwrap().map(|l| l.display().to_string()),
            ));
        }
        assert_eq!(
            got,
            [
                ("bin".to_string(), 0o755, String::new(), None),
                ("bin/su".to_string(), 0o755, "x\n".to_string(), None),
                (long.clone(), 0o644, "abc".to_string(), None),
                (
                    "link".to_string(),
                    0o777,
                    String::new(),
                    Some("bin/su".to_string())
                ),
            ]
        );
    }
}
