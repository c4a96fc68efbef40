//! `pearl inspect ...`: diagnostics over the model and the objective.

#[derive(clap::Args)]
pub struct InspectArgs {}

pub fn run(_a: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("pearl inspect: not implemented yet")
}
