//! The synthetic world end to end: reproducible files, valid trajectories, MCQ items that follow
//! the protocol, crops that contain what the question is about, disjoint splits.

use pearl::data::mcq::{ANSWER_SUFFIX, McqItem};
use pearl::data::synth::{SynthConfig, Task, generate};
use pearl::data::trajectory::load_jsonl;
use pearl::data::validate::{ValidateOptions, validate_files};
use pearl::tools::zoom::compose;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

fn small(task: Task, seed: u64, threads: usize) -> SynthConfig {
    let mut cfg = SynthConfig::new(task, seed, 0);
    (cfg.train, cfg.val, cfg.test) = (12, 6, 6);
    cfg.scene.width = 240;
    cfg.scene.height = 200;
    cfg.scene.object_size = 8.0;
    cfg.scene.clutter = 8;
    cfg.distractors = (3, 6);
    cfg.threads = threads;
    cfg
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn mcq(path: &Path) -> Vec<McqItem> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(&small(Task::Mixed, 5, 1), a.path()).unwrap();
    generate(&small(Task::Mixed, 5, 3), b.path()).unwrap();
    generate(&small(Task::Mixed, 6, 2), c.path()).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert!(
        fa.len() > 40,
        "expected images and jsonl files, got {}",
        fa.len()
    );
    assert!(fa == fb, "same seed, different bytes");
    assert_ne!(
        fa.get("train.jsonl"),
        fc.get("train.jsonl"),
        "different seeds, same data"
    );
}

#[test]
fn every_task_writes_valid_data_that_follows_the_protocol() {
    for task in [
        Task::Attribute,
        Task::Position,
        Task::Counting,
        Task::Chain,
        Task::Multitool,
        Task::Multicall,
        Task::Mixed,
        Task::Pretrain,
    ] {
        let dir = tempfile::tempdir().unwrap();
        generate(&small(task, 11, 2), dir.path()).unwrap();
        let paths = vec![dir.path().join("train.jsonl"), dir.path().join("val.jsonl")];
        let opts = ValidateOptions {
            root: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let (_, report) = validate_files(&paths, &opts);
        assert!(
            report.is_clean(),
            "{task:?}: {:?}",
            report.problems.first().map(|p| p.to_string())
        );
        assert_eq!(report.valid, 18);

        let items = mcq(&dir.path().join("test_mcq.jsonl"));
        assert_eq!(items.len(), 6);
        for it in &items {
            assert!(it.answer_index().is_some(), "{it:?}");
            assert!(it.prompt().ends_with(ANSWER_SUFFIX));
            assert!(dir.path().join(&it.images[0]).is_file());
        }

        // The final turn is "(X) option" of the val item with the same id; the question is the prompt.
        let val_items: BTreeMap<String, McqItem> = mcq(&dir.path().join("val_mcq.jsonl"))
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        for n in load_jsonl(&paths[1]).unwrap().items {
            let t = n.trajectory;
            let item = &val_items[&t.id];
            let last = t.messages.last().unwrap().joined_text();
            if t.meta.category.as_deref() == Some("caption") {
                assert!(last.starts_with("There "), "{last}");
                continue;
            }
            let i = item.answer_index().unwrap();
            assert_eq!(last, format!("({}) {}", item.answer, item.options[i]));
            assert_eq!(t.first_user_turn().unwrap().1.joined_text(), item.prompt());
            let calls = &t.meta.tool_calls;
            match task {
                Task::Attribute | Task::Position | Task::Counting | Task::Multitool => {
                    assert_eq!(calls.len(), 1)
                }
                Task::Chain => {
                    assert!((2..=3).contains(&calls.len()));
                    for (k, c) in calls.iter().enumerate() {
                        assert_eq!(c.name, "crop");
                        assert_eq!(
                            c.target_image().unwrap().unwrap(),
                            k + 1,
                            "each zoom applies to the previous crop"
                        );
                    }
                }
                Task::Multicall => {
                    assert!(calls.len() >= 2);
                    let kinds: HashSet<&str> = calls.iter().map(|c| c.name.as_str()).collect();
                    assert!(kinds.len() >= 2, "{kinds:?}");
                }
                Task::Pretrain => assert!(calls.is_empty()),
                Task::Mixed => {}
            }
        }
    }
}

/// Whatever the chain of crops, the last crop (composed back to scene coordinates) contains the
/// objects the question is about.
#[test]
fn expert_crops_contain_the_focus() {
    for task in [Task::Attribute, Task::Counting, Task::Chain, Task::Position] {
        let dir = tempfile::tempdir().unwrap();
        generate(&small(task, 3, 2), dir.path()).unwrap();
        let items: BTreeMap<String, McqItem> = mcq(&dir.path().join("val_mcq.jsonl"))
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        for n in load_jsonl(&dir.path().join("val.jsonl")).unwrap().items {
            let t = n.trajectory;
            let focus: [f64; 4] =
                serde_json::from_value(items[&t.id].meta["focus_bbox"].clone()).unwrap();
            // Frame of each image in scene coordinates; image 1 is the scene.
            let mut frames = vec![[0.0, 0.0, 1.0, 1.0]];
            for c in &t.meta.tool_calls {
                let b = c.bbox().unwrap().unwrap();
                frames.push(compose(frames[c.target_image().unwrap().unwrap() - 1], b));
            }
            let last = frames.last().unwrap();
            let tol = 1.0 / 200.0; // one pixel of the floor convention
            assert!(
                last[0] <= focus[0] + tol
                    && last[1] <= focus[1] + tol
                    && last[2] >= focus[2] - tol
                    && last[3] >= focus[3] - tol,
                "{}: crop {last:?} misses focus {focus:?}",
                t.id
            );
            if task == Task::Chain {
                for c in &t.meta.tool_calls {
                    let b = c.bbox().unwrap().unwrap();
                    let area = (b[2] - b[0]) * (b[3] - b[1]);
                    assert!(
                        area < 0.8,
                        "{}: every zoom of a chain must narrow the view, got {b:?}",
                        t.id
                    );
                }
            }
            if task != Task::Position {
                assert!(
                    (last[2] - last[0]) < 0.6,
                    "{}: the final crop should zoom in",
                    t.id
                );
            }
        }
    }
}

#[test]
fn splits_share_no_scene() {
    let dir = tempfile::tempdir().unwrap();
    generate(&small(Task::Attribute, 9, 2), dir.path()).unwrap();
    let mut seen = HashSet::new();
    for split in ["train", "val", "test"] {
        for e in std::fs::read_dir(dir.path().join("images").join(split)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !name.contains('_') {
                assert!(
                    seen.insert(std::fs::read(&p).unwrap()),
                    "scene {name} repeats another scene"
                );
            }
        }
    }
    assert_eq!(seen.len(), 24);
}

#[test]
fn bad_knobs_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(Task::Attribute, 1, 1);
    cfg.scene.object_size = 40.0;
    let e = generate(&cfg, dir.path()).unwrap_err().to_string();
    assert!(e.contains("too small"), "{e}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing should be written"
    );
    let mut cfg = small(Task::Multicall, 1, 1);
    cfg.tools = vec![pearl::data::synth::Tool::Crop];
    assert!(generate(&cfg, dir.path()).is_err());
}

/// The demo's world: only the allowed question kinds, options in one fixed order, and a clear
/// error when the task cannot ask any allowed kind.
#[test]
fn kind_filter_and_canonical_options() {
    use pearl::data::synth::Kind;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(Task::Mixed, 3, 2);
    cfg.kinds = vec![Kind::Color, Kind::Depth];
    cfg.canonical_options = true;
    cfg.unique_colors = true;
    generate(&cfg, dir.path()).unwrap();
    let items = mcq(&dir.path().join("test_mcq.jsonl"));
    assert!(!items.is_empty());
    for item in &items {
        match item.category.as_str() {
            "attribute/color" => assert_eq!(
                item.options,
                [
                    "red", "green", "blue", "yellow", "purple", "orange", "white", "black"
                ]
            ),
            "depth/order" => assert_eq!(item.options, ["closer", "farther"]),
            other => panic!("unexpected category {other:?}"),
        }
    }

    let mut cfg = small(Task::Position, 3, 1);
    cfg.kinds = vec![Kind::Color];
    let err = generate(&cfg, tempfile::tempdir().unwrap().path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("asks no question of the allowed kinds"),
        "{err:#}"
    );
}
