//! The running kernel's BTF (`/sys/kernel/btf/vmlinux`), read for what kernel mode needs:
//! which functions exist, and where fields are in a struct (through anonymous unions and
//! structs). The Rust programs have no CO-RE relocations, so the loader finds the offsets
//! here and hands them over in a read-only global. aya-obj parses BTF too but keeps struct
//! members private; this reads only the type headers and the members it is asked for.

use std::collections::HashSet;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Why kernel-mode layout could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("the kernel's BTF is malformed ({0})")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no field {0}")]
    NoField(String),
}

/// One type's header and where its kind-specific data starts.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    info: u32,
    /// The size, or for modifiers and typedefs the type they apply to.
    size_or_type: u32,
    /// Offset of the kind-specific data in the type section.
    data: usize,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 != 0
    }
}

/// Parsed kernel BTF: the type table (index = type id) and the strings.
pub struct KernelBtf {
    types: Vec<Type>,
    type_sec: Vec<u8>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl KernelBtf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        let magic = u16::from_le_bytes(
            data.get(0..2)
                .ok_or(bad("short"))?
                .try_into()
                .ok()
                .ok_or(bad("short"))?,
        );
        if magic != MAGIC {
            return Err(bad("not little-endian BTF"));
        }
        let word = |o| {
            u32_at(data, o)
                .ok_or(bad("short header"))
                .map(|v| v as usize)
        };
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (word(4)?, word(8)?, word(12)?, word(16)?, word(20)?);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or(bad("section out of bounds"))
        };
        let type_sec = section(type_off, type_len)?.to_vec();
        let strings = section(str_off, str_len)?.to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name_off: 0,
            info: 0,
            size_or_type: 0,
            data: 0,
        }];
        let mut p = 0;
        while p < type_sec.len() {
            let name_off = u32_at(&type_sec, p).ok_or(bad("type header"))?;
            let info = u32_at(&type_sec, p + 4).ok_or(bad("type header"))?;
            let size_or_type = u32_at(&type_sec, p + 8).ok_or(bad("type header"))?;
            let t = Type {
                name_off,
                info,
                size_or_type,
                data: p + 12,
            };
            let vlen = t.vlen();
            p = t.data
                + match t.kind() {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                    _ => 0,
                };
            types.push(t);
        }
        Ok(Self {
            types,
            type_sec,
            strings,
        })
    }

    fn name(&self, off: u32) -> &str {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Names of every function the kernel's BTF lists (attachable by fentry/fexit unless
    /// inlined everywhere or not traceable: attaching tells).
    pub fn functions(&self) -> HashSet<&str> {
        self.types
            .iter()
            .filter(|t| t.kind() == KIND_FUNC)
            .map(|t| self.name(t.name_off))
            .collect()
    }

    /// The type id of function `name`, the attach point fentry/fexit programs name.
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind() == KIND_FUNC && self.name(t.name_off) == name)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// (name, type id, bit offset) of each member of struct/union type `t`.
    fn members(&self, t: &Type) -> Vec<(&str, u32, u32)> {
        (0..t.vlen())
            .filter_map(|i| {
                let m = t.data + 12 * i;
                let name = u32_at(&self.type_sec, m)?;
                let ty = u32_at(&self.type_sec, m + 4)?;
                let off = u32_at(&self.type_sec, m + 8)?;
                // With kind_flag the offset's top 8 bits are a bitfield size.
                let bits = if t.kind_flag() { off & 0xff_ffff } else { off };
                Some((self.name(name), ty, bits))
            })
            .collect()
    }

    /// Byte offset of `field` in struct `strukt`, looking through anonymous members.
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        let t = self
            .types
            .iter()
            .find(|t| t.kind() == KIND_STRUCT && self.name(t.name_off) == strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find_in(t, field, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoField(format!("{strukt}.{field}")))
    }

    /// Type `id` without its modifiers (`const struct { ... }` in `struct vm_fault`).
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        // Chains are short; the bound only guards against a malformed loop.
        for _ in 0..16 {
            let t = self.types.get(id as usize)?;
            match t.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    fn find_in(&self, t: &Type, field: &str, base: u32) -> Option<u32> {
        for (name, ty, bits) in self.members(t) {
            if name == field {
                return Some(base + bits);
            }
            if name.is_empty() {
                let inner = self.resolve(ty)?;
                if matches!(inner.kind(), KIND_STRUCT | KIND_UNION)
                    && let Some(found) = self.find_in(inner, field, base + bits)
                {
                    return Some(found);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct s { int a; const union { long b; int c; }; }` and `func f`.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0int\0long\0f\0".to_vec();
        let (s, a, b, c, int, long, f) = (1u32, 3, 5, 7, 9, 13, 18);
        let mut types = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes), 2: long (8 bytes)
        put(&[int, KIND_INT << 24, 4, 32]);
        put(&[long, KIND_INT << 24, 8, 64]);
        // 3: union { long b; int c; }
        put(&[0, (KIND_UNION << 24) | 2, 8, b, 2, 0, c, 1, 0]);
        // 4: const <3>
        put(&[0, KIND_CONST << 24, 3]);
        // 5: struct s { int a @0; <const anon union> @64 bits; }
        put(&[s, (KIND_STRUCT << 24) | 2, 16, a, 1, 0, 0, 4, 64]);
        // 6: func proto, 7: func f
        put(&[0, KIND_FUNC_PROTO << 24, 0]);
        put(&[f, KIND_FUNC << 24, 6]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_fields_through_anonymous_unions_and_functions() {
        let btf = KernelBtf::parse(&sample()).expect("parse");
        assert_eq!(btf.field_offset("s", "a"), Ok(0));
        assert_eq!(btf.field_offset("s", "b"), Ok(8));
        assert_eq!(btf.field_offset("s", "c"), Ok(8));
        assert_eq!(
            btf.field_offset("s", "d"),
            Err(BtfError::NoField("s.d".into()))
        );
        assert_eq!(
            btf.field_offset("t", "a"),
            Err(BtfError::NoStruct("t".into()))
        );
        assert!(btf.functions().contains("f"));
        assert_eq!(btf.function_id("f"), Some(7));
        assert_eq!(btf.function_id("s"), None);
        assert!(KernelBtf::parse(b"nope").is_err());
    }
}
