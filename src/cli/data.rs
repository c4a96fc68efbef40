//! `pearl data ...`: validate, import, synthesize, summarize trajectory data.

use crate::data::synth::{self, Kind, SynthConfig, Task, Tool};
use crate::data::validate::{ValidateOptions, validate_files};
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Check trajectory JSONL files; prints every problem with its line, exits non-zero if any.
    Validate(ValidateArgs),
    /// Convert a published trajectory dataset into the canonical JSONL.
    Import(ImportArgs),
    /// Generate the synthetic visual-search world (trajectories and MCQ items).
    Synth(SynthArgs),
    /// Counts by task and tool calls, image sizes, text lengths of a trajectory file.
    Stats(StatsArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceArg {
    /// LVR / Visual-CoT SFT JSON list (bboxes rendered as crops).
    Lvr,
    /// PixelReasoner `message_list` rows (JSON, JSONL or parquet).
    Pixelreasoner,
    /// ThinkMorph parquet.
    Thinkmorph,
    /// LLaVA / ShareGPT `conversations` (JSON list or JSONL).
    Llava,
}

#[derive(clap::Args)]
struct ImportArgs {
    #[arg(long, value_enum)]
    from: SourceArg,
    #[arg(long)]
    input: PathBuf,
    /// Root of the source's relative image paths (default: the input's directory).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Output JSONL; rendered or extracted images go to `<OUT stem>_images/` beside it.
    #[arg(long)]
    out: PathBuf,
    /// LVR: one crop and call per box of a row (default: `bboxes[0]` only, as the authors train;
    /// see docs/data-format.md).
    #[arg(long)]
    all_boxes: bool,
}

fn import_cmd(a: ImportArgs) -> anyhow::Result<()> {
    use crate::data::import::{ImportPaths, llava, lvr, pixelreasoner, thinkmorph};
    anyhow::ensure!(
        !a.all_boxes || matches!(a.from, SourceArg::Lvr),
        "--all-boxes applies to --from lvr only"
    );
    let images = a
        .images
        .unwrap_or_else(|| crate::data::trajectory::base_dir_of(&a.input));
    let paths = ImportPaths {
        input: a.input,
        images,
        out: a.out,
    };
    let report = match a.from {
        SourceArg::Lvr => {
            let boxes = match a.all_boxes {
                true => lvr::Boxes::All,
                false => lvr::Boxes::First,
            };
            lvr::import_with(&paths, lvr::LvrFilters::default(), boxes)?
        }
        SourceArg::Pixelreasoner => pixelreasoner::import(&paths)?,
        SourceArg::Thinkmorph => thinkmorph::import(&paths)?,
        SourceArg::Llava => llava::import(&paths)?,
    };
    for e in &report.examples {
        println!("skipped {e}");
    }
    println!("{}", report.summary());
    println!("wrote {}", paths.out.display());
    anyhow::ensure!(report.written > 0, "no row could be converted");
    Ok(())
}

#[derive(clap::Args)]
struct StatsArgs {
    file: PathBuf,
    /// A `tokenizer.json` for token counts (else characters and words only).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn stats_cmd(a: StatsArgs) -> anyhow::Result<()> {
    let s = crate::data::stats::compute(&a.file, a.tokenizer.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{s}");
    }
    Ok(())
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Trajectory JSONL files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Every image must lie inside this directory.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Read only image headers (sizes), skip the full decode check.
    #[arg(long)]
    no_decode: bool,
    /// Print at most this many problems (the summary counts all).
    #[arg(long, default_value_t = 200)]
    max_problems: usize,
}

fn validate(a: ValidateArgs) -> anyhow::Result<()> {
    let opts = ValidateOptions {
        root: a.root,
        decode_images: !a.no_decode,
        ..Default::default()
    };
    let (_, report) = validate_files(&a.files, &opts);
    for p in report.problems.iter().take(a.max_problems) {
        println!("{p}");
    }
    if report.problems.len() > a.max_problems {
        println!(
            "... {} more problem(s) not shown",
            report.problems.len() - a.max_problems
        );
    }
    println!("{}", report.summary());
    anyhow::ensure!(
        report.is_clean(),
        "{} invalid example(s)",
        report.invalid().max(1)
    );
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Attribute,
    Position,
    Counting,
    Chain,
    Multitool,
    Multicall,
    Mixed,
    Pretrain,
}

#[derive(Clone, Copy, ValueEnum)]
enum ToolArg {
    Crop,
    Highlight,
    Depth,
}

/// Question kinds, by report category.
#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Color,
    Shape,
    Horizontal,
    Vertical,
    Counting,
    Depth,
    /// Which ninth of the image holds the object.
    Region,
    /// The color of the object in a named quarter.
    QuadrantColor,
    /// The shape of the object in a named quarter.
    QuadrantShape,
    /// The normalized box of a named quarter.
    QuadrantBox,
    /// Which quarter holds the object of a named color.
    QuadrantWhere,
}

impl KindArg {
    fn kind(self) -> Kind {
        match self {
            KindArg::Color => Kind::Color,
            KindArg::Shape => Kind::ShapeOf,
            KindArg::Horizontal => Kind::Horizontal,
            KindArg::Vertical => Kind::Vertical,
            KindArg::Counting => Kind::Counting,
            KindArg::Depth => Kind::Depth,
            KindArg::Region => Kind::Region,
            KindArg::QuadrantColor => Kind::QuadrantColor,
            KindArg::QuadrantShape => Kind::QuadrantShape,
            KindArg::QuadrantBox => Kind::QuadrantBox,
            KindArg::QuadrantWhere => Kind::QuadrantWhere,
        }
    }
}

#[derive(clap::Args)]
struct SynthArgs {
    #[arg(long, value_enum)]
    task: TaskArg,
    /// Total examples, split 80/10/10 into train/val/test (see --split-sizes).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Scene size, `W` or `WxH` (default 896, or 16 object sizes for --task pretrain).
    #[arg(long)]
    scene_size: Option<String>,
    /// Side of a queried object, pixels.
    #[arg(long, default_value_t = 12.0)]
    object_size: f64,
    /// Background clutter blobs per scene (default 40, scaled by area for smaller scenes).
    #[arg(long)]
    clutter: Option<usize>,
    /// Per-pixel noise amplitude (0 = none).
    #[arg(long, default_value_t = 8)]
    noise: u8,
    /// Explicit `train,val,test` sizes (overrides --n).
    #[arg(long)]
    split_sizes: Option<String>,
    /// Tool types for multitool / multicall / mixed.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "crop,highlight,depth"
    )]
    tools: Vec<ToolArg>,
    /// Calls per trajectory in chains and multi-call plans (2 or 3).
    #[arg(long, default_value_t = 3)]
    max_calls: usize,
    /// Options in one fixed order per question kind (every color, every shape, counts 1-5,
    /// closer/farther) instead of shuffled subsets, as `pearl demo` uses for its small model.
    #[arg(long)]
    canonical_options: bool,
    /// Objects told apart by color alone: no two objects of a scene share a color (except the
    /// counted group of a counting question).
    #[arg(long)]
    unique_colors: bool,
    /// Distractor objects per scene, `MIN,MAX` (default 6,14; 1,3 for --task pretrain).
    #[arg(long)]
    distractors: Option<String>,
    /// One gray ground in every scene instead of a random two-tone gradient.
    #[arg(long)]
    plain: bool,
    /// Only questions of these kinds (default: every kind the task asks).
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<KindArg>,
    /// Single crops are one of nine fixed half-size windows (a discrete crop vocabulary).
    #[arg(long)]
    crop_grid: bool,
}

/// `N` comma-separated counts named `names` (for the error message), e.g. `--split-sizes 8,1,1`.
fn counts<const N: usize>(flag: &str, s: &str, names: [&str; N]) -> anyhow::Result<[usize; N]> {
    let expected = names.join(",");
    let parts: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {s:?}: {e} (expected {expected})"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?}: expected {N} numbers {expected}"))
}

fn synth_cmd(a: SynthArgs) -> anyhow::Result<()> {
    let task = match a.task {
        TaskArg::Attribute => Task::Attribute,
        TaskArg::Position => Task::Position,
        TaskArg::Counting => Task::Counting,
        TaskArg::Chain => Task::Chain,
        TaskArg::Multitool => Task::Multitool,
        TaskArg::Multicall => Task::Multicall,
        TaskArg::Mixed => Task::Mixed,
        TaskArg::Pretrain => Task::Pretrain,
    };
    let mut cfg = SynthConfig::new(task, a.seed, a.n);
    let default_side = if task == Task::Pretrain {
        (a.object_size * 16.0).round() as u32
    } else {
        896
    };
    let (w, h) = match &a.scene_size {
        Some(s) => parse_size(s)?,
        None => (default_side, default_side),
    };
    cfg.scene.width = w;
    cfg.scene.height = h;
    cfg.scene.object_size = a.object_size;
    cfg.scene.noise = a.noise;
    cfg.scene.plain = a.plain;
    // 40 blobs on an 896x896 canvas; the same density elsewhere.
    cfg.scene.clutter = a
        .clutter
        .unwrap_or(((40.0 * (w as f64 * h as f64) / (896.0 * 896.0)).round() as usize).max(2));
    if let Some(s) = &a.split_sizes {
        let [train, val, test] = counts("--split-sizes", s, ["train", "val", "test"])?;
        (cfg.train, cfg.val, cfg.test) = (train, val, test);
    }
    cfg.tools = a
        .tools
        .iter()
        .map(|t| match t {
            ToolArg::Crop => Tool::Crop,
            ToolArg::Highlight => Tool::Highlight,
            ToolArg::Depth => Tool::Depth,
        })
        .collect();
    cfg.tools.sort();
    cfg.tools.dedup();
    cfg.max_calls = a.max_calls;
    cfg.canonical_options = a.canonical_options;
    cfg.unique_colors = a.unique_colors;
    if let Some(d) = &a.distractors {
        let [lo, hi] = counts("--distractors", d, ["MIN", "MAX"])?;
        anyhow::ensure!(lo <= hi, "--distractors {d:?}: MIN is larger than MAX");
        cfg.distractors = (lo, hi);
    }
    cfg.kinds = a.kinds.iter().map(|k| k.kind()).collect();
    cfg.crop_grid = a.crop_grid;
    let start = std::time::Instant::now();
    let summary = synth::generate(&cfg, &a.out)?;
    let total: usize = summary.counts.values().sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {} ({total} examples in {secs:.1} s, {:.0}/s)",
        a.out.display(),
        total as f64 / secs.max(1e-9)
    );
    for (split, n) in &summary.counts {
        println!("  {split:>5}: {n}");
    }
    for (cat, n) in &summary.by_category {
        println!("  {n:>7}  {cat}");
    }
    for (calls, n) in &summary.by_calls {
        println!("  {n:>7}  trajectories with {calls} tool call(s)");
    }
    Ok(())
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|e| anyhow::anyhow!("--scene-size {s:?}: {e} (expected W or WxH)"))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => {
            let w = parse(s)?;
            Ok((w, w))
        }
    }
}

pub fn run(a: DataArgs) -> anyhow::Result<()> {
    match a.command {
        DataCommand::Validate(v) => validate(v),
        DataCommand::Import(i) => import_cmd(i),
        DataCommand::Synth(s) => synth_cmd(s),
        DataCommand::Stats(s) => stats_cmd(s),
    }
}
