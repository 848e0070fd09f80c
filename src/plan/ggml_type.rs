//! The ggml tensor types a GGUF file may hold: their ids, names and storage sizes.
//!
//! The numbers are copied from llama.cpp's `ggml/include/ggml.h` (ids) and the `type_traits`
//! table in `ggml/src/ggml.c` (block size in elements, bytes per block); the sizes of the
//! quantized blocks were checked with `sizeof` on the `block_*` structs of `ggml-common.h`.

use serde::Serialize;

/// A ggml tensor type, by its id in the GGUF tensor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "&'static str")]
pub struct GgmlType(u32);

/// One row of the type table: id, name, elements per block, bytes per block.
struct TypeTraits {
    id: u32,
    name: &'static str,
    block_size: u64,
    type_size: u64,
}

const fn t(id: u32, name: &'static str, block_size: u64, type_size: u64) -> TypeTraits {
    TypeTraits {
        id,
        name,
        block_size,
        type_size,
    }
}

/// Ids 4, 5 and 31..=33, 36..=38 were removed from ggml and are refused, as llama.cpp does.
const TYPES: &[TypeTraits] = &[
    t(0, "f32", 1, 4),
    t(1, "f16", 1, 2),
    t(2, "q4_0", 32, 18),
    t(3, "q4_1", 32, 20),
    t(6, "q5_0", 32, 22),
    t(7, "q5_1", 32, 24),
    t(8, "q8_0", 32, 34),
    t(9, "q8_1", 32, 36),
    t(10, "q2_K", 256, 84),
    t(11, "q3_K", 256, 110),
    t(12, "q4_K", 256, 144),
    t(13, "q5_K", 256, 176),
    t(14, "q6_K", 256, 210),
    t(15, "q8_K", 256, 292),
    t(16, "iq2_xxs", 256, 66),
    t(17, "iq2_xs", 256, 74),
    t(18, "iq3_xxs", 256, 98),
    t(19, "iq1_s", 256, 50),
    t(20, "iq4_nl", 32, 18),
    t(21, "iq3_s", 256, 110),
    t(22, "iq2_s", 256, 82),
    t(23, "iq4_xs", 256, 136),
    t(24, "i8", 1, 1),
    t(25, "i16", 1, 2),
    t(26, "i32", 1, 4),
    t(27, "i64", 1, 8),
    t(28, "f64", 1, 8),
    t(29, "iq1_m", 256, 56),
    t(30, "bf16", 1, 2),
    t(34, "tq1_0", 256, 54),
    t(35, "tq2_0", 256, 66),
    t(39, "mxfp4", 32, 17),
    t(40, "nvfp4", 64, 36),
    t(41, "q1_0", 128, 18),
    t(42, "q2_0", 64, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// The type with this GGUF id, or `None` for an id ggml does not know (or no longer supports).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().any(|row| row.id == id).then_some(GgmlType(id))
    }

    /// The type with this name as llama.cpp spells it (`f16`, `q8_0`, `q4_K`); case-insensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TYPES
            .iter()
            .find(|row| row.name.eq_ignore_ascii_case(name))
            .map(|row| GgmlType(row.id))
    }

    pub fn id(self) -> u32 {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.traits().name
    }

    /// Elements per block (1 for the plain float and integer types).
    pub fn block_size(self) -> u64 {
        self.traits().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.traits().type_size
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let traits = self.traits();
        if !n.is_multiple_of(traits.block_size) {
            return None;
        }
        (n / traits.block_size).checked_mul(traits.type_size)
    }

    /// Bits per weight, as a float (4.5 for q4_0, 8.5 for q8_0).
    pub fn bits_per_weight(self) -> f64 {
        let traits = self.traits();
        traits.type_size as f64 * 8.0 / traits.block_size as f64
    }

    fn traits(self) -> &'static TypeTraits {
        // Every GgmlType is made by `from_id`/`from_name` or a constant from the table.
        TYPES
            .iter()
            .find(|row| row.id == self.0)
            .unwrap_or(&TYPES[0])
    }
}

impl From<GgmlType> for &'static str {
    fn from(value: GgmlType) -> Self {
        value.name()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        let cases: &[(&str, u64, Option<u64>)] = &[
            ("f32", 640, Some(2560)),
            ("f16", 256, Some(512)),
            ("q8_0", 256, Some(272)),
            ("q4_0", 256, Some(144)),
            ("q4_K", 1024, Some(576)),
            ("q6_K", 2048, Some(1680)),
            ("q4_K", 640, None),
        ];
        for &(name, n, want) in cases {
            let ty = GgmlType::from_name(name).expect(name);
            assert_eq!(ty.row_bytes(n), want, "{name} x {n}");
        }
    }

    #[test]
    fn removed_ids_are_refused() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
        assert_eq!(GgmlType::from_id(12), Some(GgmlType::Q4_K));
        assert_eq!(GgmlType::Q8_0.bits_per_weight(), 8.5);
    }
}
