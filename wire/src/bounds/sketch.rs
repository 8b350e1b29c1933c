//! Sketch: the generated walkers run backwards. Where `Walker` reads a field, `Sketch` writes a
//! random valid one, so every API and version the walkers know yields random frames with
//! populated arrays, strings, nulls and tagged fields. Tests and the fuzz target feed them to the
//! crate and to the walker, whole and mutated, and require the two to agree.

use super::walker::{BoundsError, Null, Tag, Walk, Walked};

/// Arrays nest at most this deep with elements; deeper ones are written empty, so a sketch of a
/// deeply nested message stays small.
const DEPTH_MAX: u32 = 4;

pub struct Sketch {
    bytes: Vec<u8>,
    rng_state: u64,
    depth: u32,
}

impl Sketch {
    pub fn new(seed: u64) -> Sketch {
        Sketch {
            bytes: Vec::new(),
            rng_state: seed,
            depth: 0,
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// splitmix64: wire has no rng dependency, and a sketch needs no more than this.
    fn next(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn is_null(&mut self, null: Null) -> bool {
        null == Null::Allowed && self.below(8) == 0
    }

    fn text(&mut self) -> Vec<u8> {
        let length = self.below(9);
        (0..length).map(|_| b'a' + self.below(26) as u8).collect()
    }

    fn count(&mut self) -> u32 {
        if self.depth >= DEPTH_MAX {
            0
        } else {
            self.below(3) as u32
        }
    }

    fn elements(&mut self, count: u32, mut element: impl FnMut(&mut Self) -> Walked) -> Walked {
        self.depth += 1;
        for _ in 0..count {
            element(self)?;
        }
        self.depth -= 1;
        Ok(())
    }
}

impl Walk for Sketch {
    fn fixed(&mut self, width: usize) -> Walked {
        for _ in 0..width {
            let byte = self.next() as u8;
            self.bytes.push(byte);
        }
        Ok(())
    }

    fn unsigned_varint(&mut self) -> Result<u32, BoundsError> {
        let value = self.below(4) as u32;
        self.varint(value);
        Ok(value)
    }

    fn string(&mut self, null: Null) -> Walked {
        if self.is_null(null) {
            self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
            return Ok(());
        }
        let text = self.text();
        self.bytes
            .extend_from_slice(&(text.len() as i16).to_be_bytes());
        self.bytes.extend_from_slice(&text);
        Ok(())
    }

    fn compact_string(&mut self, null: Null) -> Walked {
        if self.is_null(null) {
            self.varint(0);
            return Ok(());
        }
        let text = self.text();
        self.varint(text.len() as u32 + 1);
        self.bytes.extend_from_slice(&text);
        Ok(())
    }

    fn bytes(&mut self, null: Null) -> Walked {
        if self.is_null(null) {
            self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        let data = self.text();
        self.bytes
            .extend_from_slice(&(data.len() as i32).to_be_bytes());
        self.bytes.extend_from_slice(&data);
        Ok(())
    }

    fn compact_bytes(&mut self, null: Null) -> Walked {
        self.compact_string(null)
    }

    fn array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked {
        if self.is_null(null) {
            self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        let count = self.count();
        self.bytes.extend_from_slice(&(count as i32).to_be_bytes());
        self.elements(count, element)
    }

    fn compact_array(&mut self, null: Null, element: impl FnMut(&mut Self) -> Walked) -> Walked {
        if self.is_null(null) {
            self.varint(0);
            return Ok(());
        }
        let count = self.count();
        self.varint(count + 1);
        self.elements(count, element)
    }

    fn option_struct(&mut self, present: impl FnOnce(&mut Self) -> Walked) -> Walked {
        if self.below(2) == 0 {
            self.bytes.push(0xff);
            return Ok(());
        }
        self.bytes.push(1);
        present(self)
    }

    /// Writes no tag, a known one (walked into a scratch sketch first, since its size goes
    /// before it), or an unknown one with random bytes the crate must skip.
    fn tagged_fields(
        &mut self,
        mut known: impl FnMut(&mut Self, u32) -> Result<Tag, BoundsError>,
    ) -> Walked {
        let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
        let tag_known = self.below(4) as u32;
        let mut scratch = Sketch::new(self.next());
        scratch.depth = self.depth;
        if let Ok(Tag::Known) = known(&mut scratch, tag_known) {
            fields.push((tag_known, scratch.into_bytes()));
        }
        if self.below(2) == 0 {
            let unknown = self.text();
            fields.push((1000 + self.below(1000) as u32, unknown));
        }
        self.varint(fields.len() as u32);
        for (tag, field) in fields {
            self.varint(tag);
            self.varint(field.len() as u32);
            self.bytes.extend_from_slice(&field);
        }
        Ok(())
    }

    fn invalid(&self, what: &'static str) -> BoundsError {
        BoundsError::Invalid {
            what,
            position: self.bytes.len(),
        }
    }
}
