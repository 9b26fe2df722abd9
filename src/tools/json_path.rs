//! Paths in the tools' reports as JSON: shown lossily, each byte sequence that is not UTF-8 as
//! U+FFFD (as `Path::display` shows it in the text reports), so that a report serializes
//! whatever the names on disk are; serde's own `Path` impl fails on them, midway through a
//! document. For `#[serde(serialize_with = "crate::tools::json_path::lossy")]` on a field
//! holding a path, an optional path or a list of paths.

use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// Serializes `value`'s paths lossily.
pub(crate) fn lossy<T: Paths + ?Sized, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    value.serialize_lossy(s)
}

/// A field that holds paths.
pub(crate) trait Paths {
    fn serialize_lossy<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
}

impl Paths for Path {
    fn serialize_lossy<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string_lossy())
    }
}

impl Paths for PathBuf {
    fn serialize_lossy<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_path().serialize_lossy(s)
    }
}

impl<T: Paths> Paths for Option<T> {
    fn serialize_lossy<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(p) => s.serialize_some(&Lossy(p)),
            None => s.serialize_none(),
        }
    }
}

impl<T: Paths> Paths for Vec<T> {
    fn serialize_lossy<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Lossy))
    }
}

/// One element, for `serialize_some` and `collect_seq`.
struct Lossy<'a, T: ?Sized>(&'a T);

impl<T: Paths + ?Sized> Serialize for Lossy<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_lossy(s)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[derive(Serialize)]
    struct Report {
        #[serde(serialize_with = "lossy")]
        dir: PathBuf,
        #[serde(serialize_with = "lossy")]
        file: Option<PathBuf>,
        #[serde(serialize_with = "lossy")]
        none: Option<PathBuf>,
        #[serde(serialize_with = "lossy")]
        files: Vec<PathBuf>,
    }

    #[test]
    fn a_path_that_is_not_utf8_is_shown_lossily() {
        let odd = PathBuf::from(OsStr::from_bytes(b"/x/st\xffore"));
        let r = Report {
            dir: odd.clone(),
            file: Some(odd.join("a")),
            none: None,
            files: vec![odd.clone(), PathBuf::from("/plain")],
        };
        assert!(
            serde_json::to_string(&odd).is_err(),
            "serde's own impl refuses it"
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"dir":"/x/st�ore","file":"/x/st�ore/a","none":null,"files":["/x/st�ore","/plain"]}"#
        );
    }
}
