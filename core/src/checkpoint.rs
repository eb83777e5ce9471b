//! Signed checkpoints of the audit log, in the C2SP formats that other transparency tooling reads:
//! a `tlog-checkpoint` body inside a `signed-note`, signed with Ed25519.
//!
//! Owns the text formats and the signature check. It never does I/O: key files and notes come in
//! and go out as strings, and the caller reads and writes them. It never prints a private key:
//! [`SigningKey`]'s `Debug` is redacted and no error carries key material.
//!
//! # Formats
//!
//! A checkpoint body (C2SP `tlog-checkpoint`) is three lines, each ending in `\n`:
//!
//! ```text
//! <origin>
//! <tree size, ASCII decimal, no leading zeros except "0">
//! <root hash, standard padded base64 of 32 bytes>
//! ```
//!
//! The spec allows extension lines after the third; we emit none and **reject** any on parse, so
//! every signed byte is one we understand (the spec itself calls them not recommended because
//! monitors cannot audit them).
//!
//! A signed note (C2SP `signed-note`) is the body, a blank line, then one or more signature lines
//! `— <key name> <base64(4-byte key ID ‖ signature)>\n` (EM DASH U+2014, space). For Ed25519 the
//! key ID is `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]` and the signature is
//! Ed25519 (RFC 8032) over the body bytes, final newline included, separating blank line not.
//! Keys travel as text in the formats of Go's `golang.org/x/mod/sumdb/note`:
//! verifier key `<name>+<hex key ID>+<base64(0x01 ‖ public key)>` and private key
//! `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ 32-byte seed)>`.
//!
//! # Strictness
//!
//! [`open`] follows the C2SP rules and Go's `note.Open`, and is stricter where noted:
//! - a note over [`MAX_NOTE_BYTES`] is refused before any parsing;
//! - the note is `&str`, so it is valid UTF-8 by construction: a caller holding bytes converts
//!   with [`std::str::from_utf8`] and treats a failure as a malformed note (the spec requires
//!   UTF-8);
//! - no ASCII control character but `\n` (so CR LF line endings are refused, with their own error);
//! - the text ends in `\n`, the signatures follow the *last* blank line, and every signature line
//!   is well formed, at most [`MAX_SIGNATURES`] of them (Go's limit);
//! - lines by other keys (other name or other key ID) are ignored, as the spec requires, but at
//!   least one line must be by the expected key and it must verify (`verify_strict`);
//! - stricter than Go: two lines by the expected key are refused rather than the first one used;
//!   base64 must be canonical; extension lines are refused;
//! - the body is only parsed after its signature verified, and its origin must equal the origin
//!   the caller expects.
//!
//! # Sources
//!
//! - C2SP `signed-note` (c2sp.org/signed-note, `signed-note.md` in github.com/C2SP/C2SP): note
//!   layout, em dash prefix, last-blank-line split, no control characters, key-name rules,
//!   `key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4]`, "verifiers MUST ignore
//!   signatures from unknown keys", "MUST accept at least up to 16 signatures".
//! - C2SP `tlog-checkpoint` (c2sp.org/tlog-checkpoint, `tlog-checkpoint.md`): origin non-empty,
//!   size "with no leading zeroes (unless the tree is empty…)", base64 root, optional non-empty
//!   extension lines, "clients MUST ignore unknown signatures … enables log key rotation".
//! - `golang.org/x/mod/sumdb/note` `note.go`: `keyHash`, `NewVerifier`, `NewSigner`,
//!   `GenerateKey` (vkey and skey text), `Open` (100-signature cap, base64 `StdEncoding`,
//!   signature at least 5 bytes) and its package-doc example keys and note, used as a test vector
//!   below.
//! - `github.com/transparency-dev/formats` `log/checkpoint.go` and `log/note_test.go`: the body
//!   layout as Go tooling marshals it, and a real `sum.golang.org` checkpoint and verifier key,
//!   used as a test vector below.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The largest note [`open`] reads, in bytes (1 MiB). Larger notes are refused unparsed.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// The most signature lines [`open`] reads in one note (the limit of Go's `note.Open`; the
/// C2SP spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// A log checkpoint: the log's identity, its size and the Merkle root at that size
/// (the body of a C2SP `tlog-checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, the first line (e.g. `gateway.example/audit`). Must be non-empty and
    /// hold no ASCII control character (see [`Checkpoint::validate`]).
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 9162 Merkle tree hash of the first `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// A checkpoint, after checking that `origin` can be written as a checkpoint's first line.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, CheckpointError> {
        let cp = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        };
        cp.validate()?;
        Ok(cp)
    }

    /// Checks that the origin is non-empty and holds no ASCII control character (a newline
    /// would change the body's lines; the note format forbids the rest).
    pub fn validate(&self) -> Result<(), CheckpointError> {
        validate_origin(&self.origin)
    }

    /// The checkpoint body: `<origin>\n<size>\n<base64 root>\n`, no extension lines.
    ///
    /// This is the text that is signed. It is a valid body only if [`Checkpoint::validate`]
    /// passes; [`sign`] checks that.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// Parses a checkpoint body strictly: exactly three lines each ending in `\n`, a non-empty
    /// origin without control characters, a decimal size without sign or leading zeros that fits
    /// in a `u64`, and a root that is canonical standard padded base64 of exactly 32 bytes.
    /// Extension lines are refused.
    ///
    /// This checks no signature: use [`open`] for a signed note.
    pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let text = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::BodyMissingFinalNewline)?;
        let lines: Vec<&str> = text.split('\n').collect();
        let (origin, size, root) = match lines.as_slice() {
            [origin, size, root] => (*origin, *size, *root),
            [_, _, _, extensions @ ..] => {
                return Err(CheckpointError::ExtensionLines {
                    count: extensions.len(),
                });
            }
            short => return Err(CheckpointError::TooFewBodyLines { found: short.len() }),
        };
        validate_origin(origin)?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size: parse_size(size)?,
            root: parse_root(root)?,
        })
    }
}

/// An Ed25519 log signing key with its key name. Never printed: `Debug` is redacted, and the
/// secret only leaves through [`SigningKey::to_private_text`]. The secret is zeroed on drop
/// (by `ed25519-dalek`).
#[derive(Clone)]
pub struct SigningKey {
    name: String,
    key_id: [u8; 4],
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A fresh key named `name`, its seed drawn from the operating system's random source.
    ///
    /// The name should be a schema-less URL (e.g. `gateway.example/audit`) and is usually the
    /// log's origin; it must be non-empty, without spaces, `+` or control characters.
    pub fn generate(name: &str) -> Result<SigningKey, CheckpointError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|_| CheckpointError::RandomSource)?;
        let key = SigningKey::from_seed_bytes(name, &seed);
        seed.fill(0);
        key
    }

    /// The key named `name` with the given 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed_bytes(name: &str, seed: &[u8; 32]) -> Result<SigningKey, CheckpointError> {
        validate_key_name(name)?;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(SigningKey {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Reads a private key file's text, `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>`
    /// (the `skey` format of Go's `sumdb/note`). Surrounding whitespace, such as a final
    /// newline, is ignored. The key ID must match the key derived from the seed.
    pub fn from_private_text(text: &str) -> Result<SigningKey, CheckpointError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(CheckpointError::MalformedPrivateKey)?;
        let (name, key_id, key) =
            split_key_text(rest).map_err(|_| CheckpointError::MalformedPrivateKey)?;
        validate_key_name(name)?;
        let seed = ed25519_seed_or_public(&key).map_err(|e| match e {
            KeyBytesError::Algorithm(algorithm) => {
                CheckpointError::UnsupportedAlgorithm { algorithm }
            }
            KeyBytesError::Length => CheckpointError::MalformedPrivateKey,
        })?;
        let signing = SigningKey::from_seed_bytes(name, &seed)?;
        if signing.key_id != key_id {
            return Err(CheckpointError::KeyIdMismatch {
                name: name.to_owned(),
            });
        }
        Ok(signing)
    }

    /// The private key file's text (see [`SigningKey::from_private_text`]), without a final
    /// newline. **Secret**: write it only to a file readable by the gateway alone.
    pub fn to_private_text(&self) -> String {
        let mut key = [0u8; 33];
        key[0] = ALGORITHM_ED25519;
        key[1..].copy_from_slice(self.key.as_bytes());
        let text = format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            BASE64.encode(key)
        );
        key.fill(0);
        text
    }

    /// The key name, as written in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID (the start of every signature by this key).
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The public half, for verifiers.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The verifier key text, `<name>+<hex key ID>+<base64(0x01 ‖ public key)>` (the `vkey`
    /// format of Go's `sumdb/note`), to hand to auditors and witnesses.
    pub fn verifier_key_string(&self) -> String {
        self.verifier_key().to_string()
    }
}

/// A log's public key and key name: what an auditor needs to check signed checkpoints.
///
/// Parsed from the `vkey` text `<name>+<hex key ID>+<base64(0x01 ‖ public key)>` with
/// [`VerifierKey::parse`] or [`str::parse`]; `Display` writes the same text.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses a verifier key text. Surrounding whitespace is ignored; otherwise the text must
    /// be exact: a valid key name, 8 hex digits that equal the key ID computed from the name
    /// and key, and the standard base64 of `0x01` followed by a valid 32-byte Ed25519 public
    /// key that is not of small order.
    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let (name, key_id, key) = split_key_text(text.trim())?;
        validate_key_name(name)?;
        let public = ed25519_seed_or_public(&key).map_err(|e| match e {
            KeyBytesError::Algorithm(algorithm) => {
                CheckpointError::UnsupportedAlgorithm { algorithm }
            }
            KeyBytesError::Length => CheckpointError::MalformedVerifierKey {
                reason: "the key data is not 0x01 followed by a 32-byte Ed25519 public key",
            },
        })?;
        if self::key_id(name, &public) != key_id {
            return Err(CheckpointError::KeyIdMismatch {
                name: name.to_owned(),
            });
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| {
            CheckpointError::MalformedVerifierKey {
                reason: "the public key is not a valid Ed25519 point",
            }
        })?;
        if key.is_weak() {
            return Err(CheckpointError::MalformedVerifierKey {
                reason: "the public key is of small order, so any signature would verify",
            });
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// The key name signature lines by this key carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID signatures by this key start with.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }
}

impl FromStr for VerifierKey {
    type Err = CheckpointError;

    fn from_str(text: &str) -> Result<VerifierKey, CheckpointError> {
        VerifierKey::parse(text)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = [0u8; 33];
        key[0] = ALGORITHM_ED25519;
        key[1..].copy_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            BASE64.encode(key)
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// Signs a checkpoint: its body, a blank line and one signature line by `key`, the whole
/// signed note as text ready to publish.
///
/// Fails only if the checkpoint's origin cannot be written (see [`Checkpoint::validate`]).
/// Ed25519 is deterministic, so the same checkpoint and key always give the same text.
pub fn sign(cp: &Checkpoint, key: &SigningKey) -> Result<String, CheckpointError> {
    cp.validate()?;
    Ok(sign_text(&cp.body(), key))
}

/// Verifies a signed checkpoint note with `key` and returns the checkpoint.
///
/// Succeeds only if the note is well formed (see the module documentation for every rule),
/// exactly one signature line carries `key`'s name and key ID and that signature verifies over
/// the body, the body is a strict checkpoint body, and its origin equals `expected_origin`.
/// Signature lines by other keys (cosigners, a rotated-out key) are ignored.
pub fn open(
    note: &str,
    key: &VerifierKey,
    expected_origin: &str,
) -> Result<Checkpoint, CheckpointError> {
    let body = open_text(note, key)?;
    let cp = Checkpoint::parse_body(body)?;
    if cp.origin != expected_origin {
        return Err(CheckpointError::OriginMismatch {
            expected: expected_origin.to_owned(),
            found: cp.origin,
        });
    }
    Ok(cp)
}

/// Why a checkpoint, note or key text was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The note is longer than [`MAX_NOTE_BYTES`]; it was not parsed.
    #[error(
        "the signed note is {size} bytes, over the {limit}-byte limit; it was not parsed (a \
         checkpoint note is a few hundred bytes: is this the right file?)"
    )]
    NoteTooLarge {
        /// The note's length in bytes.
        size: usize,
        /// The limit, [`MAX_NOTE_BYTES`].
        limit: usize,
    },
    /// A line of the note ends in CR LF; notes use bare LF line endings.
    #[error(
        "line {line} of the signed note has a carriage return (CR LF line endings); notes use \
         LF only: the file was probably converted by a Windows tool, restore the original bytes"
    )]
    CarriageReturn {
        /// The 1-based line number.
        line: usize,
    },
    /// The note holds an ASCII control character other than newline (the note format forbids
    /// them).
    #[error(
        "line {line} of the signed note has the control character 0x{byte:02x}; a note may hold \
         no control character but newline"
    )]
    ControlCharacter {
        /// The 1-based line number.
        line: usize,
        /// The control character.
        byte: u8,
    },
    /// The note does not end in a newline (truncated, or an editor stripped it).
    #[error(
        "the signed note does not end in a newline; it was truncated or its final newline was \
         stripped"
    )]
    MissingFinalNewline,
    /// The note has no blank line separating the body from the signatures.
    #[error(
        "the signed note has no blank line between the checkpoint and the signatures; it is \
         unsigned or was mangled"
    )]
    MissingBlankLine,
    /// Nothing follows the note's last blank line: the note is unsigned or has an extra
    /// newline at the end.
    #[error(
        "no signature line follows the last blank line of the note; it is unsigned or has an \
         extra newline at the end"
    )]
    NoSignatureLines,
    /// A line after the blank line is not `— <key name> <base64>` with a valid key name and
    /// canonical base64 of at least 5 bytes.
    #[error("line {line} of the signed note is not a valid signature line: {reason}")]
    MalformedSignatureLine {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("the signed note has more than {limit} signature lines; it was refused")]
    TooManySignatures {
        /// The limit, [`MAX_SIGNATURES`].
        limit: usize,
    },
    /// No signature line carries the expected key's name and key ID (other lines are ignored).
    #[error(
        "the note has no signature by key {name}+{key_id} (it has {other} signature(s) by other \
         keys); check that the verifier key is the log's current key, or that the note comes \
         from this log"
    )]
    NoSignatureByKey {
        /// The expected key's name.
        name: String,
        /// The expected key's ID, as 8 hex digits.
        key_id: String,
        /// How many signature lines by other keys the note has.
        other: usize,
    },
    /// More than one signature line carries the expected key's name and key ID.
    #[error(
        "the note has {count} signature lines by key {name}; a signer signs once, so the note was \
         tampered with"
    )]
    DuplicateSignature {
        /// The key's name.
        name: String,
        /// How many lines carry it.
        count: usize,
    },
    /// The signature by the expected key does not verify over the note's body: the body or
    /// signature was altered, or another key with the same name and ID signed it.
    #[error(
        "the signature by key {name} does not verify; the checkpoint or its signature was \
         altered"
    )]
    InvalidSignature {
        /// The key's name.
        name: String,
    },
    /// The body does not end in a newline.
    #[error("the checkpoint body does not end in a newline")]
    BodyMissingFinalNewline,
    /// The body has fewer than three lines.
    #[error(
        "the checkpoint body has {found} line(s); it needs origin, tree size and root hash lines"
    )]
    TooFewBodyLines {
        /// The number of lines found.
        found: usize,
    },
    /// The body has lines after the root hash. The C2SP format allows such extension lines;
    /// this log never writes them and refuses them, so nothing unauditable rides along.
    #[error(
        "the checkpoint body has {count} extension line(s) after the root hash; this log writes \
         none and accepts none"
    )]
    ExtensionLines {
        /// The number of extra lines.
        count: usize,
    },
    /// The origin (first line) is empty or holds a control character.
    #[error(
        "the checkpoint origin is empty or holds a control character; use a non-empty name such \
         as \"gateway.example/audit\""
    )]
    InvalidOrigin,
    /// The origin is not the one the caller expected: the note is from another log.
    #[error("the checkpoint is from log {found:?}, not the expected {expected:?}")]
    OriginMismatch {
        /// The origin the caller expected.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
    /// The tree size line is empty or holds something other than ASCII digits (a sign, a
    /// space, a letter).
    #[error("the tree size line is not a decimal number (digits 0-9 only, no sign or space)")]
    SizeNotDecimal,
    /// The tree size has a leading zero (only the empty tree's `0` may start with one).
    #[error("the tree size has a leading zero; sizes are written without them, except \"0\"")]
    SizeLeadingZero,
    /// The tree size does not fit in 64 bits.
    #[error("the tree size does not fit in 64 bits")]
    SizeOverflow,
    /// The root hash line is not canonical standard padded base64.
    #[error("the root hash line is not standard padded base64")]
    RootNotBase64,
    /// The root hash does not decode to 32 bytes.
    #[error("the root hash is {found} bytes; a SHA-256 root is 32")]
    RootLength {
        /// The decoded length.
        found: usize,
    },
    /// A key name is empty or holds a space, `+` or control character.
    #[error(
        "invalid key name: a key name must be non-empty, without spaces, '+' or control \
         characters (e.g. \"gateway.example/audit\")"
    )]
    InvalidKeyName,
    /// A verifier key text is not `<name>+<8 hex digits>+<base64>` or its key is unusable.
    #[error("malformed verifier key: {reason}; expected <name>+<8 hex digits>+<base64 key>")]
    MalformedVerifierKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A private key text is not `PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 ‖ seed)>`.
    /// (The message says no more, so as not to echo key material.)
    #[error(
        "malformed private key: expected PRIVATE+KEY+<name>+<8 hex digits>+<base64 seed>; \
         regenerate the key file if it was damaged"
    )]
    MalformedPrivateKey,
    /// A key text names a signature algorithm other than Ed25519 (`0x01`).
    #[error("key algorithm 0x{algorithm:02x} is not supported; only Ed25519 (0x01) is")]
    UnsupportedAlgorithm {
        /// The algorithm byte found.
        algorithm: u8,
    },
    /// A key text's key ID does not match the one computed from its name and key: the name,
    /// ID or key was altered.
    #[error(
        "the key ID in the key text for {name:?} does not match its name and key; the text was \
         altered or mixes two keys"
    )]
    KeyIdMismatch {
        /// The key name in the text.
        name: String,
    },
    /// The operating system's random source failed while generating a key.
    #[error("the operating system's random number source failed; no key was generated")]
    RandomSource,
}

/// The signature type byte of Ed25519 in key IDs and key texts (C2SP `signed-note`).
const ALGORITHM_ED25519: u8 = 0x01;
/// The prefix of a signature line: EM DASH (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Length of an Ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// The C2SP key ID of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`.
fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALGORITHM_ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signs `text` (which must end in `\n`) as a note with one signature line.
fn sign_text(text: &str, key: &SigningKey) -> String {
    let signature = key.key.sign(text.as_bytes());
    let mut sig = Vec::with_capacity(4 + SIGNATURE_LEN);
    sig.extend_from_slice(&key.key_id);
    sig.extend_from_slice(&signature.to_bytes());
    format!(
        "{text}\n{SIGNATURE_PREFIX}{} {}\n",
        key.name,
        BASE64.encode(sig)
    )
}

/// Checks a note's framing and its signature by `key`, and returns the signed text (ending in
/// `\n`). Does not interpret the text.
fn open_text<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::NoteTooLarge {
            size: note.len(),
            limit: MAX_NOTE_BYTES,
        });
    }
    check_characters(note)?;
    if !note.ends_with('\n') {
        return Err(CheckpointError::MissingFinalNewline);
    }
    let split = note
        .rfind("\n\n")
        .ok_or(CheckpointError::MissingBlankLine)?;
    let text = &note[..split + 1];
    let signatures = &note[split + 2..];
    if signatures.is_empty() {
        return Err(CheckpointError::NoSignatureLines);
    }
    let first_signature_line = text.matches('\n').count() + 2;

    let mut ours = Vec::new();
    let mut other = 0usize;
    // `signatures` ends in '\n', so the last piece of the split is empty.
    let lines = signatures
        .strip_suffix('\n')
        .unwrap_or(signatures)
        .split('\n');
    for (i, line) in lines.enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures {
                limit: MAX_SIGNATURES,
            });
        }
        let (name, id, sig) = parse_signature_line(line).map_err(|reason| {
            CheckpointError::MalformedSignatureLine {
                line: first_signature_line + i,
                reason,
            }
        })?;
        if name == key.name && id == key.key_id {
            ours.push(sig);
        } else {
            other += 1;
        }
    }
    let sig = match ours.as_slice() {
        [] => {
            return Err(CheckpointError::NoSignatureByKey {
                name: key.name.clone(),
                key_id: hex::encode(key.key_id),
                other,
            });
        }
        [sig] => sig,
        many => {
            return Err(CheckpointError::DuplicateSignature {
                name: key.name.clone(),
                count: many.len(),
            });
        }
    };
    let invalid = || CheckpointError::InvalidSignature {
        name: key.name.clone(),
    };
    let sig = <[u8; SIGNATURE_LEN]>::try_from(sig.as_slice()).map_err(|_| invalid())?;
    key.key
        .verify_strict(text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| invalid())?;
    Ok(text)
}

/// Refuses any ASCII control character but `\n`, naming CR separately.
fn check_characters(note: &str) -> Result<(), CheckpointError> {
    let mut line = 1;
    for byte in note.bytes() {
        match byte {
            b'\n' => line += 1,
            b'\r' => return Err(CheckpointError::CarriageReturn { line }),
            0..0x20 => return Err(CheckpointError::ControlCharacter { line, byte }),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a signature line into key name, key ID and signature bytes.
fn parse_signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), &'static str> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or("it does not start with an em dash (U+2014) and a space")?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or("there is no space between the key name and the signature")?;
    if !is_valid_key_name(name) {
        return Err("the key name is empty or holds a space, '+' or control character");
    }
    let raw = BASE64
        .decode(b64)
        .map_err(|_| "the signature is not standard padded base64")?;
    match raw.as_slice() {
        [a, b, c, d, sig @ ..] if !sig.is_empty() => Ok((name, [*a, *b, *c, *d], sig.to_vec())),
        _ => Err("the signature is shorter than a key ID and one byte"),
    }
}

/// Whether `name` is a valid key name: non-empty, no Unicode space, no `+`, no control
/// character.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn validate_key_name(name: &str) -> Result<(), CheckpointError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(CheckpointError::InvalidKeyName)
    }
}

fn validate_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() || origin.bytes().any(|b| b < 0x20) {
        Err(CheckpointError::InvalidOrigin)
    } else {
        Ok(())
    }
}

fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CheckpointError::SizeNotDecimal);
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(CheckpointError::SizeLeadingZero);
    }
    line.parse().map_err(|_| CheckpointError::SizeOverflow)
}

fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    let raw = BASE64
        .decode(line)
        .map_err(|_| CheckpointError::RootNotBase64)?;
    Hash::try_from(raw.as_slice()).map_err(|_| CheckpointError::RootLength { found: raw.len() })
}

/// Splits `<name>+<hex id>+<base64 key>` (the base64 may itself hold `+`).
fn split_key_text(text: &str) -> Result<(&str, [u8; 4], Vec<u8>), CheckpointError> {
    let malformed = |reason| CheckpointError::MalformedVerifierKey { reason };
    let (name, rest) = text
        .split_once('+')
        .ok_or(malformed("there is no '+' after the key name"))?;
    let (id_hex, key_b64) = rest
        .split_once('+')
        .ok_or(malformed("there is no '+' after the key ID"))?;
    let mut id = [0u8; 4];
    if id_hex.len() != 8 || hex::decode_to_slice(id_hex, &mut id).is_err() {
        return Err(malformed("the key ID is not 8 hex digits"));
    }
    let key = BASE64
        .decode(key_b64)
        .map_err(|_| malformed("the key data is not standard padded base64"))?;
    Ok((name, id, key))
}

/// Why the key bytes of a key text are unusable.
enum KeyBytesError {
    /// The first byte is not [`ALGORITHM_ED25519`].
    Algorithm(u8),
    /// Empty, or not 32 bytes after the algorithm byte.
    Length,
}

/// Checks `0x01 ‖ 32 bytes` and returns the 32 bytes.
fn ed25519_seed_or_public(key: &[u8]) -> Result<[u8; 32], KeyBytesError> {
    match key.split_first() {
        Some((&ALGORITHM_ED25519, rest)) => {
            <[u8; 32]>::try_from(rest).map_err(|_| KeyBytesError::Length)
        }
        Some((&algorithm, _)) => Err(KeyBytesError::Algorithm(algorithm)),
        None => Err(KeyBytesError::Length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    const ORIGIN: &str = "gateway.example/audit";

    fn key(name: &str, seed: u8) -> SigningKey {
        SigningKey::from_seed_bytes(name, &[seed; 32]).expect("valid test key name")
    }

    fn checkpoint(size: u64) -> Checkpoint {
        let leaves: Vec<Hash> = (0..size)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        Checkpoint::new(ORIGIN, size, merkle::root(&leaves)).expect("valid test origin")
    }

    fn signed(cp: &Checkpoint, key: &SigningKey) -> String {
        sign(cp, key).expect("valid test checkpoint")
    }

    /// A note whose body is `body` (any text), validly signed by `key`.
    fn signed_body(body: &str, key: &SigningKey) -> String {
        sign_text(body, key)
    }

    /// The signature line(s) of a note.
    fn signature_lines(note: &str) -> &str {
        let split = note.rfind("\n\n").expect("signed note");
        &note[split + 2..]
    }

    // ----- Known answers ------------------------------------------------------------------

    /// Fixed seed, fixed checkpoint → fixed note. Cross-checked when written against an
    /// independent implementation (Python `cryptography` Ed25519 + `hashlib` key ID).
    #[test]
    fn known_answer_signed_note() {
        let key = key(ORIGIN, 0x42);
        let cp = Checkpoint::new(ORIGIN, 7, merkle::EMPTY_ROOT).expect("valid");
        let note = signed(&cp, &key);
        assert_eq!(note, KAT_NOTE);
        assert_eq!(key.verifier_key_string(), KAT_VKEY);
        assert_eq!(key.to_private_text(), KAT_SKEY);
        let vk = VerifierKey::parse(KAT_VKEY).expect("vkey parses");
        assert_eq!(open(KAT_NOTE, &vk, ORIGIN).expect("opens"), cp);
    }

    const KAT_VKEY: &str =
        "gateway.example/audit+9518ef8f+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS";
    const KAT_SKEY: &str =
        "PRIVATE+KEY+gateway.example/audit+9518ef8f+AUJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC";
    const KAT_NOTE: &str = "gateway.example/audit\n\
        7\n\
        47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
        \n\
        \u{2014} gateway.example/audit lRjvjyyfiWw/PJ0iutrWHCqS+tqqgwKKWhIVV4+jxYFStuAvbUnf6fsiO/rflg9Rn8F8NbYCEq4RlVQJq54giuolegk=\n";

    /// The example in the package documentation of Go's `golang.org/x/mod/sumdb/note`: the
    /// same private key text must give the same verifier key and the same signed note.
    #[test]
    fn go_sumdb_note_example() {
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let signer = SigningKey::from_private_text(skey).expect("Go skey parses");
        assert_eq!(signer.name(), "PeterNeumann");
        assert_eq!(signer.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(signer.verifier_key_string(), vkey);
        assert_eq!(signer.to_private_text(), skey);
        assert_eq!(sign_text(text, &signer), note);
        let verifier = VerifierKey::parse(vkey).expect("Go vkey parses");
        assert_eq!(open_text(note, &verifier).expect("Go note opens"), text);
    }

    /// A real `sum.golang.org` checkpoint and its published verifier key (from
    /// transparency-dev/formats `log/note_test.go`). The key name differs from the origin,
    /// and the key's base64 holds `+`.
    #[test]
    fn go_sumdb_checkpoint_verifies() {
        let vkey = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
        let note = "go.sum database tree\n\
                    6476701\n\
                    mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\
                    \n\
                    \u{2014} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n";
        let vk: VerifierKey = vkey.parse().expect("sum.golang.org vkey parses");
        assert_eq!(vk.name(), "sum.golang.org");
        assert_eq!(vk.to_string(), vkey);
        let cp = open(note, &vk, "go.sum database tree").expect("real checkpoint verifies");
        assert_eq!(cp.size, 6_476_701);
        assert_eq!(
            BASE64.encode(cp.root),
            "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
        );
        assert!(matches!(
            open(note, &vk, "sum.golang.org"),
            Err(CheckpointError::OriginMismatch { .. })
        ));
    }

    // ----- Round trips --------------------------------------------------------------------

    #[test]
    fn round_trip_sizes() {
        let key = key(ORIGIN, 1);
        let vk = key.verifier_key();
        for size in [0, 1, 2, 7, 1000, u64::MAX] {
            let cp = Checkpoint::new(ORIGIN, size, [size as u8; 32]).expect("valid");
            let body = cp.body();
            assert_eq!(Checkpoint::parse_body(&body).expect("body parses"), cp);
            assert_eq!(open(&signed(&cp, &key), &vk, ORIGIN).expect("opens"), cp);
        }
    }

    #[test]
    fn body_layout() {
        let cp = Checkpoint::new(ORIGIN, 0, merkle::EMPTY_ROOT).expect("valid");
        assert_eq!(
            cp.body(),
            "gateway.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
    }

    #[test]
    fn key_texts_round_trip() {
        let key = SigningKey::generate(ORIGIN).expect("generate");
        let again = SigningKey::from_private_text(&format!("{}\n", key.to_private_text()))
            .expect("private text parses");
        assert_eq!(again.verifier_key_string(), key.verifier_key_string());
        let vk = VerifierKey::parse(&key.verifier_key_string()).expect("vkey parses");
        assert_eq!(vk, key.verifier_key());
        assert_eq!(vk.name(), ORIGIN);
        let cp = checkpoint(3);
        assert_eq!(open(&signed(&cp, &again), &vk, ORIGIN).expect("opens"), cp);
    }

    #[test]
    fn generated_keys_differ() {
        let a = SigningKey::generate(ORIGIN).expect("generate");
        let b = SigningKey::generate(ORIGIN).expect("generate");
        assert_ne!(a.verifier_key_string(), b.verifier_key_string());
    }

    #[test]
    fn signing_key_debug_is_redacted() {
        let key = key(ORIGIN, 9);
        let shown = format!("{key:?}");
        assert_eq!(shown, "SigningKey(<redacted>)");
        let secret = key.to_private_text();
        let seed_b64 = secret.rsplit('+').next().expect("has parts");
        assert!(!shown.contains(seed_b64));
    }

    // ----- Signature refusals -------------------------------------------------------------

    #[test]
    fn wrong_key_is_refused() {
        let cp = checkpoint(5);
        let note = signed(&cp, &key(ORIGIN, 1));
        let other = key(ORIGIN, 2).verifier_key();
        assert!(matches!(
            open(&note, &other, ORIGIN),
            Err(CheckpointError::NoSignatureByKey { other: 1, .. })
        ));
    }

    #[test]
    fn wrong_key_name_is_refused() {
        let cp = checkpoint(5);
        let note = signed(&cp, &key("someone.else/log", 1));
        let vk = key(ORIGIN, 1).verifier_key();
        assert!(matches!(
            open(&note, &vk, ORIGIN),
            Err(CheckpointError::NoSignatureByKey { .. })
        ));
    }

    /// A line with our name and key ID but a signature from another key (a forged line, or a
    /// key-ID collision) fails verification and rejects the note.
    #[test]
    fn forged_signature_with_our_key_id_is_refused() {
        let ours = key(ORIGIN, 1);
        let forger = key(ORIGIN, 2);
        let cp = checkpoint(5);
        let forged = signed(&cp, &forger);
        let mut raw = BASE64
            .decode(
                signature_lines(&forged)
                    .trim_end()
                    .rsplit(' ')
                    .next()
                    .expect("b64"),
            )
            .expect("base64");
        raw[..4].copy_from_slice(&ours.key_id());
        let note = format!("{}\n\u{2014} {ORIGIN} {}\n", cp.body(), BASE64.encode(raw));
        assert!(matches!(
            open(&note, &ours.verifier_key(), ORIGIN),
            Err(CheckpointError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn tampered_body_is_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key).replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn wrong_origin_is_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key);
        let err =
            open(&note, &key.verifier_key(), "gateway.example/other").expect_err("other origin");
        assert!(matches!(err, CheckpointError::OriginMismatch { .. }));
    }

    #[test]
    fn duplicate_signature_lines_are_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key);
        let twice = format!("{note}{}", signature_lines(&note));
        assert!(matches!(
            open(&twice, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::DuplicateSignature { count: 2, .. })
        ));
    }

    #[test]
    fn unknown_signature_lines_are_ignored() {
        let key = key(ORIGIN, 1);
        let cp = checkpoint(5);
        let witness = signed(&cp, &self::key("witness.example/w1", 3));
        let stranger = "\u{2014} stranger.example AAAAAAAAAAAAAAAA\n";
        // Others before and after ours, including a second line by the same unknown key.
        let note = format!(
            "{}\n{stranger}{}{}{}",
            cp.body(),
            signature_lines(&witness),
            signature_lines(&signed(&cp, &key)),
            stranger
        );
        assert_eq!(open(&note, &key.verifier_key(), ORIGIN).expect("opens"), cp);
    }

    #[test]
    fn only_unknown_signatures_is_refused() {
        let cp = checkpoint(5);
        let witness = signed(&cp, &key("witness.example/w1", 3));
        let vk = key(ORIGIN, 1).verifier_key();
        assert!(matches!(
            open(&witness, &vk, ORIGIN),
            Err(CheckpointError::NoSignatureByKey { other: 1, .. })
        ));
    }

    #[test]
    fn key_rotation_old_checkpoints_still_verify() {
        let old = key(ORIGIN, 1);
        let new = key(ORIGIN, 2);
        let old_cp = checkpoint(10);
        let new_cp = checkpoint(20);
        let old_note = signed(&old_cp, &old);
        // Old checkpoints keep verifying with the old verifier key.
        assert_eq!(
            open(&old_note, &old.verifier_key(), ORIGIN).expect("old key"),
            old_cp
        );
        assert!(open(&old_note, &new.verifier_key(), ORIGIN).is_err());
        // During the hand-over the log signs with both; either verifier key accepts.
        let both = format!(
            "{}{}",
            signed(&new_cp, &old),
            signature_lines(&signed(&new_cp, &new))
        );
        assert_eq!(
            open(&both, &old.verifier_key(), ORIGIN).expect("old"),
            new_cp
        );
        assert_eq!(
            open(&both, &new.verifier_key(), ORIGIN).expect("new"),
            new_cp
        );
    }

    #[test]
    fn malformed_signature_lines_are_refused() {
        let key = key(ORIGIN, 1);
        let vk = key.verifier_key();
        let body = checkpoint(5).body();
        let good = signature_lines(&signed(&checkpoint(5), &key)).to_owned();
        let b64 = good.trim_end().rsplit(' ').next().expect("b64").to_owned();
        for line in [
            format!("-- {ORIGIN} {b64}"),
            format!("\u{2014}{ORIGIN} {b64}"),
            format!("\u{2014} {ORIGIN}"),
            format!("\u{2014} {ORIGIN} {b64} "),
            format!("\u{2014} {ORIGIN}  {b64}"),
            format!("\u{2014} {ORIGIN}+x {b64}"),
            format!("\u{2014}  {b64}"),
            format!("\u{2014} {ORIGIN} {}", b64.trim_end_matches('=')),
            format!("\u{2014} {ORIGIN} AAAA"),
        ] {
            let note = format!("{body}\n{good}{line}\n");
            assert!(
                matches!(
                    open(&note, &vk, ORIGIN),
                    Err(CheckpointError::MalformedSignatureLine { line: 6, .. })
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn too_many_signature_lines_are_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key);
        let filler = "\u{2014} stranger.example AAAAAAAAAAAAAAAA\n";
        let at_limit = format!("{note}{}", filler.repeat(MAX_SIGNATURES - 1));
        assert!(open(&at_limit, &key.verifier_key(), ORIGIN).is_ok());
        let over = format!("{note}{}", filler.repeat(MAX_SIGNATURES));
        assert!(matches!(
            open(&over, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::TooManySignatures { .. })
        ));
    }

    // ----- Framing refusals ---------------------------------------------------------------

    #[test]
    fn missing_blank_line_is_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key).replacen("\n\n", "\n", 1);
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::MissingBlankLine)
        ));
    }

    #[test]
    fn missing_final_newline_is_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key);
        let note = note.strip_suffix('\n').expect("ends in newline");
        assert!(matches!(
            open(note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::MissingFinalNewline)
        ));
    }

    #[test]
    fn extra_final_newline_is_refused() {
        let key = key(ORIGIN, 1);
        let note = format!("{}\n", signed(&checkpoint(5), &key));
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::NoSignatureLines)
        ));
    }

    /// An extra blank line between body and signatures makes the signed text end in "\n\n",
    /// which is not what was signed.
    #[test]
    fn extra_blank_line_is_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key).replacen("\n\n", "\n\n\n", 1);
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn unsigned_note_is_refused() {
        let key = key(ORIGIN, 1);
        let note = format!("{}\n", checkpoint(5).body());
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::NoSignatureLines)
        ));
    }

    #[test]
    fn crlf_line_endings_are_refused() {
        let key = key(ORIGIN, 1);
        let note = signed(&checkpoint(5), &key).replace('\n', "\r\n");
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::CarriageReturn { line: 1 })
        ));
    }

    #[test]
    fn control_characters_are_refused() {
        let key = key(ORIGIN, 1);
        // Even when the signer signed them.
        let note = signed_body("gateway.example/audit\n5\n\tAAAA\n", &key);
        assert!(matches!(
            open(&note, &key.verifier_key(), ORIGIN),
            Err(CheckpointError::ControlCharacter {
                line: 3,
                byte: b'\t'
            })
        ));
    }

    #[test]
    fn note_over_size_limit_is_refused_before_parsing() {
        let key = key(ORIGIN, 1);
        let vk = key.verifier_key();
        // A valid note padded (with an over-long origin) to exactly the limit is accepted…
        let base = signed(&Checkpoint::new("a", 5, [0; 32]).expect("valid"), &key);
        let origin = "a".repeat(1 + MAX_NOTE_BYTES - base.len());
        let cp = Checkpoint::new(&origin, 5, [0; 32]).expect("valid");
        let at_limit = signed(&cp, &key);
        assert_eq!(at_limit.len(), MAX_NOTE_BYTES);
        assert_eq!(open(&at_limit, &vk, &origin).expect("at the limit"), cp);
        // …one byte more is refused by size, whatever the rest holds.
        let over = format!("{at_limit}x");
        assert!(matches!(
            open(&over, &vk, &origin),
            Err(CheckpointError::NoteTooLarge { size, limit: MAX_NOTE_BYTES })
                if size == MAX_NOTE_BYTES + 1
        ));
        let garbage = "\r".repeat(MAX_NOTE_BYTES + 1);
        assert!(matches!(
            open(&garbage, &vk, &origin),
            Err(CheckpointError::NoteTooLarge { .. })
        ));
    }

    // ----- Body refusals (validly signed, so only the body rules can refuse them) ---------

    fn open_signed_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let key = key(ORIGIN, 1);
        let note = signed_body(body, &key);
        open(&note, &key.verifier_key(), ORIGIN)
    }

    const ROOT_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn size_with_leading_zero_is_refused() {
        let body = format!("{ORIGIN}\n05\n{ROOT_B64}\n");
        assert!(matches!(
            open_signed_body(&body),
            Err(CheckpointError::SizeLeadingZero)
        ));
        let body = format!("{ORIGIN}\n00\n{ROOT_B64}\n");
        assert!(matches!(
            open_signed_body(&body),
            Err(CheckpointError::SizeLeadingZero)
        ));
    }

    #[test]
    fn size_zero_is_accepted() {
        let body = format!("{ORIGIN}\n0\n{ROOT_B64}\n");
        let cp = open_signed_body(&body).expect("empty tree");
        assert_eq!(cp.size, 0);
        assert_eq!(cp.root, merkle::EMPTY_ROOT);
    }

    #[test]
    fn non_decimal_size_is_refused() {
        for size in [
            "", "+5", "-5", " 5", "5 ", "0x5", "5a", "５", "1_000", "1e3",
        ] {
            let body = format!("{ORIGIN}\n{size}\n{ROOT_B64}\n");
            assert!(
                matches!(
                    open_signed_body(&body),
                    Err(CheckpointError::SizeNotDecimal)
                ),
                "{size:?}"
            );
        }
    }

    #[test]
    fn size_overflow_is_refused() {
        let max = format!("{ORIGIN}\n{}\n{ROOT_B64}\n", u64::MAX);
        assert_eq!(open_signed_body(&max).expect("u64::MAX").size, u64::MAX);
        let body = format!("{ORIGIN}\n18446744073709551616\n{ROOT_B64}\n");
        assert!(matches!(
            open_signed_body(&body),
            Err(CheckpointError::SizeOverflow)
        ));
    }

    #[test]
    fn root_of_wrong_length_is_refused() {
        for (root, found) in [
            (BASE64.encode([0u8; 31]), 31),
            (BASE64.encode([0u8; 33]), 33),
            (String::new(), 0),
        ] {
            let body = format!("{ORIGIN}\n5\n{root}\n");
            assert!(
                matches!(
                    open_signed_body(&body),
                    Err(CheckpointError::RootLength { found: f }) if f == found
                ),
                "{root:?}"
            );
        }
    }

    #[test]
    fn root_in_bad_base64_is_refused() {
        let url_safe = ROOT_B64.replace('+', "-").replace('/', "_");
        let unpadded = ROOT_B64.trim_end_matches('=').to_owned();
        // Same length, but the last character carries non-zero padding bits.
        let non_canonical = ROOT_B64.replacen("FU=", "FV=", 1);
        for root in [
            url_safe,
            unpadded,
            non_canonical,
            format!(" {ROOT_B64}"),
            "not base64!".to_owned(),
        ] {
            let body = format!("{ORIGIN}\n5\n{root}\n");
            assert!(
                matches!(open_signed_body(&body), Err(CheckpointError::RootNotBase64)),
                "{root:?}"
            );
        }
    }

    #[test]
    fn extension_lines_are_refused() {
        let body = format!("{ORIGIN}\n5\n{ROOT_B64}\nextension\n");
        assert!(matches!(
            open_signed_body(&body),
            Err(CheckpointError::ExtensionLines { count: 1 })
        ));
    }

    #[test]
    fn short_or_empty_origin_bodies_are_refused() {
        assert!(matches!(
            open_signed_body(&format!("{ORIGIN}\n5\n")),
            Err(CheckpointError::TooFewBodyLines { found: 2 })
        ));
        assert!(matches!(
            open_signed_body(&format!("\n5\n{ROOT_B64}\n")),
            Err(CheckpointError::InvalidOrigin)
        ));
        assert!(matches!(
            Checkpoint::parse_body(&format!("{ORIGIN}\n5\n{ROOT_B64}")),
            Err(CheckpointError::BodyMissingFinalNewline)
        ));
    }

    #[test]
    fn invalid_origins_cannot_be_signed() {
        let key = key(ORIGIN, 1);
        for origin in ["", "a\nb", "a\rb"] {
            let cp = Checkpoint {
                origin: origin.to_owned(),
                size: 1,
                root: [0; 32],
            };
            assert!(matches!(
                sign(&cp, &key),
                Err(CheckpointError::InvalidOrigin)
            ));
            assert!(Checkpoint::new(origin, 1, [0; 32]).is_err());
        }
    }

    // ----- Key text refusals --------------------------------------------------------------

    #[test]
    fn invalid_key_names_are_refused() {
        for name in ["", "a b", "a+b", "a\u{a0}b", "a\nb", "a\u{7f}b"] {
            assert!(
                matches!(
                    SigningKey::from_seed_bytes(name, &[1; 32]),
                    Err(CheckpointError::InvalidKeyName)
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn malformed_verifier_keys_are_refused() {
        let key = key(ORIGIN, 1);
        let vkey = key.verifier_key_string();
        let (name_id, b64) = vkey.rsplit_once('+').expect("three parts");
        let id = hex::encode(key.key_id());
        let public = key.verifier_key().key.to_bytes();
        let mut alg2 = vec![0x02];
        alg2.extend_from_slice(&public);
        let mut other_id = key.key_id();
        other_id[0] ^= 1;
        for (text, want) in [
            (String::new(), "malformed"),
            (ORIGIN.to_owned(), "malformed"),
            (format!("{ORIGIN}+{id}"), "malformed"),
            (format!("{ORIGIN}+{}+{b64}", &id[..7]), "malformed"),
            (format!("{ORIGIN}+zzzzzzzz+{b64}"), "malformed"),
            (format!("{name_id}+{}", &b64[..b64.len() - 1]), "malformed"),
            (format!("{name_id}+{}", b64.replace('/', "_")), "malformed"),
            (format!("{name_id}+{}", BASE64.encode(public)), "algorithm"),
            (format!("{name_id}+{}", BASE64.encode(&alg2)), "algorithm"),
            (format!("{name_id}+"), "malformed"),
            (
                format!("{ORIGIN}+{}+{b64}", hex::encode(other_id)),
                "key id",
            ),
            (format!("other.example+{id}+{b64}"), "key id"),
            (format!("+{id}+{b64}"), "name"),
        ] {
            let err = VerifierKey::parse(&text).expect_err(&text);
            let ok = match want {
                "malformed" => matches!(err, CheckpointError::MalformedVerifierKey { .. }),
                "algorithm" => matches!(err, CheckpointError::UnsupportedAlgorithm { .. }),
                "key id" => matches!(err, CheckpointError::KeyIdMismatch { .. }),
                _ => matches!(err, CheckpointError::InvalidKeyName),
            };
            assert!(ok, "{text:?}: {err:?}");
        }
    }

    #[test]
    fn small_order_verifier_key_is_refused() {
        // The identity point (y = 1): every "signature" with S = 0, R = identity verifies.
        let mut public = [0u8; 32];
        public[0] = 1;
        let mut key = vec![ALGORITHM_ED25519];
        key.extend_from_slice(&public);
        let text = format!(
            "weak.example+{}+{}",
            hex::encode(key_id("weak.example", &public)),
            BASE64.encode(&key)
        );
        assert!(matches!(
            VerifierKey::parse(&text),
            Err(CheckpointError::MalformedVerifierKey { .. })
        ));
    }

    #[test]
    fn malformed_private_keys_are_refused() {
        let key = key(ORIGIN, 1);
        let skey = key.to_private_text();
        let rest = skey.strip_prefix("PRIVATE+KEY+").expect("prefix");
        let mut other_id = key.key_id();
        other_id[0] ^= 1;
        let b64 = rest.rsplit('+').next().expect("parts");
        assert!(matches!(
            SigningKey::from_private_text(rest),
            Err(CheckpointError::MalformedPrivateKey)
        ));
        assert!(matches!(
            SigningKey::from_private_text(&key.verifier_key_string()),
            Err(CheckpointError::MalformedPrivateKey)
        ));
        assert!(matches!(
            SigningKey::from_private_text(&format!(
                "PRIVATE+KEY+{ORIGIN}+{}+{b64}",
                hex::encode(other_id)
            )),
            Err(CheckpointError::KeyIdMismatch { .. })
        ));
        assert!(matches!(
            SigningKey::from_private_text(&format!(
                "PRIVATE+KEY+{ORIGIN}+{}+{}",
                hex::encode(key.key_id()),
                BASE64.encode([1u8; 32])
            )),
            Err(CheckpointError::MalformedPrivateKey)
        ));
        // The error text never echoes the key.
        let err = SigningKey::from_private_text(&skey.replacen("PRIVATE", "PRIVAT", 1))
            .expect_err("bad prefix");
        assert!(!err.to_string().contains(b64));
    }

    // ----- Properties ---------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn sign_then_open_round_trips(
                origin in "[a-z0-9./-]{1,40}",
                size in any::<u64>(),
                root in any::<[u8; 32]>(),
                seed in any::<[u8; 32]>(),
            ) {
                let key = SigningKey::from_seed_bytes("log.example", &seed).expect("valid name");
                let cp = Checkpoint::new(&origin, size, root).expect("valid origin");
                let note = sign(&cp, &key).expect("valid");
                prop_assert_eq!(open(&note, &key.verifier_key(), &origin).expect("opens"), cp);
            }

            /// Replacing any one character of a signed note with a different one (printable
            /// ASCII or newline) makes it fail to open.
            #[test]
            fn any_changed_character_is_refused(
                size in any::<u64>(),
                root in any::<[u8; 32]>(),
                position in any::<prop::sample::Index>(),
                replacement in prop::sample::select(
                    (0x20u8..0x7f).chain([b'\n']).map(char::from).collect::<Vec<_>>()
                ),
            ) {
                let key = key(ORIGIN, 1);
                let cp = Checkpoint::new(ORIGIN, size, root).expect("valid");
                let note = signed(&cp, &key);
                let chars: Vec<char> = note.chars().collect();
                let i = position.index(chars.len());
                prop_assume!(chars[i] != replacement);
                let mut changed = chars;
                changed[i] = replacement;
                let changed: String = changed.into_iter().collect();
                prop_assert!(open(&changed, &key.verifier_key(), ORIGIN).is_err());
            }
        }
    }
}
