"""`import reid_workbench` makes torchvision importable on a CPU-only torch, and does nothing once it works."""
import subprocess
import sys


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_torchvision_works_after_import():
    code = """
import reid_workbench, torch, torchvision
import torchvision.transforms.v2 as T
from torchvision import tv_tensors
model = torchvision.models.resnet18(num_classes=7).eval()
assert model(torch.zeros(2, 3, 64, 32)).shape == (2, 7)
image = tv_tensors.Image(torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(3, 2, 4))
flipped = T.RandomHorizontalFlip(p=1.0)(image)
assert torch.equal(flipped, image.flip(-1))
resized = T.Compose([T.Resize((8, 4)), T.ToDtype(torch.float32, scale=True)])(image)
assert resized.shape == (3, 8, 4) and resized.dtype == torch.float32
print("ok")
"""
    result = run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_fallback_nms_matches_greedy_definition():
    code = """
import reid_workbench, torch
torch.manual_seed(0)
xy = torch.rand(60, 2) * 50
boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2) * 20], 1)
scores = torch.rand(60)
keep = torch.ops.torchvision.nms(boxes, scores, 0.3).tolist()
# straightforward greedy NMS, written independently
def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0])); iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter)
order = sorted(range(60), key=lambda i: -scores[i].item())
ref = []
for i in order:
    if all(iou(boxes[i].tolist(), boxes[j].tolist()) <= 0.3 for j in ref): ref.append(i)
assert keep == ref, (keep, ref)
assert len(ref) < 60
print("ok")
"""
    result = run(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_effect_when_torchvision_already_imported():
    code = """
import reid_workbench, torchvision
from reid_workbench.compat import ensure_torchvision_ops
assert ensure_torchvision_ops() == []
print("ok")
"""
    result = run(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_effect_when_extension_loads(monkeypatch):
    "On a consistent install (the extension loads) nothing is registered."
    import reid_workbench.compat as compat
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(compat, "_extension_loads", lambda: True)
    assert compat.ensure_torchvision_ops() == []


def test_cli_help_lists_subcommands():
    result = subprocess.run(["reid-workbench", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("synth", "check-data", "train", "evaluate", "eval-codes", "app", "quickstart"):
        assert command in result.stdout
