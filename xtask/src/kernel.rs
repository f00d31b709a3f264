//! `cargo xtask kernel`: build the patched kernel (owned by the VM harness work).
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: &Args) -> anyhow::Result<std::path::PathBuf> {
    anyhow::bail!("not yet")
}
