//! Link flags of the `lookout` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-functions.txt");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    // Relative relocations packed as DT_RELR (glibc >= 2.36, the Docker image's Debian
    // bookworm; GNU ld >= 2.38 or lld, older linkers ignore the flag with a warning): the
    // loader then reads a few KiB instead of ~750 KiB of `.rela.dyn` at start-up, pages
    // that stayed resident for the process's life.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The functions `lookout exporter` and `lookout evaluator` run, first in .text
    // (scripts/symbol-order.sh): gathered, the code pages the exporter keeps resident drop
    // from about 6 MB to 1.5 MB, the remote-mode evaluator's from 13.6 to 11 MB. Only where
    // the linker is rustc's lld, the default for x86_64 Linux since Rust 1.90 (GNU ld has no
    // such option); names the build does not have are skipped without a warning.
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if profile == "release" && target_arch == "x86_64" && rustc_minor() >= Some(90) {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let order = std::path::Path::new(&dir).join("link/hot-functions.txt");
        if order.is_file() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// The minor version of the compiler building this crate (`rustc 1.95.0 …` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}
