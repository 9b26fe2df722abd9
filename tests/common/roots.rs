//! A root (an engine's, or a `DiskStorage` directory) copied as a kill leaves it, for the tests
//! that damage or reopen a copy (included with `#[path]` by tests/engine.rs,
//! tests/engine_power_loss.rs, tests/engine_sigkill.rs, tests/engine_damage.rs,
//! tests/cli_engine.rs, tests/cli.rs and tests/damage.rs).

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

/// Copies the root at `from` into `to` as a kill leaves it: every file as the page cache holds
/// it, the lock file aside.
///
/// The engine may be open on `from`, idle but for its journal thread, which may turn a spare
/// into the next (blank) segment meanwhile: a file listed and then gone is skipped. A root
/// without that spare, or without that blank segment, is one a kill leaves too (before the
/// spare was kept; before the segment was prepared); every other file stays.
pub fn kill_image(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the image");
    for ent in fs::read_dir(from).expect("read the root") {
        let ent = ent.expect("an entry");
        let target = to.join(ent.file_name());
        if ent.file_type().expect("its type").is_dir() {
            kill_image(&ent.path(), &target);
        } else if ent.file_name() != "LOCK" {
            match fs::copy(ent.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let _ = fs::remove_file(&target);
                }
                Err(e) => panic!("copy {}: {e}", ent.path().display()),
            }
        }
    }
}
