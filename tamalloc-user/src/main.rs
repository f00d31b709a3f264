//! The `tamalloc` command. `main` only runs [`run`] and prints the error chain.

mod cli;

fn main() {
    if let Err(err) = cli::run() {
        eprintln!("tamalloc: {err:#}");
        std::process::exit(1);
    }
}
