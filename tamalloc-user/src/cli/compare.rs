//! `tamalloc compare`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tamalloc compare` is not implemented yet")
}
