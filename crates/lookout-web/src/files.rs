//! Opening the files a configuration names without ever blocking on them.
//!
//! A FIFO named as a configuration file would block `open(2)` until a writer comes (and
//! with it a reload, or the shutdown waiting for that reload); a device could be endless.
//! [`open_regular`] refuses anything but a regular file: it looks before opening, opens
//! with `O_NONBLOCK` (so a FIFO swapped in between the look and the open cannot block the
//! open either) and checks the opened descriptor again with `fstat`. Every capped reader
//! of the exporter, the evaluator and the web layer opens through it.

use std::fs::File;
use std::io;
use std::path::Path;

/// The error for anything that is not a regular file (`InvalidInput`).
pub fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file")
}

/// Opens `path` for reading if it is a regular file, and returns it with its length at
/// the time of opening. Never blocks on a FIFO or a device.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_open_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        let (_, len) = open_regular(&file).unwrap();
        assert_eq!(len, 3);
        let err = open_regular(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let err = open_regular(&fifo).unwrap_err();
            assert_eq!(err.to_string(), "is not a regular file");
        }
    }
}
