"""PyTorch/transformers reference timings for one training step on CPU (the performance anchor).
usage: torch_reference.py MODEL_DIR TRAJECTORIES.jsonl [steps]
A copy of ../../shared/bench/torch_reference.py with a Qwen3-VL switch: the family follows config.json's model_type
(Qwen3-VL: Qwen3VLForConditionalGeneration, 16-pixel patches, the processor's `size` pixel budget, mean/std 0.5).
Builds a random Qwen2.5-VL or Qwen3-VL from MODEL_DIR/config.json (tokenizer, chat template, preprocessor from MODEL_DIR), LoRA r=8 on all linear
layers, and times: SFT step (full view fwd+bwd+AdamW), Pearl step as the authors' code does it (three views
padded into one batch), and inference of a 4-token greedy answer. Prints medians in seconds."""
import json, os, sys, time, statistics, math
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(int(os.environ.get("THREADS", "2"))); torch.manual_seed(0)
MD, DATA = sys.argv[1], sys.argv[2]; STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration, PreTrainedTokenizerFast, Qwen2VLImageProcessorPil
from peft import LoraConfig, get_peft_model
from PIL import Image
tok = PreTrainedTokenizerFast(tokenizer_file=f"{MD}/tokenizer.json", eos_token="<|im_end|>", pad_token="<|endoftext|>")
tmpl = json.load(open(f"{MD}/chat_template.json"))["chat_template"]
PRED = [f"<|predictor_{i}|>" for i in range(1, 11)] + ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|perception|>"]
tok.add_special_tokens({"additional_special_tokens": PRED})
pp = json.load(open(f"{MD}/preprocessor_config.json"))
cfg = AutoConfig.from_pretrained(MD); cfg._attn_implementation = "sdpa"
QWEN3 = cfg.model_type == "qwen3_vl"
if QWEN3:  # `size` holds the pixel budget; 16-pixel patches; mean and std 0.5
    imp = Qwen2VLImageProcessorPil(min_pixels=pp["size"]["shortest_edge"], max_pixels=pp["size"]["longest_edge"],
                                   patch_size=pp["patch_size"], image_mean=pp["image_mean"], image_std=pp["image_std"])
    model = Qwen3VLForConditionalGeneration(cfg).float()
else:
    imp = Qwen2VLImageProcessorPil(min_pixels=pp["min_pixels"], max_pixels=pp["max_pixels"])
    model = Qwen2_5_VLForConditionalGeneration(cfg).float()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
COMPILE = os.environ.get("COMPILE") == "1"  # a stronger anchor: torch.compile (inductor) on the model's forward
if COMPILE: model.forward = torch.compile(model.forward)
ex = [json.loads(l) for l in open(DATA)]
base = os.path.dirname(os.path.abspath(DATA))
big = lambda p: Image.open(os.path.join(base, p)).convert("RGB")
def proc(msgs_list):
    texts = [tok.apply_chat_template(m, tokenize=False, chat_template=tmpl) for m in msgs_list]
    ims = [big(c["image"]) for m in msgs_list for t in m for c in (t["content"] if isinstance(t["content"], list) else []) if c["type"] == "image"]
    iv = imp(images=ims, return_tensors="pt"); k = 0
    for i in range(len(texts)):
        while "<|image_pad|>" in texts[i]:
            n = int(iv["image_grid_thw"][k].prod()) // 4; texts[i] = texts[i].replace("<|image_pad|>", "<|ph|>" * n, 1); k += 1
        texts[i] = texts[i].replace("<|ph|>", "<|image_pad|>")
    enc = tok(texts, padding=True, return_tensors="pt")
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=iv["pixel_values"], image_grid_thw=iv["image_grid_thw"],
                mm_token_type_ids=(enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).int())
full_msgs = [e["messages"] for e in ex]
user_msgs = [m[:2] for m in full_msgs]
for u in user_msgs: u[1] = {"role": "user", "content": u[1]["content"] + [{"type": "text", "text": "".join(PRED[:4][::-1])}]}
traj_msgs = [[m[0], {"role": "user", "content": [c for c in m[1]["content"] if c["type"] == "image"]}] + m[2:] for m in full_msgs]
full, user, traj = proc(full_msgs), proc(user_msgs), proc(traj_msgs)
labels = full["input_ids"].clone(); labels[full["attention_mask"] == 0] = -100
def timed(fn):
    ts = []
    for i in range(STEPS + 1):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts[1:])
def sft():
    opt.zero_grad(); out = model(**full, labels=labels, use_cache=False); out.loss.backward(); opt.step()
def pad_to(b, L):
    o = dict(b); p = L - b["input_ids"].shape[1]
    for k in ("input_ids", "attention_mask", "mm_token_type_ids"):
        o[k] = F.pad(b[k], (0, p), value=0)
    return o
def pearl():  # the released code's way: three views padded to one length, one batch
    opt.zero_grad(); L = full["input_ids"].shape[1]; u, t = pad_to(user, L), pad_to(traj, L)
    batch = {k: torch.cat([full[k], u[k], t[k]]) for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    batch["pixel_values"] = torch.cat([full["pixel_values"], user["pixel_values"], traj["pixel_values"]])
    batch["image_grid_thw"] = torch.cat([full["image_grid_thw"], user["image_grid_thw"], traj["image_grid_thw"]])
    lab = torch.cat([labels, torch.full_like(labels, -100), torch.full_like(labels, -100)])
    out = model(**batch, labels=lab, output_hidden_states=True, use_cache=False)
    h = out.hidden_states[-1]; B = labels.shape[0]; r = torch.arange(B)
    pred = h[B:2 * B][r, user["attention_mask"].sum(1) - 2]; tgt = h[2 * B:][r, traj["attention_mask"].sum(1) - 2].detach()
    loss = out.loss + 0.2 * (1 - F.cosine_similarity(pred, tgt, dim=-1).mean()); loss.backward(); opt.step()
q = proc([[full_msgs[0][0], full_msgs[0][1]]])
def answer():
    with torch.no_grad():
        model.generate(**q, max_new_tokens=4, do_sample=False)
nparams = sum(p.numel() for p in model.parameters())
res = {"family": cfg.model_type, "params": nparams, "seq_len": int(full["input_ids"].shape[1]), "batch": len(ex), "threads": torch.get_num_threads(),
       "compile": COMPILE, "sft_step_s": timed(sft)}
if not COMPILE:
    res.update(pearl_official_step_s=timed(pearl), answer_4tok_s=timed(answer))
    res["pearl_over_sft"] = res["pearl_official_step_s"] / res["sft_step_s"]
print(json.dumps(res))
