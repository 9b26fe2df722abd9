//! The tests' entry builders and read context, in one place: a test that writes entries builds
//! them here, and checks what it reads back against the same builder.
//!
//! - [`ctx`]: the `GetEntriesContext` the tests read with.
//! - Terms: [`term_of`] (a new term every [`TERM_SPAN`] entries, so `term(i)` is not constant
//!   over a long log) and [`term_every`] (another span, for a short log).
//! - Entries derived from their index and term, to write and read back:
//!   - [`entry`]: every entry type, empty and non-empty data, some contexts, bytes that depend on
//!     index and term; [`entry_at`] is it with the term [`term_of`], and [`alt_entry_at`] a
//!     different entry for the same index (to tell a rewritten slot from the old one);
//!   - [`entry_in_group`]: the payload names group, index and term, so an entry of one group
//!     read in another differs;
//!   - [`text_entry`]: `Normal` with a short text (logs that raft-rs applies);
//!   - [`command_entry`]: what an operator's tools print (text commands, a conf change, binary
//!     data with a context), asserted line by line by tests/cli.rs;
//!   - [`marked_entry`]: data and contexts that carry [`MARKER`], a plaintext to search the files
//!     for (tests/encryption.rs).
//! - Entries whose bytes the test chooses: [`entry_with_data`], [`filled_entry`] and
//!   [`filled_entry_with_context`].
//!
//! The rules below (which index gets which type, which has a context, empty data) are what the
//! tests' comments refer to ("98 % 7 == 0: the last entry carries a context"): change them and
//! those tests no longer check what they say.
//!
//! Included with `#[path = "common/entries.rs"] mod entries;` (and by tests/common/fuzz/mod.rs
//! and tests/common/engine_ops.rs for their own use); each test uses part of it. It uses only
//! `raft` and `bytes`, which the cargo-fuzz crate (fuzz/) has too.
#![allow(dead_code)]

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};
use raft::GetEntriesContext;

/// The context every test read passes (no async fetch).
pub fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

// ---------------------------------------------------------------------------------------------
// terms
// ---------------------------------------------------------------------------------------------

/// Entries per term in [`term_of`].
pub const TERM_SPAN: u64 = 10_000;

/// The term of `index` in the tests' logs: 1 up to 9,999, then one more every 10,000 entries.
pub fn term_of(index: u64) -> u64 {
    term_every(index, TERM_SPAN)
}

/// The term of `index` in a log whose term rises every `span` entries: `1 + index / span`.
pub fn term_every(index: u64, span: u64) -> u64 {
    1 + index / span
}

// ---------------------------------------------------------------------------------------------
// entries derived from index and term
// ---------------------------------------------------------------------------------------------

/// A deterministic entry whose every field depends on `index` (and its bytes on `term` too):
///
/// - type: `EntryConfChange` when `index % 10 == 3`, `EntryConfChangeV2` when `index % 10 == 7`,
///   `EntryNormal` otherwise;
/// - data: empty when `index % 11 == 0`, otherwise `8 + index % 40` bytes (8..=47);
/// - context: `ctx-<index>-<term>` when `index % 7 == 0`, empty otherwise.
pub fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.entry_type = match index % 10 {
        3 => EntryType::EntryConfChange,
        7 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    };
    let len = if index.is_multiple_of(11) {
        0
    } else {
        8 + (index % 40) as usize
    };
    let seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.wrapping_mul(0xC2B2_AE3D);
    e.data = Bytes::from(
        (0..len)
            .map(|k| (seed >> ((k % 8) * 8)) as u8 ^ (k as u8).wrapping_mul(31))
            .collect::<Vec<u8>>(),
    );
    if index.is_multiple_of(7) {
        e.context = Bytes::from(format!("ctx-{index}-{term}"));
    }
    e
}

/// [`entry`] at `index` with the term [`term_of`]`(index)`: the tests' standard log, a function
/// of the index alone (to pass where a `fn(u64) -> Entry` is wanted).
pub fn entry_at(index: u64) -> Entry {
    entry(index, term_of(index))
}

/// A different entry for the same index as [`entry_at`]: a term 100 higher, `alt-<index>` as
/// data, `alt-ctx` as context when `index % 3 == 0`. Written after a cut, it tells a rewritten
/// slot from a resurrected old one.
pub fn alt_entry_at(index: u64) -> Entry {
    let mut e = entry_with_data(index, term_of(index) + 100, format!("alt-{index}"));
    if index.is_multiple_of(3) {
        e.context = Bytes::from_static(b"alt-ctx");
    }
    e
}

/// An entry of group `group`: data `g<group>/i<index>/t<term>/` then filler derived from the
/// three (0..=63 bytes; 6,000 for about one entry in 37); context `c<group>/<index>` when
/// `index % 5 == 0`.
pub fn entry_in_group(index: u64, term: u64, group: u64) -> Entry {
    let mut v = format!("g{group}/i{index}/t{term}/").into_bytes();
    let h = mix(group << 40 ^ index ^ term << 20);
    let extra = if h.is_multiple_of(37) {
        6_000
    } else {
        (h % 64) as usize
    };
    v.extend((0..extra).map(|k| (h >> (k % 8 * 8)) as u8 ^ k as u8));
    let mut e = entry_with_data(index, term, v);
    if index.is_multiple_of(5) {
        e.context = Bytes::from(format!("c{group}/{index}"));
    }
    e
}

/// An `EntryNormal` with the text `entry <index>` as data and no context.
pub fn text_entry(index: u64, term: u64) -> Entry {
    entry_with_data(index, term, format!("entry {index}"))
}

/// `ConfChange { change_type: AddLearnerNode, node_id: 4 }` as protobuf encodes it (field 2,
/// varint 2; field 3, varint 4). Spelled out so that this file needs no protobuf crate; the CLI
/// decodes it (tests/cli.rs checks `conf_change="AddLearnerNode 4"`).
const ADD_LEARNER_4: [u8; 4] = [0x10, 0x02, 0x18, 0x04];

/// An application's log as the operator tools show it: at every index ending in 003 a conf
/// change (`EntryConfChange`, `AddLearnerNode 4`), at every index ending in 007 binary data
/// `00 01 02 fe ff` with the context `ctx`, elsewhere the text `put user:<index>
/// visits=<index * 7>`.
pub fn command_entry(index: u64, term: u64) -> Entry {
    match index % 1000 {
        3 => {
            let mut e = entry_with_data(index, term, ADD_LEARNER_4.to_vec());
            e.set_entry_type(EntryType::EntryConfChange);
            e
        }
        7 => {
            let mut e = entry_with_data(index, term, vec![0u8, 1, 2, 0xfe, 0xff]);
            e.context = Bytes::from_static(b"ctx");
            e
        }
        _ => entry_with_data(
            index,
            term,
            format!("put user:{index} visits={}", index * 7),
        ),
    }
}

/// A plaintext that [`marked_entry`] puts in every entry's data and in its contexts.
pub const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";

/// An entry carrying [`MARKER`]: data `MARKER ‖ index (u64 LE) ‖ term (u64 LE)` (the same length
/// for every entry); type `EntryConfChange` when `index % 3 == 2`, `EntryNormal` otherwise;
/// context `ctx-` ‖ `MARKER` when `index % 4 == 0`.
pub fn marked_entry(index: u64, term: u64) -> Entry {
    let mut e = entry_with_data(
        index,
        term,
        [MARKER, &index.to_le_bytes()[..], &term.to_le_bytes()[..]].concat(),
    );
    if index % 3 == 2 {
        e.set_entry_type(EntryType::EntryConfChange);
    }
    if index.is_multiple_of(4) {
        e.context = Bytes::from([b"ctx-".as_slice(), MARKER].concat());
    }
    e
}

// ---------------------------------------------------------------------------------------------
// entries whose bytes the test chooses
// ---------------------------------------------------------------------------------------------

/// An `EntryNormal` with `data` and no context.
pub fn entry_with_data(index: u64, term: u64, data: impl Into<Bytes>) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = data.into();
    e
}

/// An `EntryNormal` whose data is `len` bytes of `fill`, with no context: payloads of a chosen
/// size, and a chosen byte to tell one write from another.
pub fn filled_entry(index: u64, term: u64, fill: u8, len: usize) -> Entry {
    entry_with_data(index, term, vec![fill; len])
}

/// [`filled_entry`], and when `index % 3 == 0` a context too: 7 bytes of `!fill`.
pub fn filled_entry_with_context(index: u64, term: u64, fill: u8, len: usize) -> Entry {
    let mut e = filled_entry(index, term, fill, len);
    if index.is_multiple_of(3) {
        e.context = Bytes::from(vec![fill ^ 0xff; 7]);
    }
    e
}

/// splitmix64: the filler of [`entry_in_group`].
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
