//! `tamalloc stats`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tamalloc stats` is not implemented yet")
}
