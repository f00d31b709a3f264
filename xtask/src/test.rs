//! `cargo xtask test`: every test.
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: &Args) -> anyhow::Result<()> {
    crate::setup::run(&crate::setup::Args::default())
}
