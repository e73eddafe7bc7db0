//! `nini-auth` binary: everything lives in the library; see `cli`.

// mimalloc instead of glibc's malloc: the proxy allocates many small, short-lived buffers
// per request on several threads, where glibc's arena locks showed in the profile. Measured
// in docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let code = nini_auth::cli::main();
    // Whatever the command, the lines it logged last are written before the process ends.
    nini_auth::ops::logging::drain();
    code
}
