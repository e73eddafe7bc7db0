//! `nini-auth` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    nini_auth::cli::main()
}
