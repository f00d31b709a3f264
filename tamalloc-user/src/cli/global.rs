//! `tamalloc global`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tamalloc global` is not implemented yet")
}
