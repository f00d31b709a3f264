//! The `tamalloc` command. `main` only runs [`cli::run`], prints the error chain, and exits
//! with the status `run` chose.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("tamalloc: {err:#}");
            cli::failure_status(&err)
        }
    }
}
