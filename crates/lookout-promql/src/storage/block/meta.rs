//! `meta.json` of a block, as Prometheus writes it (version 1).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BlockError;

/// Largest `meta.json` read (Prometheus's are a few hundred bytes; a compacted block's
/// source list grows with the blocks it merged).
const MAX_META: u64 = 16 << 20;

/// A block's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    /// The block's ULID (its directory name).
    pub ulid: String,
    /// Oldest timestamp the block may hold (ms, inclusive).
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the block's range (ms, exclusive).
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    /// Counts.
    #[serde(default)]
    pub stats: BlockStatsMeta,
    /// How the block was made.
    pub compaction: Compaction,
    /// Always 1.
    pub version: u32,
}

/// The `stats` of a `meta.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BlockStatsMeta {
    /// Samples in the block.
    #[serde(rename = "numSamples", default)]
    pub num_samples: u64,
    /// Series in the block.
    #[serde(rename = "numSeries", default)]
    pub num_series: u64,
    /// Chunks in the block.
    #[serde(rename = "numChunks", default)]
    pub num_chunks: u64,
    /// Deleted ranges in the block's `tombstones` (Prometheus counts them when it deletes;
    /// Lookout's own blocks have none). Left out when zero, as Prometheus does.
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `compaction` of a `meta.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Compaction {
    /// 1 for a block cut from the head, one more at each compaction.
    pub level: u32,
    /// The level-1 blocks whose data this one holds.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The blocks merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<Parent>,
}

/// A block merged into a compacted one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Parent {
    /// Its ULID.
    pub ulid: String,
    /// Its range start.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Its range end.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

impl BlockMeta {
    /// Writes `dir/meta.json`, fsynced.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(dir.join("meta.json"))?;
        f.write_all(&json)?;
        f.sync_all()
    }

    /// Reads `dir/meta.json`.
    pub(crate) fn read(dir: &Path) -> Result<BlockMeta, BlockError> {
        let path = dir.join("meta.json");
        let err = |msg: String| BlockError::new(&path, msg);
        let size = std::fs::metadata(&path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if size > MAX_META {
            return Err(err(format!("{size} bytes, over the limit of {MAX_META}")));
        }
        let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        let meta: BlockMeta = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        if meta.version != 1 {
            return Err(err(format!("unsupported version {}", meta.version)));
        }
        if meta.min_time > meta.max_time {
            return Err(err("minTime after maxTime".into()));
        }
        Ok(meta)
    }
}
