//! A borrowing reader of the protobuf wire format: fields of a message as (number, value) with
//! length-delimited values as slices of the input, so a stored record can be read without
//! allocating a `String` per value.
//!
//! Owns nothing but the parsing of bytes; never allocates, never panics on any input (every
//! length is checked against what is left). Groups (wire types 3 and 4) are refused: nothing in
//! `sharing.v1` uses them.

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: bytes, a string or an embedded message.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl<'a> WireValue<'a> {
    /// The varint, if this is one.
    #[inline]
    pub fn varint(self) -> Result<u64, WireError> {
        match self {
            WireValue::Varint(v) => Ok(v),
            _ => Err(WireError::WrongType),
        }
    }

    /// The bytes, if length-delimited.
    #[inline]
    pub fn bytes(self) -> Result<&'a [u8], WireError> {
        match self {
            WireValue::Bytes(b) => Ok(b),
            _ => Err(WireError::WrongType),
        }
    }

    /// The value, if fixed 32-bit (`fixed32`, `sfixed32`, `float` bits).
    #[inline]
    pub fn fixed32(self) -> Result<u32, WireError> {
        match self {
            WireValue::Fixed32(v) => Ok(v),
            _ => Err(WireError::WrongType),
        }
    }

    /// The bytes as UTF-8 text, if length-delimited and valid.
    #[inline]
    pub fn str(self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Utf8)
    }
}

/// Why bytes are not a well-formed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends inside a field.
    #[error("the message ends inside a field")]
    Truncated,
    /// A varint runs past ten bytes.
    #[error("a varint is longer than ten bytes")]
    LongVarint,
    /// Field number 0, or a group / unknown wire type.
    #[error("a field has number 0 or an unsupported wire type")]
    BadTag,
    /// A known field arrived with another wire type than its declaration's.
    #[error("a field has the wrong wire type for its declaration")]
    WrongType,
    /// A string field is not UTF-8.
    #[error("a string field is not valid UTF-8")]
    Utf8,
}

/// Iterator over the fields of one message. Yields `Err` once on malformed input, then stops.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of the message `bytes`.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        if let Some((&b, rest)) = self.rest.split_first()
            && b < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(b));
        }
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::LongVarint)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    #[inline]
    fn field(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let tag = self.varint()?;
        // As prost: a key above u32::MAX, or field number 0, is refused.
        let number = u32::try_from(tag)
            .map(|t| t >> 3)
            .map_err(|_| WireError::BadTag)?;
        if number == 0 {
            return Err(WireError::BadTag);
        }
        let value = match tag & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                WireValue::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                WireValue::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                WireValue::Fixed32(u32::from_le_bytes(a))
            }
            _ => return Err(WireError::BadTag),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// Decodes a zigzag-encoded `sint64`.
#[inline]
pub fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn reads_what_prost_writes() {
        let set = sharing_proto::v1::StringSet {
            items: vec!["a".into(), String::new(), "ünï".into()],
        };
        let bytes = set.encode_to_vec();
        let items: Vec<&str> = Fields::new(&bytes)
            .map(|f| f.and_then(|(n, v)| if n == 1 { v.str() } else { Ok("?") }))
            .collect::<Result<_, _>>()
            .expect("well-formed");
        assert_eq!(items, ["a", "", "ünï"]);
    }

    #[test]
    fn zigzag_matches_prost() {
        for n in [0i64, 1, -1, 2, -2, i64::MAX, i64::MIN, 1234567, -7654321] {
            let v = sharing_proto::v1::Value {
                kind: Some(sharing_proto::v1::value::Kind::Int(n)),
            };
            let bytes = v.encode_to_vec();
            let (num, val) = Fields::new(&bytes).next().expect("one field").expect("ok");
            assert_eq!(num, 2);
            assert_eq!(zigzag(val.varint().expect("varint")), n);
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &[0x0a, 0x05, b'a'][..],
            &[0x08][..],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[0x00, 0x01][..],
            &[0x0b][..],
            &[0x09, 1, 2, 3][..],
            &[0x0d, 1, 2][..],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        ] {
            let last = Fields::new(bytes).last().expect("one item");
            assert!(last.is_err(), "{bytes:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            for f in Fields::new(&bytes) {
                let _ = f;
            }
        }
    }
}
