//! The `roster` binary: all behaviour lives in the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    roster::cli::main().await
}
