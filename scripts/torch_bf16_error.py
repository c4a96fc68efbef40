# Usage: python scripts/torch_bf16_error.py ../shared/fixtures/qwen2_5_vl_tiny
# (PyTorch + transformers + PEFT; measured with torch 2.15, transformers 5.23, peft 0.21:
#  logits 2.163e-02, gradients 3.114e-02 overall, worst tensor 9.082e-02.)
# The reference for tests/model_precision.rs: PyTorch's own bf16 error on the tiny fixture: SFT cross-entropy over every non-pad next token of
# forward_batch, LoRA adapter gradients, f32 vs bf16 (base in bf16, adapter kept f32 by PEFT's
# autocast_adapter_dtype, as our Precision::Bf16 does). Prints relative L2 of logits and grads.
import sys, torch
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration
from peft import PeftModel
torch.manual_seed(0)
fx = sys.argv[1]
b = load_file(f"{fx}/expected/forward_batch.safetensors")
def run(dtype):
    m = Qwen2_5_VLForConditionalGeneration.from_pretrained(f"{fx}/model", torch_dtype=dtype, attn_implementation="eager")
    m = PeftModel.from_pretrained(m, f"{fx}/adapter", is_trainable=True, autocast_adapter_dtype=True)
    ids, mask = b["input_ids"], b["attention_mask"]
    out = m(input_ids=ids, attention_mask=mask, pixel_values=b["pixel_values"].to(dtype), image_grid_thw=b["image_grid_thw"])
    logits = out.logits.float()
    labels = ids.clone(); labels[mask == 0] = -100
    lg = logits[:, :-1].reshape(-1, logits.shape[-1]); lb = labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(lg, lb, ignore_index=-100)
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in m.named_parameters() if p.requires_grad and p.grad is not None}
    dt = {str(p.dtype) for n, p in m.named_parameters() if p.requires_grad}
    return logits.detach(), loss.item(), grads, dt
l32, loss32, g32, _ = run(torch.float32)
l16, loss16, g16, dt = run(torch.bfloat16)
keep = b["attention_mask"].bool()
def rel(a, b): return ((a - b).norm() / b.norm()).item()
print("trainable dtypes under bf16:", dt)
print(f"loss f32 {loss32:.6f} bf16 {loss16:.6f} rel {abs(loss16-loss32)/loss32:.2e}")
print(f"logits (non-pad) relative L2 {rel(l16[keep], l32[keep]):.3e}")
cat32 = torch.cat([g.flatten() for g in g32.values()]); cat16 = torch.cat([g16[n].flatten() for n in g32])
print(f"gradients overall relative L2 {rel(cat16, cat32):.3e}")
worst = max((rel(g16[n], g32[n]), n) for n in g32)
print(f"worst tensor {worst[0]:.3e} {worst[1]}")
