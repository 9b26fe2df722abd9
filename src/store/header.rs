//! The checks every raftwal file header makes, written once and made in one order: magic,
//! checksum (before the version: a damaged version field is damage, not a newer format), format
//! version, flags this build knows, and the encryption flag against the key. Log file headers,
//! meta page copies, journal segment headers and snapshot file headers use it (their layouts:
//! docs/FORMAT.md).
//!
//! Owns: those checks and their errors. Must never: know a header's layout (each caller reads
//! its own fields and passes them in).

use std::path::Path;

use crate::error::{Error, Result};

/// One header being checked: its file, where it starts in the file, and what errors call it.
pub(crate) struct Checks<'a> {
    pub path: &'a Path,
    /// Offset of the header in its file.
    pub at: u64,
    /// The header, as errors name it (e.g. "log file header").
    pub name: &'static str,
}

impl Checks<'_> {
    /// The magic bytes found are the ones wanted.
    pub(crate) fn magic(&self, found: Option<&[u8]>, want: &[u8]) -> Result<()> {
        if found == Some(want) {
            return Ok(());
        }
        Err(Error::corrupt(
            self.path,
            self.at,
            format!("bad {} magic", self.name),
        ))
    }

    /// The checksum stored at `crc_at` (relative to the header) matches.
    pub(crate) fn checksum(&self, matches: bool, crc_at: usize) -> Result<()> {
        if matches {
            return Ok(());
        }
        Err(Error::corrupt(
            self.path,
            self.at + crc_at as u64,
            format!("{} checksum mismatch", self.name),
        ))
    }

    /// The format version is one this build reads.
    pub(crate) fn version(&self, found: u32, supported: u32) -> Result<()> {
        if found <= supported {
            return Ok(());
        }
        Err(Error::UnsupportedVersion {
            path: self.path.to_path_buf(),
            found,
            supported,
        })
    }

    /// Every flag set (field at `flags_at`) is one of `known`.
    pub(crate) fn flags(&self, flags: u32, known: u32, flags_at: usize) -> Result<()> {
        let unknown = flags & !known;
        if unknown == 0 {
            return Ok(());
        }
        Err(Error::corrupt(
            self.path,
            self.at + flags_at as u64,
            format!("{} has unknown flags {unknown:#x}", self.name),
        ))
    }

    /// The file is encrypted exactly when a key is given. `file`: what the file is called
    /// ("log file"); `opened`: what is opened with the key ("store", "engine").
    pub(crate) fn sealed(&self, sealed: bool, key: bool, file: &str, opened: &str) -> Result<()> {
        if sealed == key {
            return Ok(());
        }
        Err(Error::Encryption {
            path: self.path.to_path_buf(),
            reason: if key {
                format!("{file} is plaintext but the {opened} is opened with a key")
            } else {
                format!("{file} is encrypted but no key was given")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_file_the_place_and_what_is_wrong() {
        let path = Path::new("/x/00001.wal");
        let c = Checks {
            path,
            at: 960_000,
            name: "log file header",
        };
        assert!(c.magic(Some(b"RWALLOG\0"), b"RWALLOG\0").is_ok());
        for found in [Some(&b"RWALLOX\0"[..]), None] {
            match c.magic(found, b"RWALLOG\0") {
                Err(Error::Corrupt { offset, reason, .. }) => {
                    assert_eq!(
                        (offset, reason.as_str()),
                        (960_000, "bad log file header magic")
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        match c.checksum(false, 32) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 960_032),
            other => panic!("{other:?}"),
        }
        assert!(c.version(1, 1).is_ok());
        assert!(matches!(
            c.version(2, 1),
            Err(Error::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert!(c.flags(0b11, 0b11, 12).is_ok());
        match c.flags(0b1101, 0b1, 12) {
            Err(Error::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, 960_012);
                assert!(reason.ends_with("unknown flags 0xc"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(c.sealed(true, true, "log file", "store").is_ok());
        assert!(c.sealed(false, false, "log file", "store").is_ok());
        for (sealed, key, want) in [
            (
                false,
                true,
                "log file is plaintext but the store is opened with a key",
            ),
            (true, false, "log file is encrypted but no key was given"),
        ] {
            match c.sealed(sealed, key, "log file", "store") {
                Err(Error::Encryption { reason, .. }) => assert_eq!(reason, want),
                other => panic!("{other:?}"),
            }
        }
    }
}
