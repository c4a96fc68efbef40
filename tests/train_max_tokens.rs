//! `max_tokens`: a run whose data holds an example longer than the limit trains to its end,
//! skipping that example each time it is drawn, and reports it (summary, metrics).

mod train_common;

use pearl::objective::{Batch, ObjectiveConfig, prepare_tokenizer};
use pearl::processor::Processor;
use pearl::train::data::{Examples, load_items};
use pearl::train::{Options, run};
use train_common::{fixture_dir, run_config, synth_data};

#[test]
fn an_overlong_example_is_skipped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 6, 1);
    let mut cfg = run_config(dir.path(), train, val, 1);
    cfg.objective = ObjectiveConfig::sft();
    cfg.micro_batch = 1;

    // Each example's length, as the loop measures it.
    let mut processor = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    processor.set_pixel_limits(None, cfg.max_pixels).unwrap();
    prepare_tokenizer(&mut processor.tokenizer, cfg.method());
    let items = load_items(&cfg.train, false, "training").unwrap();
    let examples = Examples::new(items, cfg.method, "training").unwrap();
    let mut lengths: Vec<usize> = (0..examples.len())
        .map(|i| {
            Batch::build(&processor, &[examples.get(i)], cfg.method())
                .unwrap()
                .tokens()
        })
        .collect();
    lengths.sort();
    let (longest, next) = (lengths[lengths.len() - 1], lengths[lengths.len() - 2]);
    assert!(
        longest > next,
        "the test needs one longest example: {lengths:?}"
    );

    // As many steps as examples: the whole first epoch is drawn, so the longest example is
    // (once, or twice if the second epoch starts with it).
    cfg.max_tokens = Some(next);
    cfg.steps = Some(examples.len());
    let s = run(&cfg, &Options::default()).unwrap();
    assert_eq!(s.step, s.total_steps);
    assert!((1..=2).contains(&s.too_long), "{}", s.too_long);
    let rows: Vec<_> = s.metrics.iter().filter(|r| r.split == "train").collect();
    assert_eq!(rows.len(), examples.len());
    assert_eq!(rows.iter().map(|r| r.too_long).sum::<usize>(), s.too_long);
    let logged = std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap();
    assert!(logged.contains("\"too_long\":1"), "{logged}");

    // Without the limit nothing is skipped.
    cfg.max_tokens = None;
    cfg.output = dir.path().join("unlimited");
    assert_eq!(run(&cfg, &Options::default()).unwrap().too_long, 0);
}
