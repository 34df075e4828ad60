//! The `regmig` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    regmig_tools::cli::main()
}
