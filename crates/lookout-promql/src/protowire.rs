//! Writing the protobuf wire format by hand, for the few messages Lookout sends: remote
//! write's `WriteRequest` (the evaluator) and the exposition's `MetricFamily` (the exporter's
//! `/metrics`). Each function appends one field to a buffer; a nested message is written into
//! its own buffer first and appended with [`put_bytes`].

/// Wire type of varints (integers, enums, booleans).
pub const VARINT: u8 = 0;
/// Wire type of 64-bit little-endian fields (`double`, `fixed64`).
pub const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages, packed numbers).
pub const LEN: u8 = 2;

/// Appends `v` as a base-128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a field's key: its number and wire type.
pub fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a `double` field.
pub fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an unsigned varint field (`uint32`, `uint64`, an enum).
pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, VARINT);
    put_varint(out, v);
}

/// `v` zigzag-encoded, as `sint32` and `sint64` carry it (0, -1, 1, -2 → 0, 1, 2, 3).
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends a `sint32` or `sint64` field.
pub fn put_sint(out: &mut Vec<u8>, field: u32, v: i64) {
    put_uint(out, field, zigzag(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        put_varint(&mut out, u64::MAX);
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], 0x01);
        out.clear();
        put_bytes(&mut out, 2, b"hi");
        assert_eq!(out, [0x12, 2, b'h', b'i']);
        out.clear();
        put_double(&mut out, 1, 1.0);
        assert_eq!(out, [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
        out.clear();
        put_sint(&mut out, 5, -53);
        assert_eq!(out, [0x28, 105]);
        assert_eq!([0, -1, 1, -2, i64::MIN].map(zigzag), [0, 1, 2, 3, u64::MAX]);
    }
}
