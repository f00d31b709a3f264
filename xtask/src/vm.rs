//! `cargo xtask vm`: boot the patched kernel under QEMU (owned by the VM harness work).
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
