//! `pearl data ...` (owned by the data layer).

#[derive(clap::Args)]
pub struct DataArgs {}

pub fn run(_a: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("pearl data: not implemented yet")
}
