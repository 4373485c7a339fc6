//! `lookout init DIR`: writes the example that `lookout up` runs as a directory of one's
//! own — `exporter.yml`, `evaluator.yml` and the shipped `rules/` — so that it works
//! wherever it is put (copying `examples/up/` leaves its `rule_files` pointing at the
//! repository's `../../rules/`). Existing files are never overwritten.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::up;

/// Flags of `lookout init`.
#[derive(clap::Args)]
pub struct Args {
    /// The directory to create (or an empty one) for exporter.yml, evaluator.yml and rules/.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Writes the example into `args.dir`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let taken: Vec<String> = ["exporter.yml", "evaluator.yml", "rules"]
        .iter()
        .filter(|name| dir.join(name).exists())
        .map(|name| dir.join(name).display().to_string())
        .collect();
    anyhow::ensure!(
        taken.is_empty(),
        "{} already exist{}; lookout init never overwrites: choose a new directory",
        taken.join(", "),
        if taken.len() == 1 { "s" } else { "" }
    );
    let exporter: SocketAddr = up::DEFAULT_EXPORTER_ADDRESS.parse()?;
    let evaluator: SocketAddr = up::DEFAULT_EVALUATOR_ADDRESS.parse()?;
    up::write_example(dir, exporter, evaluator)?;
    println!(
        "Wrote {d}/exporter.yml (targets to probe), {d}/evaluator.yml (scraping, rule files, \
         alerting) and {d}/rules/ ({n} rule files).\nStart it with:\n  lookout up --config.dir {d}",
        d = dir.display(),
        n = up::RULE_FILES.len()
    );
    Ok(ExitCode::SUCCESS)
}
