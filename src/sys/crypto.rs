//! Encryption at rest: AES-256-GCM (RustCrypto), authenticated, with a fresh random nonce for
//! every sealed message.
//!
//! Owns: the cipher, the sealed-message layout (`nonce[12] ‖ ciphertext ‖ tag[16]`) and the
//! rule that a nonce is never reused: every seal draws 96 random bits from the OS, so rewriting
//! a region (a conflicting append, a recovered tail, a meta copy) never repeats a nonce, unlike
//! a nonce derived from a position. Each message is bound to where it belongs by associated data
//! (the entry's index, term and type; the meta copy's sequence number; the snapshot chunk's
//! number), so ciphertext moved elsewhere fails to open. Must never: return plaintext whose tag
//! failed, or seal without a fresh nonce.

use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// Bytes a sealed message adds to its plaintext: nonce and tag.
pub(crate) const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// An AES-256-GCM key, ready to seal and open.
#[derive(Clone)]
pub(crate) struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM, key hidden)")
    }
}

impl Cipher {
    pub(crate) fn new(key: &[u8; 32]) -> Cipher {
        Cipher {
            aead: Aes256Gcm::new(key.into()),
        }
    }

    /// Seals `plaintext` (given in parts, sealed as their concatenation) under a fresh nonce:
    /// returns `nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[&[u8]]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let len: usize = plaintext.iter().map(|p| p.len()).sum();
        // One buffer: the nonce, then the plaintext encrypted in place, then the tag.
        let mut out = Vec::with_capacity(OVERHEAD + len);
        out.extend_from_slice(&nonce);
        for p in plaintext {
            out.extend_from_slice(p);
        }
        // Encryption fails only for messages beyond GCM's limit (64 GiB); entries are < 4 GiB
        // and snapshot chunks are small, so the fallback (the nonce alone) is never taken, and
        // if it were, the result would fail to open (too short) rather than leak anything.
        match self
            .aead
            .encrypt_in_place_detached(&nonce, aad, &mut out[NONCE_LEN..])
        {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => out.truncate(NONCE_LEN),
        }
        out
    }

    /// Opens a sealed message; `None` when it is too short, was altered, was sealed under
    /// other associated data, or under another key.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.aead
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
    }

    /// Whether a sealed message opens, as [`Cipher::open`] would, with its plaintext discarded:
    /// the check `verify` makes of every sealed payload. `scratch` holds the ciphertext while it
    /// is checked (pass the same buffer for every message, to spare an allocation each); it is
    /// left empty.
    pub(crate) fn authenticates(&self, aad: &[u8], sealed: &[u8], scratch: &mut Vec<u8>) -> bool {
        if sealed.len() < OVERHEAD {
            return false;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        scratch.clear();
        scratch.extend_from_slice(ct);
        let ok = self
            .aead
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, scratch, Tag::from_slice(tag))
            .is_ok();
        scratch.clear();
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let c = Cipher::new(&[7; 32]);
        let s = c.seal(b"aad", &[b"hello ", b"world"]);
        assert_eq!(s.len(), 11 + OVERHEAD);
        assert_eq!(c.open(b"aad", &s).as_deref(), Some(&b"hello world"[..]));
        assert_eq!(c.open(b"other", &s), None);
        let mut t = s.clone();
        t[NONCE_LEN] ^= 1;
        assert_eq!(c.open(b"aad", &t), None);
        assert_eq!(Cipher::new(&[8; 32]).open(b"aad", &s), None);
        // authenticates() agrees with open(), the scratch buffer reused and left empty.
        let mut scratch = Vec::new();
        assert!(c.authenticates(b"aad", &s, &mut scratch));
        assert!(scratch.is_empty());
        assert!(!c.authenticates(b"other", &s, &mut scratch));
        assert!(!c.authenticates(b"aad", &t, &mut scratch));
        assert!(!c.authenticates(b"aad", &s[..OVERHEAD - 1], &mut scratch));
        assert!(!Cipher::new(&[8; 32]).authenticates(b"aad", &s, &mut scratch));
        // A fresh nonce every time: the same plaintext never seals the same way twice.
        assert_ne!(c.seal(b"aad", &[b"x"]), c.seal(b"aad", &[b"x"]));
    }
}
