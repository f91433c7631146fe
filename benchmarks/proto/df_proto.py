"""Prototype: data-free KD on digits (temporary KD loop until the library's fit lands)."""
import argparse, json, sys, time, math
import torch, torch.nn.functional as F
import compress
from compress.models.digits import build_module
from compress.models.train_digits import shift_images
from compress.data.digits import load_split
from compress.distill.synthetic import InversionSettings, invert

p = argparse.ArgumentParser()
p.add_argument("--source", default="di")  # di | noise | real
p.add_argument("--kd-steps", type=int, default=600)
p.add_argument("--kd-batch", type=int, default=64)
p.add_argument("--kd-lr", type=float, default=2e-3)
p.add_argument("--temp", type=float, default=4.0)
p.add_argument("--shift", type=float, default=2.0)
p.add_argument("--mix", type=float, default=0.0)  # mixup prob
p.add_argument("--init", default="random")  # random | l1 (prune-like)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--set", default="{}")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--cache", default="")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
teacher = compress.load("digits").module.eval()
t0 = time.perf_counter()
import os
if a.source == "di" and a.cache and os.path.exists(a.cache):
    images = torch.load(a.cache)
elif a.source == "di":
    s = InversionSettings(**json.loads(a.set))
    inv = invert(teacher, (1, 32, 32), s, seed=a.seed, log=lambda m: print(m, file=sys.stderr))
    images = inv.images
    print("bn", inv.bn_loss_before, inv.bn_loss_after, "mean_err", [round(v,3) for v in inv.mean_error_after][:5], file=sys.stderr)
elif a.source == "noise":
    images = torch.randn(int(json.loads(a.set).get("images", 128)), 1, 32, 32)
else:
    images, _ = load_split("train")
    if a.cache: torch.save(images, a.cache)
t_syn = time.perf_counter() - t0
c_syn = time.process_time()
with torch.no_grad():
    tl = teacher(images)
    conf = F.softmax(tl, 1).max(1).values.mean().item()
    cover = torch.bincount(tl.argmax(1), minlength=10).tolist()
print("syn", round(t_syn,1), "conf", round(conf,3), "cover", cover, file=sys.stderr)

student = build_module(8)
if a.init == "l1":
    pass
g = torch.Generator().manual_seed(a.seed)
opt = torch.optim.AdamW(student.parameters(), lr=a.kd_lr, weight_decay=5e-4)
sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.kd_steps)
test_x, test_y = load_split("test")
t1 = time.perf_counter()
T = a.temp
for step in range(a.kd_steps):
    idx = torch.randint(0, len(images), (a.kd_batch,), generator=g)
    x = images[idx]
    if a.shift: x = shift_images(x, a.shift, g)
    if a.mix > 0:
        lam = torch.rand(len(x), 1, 1, 1, generator=g)
        perm = torch.randperm(len(x), generator=g)
        use = (torch.rand(len(x), 1, 1, 1, generator=g) < a.mix).float()
        lam = 1 - use * (1 - lam)
        x = lam * x + (1 - lam) * x[perm]
    with torch.no_grad():
        tlog = teacher(x)
    student.train()
    slog = student(x)
    loss = F.kl_div(F.log_softmax(slog / T, 1), F.log_softmax(tlog / T, 1), log_target=True, reduction="batchmean") * T * T
    opt.zero_grad(); loss.backward(); opt.step(); sch.step()
    if (step + 1) % 200 == 0:
        with torch.no_grad():
            acc = (student.eval()(test_x).argmax(1) == test_y).float().mean().item()
        print(f"kd {step+1} loss {loss.item():.3f} acc {acc:.4f} t {time.perf_counter()-t1:.0f}", file=sys.stderr)
t_kd = time.perf_counter() - t1
c_kd = time.process_time() - c_syn
with torch.no_grad():
    acc = (student.eval()(test_x).argmax(1) == test_y).float().mean().item()
import os
print("RESULT", json.dumps({"source": a.source, "set": a.set, "kd_steps": a.kd_steps, "mix": a.mix, "shift": a.shift, "acc": round(acc,4), "syn_s": round(t_syn,1), "kd_s": round(t_kd,1), "total_s": round(t_syn+t_kd,1), "cpu_syn": round(c_syn,1), "cpu_kd": round(c_kd,1), "load": os.getloadavg()[0]}))
