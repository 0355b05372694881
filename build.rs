//! Link-time options for the `clairo-sync` binary.

fn main() {
    // Relative relocations packed as a bitmap (DT_RELR, glibc 2.36+): the dynamic loader
    // reads ~20 KB instead of ~480 KB of relocation entries at every start, and those
    // pages no longer sit in the daemon's resident set for the rest of its life.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
