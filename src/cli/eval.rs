//! `pearl eval` and `pearl compare`.

#[derive(clap::Args)]
pub struct CompareArgs {}

pub fn run_compare(_a: CompareArgs) -> anyhow::Result<()> {
    anyhow::bail!("pearl compare: not implemented yet")
}
