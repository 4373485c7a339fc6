//! Link flags of the `lookout` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Relative relocations packed as DT_RELR (glibc >= 2.36, the Docker image's Debian
    // bookworm; GNU ld >= 2.38 or lld, older linkers ignore the flag with a warning): the
    // loader then reads a few KiB instead of ~750 KiB of `.rela.dyn` at start-up, pages
    // that stayed resident for the process's life.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
