//! Durable small writes: the slots file and the records beside pulled models.

use std::io::Write;
use std::path::Path;

use super::{DeliveryError, io_error};

/// Writes `bytes` to a temporary name beside `path`, fsyncs, renames, fsyncs the directory: a
/// reader finds the old file or the whole new one, also after a power cut.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), DeliveryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let temp = path.with_extension("partial");
    let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(bytes).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}
