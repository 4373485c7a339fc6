//! The `tombstones` file of a block: magic `0x0130BA30`, version 1, then deleted ranges
//! (`series ref <uvarint>`, `mint <varint>`, `maxt <varint>`, both inclusive) and a
//! CRC32C of them. Lookout writes it empty (it never deletes); Prometheus's are read and
//! their ranges hidden from queries.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::{BlockError, Dec};
use crate::storage::wal::segment::crc32c;

const MAGIC: u32 = 0x0130_BA30;
/// Largest tombstones file read.
const MAX_TOMBSTONES: u64 = 256 << 20;

/// Deleted ranges by series reference (the index's `offset / 16`).
pub(crate) type Tombstones = HashMap<u64, Vec<(i64, i64)>>;

/// Writes an empty `dir/tombstones`, fsynced.
pub(crate) fn write_empty(dir: &Path) -> std::io::Result<()> {
    let mut buf = MAGIC.to_be_bytes().to_vec();
    buf.push(1);
    buf.extend_from_slice(&crc32c(&[]).to_be_bytes());
    let mut f = std::fs::File::create(dir.join("tombstones"))?;
    f.write_all(&buf)?;
    f.sync_all()
}

/// Reads `dir/tombstones`; a missing file has none.
pub(crate) fn read(dir: &Path) -> Result<Tombstones, BlockError> {
    let path = dir.join("tombstones");
    let err = |msg: String| BlockError::new(&path, msg);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tombstones::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    if size > MAX_TOMBSTONES {
        return Err(err(format!(
            "{size} bytes, over the limit of {MAX_TOMBSTONES}"
        )));
    }
    let b = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
    if b.len() < 9 || b[..4] != MAGIC.to_be_bytes() || b[4] != 1 {
        return Err(err(
            "not a tombstones file (bad magic, version or size)".into()
        ));
    }
    let body = &b[5..b.len() - 4];
    if crc32c(body).to_be_bytes() != b[b.len() - 4..] {
        return Err(err("checksum mismatch".into()));
    }
    let mut out = Tombstones::new();
    let mut d = Dec::new(body);
    while !d.is_empty() {
        let r = d.uvarint().map_err(err)?;
        let mint = d.varint().map_err(err)?;
        let maxt = d.varint().map_err(err)?;
        out.entry(r).or_default().push((mint, maxt));
    }
    Ok(out)
}
