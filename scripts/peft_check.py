#!/usr/bin/env python3
"""Checks that the Python ecosystem loads the adapters pearl writes, and that pearl reads theirs.

On the tiny fixture model, with PEFT and transformers:

1. pearl re-saves the fixture's PEFT adapter (`pearl inspect adapter`); `PeftModel.from_pretrained`
   and transformers' `load_adapter` load pearl's copy; their logits are compared with pearl's
   (`pearl inspect forward --adapter`).
2. PEFT writes an adapter with `rank_pattern` and `alpha_pattern` (non-zero B); pearl computes
   with it, re-saves it, and PEFT loads pearl's copy: three sets of logits compared.
3. The fixture adapter renamed to the pre-transformers-4.52 key layout
   (`base_model.model.model.layers.*`, `base_model.model.visual.*`): pearl's logits with it are
   compared with PEFT's on the current layout.

Every case feeds transformers the exact inputs pearl's processor made (`inspect forward` writes
them), so only the model and the adapter are compared. Prints the largest |logit difference| per
case; exits non-zero when one exceeds --tol.

    python scripts/peft_check.py --pearl target/debug/pearl \
        --fixture ../shared/fixtures/qwen2_5_vl_tiny --work /tmp/peft-check
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration


def load_base(model_dir):
    # Eager attention, as the fixture's references were made (sdpa differs at padded rows).
    kw = {"attn_implementation": "eager"}
    try:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, **kw).eval()
    except TypeError:  # transformers < 4.56 names it torch_dtype
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.float32, **kw).eval()


def pearl_forward(pearl, model_dir, adapter, messages, out):
    cmd = [pearl, "inspect", "forward", "--model", model_dir, "--messages", messages, "--out", out]
    if adapter:
        cmd += ["--adapter", adapter]
    subprocess.run(cmd, check=True, capture_output=True)
    return load_file(out)


def torch_logits(model, inputs):
    # The M-RoPE positions too: transformers 5.x computes other ones from input_ids alone on this
    # fixture (0.2 logits apart from the fixture's own references without them, 1e-6 with them).
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
              "position_ids": inputs["position_ids"]}
    if "pixel_values" in inputs:
        kwargs["pixel_values"] = inputs["pixel_values"]
        kwargs["image_grid_thw"] = inputs["image_grid_thw"]
    with torch.no_grad():
        return model(**kwargs).logits


def max_diff(a, b, mask):
    return ((a - b).abs() * mask[..., None]).max().item()


def lora_modules(model):
    return sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pearl", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    fixture, work = Path(a.fixture), Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_dir = str(fixture / "model")
    messages = str(fixture / "expected" / "forward_batch.json")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")

    base_out = pearl_forward(a.pearl, model_dir, None, messages, str(work / "base.safetensors"))
    mask = base_out["attention_mask"].float()
    failures = []

    def report(name, diff, extra=""):
        ok = diff <= a.tol
        print(f"{'PASS' if ok else 'FAIL'} {name}: max |logit diff| {diff:.2e} {extra}")
        if not ok:
            failures.append(name)

    # 0. The harness itself: the base model, pearl vs transformers, on pearl's inputs.
    report("0 base model", max_diff(torch_logits(load_base(model_dir), base_out), base_out["logits"], mask))

    # 1. pearl's copy of the fixture adapter, loaded by PEFT.
    ours = work / "pearl_adapter"
    subprocess.run([a.pearl, "inspect", "adapter", "--model", model_dir, "--adapter",
                    str(fixture / "adapter"), "--out", str(ours)], check=True, capture_output=True)
    targets = json.loads((ours / "adapter_config.json").read_text())["target_modules"]
    print(f"pearl's target_modules: {sorted(targets)}")
    pearl_out = pearl_forward(a.pearl, model_dir, str(ours), messages, str(work / "pearl.safetensors"))
    model = PeftModel.from_pretrained(load_base(model_dir), str(ours)).eval()
    n_file = len(load_file(str(ours / "adapter_model.safetensors"))) // 2
    logits = torch_logits(model, pearl_out)
    report("1 PEFT loads pearl's adapter", max_diff(logits, pearl_out["logits"], mask),
           f"({lora_modules(model)} LoRA modules in PEFT, {n_file} in the file; "
           f"adapter moves logits by {max_diff(pearl_out['logits'], base_out['logits'], mask):.2e})")
    if lora_modules(model) != n_file:
        failures.append("1 module count")
    # ... and transformers' own adapter loading.
    hf = load_base(model_dir)
    hf.load_adapter(str(ours))
    report("1b transformers load_adapter takes pearl's adapter", max_diff(torch_logits(hf, pearl_out), pearl_out["logits"], mask))

    # 2. rank_pattern / alpha_pattern, written by PEFT.
    torch.manual_seed(0)
    theirs = work / "peft_patterns"
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=sorted(targets), init_lora_weights=False,
                     rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 32})
    peft_model = get_peft_model(load_base(model_dir), cfg).eval()
    peft_model.save_pretrained(str(theirs))
    peft_logits = torch_logits(peft_model, base_out)
    pearl_out = pearl_forward(a.pearl, model_dir, str(theirs), messages, str(work / "patterns.safetensors"))
    report("2a pearl computes PEFT's rank/alpha patterns", max_diff(pearl_out["logits"], peft_logits, mask))
    resaved = work / "pearl_patterns"
    subprocess.run([a.pearl, "inspect", "adapter", "--model", model_dir, "--adapter", str(theirs),
                    "--out", str(resaved)], check=True, capture_output=True)
    back = PeftModel.from_pretrained(load_base(model_dir), str(resaved)).eval()
    report("2b PEFT loads pearl's copy of it", max_diff(torch_logits(back, base_out), peft_logits, mask),
           json.dumps({k: v for k, v in json.loads((resaved / "adapter_config.json").read_text()).items()
                       if k in ("rank_pattern", "alpha_pattern")}))

    # 3. The pre-4.52 key layout.
    old = work / "old_layout"
    old.mkdir()
    shutil.copy(fixture / "adapter" / "adapter_config.json", old / "adapter_config.json")
    tensors = load_file(str(fixture / "adapter" / "adapter_model.safetensors"))
    renamed = {k.replace("base_model.model.model.language_model.", "base_model.model.model.")
                .replace("base_model.model.model.visual.", "base_model.model.visual."): v
               for k, v in tensors.items()}
    save_file(renamed, str(old / "adapter_model.safetensors"))
    pearl_out = pearl_forward(a.pearl, model_dir, str(old), messages, str(work / "old.safetensors"))
    reference = PeftModel.from_pretrained(load_base(model_dir), str(fixture / "adapter")).eval()
    report("3 pearl reads the pre-4.52 layout", max_diff(pearl_out["logits"], torch_logits(reference, base_out), mask))

    print("all passed" if not failures else f"failed: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
