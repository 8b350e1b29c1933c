//! The cursor the generated walkers drive: reads lengths, checks each against the bytes that
//! remain, and skips payloads. It allocates nothing and mirrors the `kafka-protocol` crate's
//! decoders value for value (null markers, negative lengths, UTF-8, varints of at most 5 bytes),
//! so that a body it accepts is one the crate decodes, and decodes without a huge allocation.

/// Why a body was refused. Positions are byte offsets into the walked frame.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BoundsError {
    #[error(
        "{what} declares {length} elements at byte {position}, but only {remaining} bytes remain"
    )]
    TooLong {
        what: &'static str,
        length: u64,
        position: usize,
        remaining: usize,
    },
    #[error("truncated at byte {position}: {what} needs {needed} more bytes than the frame holds")]
    Truncated {
        what: &'static str,
        position: usize,
        needed: usize,
    },
    #[error("{what} at byte {position}")]
    Invalid { what: &'static str, position: usize },
    #[error("more than {limit} array elements in one message")]
    ElementsExceeded { limit: u64 },
    #[error("API key {api_key} is not one gregor decodes (see wire/tools/gen_bounds.py)")]
    NoWalker { api_key: i16 },
}

pub type Walked = Result<(), BoundsError>;

/// Whether a nullable field may carry the null marker (the crate's `Option<_>` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Null {
    Allowed,
    Refused,
}

/// What a tagged field's walker made of a tag: a known field was walked by its type, an
/// unknown one is skipped by its declared size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Known,
    Unknown,
}

/// The operations a message's fields are walked with. `Walker` reads and checks bytes;
/// `Sketch` writes random valid ones, so the generated walkers double as a generator of frames
/// for every API and version, and tests can compare both against the crate.
pub trait Walk {
    fn fixed(&mut self, width: usize) -> Walked;
    fn unsigned_varint(&mut self) -> Result<u32, BoundsError>;
    fn string(&mut self, null: Null) -> Walked;
    fn compact_string(&mut self, null: Null) -> Walked;
    fn bytes(&mut self, null: Null) -> Walked;
    fn compact_bytes(&mut self, null: Null) -> Walked;
    fn array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked;
    fn compact_array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked;
    fn option_struct(&mut self, present: impl FnOnce(&mut Self) -> Walked) -> Walked;
    /// The tagged-field section of a flexible version. `known` walks a tag the crate decodes
    /// by its type (from where it starts, ignoring its size, as the crate does).
    fn tagged_fields(
        &mut self,
        known: impl FnMut(&mut Self, u32) -> Result<Tag, BoundsError>,
    ) -> Walked;
    fn invalid(&self, what: &'static str) -> BoundsError;
}

pub struct Walker<'a> {
    bytes: &'a [u8],
    position: usize,
    elements: u64,
    elements_max: u64,
}

impl<'a> Walker<'a> {
    /// `elements_max` bounds the array elements of the whole message: the decoder's memory is
    /// proportional to them, not to the bytes they were encoded in.
    pub fn new(bytes: &'a [u8], elements_max: u64) -> Walker<'a> {
        Walker {
            bytes,
            position: 0,
            elements: 0,
            elements_max,
        }
    }

    /// Bytes walked so far.
    pub fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, what: &'static str, count: usize) -> Result<&'a [u8], BoundsError> {
        if count > self.remaining() {
            return Err(BoundsError::Truncated {
                what,
                position: self.position,
                needed: count - self.remaining(),
            });
        }
        let taken = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(taken)
    }

    fn int16(&mut self, what: &'static str) -> Result<i16, BoundsError> {
        let bytes = self.take(what, 2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn int32(&mut self, what: &'static str) -> Result<i32, BoundsError> {
        let bytes = self.take(what, 4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn utf8(&mut self, length: usize) -> Walked {
        let position = self.position;
        let text = self.take("string", length)?;
        std::str::from_utf8(text)
            .map(drop)
            .map_err(|_| BoundsError::Invalid {
                what: "string is not UTF-8",
                position,
            })
    }

    fn null(&self, null: Null, what: &'static str) -> Walked {
        match null {
            Null::Allowed => Ok(()),
            Null::Refused => Err(self.invalid(what)),
        }
    }

    /// The bound the crate lacks: it reserves `count` elements before reading any of them.
    /// An element takes at least one byte, so more elements than bytes cannot be genuine.
    fn elements(&mut self, count: u64, mut element: impl FnMut(&mut Self) -> Walked) -> Walked {
        if count > self.remaining() as u64 {
            return Err(BoundsError::TooLong {
                what: "array",
                length: count,
                position: self.position,
                remaining: self.remaining(),
            });
        }
        self.elements += count;
        if self.elements > self.elements_max {
            return Err(BoundsError::ElementsExceeded {
                limit: self.elements_max,
            });
        }
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }
}

impl Walk for Walker<'_> {
    fn invalid(&self, what: &'static str) -> BoundsError {
        BoundsError::Invalid {
            what,
            position: self.position,
        }
    }

    fn fixed(&mut self, width: usize) -> Walked {
        self.take("fixed-width field", width).map(drop)
    }

    /// As the crate reads it: at most 5 bytes, the 5th byte's high bits silently dropped.
    fn unsigned_varint(&mut self) -> Result<u32, BoundsError> {
        let mut value = 0u32;
        for shift in 0..5 {
            let byte = u32::from(self.take("varint", 1)?[0]);
            value |= (byte & 0x7f).wrapping_shl(shift * 7);
            if byte < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    fn string(&mut self, null: Null) -> Walked {
        match self.int16("string length")? {
            -1 => self.null(null, "null string in a non-nullable field"),
            length if length >= 0 => self.utf8(length as usize),
            _ => Err(self.invalid("negative string length")),
        }
    }

    fn compact_string(&mut self, null: Null) -> Walked {
        match self.unsigned_varint()? {
            0 => self.null(null, "null string in a non-nullable field"),
            length_plus_one => self.utf8(length_plus_one as usize - 1),
        }
    }

    fn bytes(&mut self, null: Null) -> Walked {
        match self.int32("bytes length")? {
            -1 => self.null(null, "null bytes in a non-nullable field"),
            length if length >= 0 => self.take("bytes", length as usize).map(drop),
            _ => Err(self.invalid("negative bytes length")),
        }
    }

    fn compact_bytes(&mut self, null: Null) -> Walked {
        match self.unsigned_varint()? {
            0 => self.null(null, "null bytes in a non-nullable field"),
            length_plus_one => self.take("bytes", length_plus_one as usize - 1).map(drop),
        }
    }

    fn array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked {
        match self.int32("array length")? {
            -1 => self.null(null, "null array in a non-nullable field"),
            count if count >= 0 => self.elements(count as u64, element),
            _ => Err(self.invalid("negative array length")),
        }
    }

    fn compact_array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked {
        match self.unsigned_varint()? {
            0 => self.null(null, "null array in a non-nullable field"),
            count_plus_one => self.elements(u64::from(count_plus_one) - 1, element),
        }
    }

    fn option_struct(&mut self, present: impl FnOnce(&mut Self) -> Walked) -> Walked {
        let marker = self.take("struct presence", 1)?[0] as i8;
        if marker == 1 {
            present(self)?;
        }
        Ok(())
    }

    fn tagged_fields(
        &mut self,
        mut known: impl FnMut(&mut Self, u32) -> Result<Tag, BoundsError>,
    ) -> Walked {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            let tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            if known(self, tag)? == Tag::Unknown {
                self.take("tagged field", size as usize)?;
            }
        }
        Ok(())
    }
}
