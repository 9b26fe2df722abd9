//! A root (an engine's, or a `DiskStorage` directory) copied as a kill leaves it, or copied
//! whole, for the tests that damage or reopen a copy (included with `#[path]` by tests/engine.rs,
//! tests/engine_power_loss.rs, tests/engine_sigkill.rs, tests/engine_damage.rs,
//! tests/cli_engine.rs, tests/cli.rs, tests/damage.rs and tests/log_files.rs; each uses part
//! of it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Copies the root at `from` into `to` as a kill leaves it: every file as the page cache holds
/// it, the lock file aside.
///
/// The engine may be open on `from`, idle but for its journal thread, which may turn a spare
/// into the next (blank) segment meanwhile: a file listed and then gone is skipped. A root
/// without that spare, or without that blank segment, is one a kill leaves too (before the
/// spare was kept; before the segment was prepared); every other file stays.
pub fn kill_image(from: &Path, to: &Path) {
    copy(from, to, true);
}

/// Copies the directory tree at `from` into `to`, every file (the lock file too), failing on
/// anything that does not copy: for a root or a directory nothing has open.
pub fn copy_tree(from: &Path, to: &Path) {
    copy(from, to, false);
}

/// Every file under `root` (the lock file aside), by path, with its bytes; each directory with
/// none: to tell that an open which failed changed nothing, byte for byte.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for ent in fs::read_dir(&dir).expect("read a directory") {
            let ent = ent.expect("an entry");
            if ent.file_type().expect("its type").is_dir() {
                out.insert(ent.path(), Vec::new());
                todo.push(ent.path());
            } else if ent.file_name() != "LOCK" {
                out.insert(ent.path(), fs::read(ent.path()).expect("read a file"));
            }
        }
    }
    out
}

/// The paths whose bytes differ between two [`tree`]s of a root, or that only one of them
/// holds: empty when nothing changed.
pub fn changed(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    let paths: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .cloned()
        .collect()
}

fn copy(from: &Path, to: &Path, live: bool) {
    fs::create_dir_all(to).expect("create the copy");
    for ent in fs::read_dir(from).expect("read the root") {
        let ent = ent.expect("an entry");
        let target = to.join(ent.file_name());
        if ent.file_type().expect("its type").is_dir() {
            copy(&ent.path(), &target, live);
        } else if !live || ent.file_name() != "LOCK" {
            match fs::copy(ent.path(), &target) {
                Ok(_) => {}
                Err(e) if live && e.kind() == ErrorKind::NotFound => {
                    let _ = fs::remove_file(&target);
                }
                Err(e) => panic!("copy {}: {e}", ent.path().display()),
            }
        }
    }
}
