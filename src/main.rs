//! The `roster` binary: all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    // Before any thread starts: glibc's malloc reads its arena limit at start.
    roster::allocator::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(roster::cli::main()),
        Err(e) => {
            eprintln!("roster: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
