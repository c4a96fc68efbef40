//! Training lowers the validation loss: SFT (full fine-tuning) from the random tiny model, then
//! Pearl (LoRA) from the SFT model lowers every term. Pearl starts from a trained model because on
//! a random one the NextLat state target moves faster than the head learns (as the hidden states
//! turn from noise into features), which would say nothing about the loop. The LVR baseline
//! (LoRA, vision tower frozen) trained from the same SFT model lowers its text and latent terms.

mod train_common;

use pearl::objective::{MethodKind, ObjectiveConfig};
use pearl::train::metrics::Row;
use pearl::train::{Options, run};
use train_common::{fixture_dir, run_config, synth_data};

fn first_and_last_val(rows: &[Row]) -> (Row, Row) {
    let val: Vec<&Row> = rows.iter().filter(|r| r.split == "val").collect();
    assert!(
        val.len() >= 2,
        "expected validation at the start and the end"
    );
    assert_eq!(val[0].step, 0);
    (val[0].clone(), val[val.len() - 1].clone())
}

#[test]
fn sft_then_pearl_lower_every_validation_term() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 32, 4);

    // SFT, full fine-tuning.
    let mut sft = run_config(dir.path(), train.clone(), val.clone(), 100);
    sft.output = dir.path().join("sft");
    sft.objective = ObjectiveConfig::sft();
    sft.full = true;
    sft.micro_batch = 1;
    sft.optimizer.lr = 3e-3;
    let s = run(&sft, &Options::default()).unwrap();
    let (a, b) = first_and_last_val(&s.metrics);
    assert_eq!(a.terms().len(), 2, "SFT has only the vlm term (and total)");
    assert!(
        b.vlm.unwrap() < 0.5 * a.vlm.unwrap(),
        "SFT: {:?} -> {:?}",
        a.vlm,
        b.vlm
    );
    assert_eq!(s.best.map(|b| b.0), Some(100));
    let sft_model = dir.path().join("sft/step-0000100/model");
    assert!(sft_model.join("model.safetensors").is_file());

    // LVR, LoRA (vision tower frozen), on top of the same SFT model: text and latent terms fall.
    let mut lvr = run_config(dir.path(), train.clone(), val.clone(), 60);
    lvr.output = dir.path().join("lvr");
    lvr.model = Some(sft_model.clone());
    lvr.processor = Some(fixture_dir().join("model"));
    lvr.method = MethodKind::Lvr;
    lvr.lvr.latent_weight = 1.0;
    lvr.micro_batch = 1;
    lvr.optimizer.lr = 5e-3;
    let l = run(&lvr, &Options::default()).unwrap();
    let (a, b) = first_and_last_val(&l.metrics);
    let names: Vec<&str> = a.terms().iter().map(|t| t.0).collect();
    assert_eq!(
        names,
        ["vlm", "latent", "total"],
        "LVR reports text, latent, total"
    );
    for ((name, x), (_, y)) in a.terms().iter().zip(&b.terms()) {
        assert!(y < &(0.95 * x), "LVR: validation {name} went {x} -> {y}");
    }
    assert!(
        !dir.path()
            .join("lvr/best/dynamics_head.safetensors")
            .exists()
    );

    // Pearl, LoRA, on top of the SFT model (the fixture directory supplies the processor files).
    let mut pearl = run_config(dir.path(), train, val, 150);
    pearl.output = dir.path().join("pearl");
    pearl.model = Some(sft_model);
    pearl.processor = Some(fixture_dir().join("model"));
    pearl.micro_batch = 1;
    pearl.optimizer.lr = 5e-3;
    pearl.eval_every = 50;
    let p = run(&pearl, &Options::default()).unwrap();
    let (a, b) = first_and_last_val(&p.metrics);
    let (start, end) = (a.terms(), b.terms());
    assert_eq!(start.len(), 5, "Pearl reports every term: {start:?}");
    for ((name, x), (_, y)) in start.iter().zip(&end) {
        assert!(y < &(0.95 * x), "Pearl: validation {name} went {x} -> {y}");
    }
    assert!(dir.path().join("pearl/loss.png").is_file());
    assert!(
        dir.path()
            .join("pearl/best/adapter/adapter_model.safetensors")
            .is_file()
    );
}
